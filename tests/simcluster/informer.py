"""List + watch into a local cache, like client-go's informers: the simulated controllers and kubelets react to events.

On a dropped watch it re-watches from the last resourceVersion; on 410 Gone (or an ERROR event) it lists again and
emits synthetic ADDED/MODIFIED/DELETED events for whatever changed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from simcluster.client import ApiClient, ApiError, Obj, WatchStopper, resource_path

log = logging.getLogger(__name__)
Handler = Callable[[str, Obj], None]


def obj_key(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace") or ""
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def _rv(obj: Obj) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:  # resourceVersions are opaque in general; the simulated server's are integers
        return 0


class Informer:
    """``Informer(client, "Pod", handler, field_selector="spec.nodeName=n1").start()``; ``cache`` maps ns/name → obj.

    The field selector is also applied client-side (for ``spec.nodeName`` and ``metadata.name``), so a server that
    ignores it only costs bandwidth.
    """

    def __init__(self, client: ApiClient, kind: str, handler: Optional[Handler] = None,
                 namespace: Optional[str] = None, field_selector: str = "", label_selector: str = "") -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.handlers: list[Handler] = [handler] if handler else []
        self.cache: dict[str, Obj] = {}
        self.lock = threading.RLock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._stopper = WatchStopper()
        self._thread: Optional[threading.Thread] = None

    # ---- public -------------------------------------------------------------------------------------
    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._stopper.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def items(self) -> list[Obj]:
        with self.lock:
            return list(self.cache.values())

    def get(self, key: str) -> Optional[Obj]:
        with self.lock:
            return self.cache.get(key)

    def observe(self, obj: Obj, deleted: bool = False) -> None:
        """Records the result of our own write at once (client-go's "expectations"), so a reconcile that runs before
        the watch event arrives does not act twice. Older versions never overwrite newer ones."""
        self._apply("DELETED" if deleted else "MODIFIED", obj, notify=False)

    # ---- internals ----------------------------------------------------------------------------------
    def _selected(self, obj: Obj) -> bool:
        for clause in filter(None, self.field_selector.split(",")):
            field, _, value = clause.partition("=")
            if field == "spec.nodeName" and obj.get("spec", {}).get("nodeName", "") != value:
                return False
            if field == "metadata.name" and obj.get("metadata", {}).get("name") != value:
                return False
        return True

    def _apply(self, event_type: str, obj: Obj, notify: bool = True) -> None:
        key = obj_key(obj)
        with self.lock:
            old = self.cache.get(key)
            if old is not None and _rv(obj) and _rv(old) > _rv(obj):
                return
            if event_type == "DELETED" or not self._selected(obj):
                if old is None:
                    return
                self.cache.pop(key, None)
                event_type = "DELETED"
            else:
                self.cache[key] = obj
                if old is None:
                    event_type = "ADDED"
        if notify:
            self._notify(event_type, obj)

    def _notify(self, event_type: str, obj: Obj) -> None:
        for handler in self.handlers:
            try:
                handler(event_type, obj)
            except Exception:  # a handler bug must not kill the watch loop
                log.exception("%s informer handler failed", self.kind)

    def _query(self) -> dict[str, str]:
        query = {}
        if self.field_selector:
            query["fieldSelector"] = self.field_selector
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        return query

    def _relist(self) -> str:
        listing = self.client.list(self.kind, self.namespace, self.label_selector, self.field_selector)
        fresh = {obj_key(o): o for o in listing.get("items", []) if self._selected(o)}
        with self.lock:
            gone = [o for k, o in self.cache.items() if k not in fresh]
        for obj in gone:
            self._apply("DELETED", obj)
        for obj in fresh.values():
            obj.setdefault("kind", self.kind)
            self._apply("MODIFIED", obj)
        self.synced.set()
        return str(listing.get("metadata", {}).get("resourceVersion", "0"))

    def _run(self) -> None:
        resource_version = ""
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self._relist()
                resource_version = self._watch(resource_version)
                backoff = 0.2
            except ApiError as exc:
                if exc.status == 410:
                    resource_version = ""
                    continue
                log.warning("%s watch: %s", self.kind, exc)
                resource_version = ""
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.debug("%s watch dropped: %s", self.kind, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _watch(self, resource_version: str) -> str:
        path = resource_path(self.kind, self.namespace)
        self._stopper = WatchStopper()
        if self._stop.is_set():
            return resource_version
        started = time.monotonic()
        for event in self.client.watch(path, resource_version, self._query(), self._stopper):
            event_type = event.get("type", "")
            obj = event.get("object") or {}
            if event_type == "ERROR":
                if obj.get("code") == 410:
                    return ""
                raise ApiError(int(obj.get("code") or 500), obj, "WATCH", path)
            new_rv = str(obj.get("metadata", {}).get("resourceVersion", "") or resource_version)
            if event_type != "BOOKMARK":
                obj.setdefault("kind", self.kind)
                self._apply(event_type, obj)
            resource_version = new_rv
            if self._stop.is_set():
                break
        if time.monotonic() - started < 0.05 and not self._stop.is_set():
            time.sleep(0.2)  # a server that ends watches at once must not make us spin
        return resource_version
