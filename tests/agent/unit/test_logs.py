"""Log line format: slog's quoting rule, timestamps, records reaching other handlers (pytest's caplog, the root)."""

from __future__ import annotations

import io
import json
import logging
import sys
import unicodedata

import pytest

from image_prefetcher.logs import LOGGER_NAME, Seconds, TextFormatter, _needs_quoting, configure_logging


def slog_needs_quoting(text: str) -> bool:
    """slog's TextHandler rule spelled out per character: empty, or any space, '"', '=' or unprintable rune."""
    return not text or any(ch.isspace() or ch in '"=' or unicodedata.category(ch)[0] in "CZ" for ch in text)


def test_quoting_matches_slogs_rule_for_every_code_point() -> None:
    differs = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if _needs_quoting(chr(code)) != slog_needs_quoting(chr(code))
        or _needs_quoting(f"a{chr(code)}b") != slog_needs_quoting(f"a{chr(code)}b")
    ]
    assert differs == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("registry.test:5000/team/app:v1", "registry.test:5000/team/app:v1"),
        ("", '""'),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("tab\there", '"tab\\there"'),
        ("nbsp\u00a0here", '"nbsp\u00a0here"'),
        ("zero\u200bwidth", '"zero\u200bwidth"'),
        ("ünïcödé", "ünïcödé"),
    ],
)
def test_text_values_are_quoted_as_slog_does(value: str, expected: str) -> None:
    stream = io.StringIO()
    configure_logging(False, "text", stream).info("m", key=value)
    assert stream.getvalue().rstrip("\n").endswith(f" key={expected}")


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, "", 0, "m", (), None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


def test_timestamps_follow_each_record_across_second_boundaries() -> None:
    formatter = TextFormatter()
    base = 1_764_000_000  # 2025-11-24T16:00:00Z
    lines = [formatter.format(_record(base + offset)) for offset in (0.125, 0.875, 1.0, 0.5, 61.25)]
    stamps = [line.split(" ", 1)[0] for line in lines]
    assert stamps == [
        "time=2025-11-24T16:00:00.125Z",
        "time=2025-11-24T16:00:00.875Z",
        "time=2025-11-24T16:00:01.000Z",
        "time=2025-11-24T16:00:00.500Z",
        "time=2025-11-24T16:01:01.250Z",
    ]


def test_lines_in_both_formats() -> None:
    text, js = io.StringIO(), io.StringIO()
    configure_logging(True, "text", text).warn("image failed to pull", image="r/x:v1", timeout=Seconds(30), ok=False)
    configure_logging(True, "json", js).debug("debug line", count=3, timeout=Seconds(1.5))
    expected = 'level=WARN msg="image failed to pull" image=r/x:v1 timeout=30s ok=false\n'
    assert text.getvalue().split(" ", 1)[1] == expected
    entry = json.loads(js.getvalue())
    assert (entry["level"], entry["msg"], entry["count"], entry["timeout"]) == ("DEBUG", "debug line", 3, "1.5s")


def test_records_propagate_with_their_attributes(caplog: pytest.LogCaptureFixture) -> None:
    log = configure_logging(False, "text", io.StringIO())
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        log.info("attempting image pull", image="r/x:v1", authNum=0)
        log.debug("not shown at INFO")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "attempting image pull")]
    assert caplog.records[0].attrs == {"image": "r/x:v1", "authNum": 0}  # type: ignore[attr-defined]


def test_a_percent_sign_in_a_message_is_literal() -> None:
    stream = io.StringIO()
    configure_logging(False, "text", stream).info("100% done %s", image="r/x:v1")
    assert 'msg="100% done %s"' in stream.getvalue()
