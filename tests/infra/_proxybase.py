"""What the fault proxies (``faultproxy`` for registries, ``apiproxy`` for the Kubernetes API) share: an ordered rule
list whose rules get ids and count their hits, a request log, and an asyncio loop in a background thread that runs
the proxy's servers. Every public method may be called from any thread."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Optional, Protocol, Self, TypeVar


@dataclass
class RecordBase:
    """What every proxied request's record says: the request, what was done with it, on which connection, when."""

    method: str
    path: str
    query: str
    action: str
    conn: int
    started: float


class _Counted(Protocol):
    id: int
    hits: int


RuleT = TypeVar("RuleT", bound=_Counted)
RecordT = TypeVar("RecordT")


class ProxyBase(ABC, Generic[RuleT, RecordT]):
    """Subclasses implement ``_start_servers`` and ``_shutdown`` (on the loop) and ``_thread_name``."""

    def __init__(self) -> None:
        self._rules: list[RuleT] = []
        self._records: list[RecordT] = []
        self._lock = threading.Lock()
        self._rule_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    # ---- rules and the request log --------------------------------------------------------------
    def add_rule(self, rule: RuleT, first: bool = False) -> RuleT:
        """Appends the rule (``first``: puts it before every other one); it gets an id and zero hits."""
        with self._lock:
            rule.id = next(self._rule_ids)
            rule.hits = 0
            if first:
                self._rules.insert(0, rule)
            else:
                self._rules.append(rule)
        return rule

    def remove_rule(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[RuleT]:
        """Copies of the rules as they are now (``hits`` so far)."""
        with self._lock:
            return [copy.copy(r) for r in self._rules]

    @property
    def requests(self) -> list[RecordT]:
        with self._lock:
            return [copy.copy(r) for r in self._records]

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    def _record(self, record: RecordT) -> RecordT:
        with self._lock:
            self._records.append(record)
        return record

    # ---- the loop ----------------------------------------------------------------------------------
    @abstractmethod
    def _thread_name(self) -> str:
        """The name of the thread that runs the proxy's loop."""

    @abstractmethod
    async def _start_servers(self) -> None:
        """Opens the listeners (on the proxy's loop)."""

    @abstractmethod
    async def _shutdown(self) -> None:
        """Closes the listeners and every connection at once."""

    def _in_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Runs ``coroutine`` on the proxy's loop and waits for it (at most 10 s)."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            return None
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)

    def start(self) -> Self:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self._thread_name(), daemon=True)
        self._thread.start()
        ready.wait(10)
        self._in_loop(self._start_servers())
        return self

    def stop(self) -> None:
        """Closes the listeners and every connection at once, stalled ones included; joins the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._in_loop(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
