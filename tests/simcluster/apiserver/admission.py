"""Pod Security admission (the enforce/warn labels of a namespace), with the real message forms.

Checks run in the order of their check IDs, as the real evaluator reports them. Only the checks a DaemonSet like
ours can trip are modelled (see the README for the list).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

LEVELS = ("privileged", "baseline", "restricted")
ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"

Check = Callable[[dict[str, Any]], Optional[str]]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        out += [c for c in spec.get(field) or [] if isinstance(c, dict)]
    return out


def _quote_list(names: list[str], singular: str, plural: str) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"{singular if len(names) == 1 else plural} {quoted}"


def _sc(c: dict[str, Any]) -> dict[str, Any]:
    sc = c.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def _allow_priv_esc(spec: dict[str, Any]) -> Optional[str]:
    bad = [c.get("name", "") for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return (f"allowPrivilegeEscalation != false ({_quote_list(bad, 'container', 'containers')} must set "
            "securityContext.allowPrivilegeEscalation=false)")


_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                  "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def _caps_baseline(spec: dict[str, Any]) -> Optional[str]:
    parts = []
    for c in _containers(spec):
        added = [a for a in ((_sc(c).get("capabilities") or {}).get("add") or []) if a not in _BASELINE_CAPS]
        if added:
            parts.append(f'container "{c.get("name", "")}" must not include '
                         + ", ".join(f'"{a}"' for a in added) + " in securityContext.capabilities.add")
    return f"non-default capabilities ({'; '.join(parts)})" if parts else None


def _caps_restricted(spec: dict[str, Any]) -> Optional[str]:
    no_drop, bad_add = [], []
    for c in _containers(spec):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            no_drop.append(c.get("name", ""))
        added = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            bad_add.append(f'container "{c.get("name", "")}" must not include '
                           + ", ".join(f'"{a}"' for a in added) + " in securityContext.capabilities.add")
    parts = []
    if no_drop:
        parts.append(f'{_quote_list(no_drop, "container", "containers")} must set '
                     'securityContext.capabilities.drop=["ALL"]')
    parts += bad_add
    return f"unrestricted capabilities ({'; '.join(parts)})" if parts else None


def _host_namespaces(spec: dict[str, Any]) -> Optional[str]:
    on = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True]
    return f"host namespaces ({', '.join(on)})" if on else None


def _host_path(spec: dict[str, Any]) -> Optional[str]:
    names = [v.get("name", "") for v in spec.get("volumes") or [] if isinstance(v, dict) and "hostPath" in v]
    return f"hostPath volumes ({_quote_list(names, 'volume', 'volumes')})" if names else None


def _host_ports(spec: dict[str, Any]) -> Optional[str]:
    parts = []
    for c in _containers(spec):
        ports = [str(p["hostPort"]) for p in c.get("ports") or [] if isinstance(p, dict) and p.get("hostPort")]
        if ports:
            parts.append(f'container "{c.get("name", "")}" uses {"hostPort" if len(ports) == 1 else "hostPorts"} '
                         + ", ".join(ports))
    return f"hostPort ({'; '.join(parts)})" if parts else None


def _privileged(spec: dict[str, Any]) -> Optional[str]:
    bad = [c.get("name", "") for c in _containers(spec) if _sc(c).get("privileged") is True]
    if not bad:
        return None
    return f"privileged ({_quote_list(bad, 'container', 'containers')} must not set securityContext.privileged=true)"


_ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                    "secret", "image"}


def _restricted_volumes(spec: dict[str, Any]) -> Optional[str]:
    by_type: dict[str, list[str]] = {}
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for k in v:
            if k != "name" and k not in _ALLOWED_VOLUMES:
                by_type.setdefault(k, []).append(v.get("name", ""))
    if not by_type:
        return None
    parts = []
    for t, names in by_type.items():
        verb = "uses" if len(names) == 1 else "use"
        parts.append(f'{_quote_list(names, "volume", "volumes")} {verb} restricted volume type "{t}"')
    return f"restricted volume types ({'; '.join(parts)})"


def _run_as_non_root(spec: dict[str, Any]) -> Optional[str]:
    pod_sc = spec.get("securityContext") or {}
    pod_val = pod_sc.get("runAsNonRoot") if isinstance(pod_sc, dict) else None
    explicit_false = [c.get("name", "") for c in _containers(spec) if _sc(c).get("runAsNonRoot") is False]
    implicit = [c.get("name", "") for c in _containers(spec) if _sc(c).get("runAsNonRoot") is None]
    parts = []
    if pod_val is False:
        parts.append("pod must not set securityContext.runAsNonRoot=false")
    if explicit_false:
        parts.append(f"{_quote_list(explicit_false, 'container', 'containers')} must not set "
                     "securityContext.runAsNonRoot=false")
    if pod_val is not True and implicit:
        parts.append(f"pod or {_quote_list(implicit, 'container', 'containers')} must set "
                     "securityContext.runAsNonRoot=true")
    return f"runAsNonRoot != true ({'; '.join(parts)})" if parts else None


def _run_as_user(spec: dict[str, Any]) -> Optional[str]:
    pod_sc = spec.get("securityContext") or {}
    parts = []
    if isinstance(pod_sc, dict) and pod_sc.get("runAsUser") == 0:
        parts.append("pod must not set runAsUser=0")
    bad = [c.get("name", "") for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if bad:
        parts.append(f"{_quote_list(bad, 'container', 'containers')} must not set runAsUser=0")
    return f"runAsUser=0 ({'; '.join(parts)})" if parts else None


def _seccomp_type(sc: Any) -> Optional[str]:
    prof = sc.get("seccompProfile") if isinstance(sc, dict) else None
    return prof.get("type") if isinstance(prof, dict) else None


def _seccomp_baseline(spec: dict[str, Any]) -> Optional[str]:
    parts = []
    if _seccomp_type(spec.get("securityContext")) == "Unconfined":
        parts.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    bad = [c.get("name", "") for c in _containers(spec) if _seccomp_type(_sc(c)) == "Unconfined"]
    if bad:
        parts.append(f'{_quote_list(bad, "container", "containers")} must not set '
                     'securityContext.seccompProfile.type to "Unconfined"')
    return f"seccompProfile ({'; '.join(parts)})" if parts else None


def _seccomp_restricted(spec: dict[str, Any]) -> Optional[str]:
    ok = ("RuntimeDefault", "Localhost")
    pod_t = _seccomp_type(spec.get("securityContext"))
    parts = []
    if pod_t is not None and pod_t not in ok:
        parts.append(f'pod must not set securityContext.seccompProfile.type to "{pod_t}"')
    bad = [c.get("name", "") for c in _containers(spec) if _seccomp_type(_sc(c)) not in (None, *ok)]
    if bad:
        parts.append(f'{_quote_list(bad, "container", "containers")} must not set '
                     'securityContext.seccompProfile.type to ' + '"Unconfined"')
    unset = [c.get("name", "") for c in _containers(spec) if _seccomp_type(_sc(c)) is None]
    if pod_t is None and unset:
        parts.append(f'pod or {_quote_list(unset, "container", "containers")} must set '
                     'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return f"seccompProfile ({'; '.join(parts)})" if parts else None


# (check id, minimum level, check); restricted replaces the baseline variant of the same concern.
_CHECKS: list[tuple[str, str, Check]] = [
    ("allowPrivilegeEscalation", "restricted", _allow_priv_esc),
    ("capabilities_baseline", "baseline", _caps_baseline),
    ("capabilities_restricted", "restricted", _caps_restricted),
    ("hostNamespaces", "baseline", _host_namespaces),
    ("hostPathVolumes", "baseline", _host_path),
    ("hostPorts", "baseline", _host_ports),
    ("privileged", "baseline", _privileged),
    ("restrictedVolumes", "restricted", _restricted_volumes),
    ("runAsNonRoot", "restricted", _run_as_non_root),
    ("runAsUser", "restricted", _run_as_user),
    ("seccompProfile_baseline", "baseline", _seccomp_baseline),
    ("seccompProfile_restricted", "restricted", _seccomp_restricted),
]
_OVERRIDDEN_IN_RESTRICTED = {"capabilities_baseline", "seccompProfile_baseline"}


def evaluate(level: str, pod_spec: dict[str, Any]) -> list[str]:
    """The violation texts of ``pod_spec`` against ``level``, in the real evaluator's order."""
    if level not in ("baseline", "restricted"):
        return []
    out = []
    for cid, min_level, check in _CHECKS:
        if min_level == "restricted" and level != "restricted":
            continue
        if level == "restricted" and cid in _OVERRIDDEN_IN_RESTRICTED:
            continue
        msg = check(pod_spec)
        if msg:
            out.append(msg)
    return out


def policy_label(ns_labels: dict[str, str], mode: str) -> Optional[tuple[str, str]]:
    """(level, version) for ``enforce``/``warn``; None when the namespace does not set that mode."""
    level = ns_labels.get(f"pod-security.kubernetes.io/{mode}")
    if level not in ("baseline", "restricted"):
        return None
    version = ns_labels.get(f"pod-security.kubernetes.io/{mode}-version") or "latest"
    return level, version


def pod_spec_of(kind: str, obj: dict[str, Any]) -> Optional[dict[str, Any]]:
    if kind == "Pod":
        spec = obj.get("spec")
    elif kind in ("DaemonSet", "Deployment", "ReplicaSet", "StatefulSet", "Job"):
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec")
    else:
        return None
    return spec if isinstance(spec, dict) else None


def check(kind: str, obj: dict[str, Any], ns_labels: dict[str, str]) -> tuple[Optional[str], list[str]]:
    """(rejection text for pods or None, warnings). Workloads are never rejected, only warned about."""
    spec = pod_spec_of(kind, obj)
    if spec is None:
        return None, []
    warnings: list[str] = []
    reject: Optional[str] = None
    enforce = policy_label(ns_labels, "enforce")
    if enforce is not None:
        viol = evaluate(enforce[0], spec)
        if viol:
            text = f'PodSecurity "{enforce[0]}:{enforce[1]}": ' + ", ".join(viol)
            if kind == "Pod":
                reject = "violates " + text
            else:
                warnings.append("would violate " + text)
    warn = policy_label(ns_labels, "warn")
    if warn is not None and warn != enforce:
        viol = evaluate(warn[0], spec)
        if viol:
            warnings.append(f'would violate PodSecurity "{warn[0]}:{warn[1]}": ' + ", ".join(viol))
    return reject, warnings
