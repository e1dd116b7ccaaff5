"""Watch streams: initial ADDED events, resumption from a resourceVersion, 410 when it is too old, bookmarks,
selector transitions (an object leaving the selector is DELETED for that watcher) and timeouts."""

from __future__ import annotations

import copy
import time
from collections.abc import Generator
from typing import Any, Callable, Optional

from .resources import ResourceDef
from .store import Event, Store

Matcher = Callable[[dict[str, Any]], bool]


def _typed(rd: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
    o = copy.deepcopy(obj)
    o["kind"] = rd.kind
    o["apiVersion"] = rd.api_version
    return o


def _in_scope(ev: Event, rd: ResourceDef, ns: Optional[str]) -> bool:
    if ev.resource != rd.key:
        return False
    return ns is None or ev.obj.get("metadata", {}).get("namespace", "") == ns


def translate(ev: Event, matcher: Matcher) -> Optional[tuple[str, dict[str, Any]]]:
    now = matcher(ev.obj)
    before = ev.old is not None and matcher(ev.old)
    if ev.type == "ADDED":
        return ("ADDED", ev.obj) if now else None
    if ev.type == "DELETED":
        return ("DELETED", ev.obj) if before else None
    if now and before:
        return ("MODIFIED", ev.obj)
    if now:
        return ("ADDED", ev.obj)
    if before:
        return ("DELETED", ev.obj)
    return None


def too_old(rv: int, oldest: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": f"too old resource version: {rv} ({oldest})",
                                        "reason": "Expired", "code": 410}}


def stream(store: Store, rd: ResourceDef, ns: Optional[str], matcher: Matcher, resource_version: Optional[str],
           timeout_s: float, bookmarks: bool, send_initial: Optional[bool], is_stopping: Callable[[], bool],
           bookmark_interval_s: float = 5.0) -> Generator[dict[str, Any], None, None]:
    deadline = time.monotonic() + timeout_s
    initial: list[dict[str, Any]] = []
    expired: Optional[dict[str, Any]] = None
    with store.lock:  # nothing is yielded while the lock is held: a slow client must not stall the server
        if resource_version in (None, "", "0") or send_initial:
            items, last = store.list_objects(rd.key, ns)
            initial = [{"type": "ADDED", "object": _typed(rd, o)} for o in items if matcher(o)]
        else:
            try:
                last = int(resource_version)
            except ValueError:
                last = 0
            if last <= 0 or last < store.compacted_rv:
                expired = too_old(last, store.oldest_available())
    if expired is not None:
        yield expired
        return
    yield from initial
    if send_initial and bookmarks:
        yield {"type": "BOOKMARK", "object": {"kind": rd.kind, "apiVersion": rd.api_version, "metadata": {
            "resourceVersion": str(last), "annotations": {"k8s.io/initial-events-end": "true"}}}}
    next_bookmark = time.monotonic() + bookmark_interval_s
    while True:
        with store.cond:
            while True:
                if store.closed or is_stopping():
                    return
                pending = store.events_after(last)
                now = time.monotonic()
                if pending or now >= deadline or (bookmarks and now >= next_bookmark):
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                store.cond.wait(timeout=max(0.01, min(wait, 1.0)))
            fell_behind = bool(pending) and last < store.compacted_rv
            oldest = store.oldest_available()
            batch: list[Event] = [] if fell_behind else list(pending)
            if batch:
                last = batch[-1].rv
        if fell_behind:
            # The watcher fell behind the window while blocked writing: the real server closes with 410 too.
            yield too_old(last, oldest)
            return
        for ev in batch:
            if not _in_scope(ev, rd, ns):
                continue
            t = translate(ev, matcher)
            if t is not None:
                yield {"type": t[0], "object": _typed(rd, t[1])}
        now = time.monotonic()
        if now >= deadline:
            return
        if bookmarks and now >= next_bookmark:
            next_bookmark = now + bookmark_interval_s
            yield {"type": "BOOKMARK", "object": {"kind": rd.kind, "apiVersion": rd.api_version,
                                                  "metadata": {"resourceVersion": str(last)}}}
