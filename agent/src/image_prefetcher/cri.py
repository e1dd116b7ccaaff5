"""The CRI client: one grpc.aio channel to the runtime's UNIX socket for the whole run.

Only calls present in grpcio 1.51 (Debian bookworm) are used: grpc.aio.insecure_channel, unary calls with
`timeout=` and `wait_for_ready=`, AioRpcError.code()/details(), channel.close().
"""

from __future__ import annotations

import asyncio
import os
import stat

import grpc
import grpc.aio

from image_prefetcher._proto import cri_pb2, cri_pb2_grpc
from image_prefetcher.classify import PullError
from image_prefetcher.durations import format_seconds
from image_prefetcher.errors import CommandError
from image_prefetcher.keyring import Credential

# Reconnect quickly after the runtime restarts or its socket appears late (gRPC's default backoff grows to 120 s).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_POLL_SECONDS = 0.2


def socket_target(path: str) -> str:
    return f"unix://{path}" if path.startswith("/") else f"unix:{path}"


def rpc_error(err: grpc.aio.AioRpcError) -> PullError:
    return PullError(err.code().name, err.details() or "")


class CriClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.target = socket_target(socket_path)
        self.channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.images = cri_pb2_grpc.ImageServiceStub(self.channel)
        self.runtime = cri_pb2_grpc.RuntimeServiceStub(self.channel)

    async def version(self, timeout: float) -> cri_pb2.VersionResponse:
        # Fail fast (no wait_for_ready): the start-up wait polls, and keeps the connect error as the reason.
        return await self.runtime.Version(cri_pb2.VersionRequest(version="v1"), timeout=timeout)

    async def pull_image(self, image: str, credential: Credential | None, timeout: float) -> str:
        """PullImage; returns image_ref. Waits for a (re)connecting channel within the timeout."""
        request = cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image=image))
        if credential is not None:
            request.auth.username = credential.username
            request.auth.password = credential.password
        response = await self.images.PullImage(request, timeout=timeout, wait_for_ready=True)
        return str(response.image_ref)

    async def image_status(self, image: str, timeout: float) -> cri_pb2.Image | None:
        """The image, or None when the runtime does not have it (ImageStatus answers OK with `image` unset)."""
        request = cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=image))
        response = await self.images.ImageStatus(request, timeout=timeout, wait_for_ready=True)
        return response.image if response.HasField("image") else None

    async def list_images(self, timeout: float) -> list[cri_pb2.Image]:
        response = await self.images.ListImages(cri_pb2.ListImagesRequest(), timeout=timeout, wait_for_ready=True)
        return list(response.images)

    async def close(self) -> None:
        await self.channel.close()


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def not_a_socket(path: str) -> str | None:
    """Why an existing `path` can never be the CRI socket, or None (a socket, or not statable: keep trying)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a socket file")
    return f"CRI socket {path} is not a socket (it is {kind})"


async def wait_for_runtime(client: CriClient, timeout: float) -> cri_pb2.VersionResponse:
    """Wait (bounded) until the runtime answers Version; the socket file may appear late. One-line CommandError,
    at once when the path exists but is not a socket."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    reason = f"socket {client.socket_path} does not exist"
    while True:
        remaining = end - loop.time()
        if remaining <= 0:
            waited = format_seconds(timeout)
            raise CommandError(f"CRI runtime at {client.target} did not answer within {waited}: {reason}")
        if not os.path.exists(client.socket_path):  # the runtime may start later: keep waiting
            await asyncio.sleep(min(_POLL_SECONDS, remaining))
            continue
        problem = not_a_socket(client.socket_path)
        if problem is not None:  # a directory or file never turns into a socket: fail at once
            raise CommandError(problem)
        try:
            return await client.version(timeout=min(remaining, 5.0))
        except grpc.aio.AioRpcError as err:
            reason = rpc_error(err).go_string()
            await asyncio.sleep(min(_POLL_SECONDS, max(end - loop.time(), 0)))
