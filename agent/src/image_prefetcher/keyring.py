"""Kubelet docker-config keyring semantics (BEHAVIOR.md §3): pure functions, no I/O.

Reused by the credential-provider plugin code for plugin responses: `urls_match`, `normalize_key`,
`DockerKeyring` (add entries, then `lookup(image)`).

Decision on an upstream quirk: several entries that normalise to the same key keep the order in which they were
added (for a docker config file: the file's order), where upstream's order is random (Go map iteration).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REGISTRY_KEY = "index.docker.io"
_AUTH_FORMAT_ERROR = "unable to parse auth field, must be formatted as base64(username:password)"


@dataclass(frozen=True)
class Credential:
    """A registry login. `server` is the keyring key it was found under (not a secret; used in logs)."""

    username: str
    password: str = field(repr=False)
    server: str = ""

    def __repr__(self) -> str:
        # The password must never reach a log line, an error or a result, even through repr().
        return f"Credential(username={self.username!r}, password='<redacted>', server={self.server!r})"

    __str__ = __repr__


class ConfigError(ValueError):
    """The docker config cannot be decoded (the whole file fails, as upstream)."""


# --- Go net/url emulation (only what URL-parsing "https://" + key needs) -----------------------------------

_HOST_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$&'()*+,;=:[]<>\"-_.~")
_USERINFO_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:~!$&'()*+,;=%@")
_HEX = "0123456789abcdefABCDEF"


class UrlError(ValueError):
    pass


def _valid_optional_port(colon_port: str) -> bool:
    return colon_port == "" or (colon_port[0] == ":" and all(c in "0123456789" for c in colon_port[1:]))


def _check_escapes(text: str) -> None:
    for i, ch in enumerate(text):
        if ch == "%" and not (len(text) >= i + 3 and text[i + 1] in _HEX and text[i + 2] in _HEX):
            raise UrlError(f"invalid URL escape {text[i : i + 3]!r}")


def _unescape(text: str) -> str:
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _parse_host(host: str) -> str:
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise UrlError("missing ']' in host")
        if not _valid_optional_port(host[end + 1 :]):
            raise UrlError(f"invalid port {host[end + 1 :]!r} after host")
    elif ":" in host and not _valid_optional_port(host[host.rfind(":") :]):
        raise UrlError(f"invalid port {host[host.rfind(':') :]!r} after host")
    for ch in host:
        if ch == "%":
            raise UrlError("invalid URL escape in host")
        if ord(ch) < 0x80 and ch not in _HOST_OK:
            raise UrlError(f"invalid character {ch!r} in host name")
    return host


def parse_https_url(text: str) -> tuple[str, str]:
    """(host, unescaped path) of Go's url.Parse("https://" + text) for keys and images; raises UrlError."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise UrlError("invalid control character in URL")
    rest = text.split("#", 1)[0].split("?", 1)[0]
    authority, slash, path = rest.partition("/")
    path = slash + path
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        if any(ch not in _USERINFO_OK for ch in userinfo):
            raise UrlError("invalid userinfo")
    host = _parse_host(authority)
    _check_escapes(path)
    return host, _unescape(path)


def _split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort, falling back to (hostport, "") on any error as URLsMatch does."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 :].startswith(":") or ":" in hostport[end + 2 :]:
            return hostport, ""
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return hostport, ""
    host, _, port = hostport.partition(":")
    return host, port


def _label_matches(pattern: str, label: str) -> bool:
    if not any(ch in pattern for ch in "?[\\"):
        regex = ".*".join(re.escape(part) for part in pattern.split("*"))
        return re.fullmatch(regex, label, flags=re.DOTALL) is not None
    return fnmatch.fnmatchcase(label, pattern)  # unreachable for valid hosts; close to filepath.Match


def urls_match(glob: str, target: str) -> bool:
    """Kubelet URLsMatchStr: host labels glob-matched one to one, ports equal, glob path a string prefix."""
    try:
        glob_host, glob_path = parse_https_url(glob)
        target_host, target_path = parse_https_url(target)
    except UrlError:
        return False
    glob_hostname, glob_port = _split_host_port(glob_host)
    target_hostname, target_port = _split_host_port(target_host)
    if glob_port != target_port:
        return False
    glob_labels, target_labels = glob_hostname.split("."), target_hostname.split(".")
    if len(glob_labels) != len(target_labels) or not target_path.startswith(glob_path):
        return False
    return all(_label_matches(g, t) for g, t in zip(glob_labels, target_labels))


def is_default_registry_match(image: str) -> bool:
    """Docker Hub detection of the kubelet keyring (`localhost/foo` counts as Docker Hub, as upstream)."""
    first, slash, _ = image.partition("/")
    if not first:
        return False
    if not slash or first in ("docker.io", "index.docker.io"):
        return True
    return "." not in first and ":" not in first


def normalize_key(key: str) -> str:
    """Keyring key of a docker-config or plugin entry: scheme dropped, `/v1/`/`/v2/` prefix removed (UrlError)."""
    if key.startswith("https://"):
        rest = key[len("https://") :]
    elif key.startswith("http://"):
        rest = key[len("http://") :]
    else:
        rest = key
    host, path = parse_https_url(rest)
    if path.startswith(("/v2/", "/v1/")):
        path = path[3:]
    return host + path if path and path != "/" else host


class DockerKeyring:
    """Credentials indexed by normalised key; lookup walks the keys in reverse byte order (kubelet semantics)."""

    def __init__(self) -> None:
        self._creds: dict[str, list[Credential]] = {}

    def add(self, key: str, username: str, password: str, on_invalid: Callable[[str, str], None] | None = None) -> bool:
        """Add one entry; an unparsable key is skipped (reported through on_invalid(key, error)), not fatal."""
        try:
            normalized = normalize_key(key)
        except UrlError as err:
            if on_invalid is not None:
                on_invalid(key, str(err))
            return False
        self._creds.setdefault(normalized, []).append(Credential(username, password, normalized))
        return True

    @property
    def index(self) -> list[str]:
        # Python orders str by code point, which equals Go's byte order of the UTF-8 encoding.
        return sorted(self._creds, reverse=True)

    def __len__(self) -> int:
        return sum(len(creds) for creds in self._creds.values())

    def lookup(self, image: str) -> tuple[list[Credential], bool]:
        found = [cred for key in self.index if urls_match(key, image) for cred in self._creds[key]]
        if found:
            return found, True
        if is_default_registry_match(image) and DEFAULT_REGISTRY_KEY in self._creds:
            return list(self._creds[DEFAULT_REGISTRY_KEY]), True
        return [], False


# --- docker config JSON decoding ---------------------------------------------------------------------------

_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _go_base64_error_offset(text: str, padded: bool) -> int | None:
    """Byte offset Go's base64 decoder reports for `text` (None if Go accepts it); mirrors decodeQuantum."""
    src = text.encode()
    si = 0
    while si < len(src):
        j = 0
        while j < 4:
            if si == len(src):
                if j == 0:
                    return None
                if j == 1 or padded:
                    return si - j
                return None
            ch = src[si]
            si += 1
            if chr(ch) in _BASE64_ALPHABET:
                j += 1
                continue
            if ch in (0x0A, 0x0D):
                continue
            if ch != 0x3D or not padded or j < 2:
                return si - 1
            if j == 2:
                while si < len(src) and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == len(src):
                    return len(src)
                if src[si] != 0x3D:
                    return si - 1
                si += 1
            while si < len(src) and src[si] in (0x0A, 0x0D):
                si += 1
            return si if si < len(src) else None
    return None


def decode_auth_field(value: str) -> tuple[str, str]:
    """base64(`user:pass`) -> (user, pass), with Go's padded/unpadded choice and error texts; raises ConfigError."""
    padded = value.strip().endswith("=")
    offset = _go_base64_error_offset(value, padded)
    if offset is not None:
        raise ConfigError(f"illegal base64 data at input byte {offset}")
    cleaned = value.replace("\r", "").replace("\n", "")
    try:
        decoded = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except binascii.Error as err:  # not expected after the check above; keep the message generic
        raise ConfigError("illegal base64 data") from err
    text = decoded.decode("utf-8", errors="replace")
    if ":" not in text:
        raise ConfigError(_AUTH_FORMAT_ERROR)
    username, _, password = text.partition(":")
    return username, password


_JSON_TYPE_NAMES = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def _type_error(value: Any, where: str, expected: str) -> ConfigError:
    kind = _JSON_TYPE_NAMES.get(type(value), "value")
    return ConfigError(f"json: cannot unmarshal {kind} into {where} of type {expected}")


@dataclass(frozen=True)
class DockerConfigEntry:
    username: str = ""
    password: str = field(default="", repr=False)
    email: str = ""


def decode_entry(raw: Any) -> DockerConfigEntry:
    """One `auths` value: keys case-insensitive (last wins), unknown keys ignored, non-empty `auth` wins."""
    if raw is None:
        return DockerConfigEntry()
    if not isinstance(raw, dict):
        raise _type_error(raw, "Go value", "credentialprovider.dockerConfigEntryWithAuth")
    fields = {"username": "", "password": "", "email": "", "auth": ""}
    for key, value in raw.items():
        name = key.lower()
        if name not in fields or value is None:
            continue
        if not isinstance(value, str):
            raise _type_error(value, f"Go struct field dockerConfigEntryWithAuth.{name}", "string")
        fields[name] = value
    email = fields["email"]
    if not fields["auth"]:
        return DockerConfigEntry(fields["username"], fields["password"], email)
    username, password = decode_auth_field(fields["auth"])
    return DockerConfigEntry(username, password, email)


def decode_docker_config(text: str | bytes) -> dict[str, DockerConfigEntry]:
    """`.dockerconfigjson` content -> {original key: entry} from its `auths` (a bare legacy map yields nothing)."""
    try:
        document = json.loads(text)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise _type_error(document, "Go value", "credentialprovider.DockerConfigJSON")
    auths: Any = None
    for key, value in document.items():
        if key.lower() == "auths":
            auths = value
        elif key.lower() == "httpheaders" and value is not None and not isinstance(value, dict):
            raise _type_error(value, "Go struct field DockerConfigJSON.HttpHeaders", "map[string]string")
    if auths is None:
        return {}
    if not isinstance(auths, dict):
        raise _type_error(auths, "Go struct field DockerConfigJSON.auths", "credentialprovider.DockerConfig")
    return {key: decode_entry(value) for key, value in auths.items()}


def keyring_from_entries(
    entries: Mapping[str, DockerConfigEntry] | Iterable[tuple[str, DockerConfigEntry]],
    on_invalid: Callable[[str, str], None] | None = None,
) -> DockerKeyring:
    keyring = DockerKeyring()
    items = entries.items() if isinstance(entries, Mapping) else entries
    for key, entry in items:
        keyring.add(key, entry.username, entry.password, on_invalid)
    return keyring
