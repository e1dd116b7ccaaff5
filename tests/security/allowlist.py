"""The renders checkov scans, and the allow-list of its accepted findings (pure: no checkov, no I/O but reading YAML).

Each render is one `Case` (flavor, metrics on/off, pull secret or not, agent image by tag or by digest, plus two
option sets of their own). An allow-list entry accepts one checkov check on one kind of resource, for every flavor or
some, for every image form or one, and carries its reason. `classify` sorts checkov's findings into accepted and
not accepted, and reports the entries that no longer hold: an entry must match a failure in *every* render it
covers, so an entry wider than the findings it excuses fails too.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t
from pathlib import Path

import yaml

FLAVORS = ("vanilla", "ocp", "crio", "k3s", "rke2", "microk8s")
IMAGE_FORMS = ("tag", "digest")
# A made-up but well-formed digest: checkov judges the reference, nothing is pulled.
DIGEST = "sha256:" + "5" * 64
ALLOW_LIST = Path(__file__).with_name("checkov-allow.yml")
ENTRY_KEYS = {"check", "resource", "flavors", "image", "reason"}
_CHECK_ID = re.compile(r"CKV2?_K8S_[0-9]+")


@dataclasses.dataclass(frozen=True)
class Case:
    """One render: every option not named here keeps the module's default."""

    flavor: str
    metrics: bool = False
    secret: bool = False
    image: str = "tag"
    extra: str = ""  # "gke" (credential provider plugins) or "loadbalancer" (metrics Service type)

    @property
    def name(self) -> str:
        """Also the instance name and namespace: checkov links pods and NetworkPolicies across files by their
        labels, so each render gets labels of its own."""
        parts = [self.flavor, "metrics" if self.metrics else "", "secret" if self.secret else "", self.extra]
        return "-".join(part for part in [*parts, self.image] if part)

    def params(self) -> dict[str, t.Any]:
        params: dict[str, t.Any] = {
            "name": self.name,
            "namespace": self.name,
            "flavor": self.flavor,
            "collect_metrics": self.metrics,
            "images": ["registry.example.com/team/app:1.0"],
            "version": "0.1.0" if self.image == "tag" else f"0.1.0@{DIGEST}",
        }
        if self.secret:
            params["secret"] = "pull-secret"
        if self.extra == "gke":
            params["credential_provider"] = "GKE"
        if self.extra == "loadbalancer":
            params["metrics_service_type"] = "LoadBalancer"
        return params


def cases() -> list[Case]:
    """Every flavor with and without metrics and a pull secret, by tag and by digest; and the two option sets that
    add objects or fields of their own (the GKE plugin mounts, a LoadBalancer Service)."""
    matrix = [
        Case(flavor, metrics, secret, image)
        for flavor in FLAVORS
        for metrics in (False, True)
        for secret in (False, True)
        for image in IMAGE_FORMS
    ]
    return [*matrix, Case("vanilla", extra="gke"), Case("vanilla", metrics=True, extra="loadbalancer")]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One checkov result: a check on one resource (`<Kind>.<namespace>.<name>...`) of one render."""

    check: str
    resource: str
    case: str

    @property
    def kind(self) -> str:
        return self.resource.split(".", 1)[0]


@dataclasses.dataclass(frozen=True)
class Entry:
    check: str
    resource: str
    flavors: tuple[str, ...]
    image: t.Optional[str]
    reason: str

    def covers(self, case: Case) -> bool:
        return case.flavor in self.flavors and self.image in (None, case.image)

    def accepts(self, finding: Finding, case: Case) -> bool:
        return finding.check == self.check and finding.kind == self.resource and self.covers(case)

    def describe(self) -> str:
        flavors = "all flavors" if self.flavors == FLAVORS else "flavors " + ",".join(self.flavors)
        image = f", image by {self.image}" if self.image else ""
        return f"{self.check} on {self.resource} ({flavors}{image})"


def parse_entry(index: int, raw: t.Any) -> Entry:
    """One entry, checked: every problem names the entry, so the list is fixed where it is wrong."""
    where = f"checkov-allow.yml entry {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}")
    check, resource, reason = raw.get("check"), raw.get("resource"), raw.get("reason")
    if not isinstance(check, str) or not _CHECK_ID.fullmatch(check):
        raise ValueError(f"{where}: check must be a Kubernetes check id such as CKV_K8S_8, got {check!r}")
    if not isinstance(resource, str) or not resource:
        raise ValueError(f"{where} ({check}): resource must name a kind, such as DaemonSet")
    # A reason says why the finding is accepted, not just that it is.
    if not isinstance(reason, str) or len(reason.split()) < 8:
        raise ValueError(f"{where} ({check}): reason must say in a sentence or more why the finding is accepted")
    flavors = raw.get("flavors", "all")
    if flavors == "all":
        flavors = list(FLAVORS)
    if not isinstance(flavors, list) or not flavors or not set(flavors) <= set(FLAVORS):
        raise ValueError(f"{where} ({check}): flavors must be 'all' or a list of {list(FLAVORS)}, got {flavors!r}")
    image = raw.get("image")
    if image is not None and image not in IMAGE_FORMS:
        raise ValueError(f"{where} ({check}): image must be one of {list(IMAGE_FORMS)}, got {image!r}")
    ordered = tuple(flavor for flavor in FLAVORS if flavor in flavors)
    return Entry(check, resource, ordered, image, " ".join(reason.split()))


def load_allow_list(path: Path = ALLOW_LIST) -> list[Entry]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path.name} must be a list of entries")
    entries = [parse_entry(index, item) for index, item in enumerate(raw)]
    keys = [(entry.check, entry.resource) for entry in entries]
    duplicates = sorted({f"{check} on {kind}" for check, kind in keys if keys.count((check, kind)) > 1})
    if duplicates:
        # One entry per check and kind: two would each need a reason for overlapping renders.
        raise ValueError(f"{path.name} has more than one entry for {', '.join(duplicates)}")
    return entries


@dataclasses.dataclass
class Verdict:
    accepted: list[Finding]
    rejected: list[Finding]
    # Entry -> the renders it covers where it matched no failure (all of them: the entry matches nothing).
    stale: dict[Entry, list[str]]


def classify(
    failed: list[Finding], kinds_by_case: dict[str, set[str]], entries: list[Entry], all_cases: list[Case]
) -> Verdict:
    """Sort the failed checks and find the entries that no longer hold.

    ``kinds_by_case`` is the kinds checkov saw in each render (passed or failed); an entry covers the renders of its
    flavors and image form that have its kind.
    """
    by_name = {case.name: case for case in all_cases}
    accepted: list[Finding] = []
    rejected: list[Finding] = []
    matched: dict[Entry, set[str]] = {entry: set() for entry in entries}
    for finding in failed:
        case = by_name[finding.case]
        owners = [entry for entry in entries if entry.accepts(finding, case)]
        (accepted if owners else rejected).append(finding)
        for entry in owners:
            matched[entry].add(case.name)
    stale = {}
    for entry in entries:
        covered = [case.name for case in all_cases if entry.covers(case) and entry.resource in kinds_by_case[case.name]]
        missing = [name for name in covered if name not in matched[entry]]
        if missing or not covered:
            stale[entry] = missing
    return Verdict(accepted, rejected, stale)
