"""A tiny in-process fake CRI server (grpc.aio on a UNIX socket) for the engine's retry/deadline/credential logic.

Each PullImage call takes the next scripted `Action` for its image (the last one repeats; default: succeed).
Real-runtime behaviour is covered by the integration tests against containerd.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio

from image_prefetcher._proto import cri_pb2, cri_pb2_grpc


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
    started: float
    ended: float | None = None
    cancelled: bool = False


@dataclass
class FakeCri(cri_pb2_grpc.ImageServiceServicer, cri_pb2_grpc.RuntimeServiceServicer):
    socket_path: Path
    scripts: dict[str, list[Action]] = field(default_factory=dict)
    required_login: dict[str, tuple[str, str]] = field(default_factory=dict)  # image -> (user, password)
    present: set[str] = field(default_factory=set)
    calls: list[PullCall] = field(default_factory=list)
    status_calls: list[str] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    def __post_init__(self) -> None:
        self._server: grpc.aio.Server | None = None

    # --- servicer ---
    async def Version(self, request: cri_pb2.VersionRequest, context: grpc.aio.ServicerContext) -> object:
        return cri_pb2.VersionResponse(
            version="0.1.0", runtime_name="fakecri", runtime_version="1", runtime_api_version="v1"
        )

    async def ImageStatus(self, request: cri_pb2.ImageStatusRequest, context: grpc.aio.ServicerContext) -> object:
        name = request.image.image
        self.status_calls.append(name)
        if name in self.present or name.startswith("sha256:"):
            return cri_pb2.ImageStatusResponse(image=cri_pb2.Image(id=name, size=1234))
        return cri_pb2.ImageStatusResponse()

    async def ListImages(self, request: cri_pb2.ListImagesRequest, context: grpc.aio.ServicerContext) -> object:
        return cri_pb2.ListImagesResponse(
            images=[cri_pb2.Image(id=i, repo_tags=[i], size=1) for i in sorted(self.present)]
        )

    async def PullImage(self, request: cri_pb2.PullImageRequest, context: grpc.aio.ServicerContext) -> object:
        loop = asyncio.get_running_loop()
        image = request.image.image
        call = PullCall(image, request.auth.username, request.auth.password, loop.time())
        previous = sum(1 for c in self.calls if c.image == image)
        self.calls.append(call)
        script = self.scripts.get(image, [OK])
        action = script[min(previous, len(script) - 1)]
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if action.kind == "hang":
                await asyncio.sleep(3600)
            if action.delay:
                await asyncio.sleep(action.delay)
            login = self.required_login.get(image)
            if login is not None and (call.username, call.password) != login:
                await context.abort(
                    grpc.StatusCode.UNKNOWN, f'failed to pull "{image}": unexpected status: 401 Unauthorized'
                )
            if action.kind == "fail":
                await context.abort(action.code, action.details)
            self.present.add(image)
            return cri_pb2.PullImageResponse(image_ref="sha256:" + str(abs(hash(image)))[:12])
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            call.ended = loop.time()
            self.active -= 1

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
