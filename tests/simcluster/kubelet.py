"""A process kubelet per simulated node: real image pulls through the node's containerd, containers as local processes.

For each pod bound to its node (watch with ``fieldSelector=spec.nodeName=<node>``) a worker thread: sets the volumes
up (``volumes``), pulls each container's image through CRI PullImage (a failure shows as ErrImagePull, then
ImagePullBackOff, with the CRI error), runs init containers in order and then the containers, each as a local
process of the real agent (``image-prefetcher`` + the container's args; the image content itself is not executed)
in a private mount namespace (``podexec``). Status goes to the ``status`` subresource as a real kubelet writes it.
A pod with a deletionTimestamp gets SIGTERM, SIGKILL after its grace period, and is then deleted with
gracePeriodSeconds=0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import grpc

from infra.cri import CriClient
from simcluster import podutil
from simcluster.client import ApiClient, ApiError, Obj
from simcluster.controllers import EventRecorder
from simcluster.informer import Informer
from simcluster.volumes import (
    SA_MOUNT,
    Mount,
    PodContext,
    VolumeError,
    container_env,
    container_mounts,
    hosts_file,
    materialise_volume,
    remove_pod_volumes,
)

log = logging.getLogger(__name__)
PODEXEC = Path(__file__).resolve().parent / "podexec.py"
BACKOFF_INITIAL_S = 10.0  # kubelet's image-pull and crash-loop backoff: 10 s doubling to 5 min
BACKOFF_MAX_S = 300.0
MAX_TERMINATION_MESSAGE = 4096


def grpc_error_text(exc: grpc.RpcError) -> str:
    """How a Go kubelet prints a CRI error: ``rpc error: code = NotFound desc = ...``."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    name = "".join(part.capitalize() for part in code.name.split("_")) if code else "Unknown"
    name = {"DeadlineExceeded": "DeadlineExceeded", "NotFound": "NotFound"}.get(name, name)
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"rpc error: code = {name} desc = {details}"


def default_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


@dataclass
class ContainerRun:
    """Runtime state of one container of a pod (across restarts)."""

    spec: Obj
    init: bool
    state: Obj
    last_state: Obj = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    image_id: str = ""
    container_id: str = ""
    proc: Optional[subprocess.Popen[bytes]] = None
    pulled: bool = False
    pull_backoff_s: float = 0.0
    crash_backoff_s: float = 0.0
    not_before: float = 0.0
    done: bool = False
    probe_ok: int = 0
    probe_fail: int = 0
    next_probe: float = 0.0
    started_mono: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> Obj:
        out: Obj = {"name": self.name, "state": self.state, "lastState": self.last_state, "ready": self.ready,
                    "restartCount": self.restart_count, "image": self.spec.get("image", ""),
                    "imageID": self.image_id}
        if self.container_id:
            out["containerID"] = self.container_id
        out["started"] = "running" in self.state
        return out


class PodWorker:
    """Drives one pod from Pending to its end; all status writes for the pod come from this thread."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.uid = str(pod["metadata"].get("uid"))
        self.name = str(pod["metadata"]["name"])
        self.namespace = str(pod["metadata"].get("namespace", "default"))
        self.dir = kubelet.pods_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.wake = threading.Event()
        self.deleting = bool(pod["metadata"].get("deletionTimestamp"))
        self.gone = False
        self.start_time = podutil.now_iso()
        spec = pod.get("spec", {})
        has_init = bool(spec.get("initContainers"))
        waiting = {"waiting": {"reason": "PodInitializing" if has_init else "ContainerCreating"}}
        self.inits = [ContainerRun(c, True, dict(waiting)) for c in spec.get("initContainers") or []]
        self.containers = [ContainerRun(c, False, dict(waiting)) for c in spec.get("containers") or []]
        self.volume_paths: Optional[dict[str, Path]] = None
        self.volume_error = ""
        self.init_index = 0
        self.failed = False
        self.last_status: Optional[Obj] = None
        self.conditions: dict[str, Obj] = {}
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    # ---- informer side -----------------------------------------------------------------------------
    def update(self, pod: Obj, gone: bool = False) -> None:
        self.pod = pod
        if gone:
            self.gone = True
        if pod["metadata"].get("deletionTimestamp") or gone:
            self.deleting = True
        self.wake.set()

    # ---- main loop -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_status()
            while not self.deleting and not self.kubelet.stopping.is_set():
                timeout = self._step()
                self._write_status()
                self.wake.wait(timeout)
                self.wake.clear()
        except Exception:
            log.exception("pod worker %s/%s crashed", self.namespace, self.name)
        finally:
            self._terminate()

    def _step(self) -> float:
        """Advances whatever can advance now; returns how long to sleep at most."""
        if self.volume_paths is None and not self._setup_volumes():
            return 2.0
        if self.failed:
            return 5.0
        now = time.monotonic()
        if self.init_index < len(self.inits):
            run = self.inits[self.init_index]
            self._advance(run, now)
            if run.done:
                self.init_index += 1
                self.wake.set()
            return self._next_wake(now)
        for run in self.containers:
            self._advance(run, now)
            self._probe(run, now)
        return self._next_wake(now)

    def _next_wake(self, now: float) -> float:
        times = [r.not_before for r in self.inits + self.containers if r.not_before > now]
        times += [r.next_probe for r in self.containers if r.next_probe > now and r.proc is not None]
        return max(0.05, min([t - now for t in times] + [1.0]))

    # ---- volumes -------------------------------------------------------------------------------------
    def _lookup(self, kind: str, name: str) -> Optional[Obj]:
        return self.kubelet.client.get_or_none(kind, name, self.namespace)

    def _token(self, spec: Obj) -> str:
        sa = self.pod.get("spec", {}).get("serviceAccountName") or "default"
        return self.kubelet.client.token_request(self.namespace, sa, self.pod,
                                                 int(spec.get("expirationSeconds", 3607)))

    def _setup_volumes(self) -> bool:
        ctx = PodContext(self.pod, self.kubelet.node_name)
        paths: dict[str, Path] = {}
        try:
            for volume in self.pod.get("spec", {}).get("volumes") or []:
                paths[volume["name"]] = materialise_volume(volume, self.dir, self.kubelet.host_root, ctx,
                                                           self._lookup, self._token, self.kubelet.ca_pem)
            if self._automount():
                paths["\0serviceaccount"] = self._service_account_dir()
        except VolumeError as exc:
            if str(exc) != self.volume_error:
                self.volume_error = str(exc)
                self.kubelet.events.record(self.pod, "Warning", "FailedMount", str(exc))
            return False
        except ApiError as exc:
            message = f"MountVolume.SetUp failed: {exc.message}"
            if message != self.volume_error:
                self.volume_error = message
                self.kubelet.events.record(self.pod, "Warning", "FailedMount", message)
            return False
        self.hosts_path.write_text(hosts_file(self.pod, self.kubelet.services.items()))
        self.volume_paths = paths
        return True

    @property
    def hosts_path(self) -> Path:
        return self.dir / "etc-hosts"

    def refresh_hosts(self) -> None:
        if self.volume_paths is not None:
            # In place (not rename): running containers see the bind-mounted file change.
            with self.hosts_path.open("r+", encoding="utf-8") as handle:
                handle.seek(0)
                handle.write(hosts_file(self.pod, self.kubelet.services.items()))
                handle.truncate()

    def _automount(self) -> bool:
        spec = self.pod.get("spec", {})
        if spec.get("automountServiceAccountToken") is False:
            return False
        mounted = {vm.get("mountPath", "").rstrip("/") for c in (spec.get("containers") or []) +
                   (spec.get("initContainers") or []) for vm in c.get("volumeMounts") or []}
        return SA_MOUNT not in mounted

    def _service_account_dir(self) -> Path:
        """What the ServiceAccount admission plugin's projected kube-api-access volume would hold."""
        directory = self.dir / "volumes" / "kube-api-access"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self._token({}))
        (directory / "ca.crt").write_bytes(self.kubelet.ca_pem)
        (directory / "namespace").write_text(self.namespace)
        return directory

    # ---- containers ----------------------------------------------------------------------------------
    def _advance(self, run: ContainerRun, now: float) -> None:
        if run.done or run.not_before > now:
            return
        if run.proc is not None:
            code = run.proc.poll()
            if code is None:
                return
            self._exited(run, code)
            return
        if not run.pulled and not self._pull(run):
            return
        self._start(run)

    def _pull(self, run: ContainerRun) -> bool:
        image = str(run.spec.get("image", ""))
        policy = run.spec.get("imagePullPolicy") or default_pull_policy(image)
        cri = self.kubelet.cri
        try:
            present = cri.image_status(image)
            if policy == "Never" and present is None:
                self._set_waiting(run, "ErrImageNeverPull",
                                  f'Container image "{image}" is not present with pull policy of Never')
                run.not_before = time.monotonic() + BACKOFF_INITIAL_S
                return False
            if present is not None and policy != "Always":
                self.kubelet.events.record(self.pod, "Normal", "Pulled",
                                           f'Container image "{image}" already present on machine')
            else:
                self.kubelet.events.record(self.pod, "Normal", "Pulling", f'Pulling image "{image}"')
                started = time.monotonic()
                cri.pull_image(image, timeout_s=120)
                present = cri.image_status(image)
                took = time.monotonic() - started
                size = present.size if present else 0
                self.kubelet.events.record(self.pod, "Normal", "Pulled",
                                           f'Successfully pulled image "{image}" in {took:.3f}s '
                                           f'({took:.3f}s including waiting). Image size: {size} bytes.')
        except grpc.RpcError as exc:
            self._pull_failed(run, image, grpc_error_text(exc))
            return False
        run.image_id = (present.repo_digests[0] if present and present.repo_digests
                        else (present.id if present else ""))
        run.pulled = True
        run.pull_backoff_s = 0.0
        return True

    def _pull_failed(self, run: ContainerRun, image: str, error: str) -> None:
        self.kubelet.events.record(self.pod, "Warning", "Failed", f'Failed to pull image "{image}": {error}')
        self.kubelet.events.record(self.pod, "Warning", "Failed", "Error: ErrImagePull")
        run.pull_backoff_s = min(BACKOFF_MAX_S, run.pull_backoff_s * 2 if run.pull_backoff_s else BACKOFF_INITIAL_S)
        self._set_waiting(run, "ErrImagePull", error)
        self._write_status()
        # ErrImagePull is what the first failure shows; the kubelet then reports the back-off until the retry.
        time.sleep(0.5)
        self._set_waiting(run, "ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {error}')
        self.kubelet.events.record(self.pod, "Normal", "BackOff", f'Back-off pulling image "{image}"')
        run.not_before = time.monotonic() + run.pull_backoff_s

    def _set_waiting(self, run: ContainerRun, reason: str, message: str = "") -> None:
        waiting: Obj = {"reason": reason}
        if message:
            waiting["message"] = message
        run.state = {"waiting": waiting}

    def _paths(self, run: ContainerRun) -> tuple[Path, Path]:
        base = self.dir / "containers" / run.name
        base.mkdir(parents=True, exist_ok=True)
        return base / f"{run.restart_count}.log", base / f"termination-log-{run.restart_count}"

    def _start(self, run: ContainerRun) -> None:
        assert self.volume_paths is not None
        ctx = PodContext(self.pod, self.kubelet.node_name)
        try:
            env = container_env(run.spec, ctx, self._lookup, self.kubelet.base_env(self.pod))
            mounts = container_mounts(run.spec, self.volume_paths)
        except (VolumeError, ApiError) as exc:
            message = str(exc.message if isinstance(exc, ApiError) else exc)
            self._set_waiting(run, "CreateContainerConfigError", message)
            self.kubelet.events.record(self.pod, "Warning", "Failed", f"Error: {message}")
            run.not_before = time.monotonic() + 2.0
            return
        log_path, term_path = self._paths(run)
        term_path.write_bytes(b"")
        with contextlib.suppress(OSError):
            self.kubelet.prepare_host()
        mounts.append(Mount(str(self.hosts_path), "/etc/hosts", "file"))
        mounts.append(Mount(str(term_path), str(run.spec.get("terminationMessagePath") or "/dev/termination-log"),
                            "file"))
        if "\0serviceaccount" in self.volume_paths:
            mounts.append(Mount(str(self.volume_paths["\0serviceaccount"]), SA_MOUNT, "dir", True))
        spec = {"argv": self.kubelet.argv_for(run.spec, env), "env": env,
                "cwd": run.spec.get("workingDir") or "/", "stage": str(self.dir / "stage"),
                "mounts": [m.to_json() for m in mounts]}
        spec_path = self.dir / "containers" / run.name / f"{run.restart_count}.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        with log_path.open("ab") as log_file:
            run.proc = subprocess.Popen([sys.executable, str(PODEXEC), str(spec_path)], stdout=log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        proc = run.proc

        def reap() -> None:  # wakes the worker as soon as the process ends
            proc.wait()
            self.wake.set()

        threading.Thread(target=reap, daemon=True).start()
        run.container_id = "containerd://" + secrets.token_hex(32)
        run.started_mono = time.monotonic()
        run.state = {"running": {"startedAt": podutil.now_iso()}}
        run.ready = run.init is False and not run.spec.get("readinessProbe")
        run.probe_ok = run.probe_fail = 0
        probe = run.spec.get("readinessProbe") or {}
        run.next_probe = time.monotonic() + float(probe.get("initialDelaySeconds", 0))
        self.kubelet.events.record(self.pod, "Normal", "Created", f"Created container {run.name}")
        self.kubelet.events.record(self.pod, "Normal", "Started", f"Started container {run.name}")

    def _termination_message(self, run: ContainerRun, exit_code: int) -> str:
        log_path, term_path = self._paths(run)
        try:
            data = term_path.read_bytes()[:MAX_TERMINATION_MESSAGE]
        except OSError:
            data = b""
        if not data and exit_code != 0 and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                lines = log_path.read_bytes().splitlines()[-80:]
            except OSError:
                lines = []
            data = b"\n".join(lines)[-2048:]
        return data.decode("utf-8", "replace")

    def _exited(self, run: ContainerRun, code: int) -> None:
        if code < 0:  # killed by a signal: a container runtime reports 128 + signal
            code = 128 - code
        terminated: Obj = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                           "startedAt": run.state.get("running", {}).get("startedAt", podutil.now_iso()),
                           "finishedAt": podutil.now_iso(), "containerID": run.container_id}
        message = self._termination_message(run, code)
        if message:
            terminated["message"] = message
        run.proc = None
        run.ready = False
        run.state = {"terminated": terminated}
        policy = self.pod.get("spec", {}).get("restartPolicy") or "Always"
        if run.init and code == 0:
            run.done = True
            return
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if not restart:
            run.done = True
            if run.init or code != 0:
                self.failed = run.init
            return
        self.kubelet.events.record(self.pod, "Warning", "BackOff",
                                   f"Back-off restarting failed container {run.name} in pod "
                                   f"{self.name}_{self.namespace}({self.uid})")
        # Long-running containers reset the back-off, as the kubelet does after 10 minutes of running.
        if time.monotonic() - run.started_mono > 600:
            run.crash_backoff_s = 0.0
        run.crash_backoff_s = min(BACKOFF_MAX_S, run.crash_backoff_s * 2 if run.crash_backoff_s
                                  else BACKOFF_INITIAL_S)
        run.last_state = run.state
        run.restart_count += 1
        self._set_waiting(run, "CrashLoopBackOff",
                          f"back-off {int(run.crash_backoff_s)}s restarting failed container={run.name} "
                          f"pod={self.name}_{self.namespace}({self.uid})")
        run.not_before = time.monotonic() + run.crash_backoff_s

    def _probe(self, run: ContainerRun, now: float) -> None:
        probe = run.spec.get("readinessProbe")
        if not probe or run.proc is None or run.next_probe > now:
            return
        run.next_probe = now + float(probe.get("periodSeconds", 10))
        ok = probe_once(probe, run.spec, float(probe.get("timeoutSeconds", 1)))
        if ok:
            run.probe_ok, run.probe_fail = run.probe_ok + 1, 0
            if run.probe_ok >= int(probe.get("successThreshold", 1)):
                run.ready = True
        else:
            run.probe_ok, run.probe_fail = 0, run.probe_fail + 1
            if run.probe_fail >= int(probe.get("failureThreshold", 3)):
                run.ready = False

    # ---- termination ---------------------------------------------------------------------------------
    def _terminate(self) -> None:
        running = [r for r in self.inits + self.containers if r.proc is not None]
        grace = self._grace_period()
        for run in running:
            self.kubelet.events.record(self.pod, "Normal", "Killing", f"Stopping container {run.name}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for run in running:
            proc = run.proc
            assert proc is not None
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the container left behind in its group
            self._exited_for_deletion(run, proc.returncode)
        deleted = self.gone
        if self.deleting and not self.gone and not self.kubelet.stopping.is_set():
            with contextlib.suppress(ApiError, OSError):
                self._write_status()
            try:
                self.kubelet.client.delete("Pod", self.name, self.namespace, grace_period_seconds=0, uid=self.uid)
                deleted = True
            except ApiError as exc:
                deleted = exc.status in (404, 409)  # already gone, or replaced by a pod with another uid
                if not deleted:
                    log.warning("deleting pod %s/%s: %s", self.namespace, self.name, exc)
            except OSError as exc:
                log.warning("deleting pod %s/%s: %s", self.namespace, self.name, exc)
        if deleted:  # no secret may outlive its pod on disk; logs stay for debugging
            try:
                remove_pod_volumes(self.dir)
            except OSError as exc:
                log.warning("removing volumes of pod %s/%s: %s", self.namespace, self.name, exc)

    def _exited_for_deletion(self, run: ContainerRun, code: Optional[int]) -> None:
        code = 128 - code if code is not None and code < 0 else (code or 0)
        terminated: Obj = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                           "startedAt": run.state.get("running", {}).get("startedAt", podutil.now_iso()),
                           "finishedAt": podutil.now_iso(), "containerID": run.container_id}
        message = self._termination_message(run, code)
        if message:
            terminated["message"] = message
        run.proc = None
        run.ready = False
        run.state = {"terminated": terminated}

    def _grace_period(self) -> float:
        if self.kubelet.stopping.is_set() and not self.deleting:
            return 2.0
        meta = self.pod.get("metadata", {})
        value = meta.get("deletionGracePeriodSeconds")
        if value is None:
            value = self.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        return float(value)

    # ---- status ------------------------------------------------------------------------------------
    def _cond(self, cond_type: str, ok: bool, reason: str = "", message: str = "") -> Obj:
        old = self.conditions.get(cond_type)
        value = "True" if ok else "False"
        cond: Obj = {"type": cond_type, "status": value, "lastProbeTime": None,
                     "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == value
                     else podutil.now_iso()}
        if not ok and reason:
            cond["reason"] = reason
            if message:
                cond["message"] = message
        self.conditions[cond_type] = cond
        return cond

    def compute_status(self) -> Obj:
        initialized = self.init_index >= len(self.inits)
        not_ready = [r.name for r in self.containers if not r.ready]
        phase = self._phase(initialized)
        incomplete = [r.name for r in self.inits[self.init_index:]]
        reason_ready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        conditions = [
            self._cond("PodReadyToStartContainers", self.volume_paths is not None),
            self._cond("Initialized", initialized, "ContainersNotInitialized",
                       f"containers with incomplete status: [{' '.join(incomplete)}]"),
            self._cond("Ready", not not_ready and phase == "Running", reason_ready,
                       f"containers with unready status: [{' '.join(not_ready)}]"),
            self._cond("ContainersReady", not not_ready and phase == "Running", reason_ready,
                       f"containers with unready status: [{' '.join(not_ready)}]"),
            self._cond("PodScheduled", True),
        ]
        status: Obj = {"phase": phase, "conditions": conditions, "hostIP": "127.0.0.1",
                       "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                       "startTime": self.start_time,
                       "containerStatuses": [r.status() for r in self.containers]}
        if self.inits:
            status["initContainerStatuses"] = [r.status() for r in self.inits]
        return status

    def _phase(self, initialized: bool) -> str:
        if self.failed:
            return "Failed"
        if not initialized:
            return "Pending"
        states = [r.state for r in self.containers]
        if any("running" in s for s in states):
            return "Running"
        if self.containers and all(r.done for r in self.containers):
            codes = [r.state.get("terminated", {}).get("exitCode", 1) for r in self.containers]
            return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        if any(r.restart_count for r in self.containers):
            return "Running"
        return "Pending"

    def _write_status(self) -> None:
        status = self.compute_status()
        comparable = _without_times(status)
        if self.last_status is not None and comparable == self.last_status:
            return
        current = self.pod.get("status") or {}
        patch = {k: status.get(k) for k in set(status) | set(current)}
        try:
            result = self.kubelet.client.merge_patch("Pod", self.name, {"status": patch}, self.namespace,
                                                     subresource="status")
        except ApiError as exc:
            if exc.status == 404:
                self.gone = self.deleting = True
                return
            # A transient API error must not end the pod: the next step writes the status again.
            log.warning("pod %s/%s status not written: %s", self.namespace, self.name, exc)
            return
        except OSError as exc:
            log.warning("pod %s/%s status not written: %s", self.namespace, self.name, exc)
            return
        self.pod = result if isinstance(result, dict) and result.get("metadata") else self.pod
        self.last_status = comparable


def _without_times(status: Obj) -> Obj:
    """Status minus condition timestamps, to decide whether a write is needed."""
    copy = json.loads(json.dumps(status))
    for cond in copy.get("conditions", []):
        cond.pop("lastTransitionTime", None)
    return dict(copy)


def probe_once(probe: Obj, container: Obj, timeout_s: float) -> bool:
    """httpGet / tcpSocket against 127.0.0.1 (host network); exec probes are not simulated (count as success)."""
    def port_of(value: Any) -> int:
        if isinstance(value, int) or str(value).isdigit():
            return int(value)
        for port in container.get("ports") or []:
            if port.get("name") == value:
                return int(port["containerPort"])
        return 0

    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            scheme = str(get.get("scheme", "HTTP")).lower()
            url = f"{scheme}://127.0.0.1:{port_of(get.get('port'))}{get.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return 200 <= int(response.status) < 400
        if "tcpSocket" in probe:
            with socket.create_connection(("127.0.0.1", port_of(probe["tcpSocket"].get("port"))), timeout_s):
                return True
    except (OSError, ValueError):
        return False
    return True


class Kubelet:
    """One simulated node's kubelet. ``services`` is a shared Service informer (for /etc/hosts)."""

    def __init__(self, client: ApiClient, node_name: str, node_dir: Path, host_root: Path, cri_address: str,
                 api_port: int, ca_pem: bytes, agent_argv: list[str], services: Informer,
                 prepare_host: Optional[Callable[[], None]] = None) -> None:
        self.client = client
        self.node_name = node_name
        self.pods_dir = node_dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.host_root = host_root
        self.cri = CriClient(cri_address)
        self.api_port = api_port
        self.ca_pem = ca_pem
        self.agent_argv = agent_argv
        self.services = services
        # Re-links the host root's CRI sockets if containerd was restarted (a new socket inode).
        self.prepare_host = prepare_host or (lambda: None)
        self.events = EventRecorder(client, "kubelet", node_name)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self.pods = Informer(client, "Pod", self._on_pod, field_selector=f"spec.nodeName={node_name}")

    def start(self) -> Kubelet:
        self.pods.start()
        self.services.handlers.append(lambda _e, _s: self._refresh_hosts())
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.pods.stop()
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.wake.set()
        for worker in workers:
            worker.thread.join(timeout=30)
        self.cri.close()

    def base_env(self, pod: Obj) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOSTNAME": str(pod["metadata"]["name"]), "HOME": "/root",
                "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.api_port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api_port),
                "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.api_port}"}

    def argv_for(self, container: Obj, env: dict[str, str]) -> list[str]:
        """The agent with the container's args; a command that is not the agent runs as a host command."""
        command = [str(c) for c in container.get("command") or []]
        args = [str(a) for a in container.get("args") or []]
        if command and Path(command[0]).name not in ("image-prefetcher", "image-prefetcher.py"):
            return command + args
        return self.agent_argv + command[1:] + args

    def _on_pod(self, event_type: str, pod: Obj) -> None:
        uid = str(pod["metadata"].get("uid"))
        with self._lock:
            worker = self.workers.get(uid)
            if worker is None:
                if event_type == "DELETED" or self.stopping.is_set():
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.thread.start()
                return
        worker.update(pod, gone=event_type == "DELETED")

    def _refresh_hosts(self) -> None:
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.refresh_hosts()
