"""Structured logging to stderr: slog-like text lines (`time=... level=INFO msg="..." key=value`) or JSON lines.

Use `get_logger()` and pass attributes as keyword arguments: `log.info("attempting image pull", image=img)`.
Never pass a password, token or `auth` value as an attribute: credentials go in as `Credential.username` only.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

from image_prefetcher.durations import format_seconds

LOGGER_NAME = "image_prefetcher"
LogFormat = Literal["text", "json"]
_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR"}


class Seconds(float):
    """A duration in seconds that logs in Go form (30s, 1m0s, 1.234s)."""

    def __str__(self) -> str:
        return format_seconds(self)


class Logger:
    """Thin key/value front end over the standard `logging` module (so pytest's caplog still sees records)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, msg: str, attrs: dict[str, Any]) -> None:
        logger = self._logger
        if logger.isEnabledFor(level):
            # makeRecord + handle is what Logger.log does, minus findCaller's stack walk for a source location
            # that no format of ours prints (about a tenth of a line's cost; 2-3 lines per pull attempt).
            logger.handle(logger.makeRecord(logger.name, level, "", 0, msg, (), None, extra={"attrs": attrs}))

    def debug(self, msg: str, **attrs: Any) -> None:
        self._log(logging.DEBUG, msg, attrs)

    def info(self, msg: str, **attrs: Any) -> None:
        self._log(logging.INFO, msg, attrs)

    def warn(self, msg: str, **attrs: Any) -> None:
        self._log(logging.WARNING, msg, attrs)

    def error(self, msg: str, **attrs: Any) -> None:
        self._log(logging.ERROR, msg, attrs)

    def debug_enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)


def get_logger() -> Logger:
    return Logger(logging.getLogger(LOGGER_NAME))


def _needs_quoting(text: str) -> bool:
    # slog's TextHandler rule: quote empty strings and any with spaces, '"', '=' or unprintable characters.
    # str.isprintable() is false exactly for Unicode categories C* and Z* other than the ASCII space, and every
    # other whitespace character is in those categories: one C-level scan instead of a per-character loop.
    return not text or not text.isprintable() or " " in text or '"' in text or "=" in text


def _text_value(value: Any) -> str:
    text = str(value) if not isinstance(value, bool) else str(value).lower()
    return json.dumps(text, ensure_ascii=False) if _needs_quoting(text) else text


def _json_value(value: Any) -> Any:
    if isinstance(value, Seconds):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_second_prefix: tuple[int, str] = (-1, "")  # the last whole second and its text: log lines come in bursts


def _timestamp(record: logging.LogRecord) -> str:
    global _second_prefix
    second, prefix = _second_prefix  # one tuple, read once: consistent even if another thread replaces it
    if second != int(record.created):
        second = int(record.created)
        prefix = datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_prefix = (second, prefix)
    return f"{prefix}{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"time={_timestamp(record)}",
            f"level={_LEVEL_NAMES.get(record.levelno, record.levelname)}",
            f"msg={_text_value(record.getMessage())}",
        ]
        for key, value in getattr(record, "attrs", {}).items():
            parts.append(f"{key}={_text_value(value)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname),
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, "attrs", {}).items():
            entry.setdefault(key, _json_value(value))
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure_logging(debug: bool, log_format: LogFormat = "text", stream: TextIO | None = None) -> Logger:
    """Route the agent's records to stderr (or `stream`) in the chosen format, replacing earlier handlers."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    # Propagation stays on: the root logger has no handler in the agent, and tests' log capture keeps working.
    return Logger(logger)
