"""A small pflag (GNU style) flag parser, so command lines written for the Go tool parse the same way.

Rules kept from pflag/cobra: `--name=value` or `--name value`; flags and positionals may be mixed; `--` ends flag
parsing; no abbreviations; a single dash is for shorthands and only `-h` exists, so `-debug` is an error; bool flags
take `--debug` or `--debug=<bool>` (`--debug false` sets true and leaves `false` as a positional, as in pflag).
Error texts follow pflag's (`unknown flag: --x`, `flag needs an argument: --x`, `invalid argument ...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from image_prefetcher.durations import DurationError, format_duration, parse_duration

FlagKind = Literal["string", "bool", "duration", "int", "choice"]

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class FlagError(ValueError):
    """A command-line error; the message is the one-line text shown after `Error: `."""


class HelpRequested(Exception):
    """`-h`/`--help` was given."""


@dataclass(frozen=True)
class Flag:
    name: str
    kind: FlagKind
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def convert(self, raw: str) -> Any:
        try:
            return self._convert(raw)
        except (DurationError, ValueError) as err:
            raise FlagError(f'invalid argument "{raw}" for "--{self.name}" flag: {err}') from None

    def _convert(self, raw: str) -> Any:
        if self.kind == "string":
            return raw
        if self.kind == "duration":
            return parse_duration(raw)
        if self.kind == "bool":
            if raw in _TRUE:
                return True
            if raw in _FALSE:
                return False
            raise ValueError(f'strconv.ParseBool: parsing "{raw}": invalid syntax')
        if self.kind == "int":
            return _parse_go_int(raw)
        if raw not in self.choices:
            raise ValueError("must be one of " + ", ".join(self.choices))
        return raw

    def default_text(self) -> str:
        if self.kind == "duration":
            return format_duration(self.default)
        if self.kind == "string" or self.kind == "choice":
            return f'"{self.default}"' if self.default else ""
        if self.kind == "bool":
            return "true" if self.default else ""
        return str(self.default) if self.default else ""  # pflag leaves zero values out of the help


def _parse_go_int(raw: str) -> int:
    body = raw[1:] if raw[:1] in "+-" else raw
    if not body.isascii() or not body.isdigit():
        raise ValueError(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
    value = int(raw)
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f'strconv.ParseInt: parsing "{raw}": value out of range')
    return value


@dataclass
class ParsedArgs:
    values: dict[str, Any]
    positionals: list[str]
    explicitly_set: set[str] = field(default_factory=set)


def parse_flags(flags: Sequence[Flag], argv: Sequence[str]) -> ParsedArgs:
    """Parse argv (without the command names) against the given flags; raises FlagError or HelpRequested."""
    by_name = {flag.name: flag for flag in flags}
    parsed = ParsedArgs(values={flag.dest: flag.default for flag in flags}, positionals=[])
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            parsed.positionals.extend(args[i:])
            break
        if arg.startswith("--"):
            i = _parse_long(by_name, arg, args, i, parsed)
        elif arg.startswith("-") and len(arg) > 1:
            _parse_shorthands(arg)
        else:
            parsed.positionals.append(arg)
    return parsed


def _parse_long(by_name: dict[str, Flag], arg: str, args: list[str], i: int, parsed: ParsedArgs) -> int:
    name, has_value, value = arg[2:].partition("=")
    if not name or name.startswith("-") or name.startswith("="):
        raise FlagError(f"bad flag syntax: {arg}")
    if name == "help":
        raise HelpRequested
    flag = by_name.get(name)
    if flag is None:
        raise FlagError(f"unknown flag: --{name}")
    if not has_value:
        if flag.kind == "bool":
            value = "true"
        elif i < len(args):
            value, i = args[i], i + 1
        else:
            raise FlagError(f"flag needs an argument: --{name}")
    parsed.values[flag.dest] = flag.convert(value)
    parsed.explicitly_set.add(flag.dest)
    return i


def _parse_shorthands(arg: str) -> None:
    # Only -h exists (cobra's help shorthand); pflag reads the first shorthand letter and fails on an unknown one.
    letter = arg[1]
    if letter == "h":
        raise HelpRequested
    raise FlagError(f"unknown shorthand flag: '{letter}' in {arg}")


def flag_usage(flags: Sequence[Flag]) -> str:
    """The `Flags:` block of a help text, pflag style."""
    rows = []
    for flag in flags:
        kind = "" if flag.kind == "bool" else (" " + ("string" if flag.kind == "choice" else flag.kind))
        default = flag.default_text()
        suffix = f" (default {default})" if default else ""
        rows.append((f"      --{flag.name}{kind}", f"{flag.help}{suffix}"))
    rows.append(("  -h, --help", "help for this command"))
    width = max(len(left) for left, _ in rows) + 3
    return "\n".join(left.ljust(width) + right for left, right in rows)
