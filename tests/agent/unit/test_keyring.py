"""Keyring semantics, every row of TESTCASES.md §1-§5 (driven from TESTCASES.jsonl)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from casedata import upstream_cases

from image_prefetcher.keyring import (
    ConfigError,
    Credential,
    decode_auth_field,
    decode_docker_config,
    decode_entry,
    is_default_registry_match,
    keyring_from_entries,
    normalize_key,
    urls_match,
)


def case_id(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row.items() if k not in ("section", "origin")})[:80]


@pytest.mark.parametrize("row", upstream_cases("urls"), ids=case_id)
def test_urls_match(row: dict[str, Any]) -> None:
    assert urls_match(row["glob"], row["target"]) is row["match"]


@pytest.mark.parametrize("row", upstream_cases("default"), ids=case_id)
def test_default_registry_detection(row: dict[str, Any]) -> None:
    assert is_default_registry_match(row["image"]) is row["result"]


@pytest.mark.parametrize("row", upstream_cases("authfield"), ids=case_id)
def test_auth_field_decoding(row: dict[str, Any]) -> None:
    if row["err"]:
        with pytest.raises(ConfigError) as caught:
            decode_auth_field(row["input"])
        assert str(caught.value) == row["err"]
    else:
        assert decode_auth_field(row["input"]) == (row["user"], row["pass"])


@pytest.mark.parametrize("row", upstream_cases("entry"), ids=case_id)
def test_entry_decoding(row: dict[str, Any]) -> None:
    if row["err"]:
        with pytest.raises(ConfigError) as caught:
            decode_entry(json.loads(row["input"]))
        assert str(caught.value) == row["err"]
    else:
        entry = decode_entry(json.loads(row["input"]))
        assert (entry.username, entry.password, entry.email) == (row["user"], row["pass"], row["email"])


INDEXES = {row["name"]: row for row in upstream_cases("keyringindex")}


@pytest.mark.parametrize("row", list(INDEXES.values()), ids=lambda row: row["name"])
def test_keyring_index(row: dict[str, Any]) -> None:
    invalid: list[str] = []
    keyring = keyring_from_entries(
        decode_docker_config(json.dumps({"auths": json.loads(row["config"])})), lambda key, err: invalid.append(key)
    )
    assert keyring.index == row["index"]
    if row["name"] == "case-and-invalid":
        assert invalid == ["quay.io:abc", "bad host"]  # skipped with a log line, the file still loads


@pytest.mark.parametrize("row", upstream_cases("keyring"), ids=lambda row: f"{row['name']}:{row.get('image')}")
def test_keyring_lookup(row: dict[str, Any]) -> None:
    if "parseErr" in row:
        with pytest.raises(ConfigError) as caught:
            decode_docker_config(json.dumps({"auths": json.loads(row["config"])}))
        assert str(caught.value) == row["parseErr"]
        return
    config = json.loads(INDEXES[row["name"]]["config"])
    keyring = keyring_from_entries(decode_docker_config(json.dumps({"auths": config})))
    creds, found = keyring.lookup(row["image"])
    assert found is row["ok"]
    # Same-key duplicates keep the file's order (deterministic; upstream's order is random).
    assert [f"{c.username}:{c.password}" for c in creds] == row["creds"]


def test_whole_file_shapes() -> None:
    both = {
        "http://foo.example.com": {"username": "foo", "password": "bar", "email": "foo@example.com"},
        "http://bar.example.com": {"username": "bar", "password": "baz", "email": "bar@example.com"},
    }
    decoded = decode_docker_config(json.dumps({"auths": both}))
    assert {k: (v.username, v.password, v.email) for k, v in decoded.items()} == {
        "http://foo.example.com": ("foo", "bar", "foo@example.com"),
        "http://bar.example.com": ("bar", "baz", "bar@example.com"),
    }
    assert decode_docker_config(json.dumps(both)) == {}  # legacy bare map: no `auths`, no credentials
    assert decode_docker_config("null") == {} and decode_docker_config('{"auths": null}') == {}
    with pytest.raises(ConfigError):
        decode_docker_config("[1]")
    with pytest.raises(ConfigError):
        decode_docker_config("{not json")


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("https://quay.io/v1/", "quay.io"),
        ("http://r.io/v2/team", "r.io/team"),
        ("r.io/v1", "r.io/v1"),
        ("r.io/", "r.io"),
        ("R.io:5000/x/", "R.io:5000/x/"),
    ],
)
def test_key_normalisation(key: str, normalized: str) -> None:
    assert normalize_key(key) == normalized


def test_credential_never_shows_its_password() -> None:
    cred = Credential("robot", "hunter2-secret", "quay.io")
    for text in (repr(cred), str(cred), f"{cred}", repr([cred])):
        assert "hunter2-secret" not in text
        assert "robot" in text
