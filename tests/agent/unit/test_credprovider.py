"""Credential provider plugins: TESTCASES.md §9 (exec + responses), config parsing, matchImages, caching, env."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from image_prefetcher import credprovider as cp
from image_prefetcher.errors import CommandError

V1 = "credentialprovider.kubelet.k8s.io/v1"
BASIC_RESPONSE = {
    "apiVersion": V1,
    "kind": "CredentialProviderResponse",
    "auth": {"foo": {"username": "user", "password": "not-a-secret"}},
}

# upstream's test_data/fake_plugin: saves stdin to $1, prints file $2, exits $3.
UPSTREAM_FAKE_PLUGIN = '#!/bin/sh\ncat > "$1"\ncat "$2"\nexit "$3"\n'

# Our counting plugin: logs each exec to $EXECS, answers $RESPONSE (from the provider's env), may sleep first.
COUNTING_PLUGIN = """#!/bin/sh
cat > /dev/null
echo "${TAG:-x}" >> "$EXECS"
if [ -n "$SLEEP" ]; then sleep "$SLEEP"; fi
printf '%s' "$RESPONSE"
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path



# --- TESTCASES §9: exec --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("exit_code", "ok"), [(0, True), (1, False)])
def test_upstream_exec_cases(tmp_path: Path, exit_code: int, ok: bool, records: list[logging.LogRecord]) -> None:
    _script(tmp_path / "fake_plugin", UPSTREAM_FAKE_PLUGIN)
    (tmp_path / "basic-response.json").write_text(json.dumps(BASIC_RESPONSE, indent=2))
    stdin_file = tmp_path / "stdin"
    provider = cp.Provider(
        "fake_plugin", ("*",), args=(str(stdin_file), str(tmp_path / "basic-response.json"), str(exit_code))
    )
    if ok:
        response = asyncio.run(cp.exec_plugin(provider, str(tmp_path), "foo-image", 10))
        assert response.auth == (("foo", "user", "not-a-secret"),)
    else:
        with pytest.raises(cp.PluginError) as caught:
            asyncio.run(cp.exec_plugin(provider, str(tmp_path), "foo-image", 10))
        assert str(caught.value) == "plugin execution failed: exit status 1, stderr: "
    expected = (
        b'{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1",'
        b'"image":"foo-image"}\n'
    )
    assert stdin_file.read_bytes() == expected


def test_request_bytes_escape_like_go() -> None:
    assert cp.request_bytes('a<b>&"c"') == (
        b'{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1",'
        b'"image":"a\\u003cb\\u003e\\u0026\\"c\\""}\n'
    )


def test_a_failing_plugin_is_a_warning_and_the_image_gets_no_plugin_credentials(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    _script(tmp_path / "fake_plugin", UPSTREAM_FAKE_PLUGIN)
    (tmp_path / "r.json").write_text(json.dumps(BASIC_RESPONSE))
    provider = cp.Provider("fake_plugin", ("*",), args=(str(tmp_path / "in"), str(tmp_path / "r.json"), "1"))
    source = cp.PluginCredentials([provider], str(tmp_path))
    assert asyncio.run(source.credentials_for("localhost/foo")) == []
    warn = [r for r in records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warn] == ["credential provider plugin failed"]
    assert warn[0].__dict__["attrs"] == {
        "plugin": "fake_plugin",
        "image": "localhost/foo",
        "error": "plugin execution failed: exit status 1, stderr: ",
    }


# --- TESTCASES §9: response parsing -------------------------------------------------------------------------

RESPONSE_ROWS: list[tuple[str, Any]] = [
    (
        '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","auth":{"foo":'
        '{"username":"user","password":"not-a-secret"}}}',
        [("foo", "user", "not-a-secret")],
    ),
    (
        '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":'
        '"Registry","cacheDuration":"6h","auth":{"*.gcr.io":{"username":"_token","password":"ya29"},"gcr.io":'
        '{"username":"_token","password":"ya29"}}}',
        [("*.gcr.io", "_token", "ya29"), ("gcr.io", "_token", "ya29")],
    ),
    (
        '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheDuration":"bogus","auth":{}}',
        'failed to parse plugin response: time: invalid duration "bogus"',
    ),
    (
        '{"APIVERSION":"credentialprovider.kubelet.k8s.io/v1","Auth":{"x":{"Username":"u","Password":"p"}}}',
        [("x", "u", "p")],
    ),
    (
        '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","auth":{}}',
        "apiVersion from credential plugin response did not match expected apiVersion:"
        "credentialprovider.kubelet.k8s.io/v1, actual apiVersion:credentialprovider.kubelet.k8s.io/v1beta1",
    ),
    ('{"apiVersion":"credentialprovider.kubelet.k8s.io/v1"}', []),
    ("not json", "failed to parse plugin response: "),
    (
        '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","auth":{"x":{"username":"u","password":"p","extra":1}},'
        '"unknown":true}\ntrailing',
        "failed to parse plugin response: invalid character after top-level value",
    ),
    ('{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","auth":{"x":{"username":"u"}}}', [("x", "u", "")]),
]


@pytest.mark.parametrize(("stdout", "expected"), RESPONSE_ROWS)
def test_response_rows(stdout: str, expected: Any) -> None:
    if isinstance(expected, list):
        assert list(cp.parse_response(stdout.encode()).auth) == expected
    else:
        with pytest.raises(cp.PluginError) as caught:
            cp.parse_response(stdout.encode())
        assert str(caught.value).startswith(expected)


def test_response_cache_fields() -> None:
    parsed = cp.parse_response(RESPONSE_ROWS[1][0].encode())
    assert (parsed.cache_key_type, parsed.cache_duration_s) == ("Registry", 6 * 3600)
    assert cp.parse_response(RESPONSE_ROWS[0][0].encode()).cache_duration_s is None


def test_errors_and_repr_never_show_a_password() -> None:
    secret = "hunter2-secret"
    bad_type = json.dumps({"apiVersion": V1, "auth": {"x": {"username": "u", "password": 5}}}).replace("5", "5")
    for data in (f'{{"apiVersion":"{V1}","auth":{{"x":{{"password":"{secret}"}}}}}} junk', bad_type):
        with pytest.raises(cp.PluginError) as caught:
            cp.parse_response(data.encode())
        assert secret not in str(caught.value)
    ok = cp.parse_response(json.dumps({"apiVersion": V1, "auth": {"x": {"password": secret}}}).encode())
    assert secret not in repr(ok)


# --- config ----------------------------------------------------------------------------------------------------

YAML_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: gke-auth
    matchImages: ["*.gcr.io", "*.pkg.dev", container.cloud.google.com]
    defaultCacheDuration: 1m
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [get-credentials, --v=3]
    env:
      - name: HOME
        value: /tmp
"""


def test_yaml_config() -> None:
    (provider,) = cp.parse_config(YAML_CONFIG)
    assert provider == cp.Provider(
        "gke-auth",
        ("*.gcr.io", "*.pkg.dev", "container.cloud.google.com"),
        ("get-credentials", "--v=3"),
        (("HOME", "/tmp"),),
        60.0,
        V1,
    )


def test_json_config_with_any_key_case() -> None:
    text = json.dumps(
        {
            "APIVERSION": "kubelet.config.k8s.io/v1",
            "Kind": "CredentialProviderConfig",
            "Providers": [{"Name": "p", "MATCHIMAGES": ["x.io"], "unknown": 1}],
        }
    )
    assert cp.parse_config(text) == [cp.Provider("p", ("x.io",))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: Other\napiVersion: kubelet.config.k8s.io/v1\n",
            'unexpected kind "Other", expected CredentialProviderConfig',
        ),
        (
            "kind: CredentialProviderConfig\napiVersion: kubelet.config.k8s.io/v1beta1\n",
            'unexpected API version "kubelet.config.k8s.io/v1beta1", expected "kubelet.config.k8s.io/v1"',
        ),
        ("kind: CredentialProviderConfig\n", 'unexpected API version "", expected "kubelet.config.k8s.io/v1"'),
        ("[1, 2", "error converting YAML to JSON"),
        ("- a\n", "the config must be a mapping"),
        (
            "kind: CredentialProviderConfig\napiVersion: kubelet.config.k8s.io/v1\nproviders:\n- name: ../x\n",
            "must be a plain file name",
        ),
        (
            "kind: CredentialProviderConfig\napiVersion: kubelet.config.k8s.io/v1\nproviders:\n- name: p\n"
            "  defaultCacheDuration: 1d\n",
            'time: unknown unit "d" in duration "1d"',
        ),
        (
            "kind: CredentialProviderConfig\napiVersion: kubelet.config.k8s.io/v1\nproviders:\n- name: p\n"
            "  matchImages: x.io\n",
            "matchImages must be a list",
        ),
        (
            "kind: CredentialProviderConfig\napiVersion: kubelet.config.k8s.io/v1\nproviders:\n- name: p\n"
            "  env: [{name: 'A=B', value: x}]\n",
            "is not a valid environment variable name",
        ),
    ],
)
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(cp.ProviderConfigError) as caught:
        cp.parse_config(text)
    assert message in str(caught.value)


def test_load_providers_checks_binaries(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(YAML_CONFIG)
    with pytest.raises(CommandError) as caught:
        cp.load_providers(str(config), str(tmp_path))
    assert str(caught.value) == (
        f"failed to initialize credential provider plugins: plugin binary gke-auth not found in {tmp_path}: "
        f'exec: "{tmp_path}/gke-auth": stat {tmp_path}/gke-auth: no such file or directory'
    )
    (tmp_path / "gke-auth").write_text("#!/bin/sh\n")
    with pytest.raises(CommandError, match="permission denied"):
        cp.load_providers(str(config), str(tmp_path))
    (tmp_path / "gke-auth").chmod(0o755)
    assert [p.name for p in cp.load_providers(str(config), str(tmp_path))] == ["gke-auth"]
    with pytest.raises(CommandError) as caught:
        cp.load_providers(str(tmp_path / "missing.yaml"), str(tmp_path))
    assert str(caught.value) == (
        "failed to initialize credential provider plugins: failed to read credential provider config: "
        f"open {tmp_path}/missing.yaml: no such file or directory"
    )


@pytest.mark.parametrize(("config", "bin_dir"), [("c.yaml", ""), ("", "/bin")])
def test_only_one_flag_is_a_warning(config: str, bin_dir: str, records: list[logging.LogRecord]) -> None:
    assert cp.plugin_source(config, bin_dir) is None
    (warning,) = [r.getMessage() for r in records if r.levelname == "WARNING"]
    assert "credential provider plugins are disabled" in warning


def test_no_flag_is_silent(records: list[logging.LogRecord]) -> None:
    assert cp.plugin_source("", "") is None
    assert records == []


# --- images as the kubelet sees them, matchImages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:latest", "docker.io/library/nginx"),
        ("library/nginx:1.25", "docker.io/library/nginx"),
        ("index.docker.io/foo/bar", "docker.io/foo/bar"),
        ("docker.io/nginx@sha256:abc", "docker.io/library/nginx"),
        ("localhost/a", "localhost/a"),
        ("localhost:5000/foo:v1", "localhost:5000/foo"),
        ("registry.test:5000/team/app:v1", "registry.test:5000/team/app"),
        ("gcr.io/p/img@sha256:0123", "gcr.io/p/img"),
        ("quay.io/a/b:c@sha256:1", "quay.io/a/b"),
        ("Foo/bar", "Foo/bar"),  # an uppercase first part is a host name to docker's parser
    ],
)
def test_normalized_repository(image: str, repository: str) -> None:
    assert cp.normalized_repository(image) == repository


@pytest.mark.parametrize(
    ("pattern", "image", "matches"),
    [
        ("*", "nginx:latest", False),  # docker.io/library/nginx has two host labels
        ("*.*", "nginx:latest", True),  # upstream: URL parse of `nginx:latest` fails, nothing matches
        ("docker.io", "nginx:latest", True),
        ("*", "nginx", False),  # upstream: yes (raw single-label host `nginx`)
        ("*", "localhost/a", True),
        ("*", "gcr.io/a", False),
        ("*.gcr.io", "gcr.io/my-project/app:v1", False),
        ("gcr.io", "gcr.io/my-project/app:v1", True),
        ("*.gcr.io", "us.gcr.io/p/app", True),
        ("*.pkg.dev", "us-docker.pkg.dev/p/r/app:1", True),
        ("registry.test:5000", "registry.test:5000/team/app:v1", True),
        ("registry.test", "registry.test:5000/team/app:v1", False),
        ("quay.io/foo", "quay.io/foobar:1", True),
        ("quay.io", "quay.io@sha256:abc", False),
    ],
)
def test_match_images_like_the_kubelet(pattern: str, image: str, matches: bool) -> None:
    assert cp.provider_matches(cp.Provider("p", (pattern,)), image) is matches


# --- caching and single flight (a counting plugin script) -------------------------------------------------


def _counting(tmp_path: Path, response: dict[str, Any], name: str = "counter", **env: str) -> cp.Provider:
    _script(tmp_path / name, COUNTING_PLUGIN)
    environment = {"EXECS": str(tmp_path / f"{name}.execs"), "RESPONSE": json.dumps(response), **env}
    return cp.Provider(name, ("*.test:5000", "*.example.com"), env=tuple(environment.items()))


def _execs(tmp_path: Path, name: str = "counter") -> int:
    path = tmp_path / f"{name}.execs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _response(key_type: str | None, duration: str | None, key: str = "*.test:5000") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": V1,
        "kind": "CredentialProviderResponse",
        "auth": {key: {"username": "plugin-user", "password": "plugin-pass"}},
    }
    if key_type is not None:
        body["cacheKeyType"] = key_type
    if duration is not None:
        body["cacheDuration"] = duration
    return body


IMAGES = ["registry.test:5000/a:v1", "registry.test:5000/b:v1", "registry.test:5000/c:v1"]


async def _lookup(source: cp.PluginCredentials, images: list[str]) -> list[list[str]]:
    found = await asyncio.gather(*(source.credentials_for(image) for image in images))
    return [[f"{c.username}@{c.server}" for c in creds] for creds in found]


def _lookup_all(source: cp.PluginCredentials, images: list[str]) -> list[list[str]]:
    return asyncio.run(_lookup(source, images))


@pytest.mark.parametrize(
    ("key_type", "duration", "concurrent_execs", "again_execs"),
    [
        ("Registry", "1h", 1, 0),  # one exec for the registry, cached for the next round too
        ("Global", "1h", 1, 0),
        ("Image", "1h", 3, 0),  # one per image, then cached
        ("Registry", "0s", 1, 3),  # one exec shared by the concurrent lookups, never cached
        ("Registry", None, 1, 3),  # no cacheDuration: the provider's default (0 here) = no caching
        (None, None, 3, 3),  # no cacheKeyType: used, never cached
    ],
)
def test_cache_key_types(
    tmp_path: Path, key_type: str | None, duration: str | None, concurrent_execs: int, again_execs: int
) -> None:
    provider = _counting(tmp_path, _response(key_type, duration), SLEEP="0.2")
    source = cp.PluginCredentials([provider], str(tmp_path))

    async def two_rounds() -> list[int]:
        # One event loop, as in the agent: first all images at once, then one after another.
        assert await _lookup(source, IMAGES) == [["plugin-user@*.test:5000"]] * 3
        execs = [_execs(tmp_path)]
        for image in IMAGES:
            assert await _lookup(source, [image]) == [["plugin-user@*.test:5000"]]
        return [*execs, _execs(tmp_path)]

    assert asyncio.run(two_rounds()) == [concurrent_execs, concurrent_execs + again_execs]


def test_default_cache_duration_applies_when_the_response_has_none(tmp_path: Path) -> None:
    provider = _counting(tmp_path, _response("Registry", None))
    provider = cp.Provider(provider.name, provider.match_images, env=provider.env, default_cache_duration_s=3600)
    source = cp.PluginCredentials([provider], str(tmp_path))
    for image in IMAGES:
        _lookup_all(source, [image])
    assert _execs(tmp_path) == 1


def test_entries_expire(tmp_path: Path) -> None:
    now = [1000.0]
    provider = _counting(tmp_path, _response("Registry", "10s"))
    source = cp.PluginCredentials([provider], str(tmp_path), clock=lambda: now[0])
    _lookup_all(source, IMAGES[:1])
    now[0] += 9
    _lookup_all(source, IMAGES[1:2])
    assert _execs(tmp_path) == 1
    now[0] += 2
    _lookup_all(source, IMAGES[2:])
    assert _execs(tmp_path) == 2


def test_registry_cache_is_per_registry(tmp_path: Path) -> None:
    provider = _counting(tmp_path, _response("Registry", "1h", key="*.*"))
    source = cp.PluginCredentials([provider], str(tmp_path))
    _lookup_all(source, ["one.example.com/a", "one.example.com/b", "two.example.com/a"])
    assert _execs(tmp_path) == 2


def test_provider_env_is_passed_on_top_of_the_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_ONLY", "from-agent")
    monkeypatch.setenv("SHARED", "agent-value")
    script = (
        "#!/bin/sh\ncat >/dev/null\n"
        """printf '{"apiVersion":"%s","auth":{"*.test:5000":{"username":"%s","password":"%s"}}}' """
        '"$V" "$AGENT_ONLY" "$SHARED"\n'
    )
    _script(tmp_path / "envplugin", script)
    provider = cp.Provider("envplugin", ("*.test:5000",), env=(("V", V1), ("SHARED", "provider-value")))
    response = asyncio.run(cp.exec_plugin(provider, str(tmp_path), IMAGES[0], 10))
    assert response.auth == (("*.test:5000", "from-agent", "provider-value"),)


def test_a_hanging_plugin_is_killed_at_the_deadline(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    plugin_sleep_s = 30
    provider = _counting(tmp_path, _response("Registry", "1h"), SLEEP=str(plugin_sleep_s))
    execs: list[float] = []

    async def counted_exec(provider: cp.Provider, bin_dir: str, image: str, timeout_s: float) -> cp.PluginResponse:
        # Counted here, not by the plugin: on a slow machine the 1 s may pass before the shell writes its line.
        execs.append(timeout_s)
        return await cp.exec_plugin(provider, bin_dir, image, timeout_s)

    source = cp.PluginCredentials([provider], str(tmp_path), deadline=time.monotonic() + 1.0, exec_fn=counted_exec)
    started = time.monotonic()
    assert _lookup_all(source, IMAGES) == [[], [], []]
    assert time.monotonic() - started < plugin_sleep_s  # killed, not waited for
    assert len(execs) == 1 and execs[0] <= 1.0  # one exec, bounded by the deadline, shared by the waiting lookups
    errors = [r.__dict__["attrs"]["error"] for r in records if r.levelname == "WARNING"]
    assert len(errors) == 3 and all("timeout" in e for e in errors)


def test_plugin_credentials_of_several_providers(tmp_path: Path) -> None:
    first = _counting(tmp_path, _response("Global", "1h", key="registry.test:5000"), name="first")
    second = _counting(tmp_path, _response("Global", "1h", key="*.test:5000/a"), name="second")
    other = cp.Provider("other", ("quay.io",))  # never matches: never executed (no binary needed)
    source = cp.PluginCredentials([first, second, other], str(tmp_path))
    (found,) = _lookup_all(source, IMAGES[:1])
    # one keyring, kubelet lookup order (reverse byte order of the keys)
    assert found == ["plugin-user@registry.test:5000", "plugin-user@*.test:5000/a"]
    assert _execs(tmp_path, "first") == _execs(tmp_path, "second") == 1


def test_no_matching_provider_means_no_exec(tmp_path: Path) -> None:
    provider = _counting(tmp_path, _response("Global", "1h"))
    source = cp.PluginCredentials([provider], str(tmp_path))
    assert _lookup_all(source, ["quay.io/x:1", "nginx"]) == [[], []]
    assert not os.path.exists(tmp_path / "counter.execs")
