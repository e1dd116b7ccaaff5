"""Helpers of the end-to-end tests: test images, a handle on a running local cluster, ansible-playbook runs."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from infra._util import wait_until
from infra.cri import CriClient
from infra.images import push_test_image
from kube.client import ApiClient, ApiError

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
REGISTRY = "registry.test:5000"
ADMIN_USER = "kubernetes-admin"  # the user of the cluster's admin kubeconfig, which the plays use
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

# (repository, tag, MiB, layers): small, distinct content per image; every test uses its own images, so that
# "present on the node" proves the test's own run pulled it.
TEST_IMAGES: list[tuple[str, str, float, int]] = [
    *[(f"e2e/app{i}", "v1", 1.0, 2) for i in range(5)],
    ("e2e/stall", "v1", 3.0, 1),
    ("e2e/keep0", "v1", 0.5, 1), ("e2e/keep1", "v1", 0.5, 1), ("e2e/new0", "v1", 0.5, 1),
    ("e2e/ok", "v1", 0.5, 1), ("e2e/ocp", "v1", 0.5, 1), ("e2e/metrics", "v1", 0.5, 1),
    ("e2e/idem", "v1", 0.5, 1), ("e2e/multi", "v1", 0.5, 1), ("e2e/gone", "v1", 0.5, 1),
    ("e2e/status", "v1", 0.5, 1), ("e2e/edit", "v1", 0.5, 1), ("e2e/kubectl", "v1", 0.5, 1),
    ("e2e/psa", "v1", 0.5, 1), ("e2e/rbac", "v1", 0.5, 1), ("e2e/denied", "v1", 0.5, 1),
    ("e2e/slots-a", "v1", 1.0, 2), ("e2e/slots-b", "v1", 1.0, 2), ("e2e/progress", "v1", 0.5, 1),
    *[(f"e2e/herd-{what}", "v1", 1.0, 2) for what in ("two", "canary", "429", "429b", "killed")],
    *[(f"e2e/life-{what}", "v1", 0.5, 1) for what in ("cordon", "delete", "kubelet", "add")],
]


def ref(repository: str, tag: str = "v1") -> str:
    return f"{REGISTRY}/{repository}:{tag}"


def push_all(upstream: str) -> list[str]:
    """Pushes every test image to the registry at ``upstream`` (idempotent); returns their references."""
    refs = []
    for repository, tag, size, layers in TEST_IMAGES:
        push_test_image(upstream, repository, tag, size_mib=size, layers=layers, seed=repository)
        refs.append(ref(repository, tag))
    return refs


def install_collection(work: Path, source: Path = REPO) -> Path:
    """Builds the collection tarball from the file set of the checkout at ``source`` and installs it under
    ``work``, as a user installs it; returns the collections path for ANSIBLE_COLLECTIONS_PATH."""
    tree = subprocess.run(["bash", str(source / "scripts" / "build-tree.sh")], capture_output=True, text=True,
                          check=True, env={**os.environ, "BUILD_ROOT": str(work / "tree")}).stdout.strip()
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", tree, "--output-path",
                    str(work / "dist")], check=True, capture_output=True)
    tarball = next((work / "dist").glob("stackrox-prefetch-*.tar.gz"))
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", str(tarball), "-p",
                    str(work / "collections")], check=True, capture_output=True)
    return work / "collections"


@dataclass
class PlayResult:
    rc: int
    stdout: str
    results: dict[str, Any]  # inventory host → images_result (only hosts whose play succeeded)

    @property
    def changed_total(self) -> int:
        """Sum of ``changed=`` over the PLAY RECAP lines."""
        total = 0
        recap = self.stdout.split("PLAY RECAP", 1)[-1]
        for word in recap.split():
            if word.startswith("changed="):
                total += int(word.split("=", 1)[1])
        return total


class Cluster:
    """A running local cluster (tests/kube), from its cluster.json (started by scripts/test-e2e.sh or a fixture)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.info = json.loads((directory / "cluster.json").read_text())
        self.kubeconfig = Path(self.info["kubeconfig"])
        token = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]["token"]
        self.api = ApiClient(self.info["api_url"], token, self.info["ca_path"], "e2e-tests")
        self.agent_image = self.info["agent_image"]["image"]
        self.agent_version = self.info["agent_image"]["version"]
        self.audit_log = Path(self.info["audit_log"])
        self.kubectl_bin = Path(self.info["bin_dir"]) / "kubectl"

    @property
    def node_names(self) -> list[str]:
        return [n["name"] for n in self.info["nodes"]]

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.info["nodes"] if n["name"] == name)

    def kubectl(self, *args: str, check: bool = True, stdin: Optional[str] = None,
                env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
        """The real kubectl of the cluster's own build, as the admin."""
        return subprocess.run([str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                              capture_output=True, text=True, timeout=120, check=check,
                              env={**os.environ, **(env or {})})

    # ---- API request log: the API server's audit log (Metadata level, one JSON event per line) -------------
    def request_seq(self) -> int:
        return len(self._audit_lines())

    def _audit_lines(self) -> list[str]:
        return self.audit_log.read_text().splitlines()

    def _settle_audit_log(self) -> None:
        """Waits until a marker request of ours is in the log: every request answered before it is there too."""
        marker = f"e2e-audit-marker/{uuid.uuid4()}"
        ApiClient(self.info["api_url"], self.api.token, self.info["ca_path"], marker).request("GET", "/version")
        if not wait_until(lambda: any(marker in line for line in self._audit_lines()[-200:]), 30, 0.1):
            raise AssertionError("the audit log did not record a request within 30s")

    def _records_since(self, seq: int) -> list[dict[str, Any]]:
        self._settle_audit_log()
        records = []
        for number, line in enumerate(self._audit_lines()[seq:], start=seq + 1):
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            uri = str(event.get("requestURI", ""))
            records.append({"seq": number, "user": event.get("user", {}).get("username", ""),
                            "verb": event.get("verb", ""), "path": uri, "namespace": ref.get("namespace", ""),
                            "resource": ref.get("resource", ""), "name": ref.get("name", ""),
                            "code": (event.get("responseStatus") or {}).get("code"),
                            "user_agent": event.get("userAgent", ""),
                            "is_write": event.get("verb") in WRITE_VERBS and "dryRun=" not in uri})
        return records

    def writes_since(self, seq: int, user: Optional[str] = ADMIN_USER) -> list[dict[str, Any]]:
        """Requests since ``seq`` that changed (or tried to change) stored state: not reads, not dry runs."""
        return [r for r in self._records_since(seq) if r["is_write"] and (user is None or r["user"] == user)]

    def requests_since(self, seq: int, user: str = ADMIN_USER) -> list[dict[str, Any]]:
        return [r for r in self._records_since(seq) if r["user"] == user and "e2e-audit-marker" not in
                r["user_agent"] and r["user_agent"] != "e2e-tests"]

    # ---- nodes: containerd and proxies ----------------------------------------------------------
    def image_present(self, node: str, image: str) -> bool:
        """Through the node's CRI (ImageStatus), not through the agent."""
        with CriClient(self.node(node)["address"]) as cri:
            return cri.image_status(image) is not None

    def ctr_images(self, node: str) -> list[str]:
        out = subprocess.run(["ctr", "--address", self.node(node)["socket"], "-n", "k8s.io", "images", "ls", "-q"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return out.split()

    def remove_image(self, node: str, image: str) -> None:
        subprocess.run(["ctr", "--address", self.node(node)["socket"], "-n", "k8s.io", "images", "rm", image],
                       capture_output=True, text=True, timeout=60, check=False)

    def proxy(self, node: str, method: str, route: str, body: Any = None) -> Any:
        url = self.node(node)["proxy_control_url"].rstrip("/") + "/" + route
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def proxy_requests(self, node: str) -> list[dict[str, Any]]:
        return list(self.proxy(node, "GET", "requests"))

    def clear_proxy_requests(self) -> None:
        for node in self.node_names:
            self.proxy(node, "DELETE", "requests")

    # ---- objects --------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: Optional[str] = None) -> Optional[dict[str, Any]]:
        return self.api.get_or_none(kind, name, namespace)

    def raw_get(self, path: str) -> Optional[dict[str, Any]]:
        try:
            result: dict[str, Any] = self.api.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        return list(self.api.list("Pod", namespace, label_selector=label_selector)["items"])

    def node_labels(self) -> dict[str, dict[str, str]]:
        return {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self.api.list("Node")["items"]}

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """The container's log, through the API server and the node's kubelet, as ``kubectl logs``."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        text = self.api.request("GET", path, query={"container": container})
        return text if isinstance(text, str) else json.dumps(text)


def role_vars(cluster: Cluster, name: str, images: list[str], **extra: Any) -> dict[str, Any]:
    """Host variables for one cluster: short agent timeouts keep failing runs brief."""
    values: dict[str, Any] = {
        "images_kubeconfig": str(cluster.kubeconfig), "images_name": name, "images_namespace": name,
        "images_list": images, "images_image": cluster.agent_image, "images_version": cluster.agent_version,
        "images_initial_pull_attempt_timeout": "3s", "images_overall_timeout": "60s",
        "images_initial_pull_attempt_delay": "500ms", "images_timeout": 150,
    }
    values.update(extra)
    return values


def write_inventory(path: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    inventory = {"all": {"children": {"clusters": {"hosts": {
        host: {"ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python"), **values}
        for host, values in hosts.items()}}}}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _prepare_playbook(workdir: Path, collections_path: Path, hosts: dict[str, dict[str, Any]], check: bool,
                      verbosity: int, bin_dir: Path, extra_env: Optional[dict[str, str]]
                      ) -> tuple[list[str], dict[str, str], Path]:
    """The inventory, the wrapper play and the results directory in ``workdir``; the command and its environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = write_inventory(workdir / "inventory.yml", hosts)
    results_dir = workdir / "results"
    results_dir.mkdir(exist_ok=True)
    for old in results_dir.glob("*.json"):
        old.unlink()
    wrapper = workdir / "play.yml"
    wrapper.write_text(yaml.safe_dump([
        {"import_playbook": "stackrox.prefetch.prefetch"},
        {"name": "Save the results", "hosts": "clusters", "gather_facts": False, "tasks": [
            {"name": "Save images_result", "delegate_to": "localhost", "changed_when": False,
             "ansible.builtin.copy": {
                "content": "{{ images_result | default({}) | to_json }}",
                "dest": f"{results_dir}/{{{{ inventory_hostname }}}}.json", "mode": "0644"}}]},
    ], sort_keys=False))
    env = dict(os.environ)
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(collections_path), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"), "ANSIBLE_FORKS": "5",
                "PATH": f"{bin_dir}:{env.get('PATH', '')}", **(extra_env or {})})
    env.pop("K8S_AUTH_KUBECONFIG", None)
    command = [str(bin_dir / "ansible-playbook"), "-i", str(inventory), str(wrapper)]
    if check:
        command.append("--check")
    if verbosity:
        command.append("-" + "v" * verbosity)
    return command, env, results_dir


def _play_result(workdir: Path, results_dir: Path, rc: int, output: str) -> PlayResult:
    (workdir / "ansible.log").write_text(output)
    results = {p.stem: json.loads(p.read_text() or "{}") for p in results_dir.glob("*.json")}
    return PlayResult(rc, output, results)


def run_playbook(workdir: Path, collections_path: Path, hosts: dict[str, dict[str, Any]],
                 check: bool = False, timeout_s: int = 400, verbosity: int = 0) -> PlayResult:
    """``ansible-playbook stackrox.prefetch.prefetch`` (as installed from the tarball) on an inventory whose
    ``clusters`` group holds ``hosts``; a second play saves each host's ``images_result`` as JSON."""
    command, env, results_dir = _prepare_playbook(workdir, collections_path, hosts, check, verbosity, VENV_BIN, None)
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    return _play_result(workdir, results_dir, proc.returncode, proc.stdout + proc.stderr)


@dataclass
class RunningPlaybook:
    """A playbook started by ``start_playbook``: ``proc`` for signals, ``finish()`` for its result."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    results_dir: Path
    output: Path

    def finish(self, timeout_s: float) -> PlayResult:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ansible-playbook did not end within {timeout_s:.0f}s: "
                                 f"{self.output.read_text(errors='replace')[-3000:]}") from None
        return _play_result(self.workdir, self.results_dir, rc, self.output.read_text(errors="replace"))


def start_playbook(workdir: Path, collections_path: Path, hosts: dict[str, dict[str, Any]],
                   bin_dir: Path = VENV_BIN, env: Optional[dict[str, str]] = None) -> RunningPlaybook:
    """``run_playbook`` in the background (ansible-core of ``bin_dir``, more environment in ``env``); stdout and
    stderr go to ``workdir/ansible.out`` (a pipe nobody reads while the play runs could fill up)."""
    command, full_env, results_dir = _prepare_playbook(workdir, collections_path, hosts, False, 0, bin_dir, env)
    output = workdir / "ansible.out"
    # SIGINT as in a terminal: scripts/test-e2e.sh runs pytest in the background, where SIGINT is ignored, and an
    # ignored signal is inherited (ansible-core 2.16 would then never see one). Same pid after the exec.
    default_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.argv[1], sys.argv[1:])")
    with output.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", default_sigint, *command], cwd=workdir, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return RunningPlaybook(proc, workdir, results_dir, output)


HELD_HOST = "local"  # the inventory host of a HeldRollout's play
HELD_ROLLOUT_TIMEOUT_S = 120  # the role's images_timeout there, by default


class HeldRollout:
    """A playbook run whose rollout waits on ``node`` (one name or several): each one's agent pull of ``image``
    is held by that node's registry fault proxy until release().

    ``action`` ``stall_mid_body`` (once): the first blob download stalls halfway, until release() or the agent's
    attempt timeout ends it. ``hold``: every blob request of the image waits, unanswered, until release(), whatever
    the agent's timeouts and retries, so nothing of the image arrives before the test says so.
    """

    def __init__(self, cluster: Cluster, collections_path: Path, workdir: Path, name: str, image: str,
                 node: Union[str, Sequence[str]], action: str = "stall_mid_body",
                 timeout_s: int = HELD_ROLLOUT_TIMEOUT_S, **role_extra: Any) -> None:
        self.cluster, self.image, self.action, self.timeout_s = cluster, image, action, timeout_s
        self.nodes = [node] if isinstance(node, str) else list(node)
        for each in cluster.node_names:
            cluster.remove_image(each, image)
        repository = image.split("/", 1)[1].split(":", 1)[0]
        self.blobs = f"/{repository}/blobs/"
        rule: dict[str, Any] = {"path": self.blobs, "action": action}
        if action == "stall_mid_body":
            rule["times"] = 1
        self.rules = {each: cluster.proxy(each, "POST", "rules", rule)[0] for each in self.nodes}
        hosts = {HELD_HOST: role_vars(cluster, name, [image], images_timeout=timeout_s, **role_extra)}
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.started = time.monotonic()
        self.future = self.pool.submit(run_playbook, workdir, collections_path, hosts)

    def wait_stalled(self) -> None:
        """Until the agent of every held node has reached the held blob (the play must still be running)."""
        def stalled() -> bool:
            if self.future.done():
                raise AssertionError(f"the play ended before the stall: {self.future.result().stdout[-3000:]}")
            # Only this image's requests: the proxies' logs also hold earlier tests' requests.
            return all(any(r.get("action") == self.action and self.blobs in str(r.get("path"))
                           for r in self.cluster.proxy_requests(each)) for each in self.nodes)
        assert wait_until(stalled, 180, 0.5), "the agent never reached the stalled blob"

    def release(self) -> None:
        """Removes the rules, then lets what they hold go on (idempotent: also for a test's cleanup)."""
        for each, rule in list(self.rules.items()):
            self.cluster.proxy(each, "DELETE", f"rules/{rule['id']}")
            self.cluster.proxy(each, "POST", "release")
            del self.rules[each]

    def result(self) -> tuple[PlayResult, float]:
        try:
            result = self.future.result(timeout=self.timeout_s + 120)
        finally:
            self.pool.shutdown(wait=False)
        return result, time.monotonic() - self.started


def nodes_by_name(result: PlayResult, host: str = HELD_HOST) -> dict[str, dict[str, Any]]:
    """The rollout's per-node entries of ``host``'s result, by node name."""
    return {str(n["node"]): n for n in result.results.get(host, {}).get("nodes", [])}


def succeeded_everywhere(held: HeldRollout, cluster: Cluster, image: str) -> dict[str, dict[str, Any]]:
    """A released HeldRollout's per-node entries, once the play ended well: every node of ``cluster`` succeeded
    with no warning (a denied or unreachable Lease API would have warned) and holds ``image`` (asked its CRI)."""
    result, _ = held.result()
    assert result.rc == 0, result.stdout[-6000:]
    nodes = nodes_by_name(result, HELD_HOST)
    assert sorted(nodes) == sorted(cluster.node_names)
    assert all(n["status"] == "succeeded" and not n["warnings"] for n in nodes.values()), nodes
    assert all(cluster.image_present(node, image) for node in cluster.node_names)
    return nodes


def most_at_once(windows: Sequence[tuple[float, float]]) -> int:
    """The largest number of (start, end) windows that overlap at one instant (one ending as another starts: not
    both)."""
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak
