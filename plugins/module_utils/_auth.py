# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by ``apply`` and ``rollout`` (paired with doc fragment ``stackrox.prefetch.k8s_auth``).

Names, aliases, types, ``no_log`` and the ``K8S_AUTH_*`` fallbacks are kubernetes.core's, and so is the order in
which a configuration is found: explicit host + credentials; else the given kubeconfig/context; else in-cluster
config, then the default kubeconfig.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Optional

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ClusterError

try:
    import kubernetes
    import urllib3
    import yaml

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR: Optional[str] = None
except ImportError as import_error:  # the modules report it with missing_required_lib
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = str(import_error)

AUTH_PROXY_HEADERS_SPEC: dict[str, dict[str, Any]] = {
    "proxy_basic_auth": {"type": "str", "no_log": True},
    "basic_auth": {"type": "str", "no_log": True},
    "user_agent": {"type": "str"},
}

AUTH_ARG_SPEC: dict[str, dict[str, Any]] = {
    "kubeconfig": {"type": "raw"},
    "context": {"type": "str"},
    "host": {"type": "str"},
    "api_key": {"type": "str", "no_log": True},
    "username": {"type": "str"},
    "password": {"type": "str", "no_log": True},
    "validate_certs": {"type": "bool", "aliases": ["verify_ssl"]},
    "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"]},
    "client_cert": {"type": "path", "aliases": ["cert_file"]},
    "client_key": {"type": "path", "aliases": ["key_file"]},
    "proxy": {"type": "str"},
    "no_proxy": {"type": "str"},
    "proxy_headers": {"type": "dict", "options": AUTH_PROXY_HEADERS_SPEC},
    "persist_config": {"type": "bool"},
    "impersonate_user": {"type": "str"},
    "impersonate_groups": {"type": "list", "elements": "str"},
}

# kubernetes client Configuration attribute -> module option. The env var is K8S_AUTH_<option> or K8S_AUTH_<attribute>.
AUTH_ARG_MAP: dict[str, str] = {
    "kubeconfig": "kubeconfig",
    "context": "context",
    "host": "host",
    "api_key": "api_key",
    "username": "username",
    "password": "password",
    "verify_ssl": "validate_certs",
    "ssl_ca_cert": "ca_cert",
    "cert_file": "client_cert",
    "key_file": "client_key",
    "proxy": "proxy",
    "no_proxy": "no_proxy",
    "proxy_headers": "proxy_headers",
    "persist_config": "persist_config",
}

_IMPERSONATION_HEADERS = {"impersonate_user": "Impersonate-User", "impersonate_groups": "Impersonate-Group"}
_FALSE_WORDS = ("0", "false", "no")
# Settings that only say how to reach the server; everything else in AUTH_ARG_MAP overrides the loaded config.
_LOADER_ONLY = ("kubeconfig", "context", "persist_config")


# Keys of a kubeconfig given as a dict whose values are secrets (anywhere in it); paths such as token-file stay visible.
_SECRET_KEY = re.compile(
    r"^(token|password|passwd|secret|client-key-data|key-data|api[-_]?key|access[-_]token|id[-_]token"
    r"|refresh[-_]token|client[-_]secret|.*[-_]secret|.*[-_]password|.*[-_]token)$",
    re.IGNORECASE,
)


def _leaf_strings(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _leaf_strings(item)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _leaf_strings(item)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


def _kubeconfig_secrets(value: Any, parent: str = "") -> list[str]:
    """Every secret leaf of a kubeconfig dict: users[].user credentials, auth-provider config, exec env values."""
    secrets: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if _SECRET_KEY.match(name) or (name == "config" and parent == "auth-provider"):
                secrets.extend(_leaf_strings(item))
            elif name == "env" and parent == "exec" and isinstance(item, list):
                for entry in item:
                    if isinstance(entry, Mapping) and "value" in entry:
                        secrets.extend(_leaf_strings(entry["value"]))
            else:
                secrets.extend(_kubeconfig_secrets(item, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            secrets.extend(_kubeconfig_secrets(item, parent))
    return secrets


def kubeconfig_secrets(kubeconfig: Any) -> set[str]:
    """The secret values of a kubeconfig given as a dict (empty for a path or nothing)."""
    if not isinstance(kubeconfig, Mapping):
        return set()
    return {secret for secret in _kubeconfig_secrets(kubeconfig) if secret.strip()}


def protect_kubeconfig_secrets(module: Any) -> None:
    """Add the secrets of a dict ``kubeconfig`` to ``module.no_log_values``, so every result masks them.

    Call it right after the AnsibleModule is made, before anything can be returned.
    """
    module.no_log_values.update(kubeconfig_secrets(module.params.get("kubeconfig")))


def _env_bool(value: str) -> bool:
    return value.lower() not in _FALSE_WORDS


def _proxy_headers_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    headers = {}
    for key in AUTH_PROXY_HEADERS_SPEC:
        value = environ.get("K8S_AUTH_PROXY_HEADERS_" + key.upper())
        if value is not None:
            headers[key] = value
    return headers


def _setting_from_env(attribute: str, option: str, environ: Mapping[str, str]) -> Any:
    value = environ.get("K8S_AUTH_" + option.upper()) or environ.get("K8S_AUTH_" + attribute.upper())
    if value is not None and AUTH_ARG_SPEC[option].get("type") == "bool":
        return _env_bool(value)
    return value


def collect_auth_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Module options with K8S_AUTH_* fallbacks, keyed by kubernetes Configuration attribute names."""
    settings: dict[str, Any] = {}
    for attribute, option in AUTH_ARG_MAP.items():
        if params.get(option) is not None:
            settings[attribute] = params[option]
        elif option == "proxy_headers":
            from_env = _proxy_headers_from_env(environ)
            if from_env:
                settings[attribute] = from_env
        else:
            value = _setting_from_env(attribute, option, environ)
            if value is not None:
                settings[attribute] = value
    if isinstance(settings.get("host"), str):
        settings["host"] = settings["host"].rstrip("/")
    return settings


def impersonation_headers(params: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Impersonate-User / Impersonate-Group header values (each a list: a group is one header line)."""
    headers: dict[str, list[str]] = {}
    for option, header in _IMPERSONATION_HEADERS.items():
        value = params.get(option)
        if value is None:
            env_value = environ.get("K8S_AUTH_" + option.upper())
            if env_value is not None:
                value = [part for part in env_value.split(",") if part] if option == "impersonate_groups" else env_value
        if value:
            headers[header] = list(value) if isinstance(value, list) else [value]
    return headers


def _has(settings: Mapping[str, Any], *names: str) -> bool:
    return all(settings.get(name) for name in names)


def needs_config_loading(settings: Mapping[str, Any]) -> bool:
    """False when host plus one complete credential are given (then nothing is loaded, as in kubernetes.core)."""
    return not (
        _has(settings, "username", "password", "host")
        or _has(settings, "api_key", "host")
        or _has(settings, "cert_file", "key_file", "host")
    )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def check_kubeconfig_file(path: str) -> None:
    """One-line ClusterError for a kubeconfig path that does not exist or is not a YAML mapping."""
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        raise ClusterError(f"kubeconfig file {path} does not exist")
    try:
        with open(expanded, encoding="utf-8") as stream:
            loaded = yaml.safe_load(stream)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ClusterError(f"kubeconfig {path} is not valid YAML/kubeconfig: {_first_line(error)}") from None
    except OSError as error:
        raise ClusterError(f"kubeconfig {path} cannot be read: {error.strerror or error}") from None
    if not isinstance(loaded, dict):
        what = "empty" if loaded is None else f"a {type(loaded).__name__}, not a mapping"
        raise ClusterError(f"kubeconfig {path} is not valid YAML/kubeconfig: the file is {what}")


def _load_kubeconfig(settings: Mapping[str, Any], configuration: Any) -> None:
    kubeconfig = settings.get("kubeconfig")
    if isinstance(kubeconfig, str) and kubeconfig:
        check_kubeconfig_file(kubeconfig)
    options = {
        "context": settings.get("context"),
        "persist_config": bool(settings.get("persist_config")),
        "client_configuration": configuration,
    }
    if isinstance(kubeconfig, dict):
        kubernetes.config.load_kube_config_from_dict(config_dict=kubeconfig, **options)
    else:
        kubernetes.config.load_kube_config(config_file=kubeconfig or None, **options)


def _load_into(settings: Mapping[str, Any], configuration: Any) -> None:
    if _has(settings, "kubeconfig") or _has(settings, "context"):
        _load_kubeconfig(settings, configuration)
        return
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        _load_kubeconfig(settings, configuration)


def _override(settings: Mapping[str, Any], configuration: Any) -> None:
    for attribute, value in settings.items():
        if attribute in _LOADER_ONLY or value is None:
            continue
        if attribute == "api_key":
            # Older clients read "authorization", newer ones "BearerToken" first: set both so the option wins.
            configuration.api_key = {"authorization": "Bearer " + value, "BearerToken": "Bearer " + value}
            # The kubeconfig loader installs a hook that rewrites api_key from the kubeconfig before each request.
            configuration.refresh_api_key_hook = None
        elif attribute == "proxy_headers":
            configuration.proxy_headers = urllib3.util.make_headers(**value)
        else:
            setattr(configuration, attribute, value)


def build_configuration(settings: Mapping[str, Any]) -> Any:
    """A fresh kubernetes Configuration (never the process-wide default) for these settings."""
    configuration = kubernetes.client.Configuration()
    if needs_config_loading(settings):
        try:
            _load_into(settings, configuration)
        except (kubernetes.config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as error:
            source = settings.get("kubeconfig") if isinstance(settings.get("kubeconfig"), str) else "kubeconfig"
            raise ClusterError(
                f"cannot load the Kubernetes client configuration from {source}: {_first_line(error)}"
            ) from None
    _override(settings, configuration)
    # No retries inside urllib3: it would send a DELETE again after a reset, when the first may have been carried
    # out. _cluster.retry_decision decides every retry.
    configuration.retries = 0
    return configuration


class _RepeatableHeaderName(str):
    """A header name that is unequal to every other instance, so a dict can carry one header several times.

    The API server reads each Impersonate-Group header line as one group; joining them with commas would
    make one group named "a,b".
    """

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def lower(self) -> str:
        return self


def build_api_client(params: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> Any:
    """A kubernetes ApiClient for the module options (with K8S_AUTH_* fallbacks) and impersonation headers."""
    environ = os.environ if environ is None else environ
    configuration = build_configuration(collect_auth_settings(params, environ))
    api_client = kubernetes.client.ApiClient(configuration)
    for header, values in impersonation_headers(params, environ).items():
        for value in values:
            name = header if len(values) == 1 else _RepeatableHeaderName(header)
            api_client.default_headers[name] = value
    return api_client
