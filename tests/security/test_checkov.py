"""checkov over every render: no failed check without an allow-list entry, no entry without its failures.

Every case of ``allowlist.cases()`` is rendered by the pure renderer (``_settings.validate_settings`` then
``_render.render``) into one directory, and checkov's Kubernetes framework scans them all in one run, offline
(``--skip-download``). A failed check must be accepted by an entry of ``checkov-allow.yml``, which says why; an
entry must fail in every render it covers (``allowlist.classify``), so the list stays exactly as wide as the
findings it excuses.

checkov lives in its own venv, ``.venv-checkov`` (``scripts/bootstrap.sh``, pinned in ``requirements/checkov.txt``):
its pins (``python-dateutil<3`` through botocore, an old ``packaging``) conflict with ``.venv``'s kubernetes client
and pytest. ``CHECKOV=<path>`` runs another checkov.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import subprocess
import typing as t
from pathlib import Path

import pytest
from security.allowlist import (
    FLAVORS,
    Case,
    Entry,
    Finding,
    cases,
    classify,
    load_allow_list,
    parse_entry,
)

from ansible_collections.stackrox.prefetch.plugins.module_utils._render import render, to_yaml
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import validate_settings

TOP = Path(__file__).resolve().parents[2]
CHECKOV = Path(os.environ.get("CHECKOV") or TOP / ".venv-checkov" / "bin" / "checkov")

Obj = t.Dict[str, t.Any]  # noqa: UP006 - runtime alias


def render_case(case: Case) -> list[Obj]:
    return render(validate_settings(case.params()))


@dataclasses.dataclass
class Scan:
    passed: list[Finding]
    failed: list[Finding]
    skipped: int
    parsing_errors: int

    def kinds_by_case(self) -> dict[str, set[str]]:
        kinds: dict[str, set[str]] = collections.defaultdict(set)
        for finding in [*self.passed, *self.failed]:
            kinds[finding.case].add(finding.kind)
        return kinds


def run_checkov(directory: Path) -> Scan:
    """One checkov run over the YAML files of ``directory``; each file's stem is its case name."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run scripts/bootstrap.sh (it creates .venv-checkov)")
    command = [str(CHECKOV), "--directory", str(directory), "--framework", "kubernetes", "--output", "json"]
    # --skip-download: nothing from Prisma Cloud (guidelines, policies); --soft-fail: exit 0 with failed checks, so
    # a non-zero exit is checkov's own failure.
    command += ["--skip-download", "--soft-fail"]
    env = {**os.environ, "ANSI_COLORS_DISABLED": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    if done.returncode != 0:
        pytest.fail(f"checkov exited {done.returncode}: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    kubernetes = [item for item in reports if item.get("check_type") == "kubernetes"]
    assert len(kubernetes) == 1, f"no kubernetes report in checkov's output: {done.stdout[:500]}"
    results, summary = kubernetes[0]["results"], kubernetes[0]["summary"]

    def findings(key: str) -> list[Finding]:
        return [Finding(r["check_id"], r["resource"], Path(r["file_path"]).stem) for r in results.get(key, [])]

    return Scan(
        findings("passed_checks"),
        findings("failed_checks"),
        len(results.get("skipped_checks", [])),
        int(summary.get("parsing_errors", 0)),
    )


def write_renders(directory: Path, renders: dict[str, list[Obj]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, objects in renders.items():
        (directory / f"{name}.yaml").write_text(to_yaml(objects), encoding="utf-8")


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    directory = tmp_path_factory.mktemp("renders")
    write_renders(directory, {case.name: render_case(case) for case in cases()})
    return run_checkov(directory)


def describe(findings: list[Finding]) -> str:
    return "\n".join(f"  {f.case}: {f.check} on {f.resource}" for f in sorted(findings, key=dataclasses.astuple))


# --- the allow-list itself ---------------------------------------------------------------------------------------


def test_allow_list_is_well_formed() -> None:
    entries = load_allow_list()
    assert entries, "an empty allow-list: then remove the file and this test's use of it"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"check": "CKV_K8S_8", "resource": "DaemonSet"}, "reason must say"),
        ({"check": "CKV_K8S_8", "resource": "DaemonSet", "reason": "because"}, "reason must say"),
        ({"check": "K8S_8", "resource": "DaemonSet", "reason": "x " * 10}, "check must be a Kubernetes check id"),
        ({"check": "CKV_K8S_8", "resource": "DaemonSet", "reason": "x " * 10, "flavors": ["gke"]}, "flavors must"),
        ({"check": "CKV_K8S_8", "resource": "DaemonSet", "reason": "x " * 10, "image": "latest"}, "image must"),
        ({"check": "CKV_K8S_8", "resource": "DaemonSet", "reason": "x " * 10, "why": "?"}, "unknown keys"),
    ],
)
def test_allow_list_entries_are_checked(raw: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entry(0, raw)


def entry(
    check: str, resource: str = "DaemonSet", flavors: tuple[str, ...] = FLAVORS, image: t.Optional[str] = None
) -> Entry:
    return Entry(check, resource, flavors, image, "a reason of more than eight words, for the test")


def test_classify_rejects_what_no_entry_accepts_and_reports_entries_wider_than_their_findings() -> None:
    tag, digest = Case("vanilla"), Case("vanilla", image="digest")
    all_cases = [tag, digest]
    kinds = {tag.name: {"DaemonSet"}, digest.name: {"DaemonSet"}}
    failed = [Finding("CKV_K8S_43", "DaemonSet.x.y", tag.name), Finding("CKV_K8S_8", "DaemonSet.x.y", tag.name)]
    narrow, wide, unused = entry("CKV_K8S_43", image="tag"), entry("CKV_K8S_8"), entry("CKV_K8S_9")
    verdict = classify(failed, kinds, [narrow, wide, unused], all_cases)
    assert verdict.accepted == failed and verdict.rejected == []
    # CKV_K8S_8 is accepted for every image form but fails only by tag: the entry is wider than the finding.
    assert verdict.stale == {wide: [digest.name], unused: [tag.name, digest.name]}
    verdict = classify(failed, kinds, [narrow], all_cases)
    assert verdict.rejected == [failed[1]] and verdict.stale == {}
    # An entry for a kind no render has covers nothing: stale too.
    assert classify([], kinds, [entry("CKV_K8S_8", resource="Job")], all_cases).stale == {
        entry("CKV_K8S_8", resource="Job"): []
    }


# --- checkov over every render -----------------------------------------------------------------------------------


def test_checkov_scanned_every_render(scan: Scan) -> None:
    assert scan.parsing_errors == 0
    # A checkov skip annotation on a rendered object would hide a finding from the allow-list.
    assert scan.skipped == 0
    scanned = {finding.case for finding in scan.passed}
    assert scanned == {case.name for case in cases()}
    for case in cases():
        # Every workload and Service was checked, and the Pod checkov makes from each pod template (which its
        # NetworkPolicy check, CKV2_K8S_6, links to the policies; no check looks at a NetworkPolicy itself).
        kinds = {obj["kind"] for obj in render_case(case)} & {"DaemonSet", "Deployment", "Service"}
        assert {*kinds, "Pod"} <= scan.kinds_by_case()[case.name], case.name


def test_every_failed_check_is_allowed(scan: Scan) -> None:
    verdict = classify(scan.failed, scan.kinds_by_case(), load_allow_list(), cases())
    assert not verdict.rejected, (
        "checkov findings without an entry in tests/security/checkov-allow.yml (fix the render, or add an entry "
        "with its reason):\n" + describe(verdict.rejected)
    )


def test_every_allow_list_entry_still_matches(scan: Scan) -> None:
    verdict = classify(scan.failed, scan.kinds_by_case(), load_allow_list(), cases())
    lines = [
        f"  {entry.describe()}: " + ("matches no render" if not missing else "no failure in " + ", ".join(missing))
        for entry, missing in verdict.stale.items()
    ]
    assert not lines, "allow-list entries wider than checkov's findings (narrow or remove them):\n" + "\n".join(lines)


def test_summary(scan: Scan, capsys: pytest.CaptureFixture[str]) -> None:
    """Per flavor: checks passed, failed and, of the failed, accepted by the allow-list (printed, never fails)."""
    entries, by_name = load_allow_list(), {case.name: case for case in cases()}
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for finding in scan.passed:
        totals[by_name[finding.case].flavor][0] += 1
    for finding in scan.failed:
        case = by_name[finding.case]
        totals[case.flavor][1] += 1
        totals[case.flavor][2] += any(entry.accepts(finding, case) for entry in entries)
    with capsys.disabled():
        print(f"\ncheckov over {len(by_name)} renders: flavor passed failed allowed")
        for flavor in FLAVORS:
            print(f"  {flavor:9} {totals[flavor][0]:6} {totals[flavor][1]:6} {totals[flavor][2]:7}")


def test_a_regression_is_caught(tmp_path: Path) -> None:
    # The same scan must fail when the render loses a fix: no pod security context, the token in every container.
    case = Case("vanilla")
    objects = copy.deepcopy(render_case(case))
    pod = next(obj for obj in objects if obj["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    del pod["securityContext"], pod["automountServiceAccountToken"]
    write_renders(tmp_path, {case.name: objects})
    scan = run_checkov(tmp_path)
    rejected = classify(scan.failed, scan.kinds_by_case(), load_allow_list(), [case]).rejected
    assert {(finding.check, finding.kind) for finding in rejected} == {
        ("CKV_K8S_29", "DaemonSet"),
        ("CKV_K8S_38", "DaemonSet"),
    }
