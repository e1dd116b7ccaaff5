"""Pure-Python registry v2 push of deterministic test images (no docker, no skopeo).

Every layer is a gzip'd tar holding one file of pseudo-random (incompressible) bytes derived from ``seed``, so the same
arguments always give the same digests, and a re-push only uploads what the registry lacks.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import platform
import random
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "ppc64le": "ppc64le", "s390x": "s390x", "i686": "386", "i386": "386", "riscv64": "riscv64"}
_CHUNK = 4 << 20  # chunked uploads send 4 MiB PATCHes


def host_goarch() -> str:
    """``uname -m`` in Go's spelling, which is what containerd's platform matcher compares against."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    media_type: str
    data: bytes
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = sha256_digest(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "size": len(self.data), "digest": self.digest}


@dataclass
class TestImage:
    """What was pushed: ``digest`` is the manifest digest; ``size`` = manifest + config + layers, which is what
    containerd's CRI ImageStatus reports as the image size."""

    __test__ = False  # not a pytest test class

    repo: str
    tag: str
    digest: str
    manifest: bytes
    config: Blob
    layers: list[Blob]

    @property
    def size(self) -> int:
        return len(self.manifest) + len(self.config.data) + sum(len(layer.data) for layer in self.layers)


def _layer_tar(payload: bytes, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def build_test_image(
    repo: str, tag: str, size_mib: float = 10, layers: int = 3, seed: str = "app", oci: bool = False,
    compresslevel: int = 1,
) -> TestImage:
    """Builds (without pushing) a deterministic single-platform image for this host's architecture."""
    if layers < 1:
        raise ValueError("an image needs at least one layer")
    rng = random.Random(f"{seed}/{size_mib}/{layers}")
    total = max(layers, int(size_mib * (1 << 20)))
    sizes = [total // layers] * layers
    sizes[-1] += total - sum(sizes)
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    blobs: list[Blob] = []
    diff_ids: list[str] = []
    for index, size in enumerate(sizes):
        tar = _layer_tar(rng.randbytes(size), f"prefetch-test/{seed}/layer-{index}.bin")
        diff_ids.append(sha256_digest(tar))
        blobs.append(Blob(layer_type, gzip.compress(tar, compresslevel=compresslevel, mtime=0)))
    config_doc = {
        "architecture": host_goarch(),
        "os": "linux",
        "config": {"Labels": {"io.stackrox.prefetch.test": seed}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"infra.images layer {i}"} for i in range(layers)],
    }
    config = Blob(OCI_CONFIG if oci else DOCKER_CONFIG, json.dumps(config_doc, sort_keys=True).encode())
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": [blob.descriptor() for blob in blobs],
    }
    manifest = json.dumps(manifest_doc, sort_keys=True).encode()
    return TestImage(repo, tag, sha256_digest(manifest), manifest, config, blobs)


def build_files_image(repo: str, tag: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> TestImage:
    """A one-layer image of real files (``{path: (content, mode)}``) with an entrypoint, e.g. a static ``pause``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    layer = buf.getvalue()
    blob = Blob(DOCKER_LAYER, gzip.compress(layer, compresslevel=6, mtime=0))
    config_doc = {"architecture": host_goarch(), "os": "linux",
                  "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
                  "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}
    config = Blob(DOCKER_CONFIG, json.dumps(config_doc, sort_keys=True).encode())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config.descriptor(),
                           "layers": [blob.descriptor()]}, sort_keys=True).encode()
    return TestImage(repo, tag, sha256_digest(manifest), manifest, config, [blob])


class RegistryClient:
    """Minimal registry v2 client over one keep-alive HTTP connection (plain HTTP: tests use loopback)."""

    def __init__(self, host: str, auth: Optional[tuple[str, str]] = None, timeout_s: float = 60) -> None:
        hostname, _, port = host.rpartition(":")
        self._conn = http.client.HTTPConnection(hostname, int(port), timeout=timeout_s)
        self._headers: dict[str, str] = {}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def close(self) -> None:
        self._conn.close()

    def request(
        self, method: str, target: str, body: bytes = b"", headers: Optional[dict[str, str]] = None
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = {**self._headers, **(headers or {})}
        if body or method in ("PUT", "PATCH", "POST"):
            all_headers["Content-Length"] = str(len(body))
        self._conn.request(method, target, body=body, headers=all_headers)
        response = self._conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _expect(self, status: int, wanted: tuple[int, ...], what: str, data: bytes) -> None:
        if status not in wanted:
            raise RuntimeError(f"registry {what}: HTTP {status}: {data[:200]!r}")

    def blob_exists(self, repo: str, digest: str) -> bool:
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        return status == 200

    def push_blob(self, repo: str, blob: Blob, chunked: bool = False) -> None:
        if self.blob_exists(repo, blob.digest):
            return
        status, headers, data = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        self._expect(status, (202,), "start upload", data)
        location = headers["location"]
        if chunked:
            for start in range(0, len(blob.data), _CHUNK):
                chunk = blob.data[start:start + _CHUNK]
                status, headers, data = self.request(
                    "PATCH", _path_of(location), chunk,
                    {"Content-Type": "application/octet-stream",
                     "Content-Range": f"{start}-{start + len(chunk) - 1}"},
                )
                self._expect(status, (202,), "upload chunk", data)
                location = headers["location"]
            body = b""
        else:
            body = blob.data
        target = _with_query(_path_of(location), digest=blob.digest)
        status, _, data = self.request("PUT", target, body, {"Content-Type": "application/octet-stream"})
        self._expect(status, (201,), "finish upload", data)

    def push_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> str:
        status, headers, data = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", manifest, {"Content-Type": media_type}
        )
        self._expect(status, (201,), "put manifest", data)
        return headers.get("docker-content-digest", sha256_digest(manifest))


def _path_of(location: str) -> str:
    parsed = urllib.parse.urlsplit(location)
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def _with_query(target: str, **params: str) -> str:
    separator = "&" if "?" in target else "?"
    return target + separator + urllib.parse.urlencode(params)


def push_image(host: str, image: TestImage, auth: Optional[tuple[str, str]] = None, chunked: bool = False) -> str:
    client = RegistryClient(host, auth)
    try:
        for blob in [*image.layers, image.config]:
            client.push_blob(image.repo, blob, chunked=chunked)
        media_type = json.loads(image.manifest)["mediaType"]
        pushed = client.push_manifest(image.repo, image.tag, image.manifest, media_type)
    finally:
        client.close()
    if pushed != image.digest:
        raise RuntimeError(f"registry computed manifest digest {pushed}, expected {image.digest}")
    return image.digest


def push_test_image(
    host: str, repo: str, tag: str, size_mib: float = 10, layers: int = 3, seed: str = "app",
    auth: Optional[tuple[str, str]] = None, oci: bool = False, chunked: bool = False,
) -> str:
    """Builds and pushes a deterministic image to ``host`` (``"127.0.0.1:PORT"``); returns the manifest digest."""
    image = build_test_image(repo, tag, size_mib=size_mib, layers=layers, seed=seed, oci=oci)
    return push_image(host, image, auth=auth, chunked=chunked)
