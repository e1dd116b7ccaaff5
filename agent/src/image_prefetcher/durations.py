"""Go `time.Duration` parsing and formatting, so duration flags and log values read exactly as in the Go tool.

Durations are kept as integer nanoseconds (like Go); `to_seconds` converts for asyncio.
"""

from __future__ import annotations

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS: dict[bytes, int] = {
    b"ns": NANOSECOND,
    b"us": MICROSECOND,
    "\u00b5s".encode(): MICROSECOND,  # micro sign
    "\u03bcs".encode(): MICROSECOND,  # Greek mu
    b"ms": MILLISECOND,
    b"s": SECOND,
    b"m": MINUTE,
    b"h": HOUR,
}
_LIMIT = 1 << 63
_DIGITS = b"0123456789"


class DurationError(ValueError):
    """A string that Go's time.ParseDuration rejects; the message is Go's error text."""


def _go_quote(raw: bytes) -> str:
    """Go's time.quote: ASCII kept (with `"` and `\\` escaped), other bytes as \\xNN."""
    out = ['"']
    for byte in raw:
        if byte >= 0x80 or byte < 0x20:
            out.append(f"\\x{byte:02x}")
        elif byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        else:
            out.append(chr(byte))
    out.append('"')
    return "".join(out)


def _leading_int(s: bytes) -> tuple[int, bytes]:
    value = 0
    i = 0
    while i < len(s) and s[i] in _DIGITS:
        if value > _LIMIT // 10:
            raise OverflowError
        value = value * 10 + (s[i] - 0x30)
        if value > _LIMIT:
            raise OverflowError
        i += 1
    return value, s[i:]


def _leading_fraction(s: bytes) -> tuple[int, float, bytes]:
    value, scale, overflow = 0, 1.0, False
    i = 0
    while i < len(s) and s[i] in _DIGITS:
        if not overflow:
            candidate = value * 10 + (s[i] - 0x30)
            if value > (_LIMIT - 1) // 10 or candidate > _LIMIT:
                overflow = True  # further digits are ignored, as in Go
            else:
                value, scale = candidate, scale * 10
        i += 1
    return value, scale, s[i:]


def parse_duration(text: str) -> int:
    """Parse like Go's time.ParseDuration; returns nanoseconds or raises DurationError with Go's message."""
    orig = text.encode()
    invalid = DurationError("time: invalid duration " + _go_quote(orig))
    s = orig
    negative = False
    if s[:1] in (b"-", b"+"):
        negative, s = s[:1] == b"-", s[1:]
    if s == b"0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[:1] == b"." or s[0] in _DIGITS):
            raise invalid
        before = len(s)
        try:
            whole, s = _leading_int(s)
        except OverflowError:
            raise invalid from None
        has_int = before != len(s)
        frac, scale, has_frac = 0, 1.0, False
        if s[:1] == b".":
            s = s[1:]
            before = len(s)
            frac, scale, s = _leading_fraction(s)
            has_frac = before != len(s)
        if not has_int and not has_frac:
            raise invalid
        unit_len = 0
        while unit_len < len(s) and not (s[unit_len : unit_len + 1] == b"." or s[unit_len] in _DIGITS):
            unit_len += 1
        if unit_len == 0:
            raise DurationError("time: missing unit in duration " + _go_quote(orig))
        unit_text, s = s[:unit_len], s[unit_len:]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise DurationError(f"time: unknown unit {_go_quote(unit_text)} in duration {_go_quote(orig)}")
        if whole > _LIMIT // unit:
            raise invalid
        whole *= unit
        if frac > 0:
            whole += int(float(frac) * (float(unit) / scale))
            if whole > _LIMIT:
                raise invalid
        total += whole
        if total > _LIMIT:
            raise invalid
    if negative:
        return -total
    if total > _LIMIT - 1:
        raise invalid
    return total


def _with_fraction(value: int, precision: int) -> str:
    """Go's fmtFrac + fmtInt: integer part, then '.' and the fraction without trailing zeros (if any)."""
    whole, fraction = divmod(value, 10**precision)
    digits = str(fraction).rjust(precision, "0").rstrip("0") if precision else ""
    return f"{whole}.{digits}" if digits else str(whole)


def format_duration(nanoseconds: int) -> str:
    """Go's Duration.String(): 1m0s, 30s, 1.5s, 300ms, 100µs, 0s, 2562047h47m16s."""
    sign = "-" if nanoseconds < 0 else ""
    u = abs(nanoseconds)
    if u == 0:
        return "0s"
    if u < MICROSECOND:
        return f"{sign}{u}ns"
    if u < MILLISECOND:
        return f"{sign}{_with_fraction(u, 3)}\u00b5s"
    if u < SECOND:
        return f"{sign}{_with_fraction(u, 6)}ms"
    whole_seconds, sub_second = divmod(u, SECOND)
    seconds_text = _with_fraction((whole_seconds % 60) * SECOND + sub_second, 9) + "s"
    minutes = whole_seconds // 60
    if minutes == 0:
        return sign + seconds_text
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{sign}{minutes}m{seconds_text}"
    return f"{sign}{hours}h{minutes}m{seconds_text}"


def to_seconds(nanoseconds: int) -> float:
    return nanoseconds / SECOND


def format_seconds(seconds: float) -> str:
    """Format a float number of seconds the Go way (for log values such as timeout=30s, elapsed=1.234s)."""
    return format_duration(round(seconds * SECOND))
