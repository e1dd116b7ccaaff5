"""Kubelet credential provider plugins (`--image-credential-provider-config` + `--image-credential-provider-bin-dir`).

As upstream (BEHAVIOR.md §4, TESTCASES.md §9): a `kubelet.config.k8s.io/v1` CredentialProviderConfig (YAML or JSON,
keys case-insensitive); every provider's binary is checked at start-up (fatal); a matching plugin is executed as
`<binDir>/<name> <args...>` with exactly
`{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"<image>"}\\n` on
stdin and a 1-minute timeout (also bounded by the overall deadline); its `credentialprovider.kubelet.k8s.io/v1`
response is validated as upstream does; the `auth` maps of every matching provider go into one keyring (the pull
secret's `DockerKeyring`, kubelet rules) and its lookup comes first in the image's credential list. A plugin error is a
WARN for that image, never fatal.

Differences from upstream (each fixes a quirk, following the kubelet):
* The provider's `env` is passed to the plugin, on top of the agent's environment (upstream drops it).
* `cacheKeyType` (Image | Registry | Global) and `cacheDuration` (default: the provider's `defaultCacheDuration`;
  0 = no caching) are honoured as the kubelet does, so N images on one registry with `cacheKeyType: Registry` cost one
  exec instead of N. Concurrent lookups that would share a cache entry share one exec (single flight): lookups are
  grouped by the cache key the provider last answered with (Registry until it has answered), and a lookup that waited
  on another's exec uses that exec's outcome when it covers its image (also an error, or a 0-duration answer).
  A response without a valid `cacheKeyType` (which the kubelet rejects) is used but not cached.
* `matchImages` and the response lookup see the image the way the kubelet does: the normalised repository
  (`docker.io/library/` added for Docker Hub names, tag and digest removed), matched with the same `urls_match`.
  So `nginx:latest` is `docker.io/library/nginx` (matched by `docker.io` or `*.*`; upstream's URL parse fails on
  `:latest` and matches nothing), and `*` matches only single-label hosts such as `localhost/app` (not `nginx`).
  The request's `image` stays the image as listed (upstream's exact bytes; the kubelet sends the bare repository).
* Only one of the two flags set is a WARN saying plugins are off (upstream: silently off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_prefetcher.durations import DurationError, parse_duration
from image_prefetcher.errors import CommandError
from image_prefetcher.keyring import Credential, DockerKeyring, urls_match
from image_prefetcher.logs import get_logger

CONFIG_KIND = "CredentialProviderConfig"
CONFIG_API_VERSION = "kubelet.config.k8s.io/v1"
RESPONSE_API_VERSION = "credentialprovider.kubelet.k8s.io/v1"
EXEC_TIMEOUT_S = 60.0
STDERR_LIMIT = 2048
CACHE_KEY_TYPES = ("Image", "Registry", "Global")
GLOBAL_KEY = "global"

log = get_logger()


class ProviderConfigError(Exception):
    """A bad config file or plugin binary: fatal at start-up."""


class PluginError(Exception):
    """One plugin execution failed: that plugin is skipped for that image."""


# --- case-insensitive JSON-ish field access (Go encoding/json matching) -------------------------------------


def _field(obj: Mapping[str, Any], name: str) -> Any:
    """Go's rule: an exact key wins, else the last case-insensitive match (unknown keys are ignored)."""
    if name in obj:
        return obj[name]
    found = None
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == name.lower():
            found = value
    return found


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {type(value).__name__}")
    return value


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of strings")
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))


def _duration_ns(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a duration string such as 5m, got {type(value).__name__}")
    return parse_duration(value)  # DurationError carries Go's text: time: invalid duration "x"


# --- the config file ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    name: str
    match_images: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    default_cache_duration_s: float = 0.0
    api_version: str = ""


def _parse_env(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of {{name, value}}")
    pairs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"{where}[{i}] must be a mapping with name and value")
        name = _string(_field(item, "name"), f"{where}[{i}].name")
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"{where}[{i}].name {name!r} is not a valid environment variable name")
        pairs.append((name, _string(_field(item, "value"), f"{where}[{i}].value")))
    return tuple(pairs)


def _parse_provider(raw: Any, index: int) -> Provider:
    where = f"providers[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping")
    name = _string(_field(raw, "name"), f"{where}.name")
    # The kubelet's validation: the name is a file in binDir, never a path.
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{where}.name {name!r} must be a plain file name in the bin dir")
    default_ns = _duration_ns(_field(raw, "defaultCacheDuration"), f"{where}.defaultCacheDuration") or 0
    if default_ns < 0:
        raise ValueError(f"{where}.defaultCacheDuration must not be negative")
    return Provider(
        name=name,
        match_images=_string_list(_field(raw, "matchImages"), f"{where}.matchImages"),
        args=_string_list(_field(raw, "args"), f"{where}.args"),
        env=_parse_env(_field(raw, "env"), f"{where}.env"),
        default_cache_duration_s=default_ns / 1e9,
        api_version=_string(_field(raw, "apiVersion"), f"{where}.apiVersion"),
    )


def parse_config(text: str) -> list[Provider]:
    """CredentialProviderConfig (YAML or JSON) -> providers; raises ProviderConfigError with the reason."""
    import yaml  # PyYAML: Debian's python3-yaml in the image; imported only when plugins are configured

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ProviderConfigError(f"error converting YAML to JSON: {err}") from None
    if not isinstance(document, dict):
        raise ProviderConfigError("the config must be a mapping with kind, apiVersion and providers")
    kind = _field(document, "kind")
    if kind != CONFIG_KIND:
        raise ProviderConfigError(f'unexpected kind "{kind or ""}", expected {CONFIG_KIND}')
    api_version = _field(document, "apiVersion")
    if api_version != CONFIG_API_VERSION:
        raise ProviderConfigError(f'unexpected API version "{api_version or ""}", expected "{CONFIG_API_VERSION}"')
    raw_providers = _field(document, "providers")
    if raw_providers is not None and not isinstance(raw_providers, list):
        raise ProviderConfigError("providers must be a list")
    try:
        return [_parse_provider(raw, i) for i, raw in enumerate(raw_providers or [])]
    except (ValueError, DurationError) as err:
        raise ProviderConfigError(str(err)) from None


def check_binaries(providers: Sequence[Provider], bin_dir: str) -> None:
    """Every provider's `<binDir>/<name>` must be an executable file (Go's exec.LookPath), else fatal."""
    for provider in providers:
        path = os.path.join(bin_dir, provider.name)
        reason = ""
        if not os.path.exists(path):
            reason = f"stat {path}: no such file or directory"
        elif os.path.isdir(path) or not os.access(path, os.X_OK):
            reason = "permission denied"
        if reason:
            raise ProviderConfigError(f'plugin binary {provider.name} not found in {bin_dir}: exec: "{path}": {reason}')


def load_providers(config_path: str, bin_dir: str) -> list[Provider]:
    """Start-up: read and check everything; CommandError (exit 1) with upstream's message prefixes."""
    prefix = "failed to initialize credential provider plugins"
    try:
        text = Path(config_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = f"open {config_path}: {err.strerror.lower()}" if isinstance(err, OSError) and err.strerror else err
        raise CommandError(f"{prefix}: failed to read credential provider config: {reason}") from None
    try:
        providers = parse_config(text)
    except ProviderConfigError as err:
        raise CommandError(f"{prefix}: failed to read credential provider config: {err}") from None
    try:
        check_binaries(providers, bin_dir)
    except ProviderConfigError as err:
        raise CommandError(f"{prefix}: {err}") from None
    for provider in providers:
        if not provider.match_images:
            log.warn("credential provider plugin has no matchImages and is never used", plugin=provider.name)
    log.info("initialized credential provider plugins", count=len(providers))
    return providers


# --- images the way the kubelet sees them -------------------------------------------------------------------


def normalized_repository(image: str) -> str:
    """Docker's ParseNormalizedNamed(image).Name(): `nginx:1` -> `docker.io/library/nginx` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = "docker.io", name
    else:
        domain, rest = first, name[slash + 1 :]
    if domain == "index.docker.io":
        domain = "docker.io"
    colon = rest.rfind(":")
    if colon >= 0 and "/" not in rest[colon:]:
        rest = rest[:colon]  # a tag (the domain, with any port, is already split off)
    if domain == "docker.io" and "/" not in rest:
        rest = "library/" + rest
    return f"{domain}/{rest}"


def registry_of(repository: str) -> str:
    """The kubelet's parseRegistry: everything before the first `/` (host and port)."""
    return repository.split("/", 1)[0]


def provider_matches(provider: Provider, image: str) -> bool:
    repository = normalized_repository(image)
    return any(urls_match(pattern, repository) for pattern in provider.match_images)


# --- request and response -----------------------------------------------------------------------------------


def _go_json(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        encoded = encoded.replace(raw, escaped)
    return encoded.replace("\u2029", "\\u2029")


def request_bytes(image: str) -> bytes:
    """Exactly upstream's stdin: Go json.Encoder output of the request (key order, HTML escaping, newline)."""
    return (
        '{"kind":"CredentialProviderRequest","apiVersion":"'
        + RESPONSE_API_VERSION
        + '","image":'
        + _go_json(image)
        + "}\n"
    ).encode("utf-8")


@dataclass(frozen=True)
class PluginResponse:
    auth: tuple[tuple[str, str, str], ...]  # (registry pattern, username, password) in response order
    cache_key_type: str = ""
    cache_duration_s: float | None = None  # None: not in the response (use the provider's default)

    def __repr__(self) -> str:
        # The passwords must never reach a log line or an error, even through repr().
        keys = [key for key, _, _ in self.auth]
        return f"PluginResponse(auth_keys={keys!r}, cache_key_type={self.cache_key_type!r})"


def _reject_constants(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def parse_response(data: bytes) -> PluginResponse:
    """Validate a plugin's stdout as upstream does; raises PluginError (texts never include credentials)."""
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constants)
    except (ValueError, UnicodeDecodeError) as err:
        # Python's message names the position only (never echoes the document, which may hold a password).
        raise PluginError(f"failed to parse plugin response: {_json_reason(err)}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise PluginError("failed to parse plugin response: json: cannot unmarshal into CredentialProviderResponse")
    try:
        api_version = _string(_field(document, "apiVersion"), "apiVersion")
        cache_key_type = _string(_field(document, "cacheKeyType"), "cacheKeyType")
        duration_ns = _duration_ns(_field(document, "cacheDuration"), "cacheDuration")
        auth = _parse_auth(_field(document, "auth"))
    except (ValueError, DurationError) as err:
        raise PluginError(f"failed to parse plugin response: {err}") from None
    if api_version != RESPONSE_API_VERSION:
        raise PluginError(
            "apiVersion from credential plugin response did not match expected apiVersion:"
            f"{RESPONSE_API_VERSION}, actual apiVersion:{api_version}"
        )
    duration_s = None if duration_ns is None else max(0, duration_ns) / 1e9
    return PluginResponse(auth, cache_key_type, duration_s)


def _json_reason(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        if err.msg == "Extra data":
            return f"invalid character after top-level value (offset {err.pos})"
        return f"{err.msg.lower()} (offset {err.pos})"
    if isinstance(err, UnicodeDecodeError):
        return "response is not UTF-8"
    return str(err)


def _parse_auth(value: Any) -> tuple[tuple[str, str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError("auth must be a mapping of registry to {username, password}")
    entries = []
    for key, entry in value.items():
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ValueError(f"auth[{key!r}] must be a mapping with username and password")
        username = _string(_field(entry, "username"), f"auth[{key!r}].username")
        password = _string(_field(entry, "password"), "a password")
        entries.append((key, username, password))
    return tuple(entries)


# --- executing a plugin -------------------------------------------------------------------------------------


async def exec_plugin(provider: Provider, bin_dir: str, image: str, timeout_s: float) -> PluginResponse:
    """Run the plugin once for `image`; kill it when `timeout_s` passes. Raises PluginError."""
    path = os.path.join(bin_dir, provider.name)
    env = dict(os.environ)
    env.update(provider.env)  # the provider's env wins over the agent's, as the kubelet merges them
    try:
        process = await asyncio.create_subprocess_exec(
            path,
            *provider.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as err:
        raise PluginError(f"plugin execution failed: {err.strerror or err}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(request_bytes(image)), timeout=timeout_s)
    except asyncio.TimeoutError:
        await _kill(process)
        raise PluginError(f"plugin execution failed: killed after {timeout_s:.3g}s timeout") from None
    except BaseException:
        await _kill(process)  # cancelled (SIGTERM, overall timeout): never leave the plugin running
        raise
    if process.returncode != 0:
        status = (
            f"exit status {process.returncode}"
            if (process.returncode or 0) > 0
            else f"signal: {_signal_name(-(process.returncode or 0))}"
        )
        text = stderr[:STDERR_LIMIT].decode("utf-8", errors="replace")
        raise PluginError(f"plugin execution failed: {status}, stderr: {text}")
    return parse_response(stdout)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name.lower().removeprefix("sig")
    except ValueError:
        return str(number)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        # The plugin runs in its own session: kill its whole process group (a shell plugin's children too).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except asyncio.TimeoutError:
            log.warn("credential provider plugin did not exit after SIGKILL", pid=process.pid)


# --- the credential source (cache + single flight) ----------------------------------------------------------


@dataclass
class _Entry:
    entries: tuple[tuple[str, str, str], ...]
    created: float
    expires: float
    cache_key: str


@dataclass
class _Flight:
    """The last outcome of an exec under one single-flight key (for lookups that waited on it)."""

    finished: float
    image: str
    cache_key: str | None  # None: valid only for the same image
    response: PluginResponse | None
    error: PluginError | None


@dataclass
class _ProviderState:
    provider: Provider
    cache: dict[str, _Entry] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    flights: dict[str, _Flight] = field(default_factory=dict)
    learned_key_type: str = "Registry"


def _cache_keys(image: str) -> tuple[str, str, str]:
    repository = normalized_repository(image)
    return f"image:{image}", f"registry:{registry_of(repository)}", GLOBAL_KEY


def _cache_key_for(key_type: str, image: str) -> str | None:
    image_key, registry_key, global_key = _cache_keys(image)
    return {"Image": image_key, "Registry": registry_key, "Global": global_key}.get(key_type)


class PluginCredentials:
    """The `CredentialSource` for plugins: `credentials_for(image)` -> plugin credentials in keyring order."""

    def __init__(
        self,
        providers: Sequence[Provider],
        bin_dir: str,
        deadline: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        exec_fn: Callable[[Provider, str, str, float], Any] | None = None,
    ) -> None:
        self._states = [_ProviderState(p) for p in providers]
        self._bin_dir = bin_dir
        self._deadline = deadline  # a clock() value: the run's overall deadline
        self._clock = clock
        self._exec = exec_fn or exec_plugin

    async def credentials_for(self, image: str) -> list[Credential]:
        keyring = DockerKeyring()
        for state in self._states:
            if not provider_matches(state.provider, image):
                continue
            try:
                entries = await self._entries(state, image)
            except PluginError as err:
                log.warn("credential provider plugin failed", plugin=state.provider.name, image=image, error=str(err))
                continue
            for key, username, password in entries:
                keyring.add(key, username, password, _invalid_key_logger(state.provider.name))
        found, _ = keyring.lookup(normalized_repository(image))
        if found:
            log.debug("got credentials from plugin", image=image, count=len(found))
        else:
            log.debug("no credentials present for image", image=image)
        return found

    def _cached(self, state: _ProviderState, image: str, now: float) -> _Entry | None:
        for key in _cache_keys(image):
            entry = state.cache.get(key)
            if entry is not None:
                if now < entry.expires:
                    return entry
                del state.cache[key]
        return None

    async def _entries(self, state: _ProviderState, image: str) -> tuple[tuple[str, str, str], ...]:
        requested = self._clock()
        hit = self._cached(state, image, requested)
        if hit is not None:
            return hit.entries
        flight_key = _cache_key_for(state.learned_key_type, image) or f"image:{image}"
        lock = state.locks.setdefault(flight_key, asyncio.Lock())
        async with lock:
            hit = self._cached(state, image, self._clock())
            if hit is not None:
                return hit.entries
            shared = state.flights.get(flight_key)
            if shared is not None and shared.finished >= requested and self._covers(shared, image):
                if shared.error is not None:
                    raise shared.error
                assert shared.response is not None
                return shared.response.auth
            return await self._run(state, image, flight_key)

    @staticmethod
    def _covers(flight: _Flight, image: str) -> bool:
        if flight.error is not None or flight.image == image:
            return True
        return flight.cache_key is not None and flight.cache_key in _cache_keys(image)

    async def _run(self, state: _ProviderState, image: str, flight_key: str) -> tuple[tuple[str, str, str], ...]:
        timeout = EXEC_TIMEOUT_S
        if self._deadline is not None:
            timeout = min(timeout, self._deadline - self._clock())
        if timeout <= 0:
            raise PluginError("plugin not executed: the overall timeout has passed")
        log.debug("executing credential provider plugin", plugin=state.provider.name, image=image)
        try:
            response: PluginResponse = await self._exec(state.provider, self._bin_dir, image, timeout)
        except PluginError as err:
            state.flights[flight_key] = _Flight(self._clock(), image, None, None, err)
            raise
        log.debug("received credentials from plugin", plugin=state.provider.name, count=len(response.auth))
        self._store(state, image, flight_key, response)
        return response.auth

    def _store(self, state: _ProviderState, image: str, flight_key: str, response: PluginResponse) -> None:
        now = self._clock()
        cache_key = _cache_key_for(response.cache_key_type, image)
        if cache_key is None:
            log.debug(
                "credential provider plugin response has no valid cacheKeyType, not caching",
                plugin=state.provider.name,
                cacheKeyType=response.cache_key_type,
            )
        else:
            state.learned_key_type = response.cache_key_type
        state.flights[flight_key] = _Flight(now, image, cache_key, response, None)
        duration = response.cache_duration_s
        if duration is None:
            duration = state.provider.default_cache_duration_s
        if cache_key is not None and duration > 0:
            state.cache[cache_key] = _Entry(response.auth, now, now + duration, cache_key)


def _invalid_key_logger(plugin: str) -> Callable[[str, str], None]:
    def report(key: str, error: str) -> None:
        log.warn(f'Entry "{key}" in dockercfg invalid ({error}), ignoring', plugin=plugin)

    return report


def plugin_source(config_path: str, bin_dir: str, deadline: float | None = None) -> PluginCredentials | None:
    """Start-up: None when plugins are off (a WARN when only one of the two flags is set), else the source."""
    if not config_path and not bin_dir:
        return None
    if not config_path or not bin_dir:
        given, missing = (
            ("--image-credential-provider-config", "--image-credential-provider-bin-dir")
            if config_path
            else ("--image-credential-provider-bin-dir", "--image-credential-provider-config")
        )
        log.warn(f"{given} is set but {missing} is not: credential provider plugins are disabled")
        return None
    return PluginCredentials(load_providers(config_path, bin_dir), bin_dir, deadline)
