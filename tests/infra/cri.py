"""A small synchronous CRI client for tests, built on the agent's generated protos (``image_prefetcher._proto``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import grpc

try:
    from image_prefetcher._proto import cri_pb2, cri_pb2_grpc
except ImportError:  # the agent is not installed in this interpreter: use the source tree next to the tests
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent" / "src"))
    from image_prefetcher._proto import cri_pb2, cri_pb2_grpc


@dataclass
class ImageInfo:
    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int


class CriClient:
    """``CriClient("unix:///path/containerd.sock")``; every call takes a deadline in seconds."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.images = cri_pb2_grpc.ImageServiceStub(self.channel)
        self.runtime = cri_pb2_grpc.RuntimeServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self, timeout_s: float = 5) -> str:
        response: Any = self.runtime.Version(cri_pb2.VersionRequest(version="v1"), timeout=timeout_s)
        return str(response.runtime_api_version)

    def runtime_name(self, timeout_s: float = 5) -> str:
        """What the runtime calls itself ("containerd", "cri-o")."""
        response: Any = self.runtime.Version(cri_pb2.VersionRequest(version="v1"), timeout=timeout_s)
        return str(response.runtime_name)

    def image_status(self, ref: str, timeout_s: float = 10) -> Optional[ImageInfo]:
        response: Any = self.images.ImageStatus(
            cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=ref)), timeout=timeout_s
        )
        if not response.HasField("image"):
            return None
        image = response.image
        return ImageInfo(image.id, list(image.repo_tags), list(image.repo_digests), int(image.size))

    def pull_image(self, ref: str, auth: Optional[tuple[str, str]] = None, timeout_s: float = 120) -> str:
        request = cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image=ref))
        if auth is not None:
            request.auth.username, request.auth.password = auth
        response: Any = self.images.PullImage(request, timeout=timeout_s)
        return str(response.image_ref)

    def remove_image(self, ref: str, timeout_s: float = 30) -> None:
        """CRI RemoveImage. The agent's protos leave it out (the agent never removes anything); its request has
        the wire shape of ImageStatusRequest (field 1: ImageSpec) and its response is empty, so those stand in."""
        call = self.channel.unary_unary(
            "/runtime.v1.ImageService/RemoveImage",
            request_serializer=cri_pb2.ImageStatusRequest.SerializeToString,
            response_deserializer=lambda data: data,
        )
        call(cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=ref)), timeout=timeout_s)

    def list_images(self, timeout_s: float = 10) -> list[ImageInfo]:
        response: Any = self.images.ListImages(cri_pb2.ListImagesRequest(), timeout=timeout_s)
        return [ImageInfo(i.id, list(i.repo_tags), list(i.repo_digests), int(i.size)) for i in response.images]
