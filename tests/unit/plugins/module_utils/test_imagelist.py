# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image-list parsing: the agent's file rules (upstream TESTCASES §7) and the `images` option's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ValidationError
from ansible_collections.stackrox.prefetch.plugins.module_utils._imagelist import (
    MAX_LIST_BYTES,
    check_image_list_size,
    clean_listed_images,
    combine_image_lists,
    decode_image_list_file,
    go_trim_space,
    image_list_text,
    parse_image_list,
    read_image_list_file,
    reference_problem,
    reference_warning,
    unique_images,
)

UPSTREAM_CASES = Path(__file__).parent / "fixtures" / "upstream" / "testcases.jsonl"


def upstream_rows(section: str) -> list[dict]:
    rows = [json.loads(line) for line in UPSTREAM_CASES.read_text(encoding="utf-8").splitlines()]
    return [row for row in rows if row["section"] == section]


LIST_ROWS = upstream_rows("list")


def test_all_thirteen_upstream_rows_are_present() -> None:
    assert len(LIST_ROWS) == 13


@pytest.mark.parametrize("row", LIST_ROWS, ids=[repr(row["input"]) for row in LIST_ROWS])
def test_parse_matches_upstream_table(row: dict) -> None:
    # Go's nil slice is JSON null: no images.
    assert parse_image_list(row["input"]) == (row["output"] or [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Python's str.strip() would also remove U+001C..U+001F; Go's TrimSpace keeps them.
        ("\x1cnginx\n", ["\x1cnginx"]),
        ("nginx\x1f\n", ["nginx\x1f"]),
        ("\u2003nginx\u3000\n", ["nginx"]),
        ("\x85redis\n", ["redis"]),
        ("a\rb\n", ["a\rb"]),
        ("last-line-without-newline", ["last-line-without-newline"]),
    ],
)
def test_trimming_follows_go_not_python(text: str, expected: list[str]) -> None:
    assert parse_image_list(text) == expected


def test_go_trim_space_only_trims_the_ends() -> None:
    assert go_trim_space("\t a b \u00a0") == "a b"


def test_decode_rejects_invalid_utf8_naming_the_file() -> None:
    with pytest.raises(ValidationError, match=r"images_file '/x/list.txt' is not valid UTF-8 \(byte 1\)"):
        decode_image_list_file("/x/list.txt", b"a\xff\n")


def test_read_file_applies_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_bytes(b"# team images\nnginx:1\r\n\n  redis:7  \n")
    assert read_image_list_file(str(path)) == ["nginx:1", "redis:7"]


def test_read_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValidationError) as caught:
        read_image_list_file(str(missing))
    assert str(caught.value) == f"images_file {str(missing)!r} cannot be read: No such file or directory"


def test_listed_images_are_trimmed() -> None:
    assert clean_listed_images([" nginx\t", "redis\u00a0"]) == ["nginx", "redis"]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["ok", ""], r"images\[1\] is empty"),
        (["  \t"], r"images\[0\] is empty"),
        (["#nginx"], r"images\[0\] '#nginx' starts with '#' and would be read as a comment"),
        (["a\nb"], r"images\[0\] 'a'\.\.\. spans several lines"),
        ([3], r"images\[0\] must be a string, got int"),
    ],
)
def test_listed_images_errors(images: list, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        clean_listed_images(images)


def test_file_images_come_first_and_duplicates_stay_in_the_list() -> None:
    assert combine_image_lists(["a", "b"], ["b", "c"]) == ["a", "b", "b", "c"]


def test_unique_images_keep_first_seen_order() -> None:
    assert unique_images(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_image_list_text_round_trips_through_the_parser() -> None:
    images = ["nginx", "quay.io/foo/bar:1", "x"]
    assert image_list_text(images) == "nginx\nquay.io/foo/bar:1\nx\n"
    assert parse_image_list(image_list_text(images)) == images
    assert image_list_text([]) == ""


def test_size_limit_of_a_config_map() -> None:
    image = "registry.example.com/" + "a" * 200
    fits = [image] * (MAX_LIST_BYTES // (len(image) + 1))
    check_image_list_size(fits)
    with pytest.raises(ValidationError, match=r"the image list is \d+ bytes, more than the 1024000 bytes"):
        check_image_list_size([*fits, image])


# --- Image references (QA: an invalid entry was only found out on every node, after the apply) ----------------------


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "nginx:1.25",
        "registry.test:5000/team/app:v1",
        "localhost:5000/a_b__c-d/e.f:tag",
        "[::1]:5000/x:1",
        "REGISTRY.Example.COM/app:1",
        "app@sha256:" + "a" * 64,
        "app:1@sha256:" + "b" * 64,
        "ghcr.io/o/r:" + "t" * 128,
    ],
)
def test_valid_references_have_no_problem(image: str) -> None:
    assert reference_problem(image) is None


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("registry.test:5000/e2e/Invalid:v1", "the repository must be lower-case"),
        ("app:1  # main image", "tag '1  # main image' is not valid"),
        ("app@sha256:zz", "digest 'sha256:zz' is not '<algorithm>:<hex>'"),
        ("app:" + "t" * 129, "is not valid"),
        ("a b", "it does not match the reference format"),
        ("https://quay.io/app:1", "it does not match the reference format"),
        ("\ufeffapp:1", "it does not match the reference format"),
        ("a/" * 128 + "b", "longer than 255 characters"),
    ],
)
def test_invalid_references_are_named(image: str, problem: str) -> None:
    assert problem in (reference_problem(image) or "")


def test_reference_warning_names_each_bad_entry_once() -> None:
    assert reference_warning(["a:1", "b:2"]) is None
    warning = reference_warning(["a:1", "Bad:1", "x y", "Bad:1"]) or ""
    assert warning.startswith("2 image list entries are not a valid image reference, every node will fail them: ")
    assert warning.count("'Bad:1'") == 1 and "'x y'" in warning
    many = reference_warning([f"Bad{index}:1" for index in range(5)], shown=3) or ""
    assert many.endswith(" and 2 more") and "'Bad3:1'" not in many
    assert (reference_warning(["Bad:1"]) or "").startswith("1 image list entry is not a valid image reference")
