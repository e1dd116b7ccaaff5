# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The prefetch settings: their argument spec and their validation (pure, no I/O but the image-list file).

``SETTINGS_ARGUMENT_SPEC`` is documented by the ``stackrox.prefetch.settings`` doc fragment; change both together.
``validate_settings`` turns module parameters into a normalised, frozen ``Settings`` or raises ``ValidationError``
with a one-line message naming the option.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import typing as t
from decimal import Decimal, InvalidOperation

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ValidationError
from ansible_collections.stackrox.prefetch.plugins.module_utils._imagelist import (
    check_image_list_size,
    clean_listed_images,
    combine_image_lists,
    read_image_list_file,
)

COLLECTION_VERSION = "0.1.0"
DEFAULT_IMAGE_REPOSITORY = "quay.io/stackrox-io/prefetch-agent"

# The longest name a derived object needs: Service `<name>-metrics` must be a DNS-1035 label (<= 63) and
# `app: <name>-metrics` a label value (<= 63). RBAC names (`-node-labeler`, `-privileged-scc-use`) may be
# 253 characters long, so they do not bind.
METRICS_SUFFIX = "-metrics"
MAX_NAME_LENGTH = 63 - len(METRICS_SUFFIX)

CONTAINER_NAMES = ("prefetch", "sleep", "aggregator")

# Upstream's values (deploy/deployment.yaml.gotpl).
DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "prefetch": {"requests": {"cpu": "20m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    "sleep": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
    "aggregator": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
}

# Upstream's broad toleration ("to match stackrox collector"): run on every node, tainted or not.
# The agent's own default for --max-parallel-pulls (agent/src/image_prefetcher/cli.py): the flag is rendered only
# when the setting differs, so a default manifest stays the Go tool's command line.
AGENT_MAX_PARALLEL_PULLS = 32
# How often an agent may write its progress onto its own pod (--progress-interval); "0s" turns that off.
DEFAULT_AGENT_PROGRESS_INTERVAL = "10s"
DEFAULT_TOLERATIONS: list[dict[str, t.Any]] = [{"operator": "Exists"}]

# Agent flag of each timing option; the agent's own defaults apply when an option is unset.
DURATION_FLAGS = {
    "initial_pull_attempt_timeout": "--initial-pull-attempt-timeout",
    "max_pull_attempt_timeout": "--max-pull-attempt-timeout",
    "overall_timeout": "--overall-timeout",
    "initial_pull_attempt_delay": "--initial-pull-attempt-delay",
    "max_pull_attempt_delay": "--max-pull-attempt-delay",
}
# A zero or negative timeout makes every pull fail at once (upstream quirk, BEHAVIOR §2.3): refuse it.
# A zero delay is meaningful (retry at once); a negative one is not.
POSITIVE_DURATIONS = ("initial_pull_attempt_timeout", "max_pull_attempt_timeout", "overall_timeout")


@dataclasses.dataclass(frozen=True)
class Flavor:
    """How a Kubernetes distribution runs its CRI, and what the prefetch container needs to reach it."""

    socket_dir: str
    socket_name: str
    openshift: bool = False
    # CRI-O hosts usually enforce SELinux: container_t may not connect to crio.sock, spc_t may.
    selinux_spc: bool = False


FLAVORS: dict[str, Flavor] = {
    "vanilla": Flavor("/var/run/containerd", "containerd.sock"),
    "ocp": Flavor("/var/run/crio", "crio.sock", openshift=True),
    "crio": Flavor("/var/run/crio", "crio.sock", selinux_spc=True),
    "k3s": Flavor("/run/k3s/containerd", "containerd.sock"),
    "rke2": Flavor("/run/k3s/containerd", "containerd.sock"),
    "microk8s": Flavor("/var/snap/microk8s/common/run", "containerd.sock"),
}

_RESOURCE_SUBOPTIONS = {name: {"type": "dict"} for name in CONTAINER_NAMES}

SETTINGS_ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "name": {"type": "str", "required": True},
    "namespace": {"type": "str", "default": "default"},
    "flavor": {"type": "str", "default": "vanilla", "choices": list(FLAVORS)},
    "image": {"type": "str", "default": DEFAULT_IMAGE_REPOSITORY},
    "version": {"type": "str", "default": COLLECTION_VERSION},
    "images": {"type": "list", "elements": "str"},
    "images_file": {"type": "path"},
    "allow_empty": {"type": "bool", "default": False},
    # The name of a Secret, not secret data: nothing to hide from logs.
    "secret": {"type": "str", "no_log": False},
    "collect_metrics": {"type": "bool", "default": False},
    "metrics_service_type": {"type": "str", "default": "ClusterIP", "choices": ["ClusterIP", "LoadBalancer"]},
    "credential_provider": {"type": "str", "choices": ["GKE"]},
    "cri_socket": {"type": "str"},
    "node_selector": {"type": "dict"},
    "tolerations": {"type": "list", "elements": "dict", "default": [dict(item) for item in DEFAULT_TOLERATIONS]},
    "priority_class_name": {"type": "str"},
    "resources": {"type": "dict", "options": _RESOURCE_SUBOPTIONS},
    "pull_policy": {"type": "str", "default": "Always", "choices": ["Always", "IfNotPresent"]},
    "max_parallel_pulls": {"type": "int", "default": AGENT_MAX_PARALLEL_PULLS},
    "not_found": {"type": "str", "default": "retry", "choices": ["retry", "fail"]},
    "parallel_nodes": {"type": "int", "default": 0},
    "canary": {"type": "bool", "default": False},
    "initial_pull_attempt_timeout": {"type": "str"},
    "max_pull_attempt_timeout": {"type": "str"},
    "overall_timeout": {"type": "str"},
    "initial_pull_attempt_delay": {"type": "str"},
    "max_pull_attempt_delay": {"type": "str"},
    "agent_debug": {"type": "bool", "default": False},
    "agent_progress_interval": {"type": "str", "default": DEFAULT_AGENT_PROGRESS_INTERVAL},
    "max_unavailable": {"type": "raw", "default": "100%"},
    "network_policy": {"type": "bool", "default": True},
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, normalised settings of one prefetch instance: everything ``render`` needs."""

    name: str
    namespace: str
    flavor: str
    image: str
    images: tuple[str, ...]
    secret: t.Optional[str]
    collect_metrics: bool
    metrics_service_type: str
    credential_provider: t.Optional[str]
    cri_socket: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, t.Any]]
    priority_class_name: t.Optional[str]
    resources: dict[str, dict[str, dict[str, str]]]
    pull_policy: str
    max_parallel_pulls: int
    not_found: str
    parallel_nodes: int
    canary: bool
    durations: dict[str, str]
    agent_debug: bool
    max_unavailable: t.Union[int, str]
    network_policy: bool
    agent_progress_interval: str = DEFAULT_AGENT_PROGRESS_INTERVAL  # canonical Go duration; "0s" = not published

    @property
    def publishes_progress(self) -> bool:
        return self.agent_progress_interval != "0s"

    @property
    def flavor_spec(self) -> Flavor:
        return FLAVORS[self.flavor]


# --- Kubernetes name grammars --------------------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    return 0 < len(value) <= 253 and all(_DNS1123_LABEL.fullmatch(part) for part in value.split("."))


def is_label_key(value: str) -> bool:
    prefix, slash, name = value.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)


# --- Go durations (time.ParseDuration, TESTCASES §8) ---------------------------------------------------------------

_NANOSECONDS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_INT_LIMIT = 1 << 63


def _leading_int(text: str) -> tuple[t.Optional[int], str]:
    """Consume [0-9]*; None on overflow (Go's errLeadingInt)."""
    value, index = 0, 0
    while index < len(text) and "0" <= text[index] <= "9":
        if value > _GO_INT_LIMIT // 10:
            return None, text
        value = value * 10 + int(text[index])
        if value > _GO_INT_LIMIT:
            return None, text
        index += 1
    return value, text[index:]


def _leading_fraction(text: str) -> tuple[int, float, str]:
    """Consume [0-9]* after a '.', keeping as much precision as fits, like Go."""
    value, scale, index, overflow = 0, 1.0, 0, False
    while index < len(text) and "0" <= text[index] <= "9":
        if not overflow:
            candidate = value * 10 + int(text[index])
            if value > (_GO_INT_LIMIT - 1) // 10 or candidate > _GO_INT_LIMIT:
                overflow = True
            else:
                value, scale = candidate, scale * 10
        index += 1
    return value, scale, text[index:]


def _unit_length(text: str) -> int:
    index = 0
    while index < len(text) and not (text[index] == "." or "0" <= text[index] <= "9"):
        index += 1
    return index


def parse_go_duration(original: str) -> int:
    """Nanoseconds of a Go duration string; ValueError with Go's own message when it is not one."""
    invalid = ValueError(f'time: invalid duration "{original}"')
    text, negative = original, False
    if text[:1] in ("-", "+"):
        negative, text = text[0] == "-", text[1:]
    if text == "0":
        return 0
    if not text:
        raise invalid
    total = 0
    while text:
        if not (text[0] == "." or "0" <= text[0] <= "9"):
            raise invalid
        before = len(text)
        whole, text = _leading_int(text)
        if whole is None:
            raise invalid
        has_whole = before != len(text)
        fraction, scale, has_fraction = 0, 1.0, False
        if text[:1] == ".":
            text = text[1:]
            before = len(text)
            fraction, scale, text = _leading_fraction(text)
            has_fraction = before != len(text)
        if not has_whole and not has_fraction:
            raise invalid
        unit_length = _unit_length(text)
        if unit_length == 0:
            raise ValueError(f'time: missing unit in duration "{original}"')
        unit, text = text[:unit_length], text[unit_length:]
        if unit not in _NANOSECONDS_PER_UNIT:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{original}"')
        multiplier = _NANOSECONDS_PER_UNIT[unit]
        if whole > _GO_INT_LIMIT // multiplier:
            raise invalid
        whole *= multiplier
        if fraction > 0:
            # Go computes the fractional part in float64 too.
            whole += int(float(fraction) * (float(multiplier) / scale))
            if whole > _GO_INT_LIMIT:
                raise invalid
        total += whole
        if total > _GO_INT_LIMIT:
            raise invalid
    if negative:
        return -total
    if total > _GO_INT_LIMIT - 1:
        raise invalid
    return total


def _fraction_digits(value: int, precision: int) -> tuple[str, int]:
    """Go's fmtFrac: '.ddd' without trailing zeros (or ''), and the integer part left."""
    divisor = 10**precision
    digits = f"{value % divisor:0{precision}d}".rstrip("0")
    return ("." + digits if digits else ""), value // divisor


def format_go_duration(nanoseconds: int) -> str:
    """Go's Duration.String(), except micro-seconds are spelled 'us' so the manifest stays ASCII."""
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value == 0:
        return "0s"
    if value < 1_000_000_000:
        for limit, unit, precision in ((1_000, "ns", 0), (1_000_000, "us", 3), (1_000_000_000, "ms", 6)):
            if value < limit:
                fraction, whole = _fraction_digits(value, precision)
                return f"{sign}{whole}{fraction}{unit}"
    fraction, seconds = _fraction_digits(value, 9)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{seconds}{fraction}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def canonical_duration(option: str, value: str) -> str:
    """Validate one timing option and return the canonical form passed to the agent."""
    try:
        nanoseconds = parse_go_duration(value)
    except ValueError as error:
        raise ValidationError(f"{option}: {error}") from None
    if option in POSITIVE_DURATIONS and nanoseconds <= 0:
        raise ValidationError(f"{option} must be a positive duration, got {value!r}")
    if nanoseconds < 0:
        raise ValidationError(f"{option} must not be negative, got {value!r}")
    return format_go_duration(nanoseconds)


# --- The agent image ------------------------------------------------------------------------------------------------

_PSEUDO_VERSION = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+-[0-9]+\.[0-9]+-([a-f0-9]+)")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
)


def image_tag(version: str) -> str:
    """Upstream's processVersion (TESTCASES §13) without '-distro': our one image carries libc and CA certificates."""
    match = _PSEUDO_VERSION.fullmatch(version)
    if match and len(match.group(1)) >= 7:
        return "sha-" + match.group(1)[:7]
    return version


def agent_image(repository: str, version: str) -> str:
    """The full agent image reference from `image` and `version`.

    `version` is a tag (`<repository>:<tag>`), a digest (`<repository>@sha256:...`) or both, `<tag>@sha256:...`
    (`<repository>:<tag>@sha256:...`: the runtime pulls by the digest, the tag stays readable).
    """
    if not _REPOSITORY.fullmatch(repository):
        raise ValidationError(
            f"image {repository!r} must be an image repository without tag or digest (set those with version)"
        )
    if _DIGEST.fullmatch(version):
        return f"{repository}@{version}"
    version_tag, at, digest = version.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValidationError(f"version {version!r}: {digest!r} after '@' is not a sha256: digest (64 hex digits)")
    tag = image_tag(version_tag)
    if not _TAG.fullmatch(tag):
        raise ValidationError(f"version {version!r} is not a valid image tag (nor a sha256: digest)")
    return f"{repository}:{tag}{at}{digest}"


# --- Kubernetes values ----------------------------------------------------------------------------------------------

_QUANTITY = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_SUFFIX_FACTORS = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def quantity_value(where: str, quantity: t.Any) -> tuple[str, Decimal]:
    """A resource quantity as the string the manifest carries and its numeric value for comparisons."""
    if isinstance(quantity, bool) or not isinstance(quantity, (str, int, float)):
        raise ValidationError(f"{where} must be a Kubernetes quantity such as '100m' or '64Mi', got {quantity!r}")
    text = str(quantity)
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValidationError(f"{where} {text!r} is not a Kubernetes quantity such as '100m' or '64Mi'")
    suffix = match.group("suffix") or ""
    try:
        if suffix[:1] in ("e", "E"):
            value = Decimal(match.group("number") + suffix)
        else:
            value = Decimal(match.group("number")) * _SUFFIX_FACTORS[suffix]
    except InvalidOperation:
        raise ValidationError(f"{where} {text!r} is not a Kubernetes quantity") from None
    return text, value


def _resource_list(where: str, value: t.Any) -> tuple[dict[str, str], dict[str, Decimal]]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be a mapping of resource name to quantity")
    texts, values = {}, {}
    for resource, quantity in value.items():
        if not isinstance(resource, str) or not is_label_key(resource):
            raise ValidationError(f"{where} has an invalid resource name {resource!r}")
        texts[resource], values[resource] = quantity_value(f"{where}.{resource}", quantity)
    return texts, values


def resource_requirements(container: str, value: t.Any) -> dict[str, dict[str, str]]:
    """One container's ResourceRequirements (requests/limits), requests not above limits."""
    where = f"resources.{container}"
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be a mapping with 'requests' and/or 'limits'")
    unknown = sorted(set(value) - {"requests", "limits"})
    if unknown:
        raise ValidationError(f"{where} has unsupported keys {unknown}: only 'requests' and 'limits' are allowed")
    result: dict[str, dict[str, str]] = {}
    amounts: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        if value.get(kind) is not None:
            result[kind], amounts[kind] = _resource_list(f"{where}.{kind}", value[kind])
    for resource, request in amounts.get("requests", {}).items():
        limit = amounts.get("limits", {}).get(resource)
        if limit is not None and request > limit:
            raise ValidationError(f"{where}: the {resource} request is above its limit")
    return result


def all_resources(value: t.Any) -> dict[str, dict[str, dict[str, str]]]:
    """Each container's requirements: the given ones replace upstream's defaults whole, per container."""
    given = value or {}
    if not isinstance(given, dict):
        raise ValidationError("resources must be a mapping with the keys prefetch, sleep and/or aggregator")
    unknown = sorted(set(given) - set(CONTAINER_NAMES))
    if unknown:
        raise ValidationError(f"resources has unknown containers {unknown}: use {list(CONTAINER_NAMES)}")
    resolved = {}
    for container in CONTAINER_NAMES:
        if given.get(container) is None:
            resolved[container] = DEFAULT_RESOURCES[container]
        else:
            resolved[container] = resource_requirements(container, given[container])
    return resolved


_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def toleration(index: int, value: t.Any) -> dict[str, t.Any]:
    """One toleration checked like the API server does; empty fields dropped."""
    where = f"tolerations[{index}]"
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be a mapping")
    unknown = sorted(set(value) - _TOLERATION_KEYS)
    if unknown:
        raise ValidationError(f"{where} has unknown keys {unknown}")
    cleaned = {key: item for key, item in value.items() if item is not None and item != ""}
    operator = cleaned.get("operator", "Equal")
    if operator not in ("Exists", "Equal"):
        raise ValidationError(f"{where}.operator must be Exists or Equal, got {operator!r}")
    if "key" in cleaned and not is_label_key(str(cleaned["key"])):
        raise ValidationError(f"{where}.key {cleaned['key']!r} is not a valid label key")
    if "key" not in cleaned and operator != "Exists":
        raise ValidationError(f"{where}: a toleration without key needs operator Exists")
    if operator == "Exists" and "value" in cleaned:
        raise ValidationError(f"{where}: operator Exists takes no value")
    if "effect" in cleaned and cleaned["effect"] not in _TAINT_EFFECTS:
        raise ValidationError(f"{where}.effect must be one of {list(_TAINT_EFFECTS)}")
    if "tolerationSeconds" in cleaned:
        seconds = cleaned["tolerationSeconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ValidationError(f"{where}.tolerationSeconds must be an integer")
        if cleaned.get("effect") != "NoExecute":
            raise ValidationError(f"{where}.tolerationSeconds needs effect NoExecute")
    return {key: (str(item) if key != "tolerationSeconds" else item) for key, item in cleaned.items()}


def node_selector(value: t.Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("node_selector must be a mapping of node label to value")
    selector = {}
    for key, item in value.items():
        if not isinstance(key, str) or not is_label_key(key):
            raise ValidationError(f"node_selector key {key!r} is not a valid label key")
        text = "" if item is None else str(item)
        if isinstance(item, bool):
            text = str(item).lower()
        if not is_label_value(text):
            raise ValidationError(f"node_selector[{key!r}] value {text!r} is not a valid label value")
        selector[key] = text
    return selector


def max_unavailable(value: t.Any) -> t.Union[int, str]:
    """A DaemonSet maxUnavailable: a positive count or a percentage from 1% to 100%."""
    problem = ValidationError(f"max_unavailable must be a positive integer or a percentage like '100%', got {value!r}")
    if isinstance(value, bool):
        raise problem
    text = str(value).strip()
    if re.fullmatch(r"[0-9]+", text):
        if int(text) < 1:
            raise problem
        return int(text)
    match = re.fullmatch(r"([0-9]+)%", text)
    if not match or not 1 <= int(match.group(1)) <= 100:
        raise problem
    return f"{int(match.group(1))}%"


def cri_socket_path(value: t.Optional[str], flavor: Flavor) -> str:
    """The CRI socket's path on the nodes: the override, or the flavor's."""
    if value is None or value == "":
        return posixpath.join(flavor.socket_dir, flavor.socket_name)
    if not value.startswith("/"):
        raise ValidationError(f"cri_socket {value!r} must be an absolute path on the nodes")
    if ".." in value.split("/") or value.endswith("/"):
        raise ValidationError(f"cri_socket {value!r} must name the socket file itself, without '..'")
    normalised = posixpath.normpath(value)
    if posixpath.dirname(normalised) == "/":
        raise ValidationError(f"cri_socket {value!r} lies in '/': mounting the node's root directory is refused")
    return normalised


def instance_name(name: t.Any, collect_metrics: bool) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError("name is required")
    if not _DNS1123_LABEL.fullmatch(name):
        raise ValidationError(
            f"name {name!r} must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"name {name!r} is {len(name)} characters long; at most {MAX_NAME_LENGTH} keep "
            f"'<name>{METRICS_SUFFIX}' a valid Service name and label value"
        )
    if collect_metrics and not name[0].isalpha():
        raise ValidationError(
            f"name {name!r} must start with a letter when collect_metrics is true: "
            f"the Service '{name}{METRICS_SUFFIX}' must be a DNS-1035 label"
        )
    return name


def _optional_subdomain(option: str, value: t.Any, what: str) -> t.Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not is_dns1123_subdomain(value):
        raise ValidationError(f"{option} {value!r} is not a valid {what} name (DNS-1123 subdomain)")
    return value


# --- The whole settings ----------------------------------------------------------------------------------------------


def _with_defaults(params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    unknown = sorted(set(params) - set(SETTINGS_ARGUMENT_SPEC))
    if unknown:
        raise ValidationError(f"unknown settings {unknown}")
    merged = {}
    for option, spec in SETTINGS_ARGUMENT_SPEC.items():
        value = params.get(option)
        merged[option] = spec.get("default") if value is None else value
    return merged


def _choice(option: str, value: t.Any) -> t.Any:
    choices = SETTINGS_ARGUMENT_SPEC[option].get("choices")
    if value is not None and choices is not None and value not in choices:
        raise ValidationError(f"{option} must be one of {choices}, got {value!r}")
    return value


def _image_list(params: dict[str, t.Any], read_images_file: t.Callable[[str], list[str]]) -> tuple[str, ...]:
    file_images = read_images_file(params["images_file"]) if params["images_file"] else []
    listed = params["images"] or []
    if not isinstance(listed, (list, tuple)):
        raise ValidationError("images must be a list of image references")
    images = combine_image_lists(file_images, clean_listed_images(listed))
    if not images and not params["allow_empty"]:
        raise ValidationError("no images to prefetch: give images or images_file (or set allow_empty: true)")
    check_image_list_size(images)
    return tuple(images)


def _durations(params: dict[str, t.Any]) -> dict[str, str]:
    durations = {}
    for option in DURATION_FLAGS:
        value = params[option]
        if value is not None:
            durations[option] = canonical_duration(option, str(value))
    return durations


def _non_negative_int(option: str, value: t.Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{option} must be an integer >= 0, got {value!r}")
    return value


def _node_slots(params: dict[str, t.Any]) -> tuple[int, bool]:
    """parallel_nodes (0 = unlimited) and canary, which needs the node-slot Leases of parallel_nodes > 0."""
    parallel_nodes = _non_negative_int("parallel_nodes", params["parallel_nodes"])
    canary = params["canary"]
    if not isinstance(canary, bool):
        raise ValidationError(f"canary must be a boolean, got {canary!r}")
    if canary and not parallel_nodes:
        raise ValidationError("canary needs parallel_nodes > 0 (the canary is found through the node-slot Leases)")
    return parallel_nodes, canary


def _tolerations(value: t.Any) -> list[dict[str, t.Any]]:
    if not isinstance(value, (list, tuple)):
        raise ValidationError("tolerations must be a list of tolerations")
    return [toleration(index, item) for index, item in enumerate(value)]


def validate_settings(
    params: t.Mapping[str, t.Any],
    read_images_file: t.Callable[[str], list[str]] = read_image_list_file,
) -> Settings:
    """Check every setting and return them normalised; the first problem raises ValidationError."""
    values = _with_defaults(params)
    parallel_nodes, canary = _node_slots(values)
    for option in ("flavor", "metrics_service_type", "credential_provider", "pull_policy", "not_found"):
        _choice(option, values[option])
    collect_metrics = bool(values["collect_metrics"])
    flavor = FLAVORS[values["flavor"]]
    namespace = values["namespace"]
    if not isinstance(namespace, str) or not is_dns1123_label(namespace):
        raise ValidationError(f"namespace {namespace!r} is not a valid namespace name (DNS-1123 label)")
    return Settings(
        name=instance_name(values["name"], collect_metrics),
        namespace=namespace,
        flavor=values["flavor"],
        image=agent_image(str(values["image"]), str(values["version"])),
        images=_image_list(values, read_images_file),
        secret=_optional_subdomain("secret", values["secret"], "Secret"),
        collect_metrics=collect_metrics,
        metrics_service_type=values["metrics_service_type"],
        credential_provider=values["credential_provider"],
        cri_socket=cri_socket_path(values["cri_socket"], flavor),
        node_selector=node_selector(values["node_selector"]),
        tolerations=_tolerations(values["tolerations"]),
        priority_class_name=_optional_subdomain("priority_class_name", values["priority_class_name"], "PriorityClass"),
        resources=all_resources(values["resources"]),
        pull_policy=values["pull_policy"],
        max_parallel_pulls=_non_negative_int("max_parallel_pulls", values["max_parallel_pulls"]),
        not_found=values["not_found"],
        parallel_nodes=parallel_nodes,
        canary=canary,
        durations=_durations(values),
        agent_debug=bool(values["agent_debug"]),
        max_unavailable=max_unavailable(values["max_unavailable"]),
        network_policy=bool(values["network_policy"]),
        agent_progress_interval=canonical_duration("agent_progress_interval", str(values["agent_progress_interval"])),
    )
