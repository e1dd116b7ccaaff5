# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node-label key for remove_node_labels must be the agent's: every row of upstream TESTCASES §6."""

from __future__ import annotations

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._nodelabels import (
    node_label_key,
    sanitize_instance_name,
)

# (instance name, sanitised), copied verbatim from TESTCASES.jsonl section "label" (rows of origin U and X).
TESTCASES_SECTION_6 = [
    ("my-images", "my-images"),
    ("my_images", "my_images"),
    ("my.images", "my.images"),
    ("my images", "my-images"),
    ("-my-images", "my-images"),
    ("my-images-", "my-images"),
    (
        "this-is-a-very-long-instance-name-that-exceeds-sixty-three-characters-and-should-be-truncated",
        "this-is-a-very-long-instance-name-that-exceeds-sixty-three-char",
    ),
    ("my@images!", "my-images"),
    ("", "prefetcher"),
    ("!!!", "prefetcher"),
    ("my images!", "my-images"),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    ("__init__", "init"),
    ("..a..", "a"),
    ("a//b", "a-b"),
    ("ümlaut", "mlaut"),
    ("日本", "prefetcher"),
    ("a  b   c", "a-b-c"),
    (
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx!",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ),
    ("My.Images_1", "My.Images_1"),
    ("-_.", "prefetcher"),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-b",
    ),
    ("a\tb\nc", "a-b-c"),
]


@pytest.mark.parametrize(("name", "expected"), TESTCASES_SECTION_6)
def test_sanitize_matches_testcases(name: str, expected: str) -> None:
    assert sanitize_instance_name(name) == expected


def test_label_key_has_the_agent_prefix() -> None:
    assert node_label_key("my images") == "image-prefetcher.stackrox.io/my-images"


def test_sanitised_name_is_a_valid_label_name_part() -> None:
    for name, _expected in TESTCASES_SECTION_6:
        sanitised = sanitize_instance_name(name)
        assert 0 < len(sanitised.encode()) <= 63
        assert sanitised[0].isalnum() and sanitised[-1].isalnum()
