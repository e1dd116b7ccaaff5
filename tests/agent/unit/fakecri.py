"""Fake CRI runtimes for the engine's retry/deadline/credential logic, both playing the same `ScriptedImages` script.

* `FakeCri`: a tiny gRPC server (grpc.aio on a UNIX socket), for what needs real RPCs: deadlines enforced by gRPC,
  cancellation reaching the server, the CLI run as a process (`FakeCriThread`).
* `FakeImageService`: the engine's `ImageService` in-process, no gRPC; with `virtualclock.run_virtual` every sleep,
  attempt timeout and overall deadline passes on a virtual clock, so a test's outcome never depends on how fast the
  machine is.

Each PullImage call takes the next scripted `Action` for its image (the last one repeats; default: succeed).
Real-runtime behaviour is covered by the integration tests against containerd.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from image_prefetcher._proto import cri_pb2, cri_pb2_grpc
from image_prefetcher.keyring import Credential


@dataclass(frozen=True)
class Action:
    kind: str = "ok"  # ok | fail | hang
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    delay: float = 0.0  # seconds before answering (ok / fail)


OK = Action()
HANG = Action("hang")


def fail(code: grpc.StatusCode, details: str) -> Action:
    return Action("fail", code, details)


@dataclass
class PullCall:
    image: str
    username: str
    password: str
    started: float  # event loop time (virtual under run_virtual)
    ended: float | None = None
    cancelled: bool = False
    timeout: float | None = None  # the RPC deadline the client gave (FakeImageService only)


class PullFailure(Exception):
    """A scripted PullImage failure: the status the runtime answers with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


def unauthorized(image: str) -> str:
    """containerd's text for a registry's 401, as the fakes answer a wrong login."""
    return f'failed to pull "{image}": unexpected status: 401 Unauthorized'


@dataclass
class ScriptedImages:
    """The script both fakes play: per image the next Action, the login it requires, the images already present."""

    scripts: dict[str, list[Action]] = field(default_factory=dict)
    required_login: dict[str, tuple[str, str]] = field(default_factory=dict)  # image -> (user, password)
    present: set[str] = field(default_factory=set)
    calls: list[PullCall] = field(default_factory=list)
    status_calls: list[str] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    def status_of(self, name: str) -> cri_pb2.Image | None:
        self.status_calls.append(name)
        if name in self.present or name.startswith("sha256:"):
            return cri_pb2.Image(id=name, size=1234)
        return None

    async def play_pull(self, call: PullCall) -> str:
        """Plays the image's next action for `call`; returns the image_ref or raises PullFailure."""
        loop = asyncio.get_running_loop()
        previous = sum(1 for c in self.calls if c.image == call.image)
        self.calls.append(call)
        script = self.scripts.get(call.image, [OK])
        action = script[min(previous, len(script) - 1)]
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if action.kind == "hang":
                await asyncio.sleep(3600)
            if action.delay:
                await asyncio.sleep(action.delay)
            login = self.required_login.get(call.image)
            if login is not None and (call.username, call.password) != login:
                raise PullFailure(grpc.StatusCode.UNKNOWN, unauthorized(call.image))
            if action.kind == "fail":
                raise PullFailure(action.code, action.details)
            self.present.add(call.image)
            return "sha256:" + str(abs(hash(call.image)))[:12]
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            call.ended = loop.time()
            self.active -= 1


def rpc_failure(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a grpc.aio client raises for a failed call."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@dataclass
class FakeImageService(ScriptedImages):
    """The engine's ImageService in-process: the RPC deadline is `asyncio.wait_for`, as a client deadline would be."""

    async def pull_image(self, image: str, credential: Credential | None, timeout: float) -> str:
        username, password = (credential.username, credential.password) if credential else ("", "")
        call = PullCall(image, username, password, asyncio.get_running_loop().time(), timeout=timeout)
        try:
            return await asyncio.wait_for(self.play_pull(call), timeout=timeout)
        except asyncio.TimeoutError:
            raise rpc_failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except PullFailure as failure:
            raise rpc_failure(failure.code, failure.details) from None

    async def image_status(self, image: str, timeout: float) -> cri_pb2.Image | None:
        return self.status_of(image)


class FakeCri(ScriptedImages, cri_pb2_grpc.ImageServiceServicer, cri_pb2_grpc.RuntimeServiceServicer):
    """`FakeCri(socket_path, scripts=..., required_login=..., present=...)`: the script served over gRPC."""

    def __init__(self, socket_path: Path, **script: Any) -> None:
        super().__init__(**script)
        self.socket_path = socket_path
        self._server: grpc.aio.Server | None = None

    # --- servicer ---
    async def Version(self, request: cri_pb2.VersionRequest, context: grpc.aio.ServicerContext) -> object:
        return cri_pb2.VersionResponse(
            version="0.1.0", runtime_name="fakecri", runtime_version="1", runtime_api_version="v1"
        )

    async def ImageStatus(self, request: cri_pb2.ImageStatusRequest, context: grpc.aio.ServicerContext) -> object:
        image = self.status_of(request.image.image)
        return cri_pb2.ImageStatusResponse(image=image) if image is not None else cri_pb2.ImageStatusResponse()

    async def ListImages(self, request: cri_pb2.ListImagesRequest, context: grpc.aio.ServicerContext) -> object:
        return cri_pb2.ListImagesResponse(
            images=[cri_pb2.Image(id=i, repo_tags=[i], size=1) for i in sorted(self.present)]
        )

    async def PullImage(self, request: cri_pb2.PullImageRequest, context: grpc.aio.ServicerContext) -> object:
        call = PullCall(
            request.image.image, request.auth.username, request.auth.password, asyncio.get_running_loop().time()
        )
        try:
            return cri_pb2.PullImageResponse(image_ref=await self.play_pull(call))
        except PullFailure as failure:
            await context.abort(failure.code, failure.details)
            raise  # abort() raises; this keeps the types honest

    # --- lifecycle ---
    async def start(self) -> None:
        self._server = grpc.aio.server()
        cri_pb2_grpc.add_ImageServiceServicer_to_server(self, self._server)
        cri_pb2_grpc.add_RuntimeServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def __aenter__(self) -> FakeCri:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeCriThread:
    """Runs a FakeCri in its own thread and event loop (for tests that run the CLI as a subprocess)."""

    def __init__(self, fake: FakeCri) -> None:
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCri:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


async def main_beside(
    fake: FakeCri, run: Any, during: Callable[[Any, FakeCri], Awaitable[None]] | None = None, timeout: float = 30
) -> int:
    """``run.main()`` (a FetchRun) against the started ``fake``, with ``during(run, fake)`` alongside; its exit code."""
    async with fake:
        task = asyncio.ensure_future(run.main())
        if during is not None:
            await during(run, fake)
        return await asyncio.wait_for(task, timeout)
