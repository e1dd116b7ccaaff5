"""Go duration syntax (TESTCASES.md §8), image list parsing (§7), the retry schedule."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from casedata import upstream_cases

from image_prefetcher.durations import DurationError, format_duration, format_seconds, parse_duration
from image_prefetcher.errors import CommandError
from image_prefetcher.imagelist import load_images, parse_image_list, unique_in_order
from image_prefetcher.retry import RetryStep, retry_schedule


@pytest.mark.parametrize("row", upstream_cases("dur"), ids=lambda row: repr(row["input"]))
def test_duration(row: dict[str, Any]) -> None:
    if row["err"]:
        with pytest.raises(DurationError) as caught:
            parse_duration(row["input"])
        assert str(caught.value) == row["err"]
    else:
        value = parse_duration(row["input"])
        assert (value, format_duration(value)) == (row["ns"], row["str"])


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("9223372037s", 'time: invalid duration "9223372037s"'),
        ("-", 'time: invalid duration "-"'),
        (".s", 'time: invalid duration ".s"'),
        ("1\u00e9", 'time: unknown unit "\\xc3\\xa9" in duration "1\\xc3\\xa9"'),
    ],
)
def test_duration_errors_beyond_the_table(text: str, error: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert str(caught.value) == error


@pytest.mark.parametrize(("seconds", "text"), [(0.0, "0s"), (1.2345, "1.2345s"), (90, "1m30s"), (0.0005, "500\u00b5s")])
def test_seconds_format_like_go(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize("row", upstream_cases("list"), ids=lambda row: repr(row["input"]))
def test_image_list(row: dict[str, Any]) -> None:
    assert parse_image_list(row["input"]) == (row["output"] or [])  # null in the table is Go's nil slice


def test_positionals_follow_the_file_verbatim(tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# c\n a \nb\n")
    assert load_images(str(listing), [" c ", "#d", ""]) == ["a", "b", " c ", "#d", ""]
    assert unique_in_order(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_unreadable_list_is_a_one_line_os_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        load_images(str(tmp_path / "nope.txt"), [])
    assert str(caught.value) == f"open {tmp_path / 'nope.txt'}: no such file or directory"


def take(steps: Any, count: int) -> list[tuple[float, float]]:
    return [(s.attempt_timeout, s.delay_after) for s in itertools.islice(steps, count)]


def test_retry_schedule_defaults() -> None:
    steps = take(retry_schedule(30, 300, 1, 600), 12)
    assert [t for t, _ in steps[:6]] == [30, 60, 120, 240, 300, 300]
    assert [d for _, d in steps] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]


def test_retry_schedule_initial_above_cap_is_used_once() -> None:
    assert take(retry_schedule(10, 4, 7, 3), 3) == [(10, 7), (4, 3), (4, 3)]
    assert next(retry_schedule(1, 2, 0, 5)) == RetryStep(1, 0)
    assert take(retry_schedule(1, 2, 0, 5), 3)[2] == (2, 0)  # a zero delay stays zero
