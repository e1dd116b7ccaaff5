"""Pod spec → what a container process gets: environment, volume directories and bind mounts (mostly pure).

``hostPath`` resolves under the node's host-root directory; ``configMap``/``secret``/``projected``/``downwardAPI``
volumes are materialised as files in the pod directory (items key→path and modes honoured); ``emptyDir`` is a
directory in the pod directory (``medium: Memory`` is not a tmpfs here).
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

Obj = dict[str, Any]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class VolumeError(Exception):
    """A volume cannot be set up; the message is what a real kubelet puts in its FailedMount event."""


@dataclass
class Mount:
    source: str
    target: str
    kind: str  # "dir" | "file"
    read_only: bool = False

    def to_json(self) -> Obj:
        return {"source": self.source, "target": self.target, "kind": self.kind, "read_only": self.read_only}


@dataclass
class PodContext:
    """What env fieldRefs and downward-API files can reference."""

    pod: Obj
    node_name: str
    pod_ip: str = "127.0.0.1"
    host_ip: str = "127.0.0.1"
    extra: dict[str, str] = field(default_factory=dict)


def field_ref(ctx: PodContext, path: str) -> str:
    meta = ctx.pod.get("metadata", {})
    spec = ctx.pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName") or ctx.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": ctx.pod_ip, "status.podIPs": ctx.pod_ip, "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return str(simple[path])
    for prefix, mapping in (("metadata.labels", meta.get("labels") or {}),
                            ("metadata.annotations", meta.get("annotations") or {})):
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(mapping.items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str(mapping.get(path[len(prefix) + 2:-2], ""))
    raise VolumeError(f"unsupported fieldPath {path!r}")


def resource_field_ref(container: Obj, ref: Obj) -> str:
    """limits.cpu / requests.memory etc.; cpu in whole cores rounded up (divisor 1), memory in bytes."""
    section, _, resource = str(ref.get("resource", "")).partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(resource)
    if value is None:
        return "0"
    text = str(value)
    if resource == "cpu":
        millis = int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
        return str(max(1, -(-millis // 1000)))
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 1000, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return str(int(float(text[: -len(suffix)]) * factor))
    return text


Lookup = Callable[[str, str], Optional[Obj]]  # (kind, name) → object in the pod's namespace, or None


def _key_data(obj: Obj, kind: str, key: str) -> Optional[bytes]:
    if kind == "Secret":
        value = (obj.get("data") or {}).get(key)
        if value is not None:
            return base64.b64decode(value)
        text = (obj.get("stringData") or {}).get(key)
        return text.encode() if text is not None else None
    text = (obj.get("data") or {}).get(key)
    if text is not None:
        return str(text).encode()
    binary = (obj.get("binaryData") or {}).get(key)
    return base64.b64decode(binary) if binary is not None else None


def container_env(container: Obj, ctx: PodContext, lookup: Lookup, base: dict[str, str]) -> dict[str, str]:
    """The container's environment: base (PATH, HOSTNAME, KUBERNETES_SERVICE_*), envFrom, then env in order."""
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, ref_key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(ref_key)
            if not ref:
                continue
            obj = lookup(kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise VolumeError(f'{kind.lower()} "{ref.get("name")}" not found')
            for key in sorted(set(obj.get("data") or {}) | set(obj.get("binaryData") or {})):
                data = _key_data(obj, kind, key)
                env[prefix + key] = (data or b"").decode("utf-8", "replace")
    for var in container.get("env") or []:
        env[var["name"]] = _env_value(var, container, ctx, lookup, env)
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) references to earlier variables, as the kubelet expands them ($$ escapes)."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2:end]
            out.append(env.get(name, value[i:end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _env_value(var: Obj, container: Obj, ctx: PodContext, lookup: Lookup, env: dict[str, str]) -> str:
    if "value" in var or "valueFrom" not in var:
        return _expand(str(var.get("value", "")), env)
    source = var["valueFrom"]
    if "fieldRef" in source:
        return field_ref(ctx, source["fieldRef"].get("fieldPath", ""))
    if "resourceFieldRef" in source:
        return resource_field_ref(container, source["resourceFieldRef"])
    for kind, ref_key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = source.get(ref_key)
        if ref is None:
            continue
        obj = lookup(kind, ref.get("name", ""))
        data = _key_data(obj, kind, ref.get("key", "")) if obj is not None else None
        if data is None:
            if ref.get("optional"):
                return ""
            raise VolumeError(f'couldn\'t find key {ref.get("key")} in {kind} {ctx.pod["metadata"].get("namespace")}'
                              f'/{ref.get("name")}')
        return data.decode("utf-8", "replace")
    raise VolumeError(f"unsupported env source for {var.get('name')}")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode & 0o777)


def _write_items(directory: Path, obj: Obj, kind: str, items: Optional[list[Obj]], default_mode: int) -> None:
    if items:
        for item in items:
            data = _key_data(obj, kind, item.get("key", ""))
            if data is None:
                raise VolumeError(f'configmap references non-existent config key: {item.get("key")}'
                                  if kind == "ConfigMap" else f'references non-existent secret key: {item.get("key")}')
            mode = int(item.get("mode", default_mode))
            _write_file(directory / str(item.get("path") or item.get("key", "")), data, mode)
        return
    keys = set(obj.get("data") or {}) | set(obj.get("binaryData") or {}) | set(obj.get("stringData") or {})
    for key in sorted(keys):
        _write_file(directory / key, _key_data(obj, kind, key) or b"", default_mode)


def materialise_volume(volume: Obj, pod_dir: Path, host_root: Path, ctx: PodContext, lookup: Lookup,
                       token: Callable[[Obj], str], ca_pem: bytes) -> Path:
    """Creates/finds the directory (or file) behind one pod volume and returns it."""
    name = volume["name"]
    target = pod_dir / "volumes" / name
    if "hostPath" in volume:
        return host_path(volume["hostPath"], host_root, name)
    if "emptyDir" in volume:
        target.mkdir(parents=True, exist_ok=True)
        return target
    if "configMap" in volume or "secret" in volume:
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        src = volume["configMap"] if kind == "ConfigMap" else volume["secret"]
        ref_name = src.get("name") if kind == "ConfigMap" else src.get("secretName")
        obj = lookup(kind, str(ref_name))
        target.mkdir(parents=True, exist_ok=True)
        if obj is None:
            if src.get("optional"):
                return target
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {kind.lower()} "{ref_name}" not found')
        _write_items(target, obj, kind, src.get("items"), int(src.get("defaultMode", 0o644)))
        return target
    if "projected" in volume:
        target.mkdir(parents=True, exist_ok=True)
        default_mode = int(volume["projected"].get("defaultMode", 0o644))
        for source in volume["projected"].get("sources") or []:
            _project(source, target, ctx, lookup, token, ca_pem, default_mode, name)
        return target
    if "downwardAPI" in volume:
        target.mkdir(parents=True, exist_ok=True)
        _project({"downwardAPI": volume["downwardAPI"]}, target, ctx, lookup, token, ca_pem,
                 int(volume["downwardAPI"].get("defaultMode", 0o644)), name)
        return target
    kinds = [k for k in volume if k != "name"]
    raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : volume type {kinds} is not simulated')


def remove_pod_volumes(pod_dir: Path) -> None:
    """The kubelet's volume teardown once the pod is deleted: the materialised files (secrets, tokens, config maps)
    and emptyDirs go; container logs and termination messages stay for debugging. hostPath volumes are not under
    the pod directory and are left alone; symbolic links are removed, never followed."""
    volumes = pod_dir / "volumes"
    if volumes.is_symlink():
        volumes.unlink()
    elif volumes.exists():
        shutil.rmtree(volumes)


def _project(source: Obj, target: Path, ctx: PodContext, lookup: Lookup, token: Callable[[Obj], str],
             ca_pem: bytes, default_mode: int, volume_name: str) -> None:
    if "serviceAccountToken" in source:
        spec = source["serviceAccountToken"]
        _write_file(target / spec.get("path", "token"), token(spec).encode(), default_mode)
    elif "configMap" in source or "secret" in source:
        kind = "ConfigMap" if "configMap" in source else "Secret"
        src = source["configMap"] if kind == "ConfigMap" else source["secret"]
        obj = lookup(kind, str(src.get("name")))
        if obj is None and kind == "ConfigMap" and src.get("name") == "kube-root-ca.crt":
            obj = {"data": {"ca.crt": ca_pem.decode()}}  # root-ca-cert-publisher is not simulated
        if obj is None:
            if src.get("optional"):
                return
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume_name}" : '
                              f'{kind.lower()} "{src.get("name")}" not found')
        _write_items(target, obj, kind, src.get("items"), default_mode)
    elif "downwardAPI" in source:
        for item in source["downwardAPI"].get("items") or []:
            if "fieldRef" in item:
                value = field_ref(ctx, item["fieldRef"].get("fieldPath", ""))
            else:
                value = resource_field_ref(_container(ctx, item["resourceFieldRef"]), item["resourceFieldRef"])
            _write_file(target / item["path"], value.encode(), int(item.get("mode", default_mode)))


def _container(ctx: PodContext, ref: Obj) -> Obj:
    spec = ctx.pod.get("spec", {})
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == ref.get("containerName"):
            return dict(container)
    return {}


def host_path(spec: Obj, host_root: Path, volume_name: str) -> Path:
    """The node-local directory for a hostPath, with the real type checks."""
    wanted = str(spec.get("path", "/"))
    path = host_root / wanted.lstrip("/")
    path_type = spec.get("type") or ""
    resolved = Path(os.path.realpath(path))
    if not str(resolved).startswith(str(host_root.resolve())):
        resolved = path
    fail = f'MountVolume.SetUp failed for volume "{volume_name}" : hostPath type check failed: {wanted} '
    if path_type in ("", "DirectoryOrCreate"):
        if not resolved.exists():
            resolved.mkdir(parents=True, exist_ok=True)  # the runtime creates a missing hostPath dir
        return resolved
    if path_type == "FileOrCreate":
        if not resolved.exists():
            resolved.parent.mkdir(parents=True, exist_ok=True)
            resolved.touch()
        return resolved
    checks = {"Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
              "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}
    check = checks.get(path_type)
    if check is None:
        raise VolumeError(fail + f"has unknown type {path_type}")
    if not resolved.exists() or not check(resolved.stat().st_mode):
        article = {"Directory": "is not a directory", "File": "is not a file", "Socket": "is not a socket file",
                   "CharDevice": "is not a character device", "BlockDevice": "is not a block device"}[path_type]
        raise VolumeError(fail + article)
    return resolved


def container_mounts(container: Obj, volume_paths: dict[str, Path]) -> list[Mount]:
    """The container's volumeMounts as bind mounts (subPath honoured)."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        source = volume_paths.get(vm.get("name", ""))
        if source is None:
            raise VolumeError(f'volume "{vm.get("name")}" not found in the pod spec')
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        kind = "dir" if source.is_dir() else "file"
        mounts.append(Mount(str(source), str(vm["mountPath"]), kind, bool(vm.get("readOnly"))))
    return mounts


def hosts_file(pod: Obj, services: list[Obj]) -> str:
    """/etc/hosts of a pod: its own name plus every Service of its namespace, all on 127.0.0.1 (host network)."""
    namespace = pod["metadata"].get("namespace", "default")
    lines = ["# Kubernetes-managed hosts file (simcluster: pods share the host network).",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"127.0.0.1\t{pod['metadata'].get('name')}"]
    for svc in sorted(services, key=lambda s: str(s["metadata"].get("name"))):
        if svc["metadata"].get("namespace") != namespace:
            continue
        name = svc["metadata"]["name"]
        lines.append(f"127.0.0.1\t{name} {name}.{namespace} {name}.{namespace}.svc "
                     f"{name}.{namespace}.svc.cluster.local")
    return "\n".join(lines) + "\n"
