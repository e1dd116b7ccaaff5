"""Object storage with one global resourceVersion counter and a bounded window of watch events."""

from __future__ import annotations

import bisect
import copy
import threading
from dataclasses import dataclass
from typing import Any, Optional

ObjKey = tuple[str, str]  # (namespace or "", name)


@dataclass
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    resource: str  # ResourceDef.key
    obj: dict[str, Any]
    old: Optional[dict[str, Any]]


class Store:
    """Thread-safe; every mutation bumps the global resourceVersion and records one watch event."""

    def __init__(self, window: int = 2000) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1
        self.objects: dict[str, dict[ObjKey, dict[str, Any]]] = {}
        self.events: list[Event] = []
        self._event_rvs: list[int] = []
        self.window = window
        # Highest resourceVersion whose event fell out of the window: watches from before it get 410.
        self.compacted_rv = 1
        self.closed = False

    def table(self, resource: str) -> dict[ObjKey, dict[str, Any]]:
        return self.objects.setdefault(resource, {})

    def get(self, resource: str, ns: str, name: str) -> Optional[dict[str, Any]]:
        with self.lock:
            obj = self.table(resource).get((ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, resource: str, ns: Optional[str] = None) -> tuple[list[dict[str, Any]], int]:
        with self.lock:
            items = [copy.deepcopy(o) for (ons, _), o in sorted(self.table(resource).items())
                     if ns is None or ons == ns]
            return items, self.rv

    def next_rv(self) -> int:
        with self.lock:
            return self.rv + 1

    def put(self, resource: str, obj: dict[str, Any], event_type: str) -> dict[str, Any]:
        """Store ``obj`` (ADDED or MODIFIED) under a new resourceVersion; returns the stored copy."""
        with self.lock:
            self.rv += 1
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.rv)
            key = (meta.get("namespace", ""), meta["name"])
            old = self.table(resource).get(key)
            stored = copy.deepcopy(obj)
            self.table(resource)[key] = stored
            self._record(Event(self.rv, event_type, resource, stored, old))
            return copy.deepcopy(stored)

    def remove(self, resource: str, ns: str, name: str) -> Optional[dict[str, Any]]:
        """Delete; the DELETED event carries the object with a fresh resourceVersion, as the real server."""
        with self.lock:
            old = self.table(resource).pop((ns, name), None)
            if old is None:
                return None
            self.rv += 1
            final = copy.deepcopy(old)
            final["metadata"]["resourceVersion"] = str(self.rv)
            self._record(Event(self.rv, "DELETED", resource, final, old))
            return copy.deepcopy(final)

    def _record(self, ev: Event) -> None:
        self.events.append(ev)
        self._event_rvs.append(ev.rv)
        if len(self.events) > self.window * 2:
            drop = len(self.events) - self.window
            self.compacted_rv = self.events[drop - 1].rv
            del self.events[:drop]
            del self._event_rvs[:drop]
        self.cond.notify_all()

    def events_after(self, rv: int) -> list[Event]:
        """Events with resourceVersion > rv (caller holds the lock)."""
        i = bisect.bisect_right(self._event_rvs, rv)
        return self.events[i:]

    def oldest_available(self) -> int:
        return self.compacted_rv + 1

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()
