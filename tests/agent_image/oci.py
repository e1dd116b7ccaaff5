"""Read an OCI image archive (the output of ``make image``) without any container tool."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OciImage:
    config: dict[str, Any]
    layer_sizes: list[int]  # compressed, as stored and pulled
    files: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    archive: Path | None = None

    @property
    def compressed_size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def uncompressed_size(self) -> int:
        return sum(info.size for info in self.files.values() if info.isfile())

    def read(self, path: str) -> bytes:
        """Content of a regular file of the image's root file system (last layer wins)."""
        assert self.archive is not None
        with tarfile.open(self.archive) as outer:
            data = b""
            for layer in _layers(outer):
                with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
                    try:
                        member = inner.getmember(path)
                    except KeyError:
                        continue
                    extracted = inner.extractfile(member)
                    if extracted is not None:
                        data = extracted.read()
            return data


def _blob(outer: tarfile.TarFile, digest: str) -> bytes:
    algo, hexdigest = digest.split(":", 1)
    extracted = outer.extractfile(f"blobs/{algo}/{hexdigest}")
    assert extracted is not None
    return extracted.read()


def _manifest(outer: tarfile.TarFile) -> dict[str, Any]:
    index = json.loads(outer.extractfile("index.json").read())  # type: ignore[union-attr]
    manifest: dict[str, Any] = json.loads(_blob(outer, index["manifests"][0]["digest"]))
    return manifest


def _layers(outer: tarfile.TarFile) -> list[bytes]:
    out = []
    for layer in _manifest(outer)["layers"]:
        raw = _blob(outer, layer["digest"])
        out.append(gzip.decompress(raw) if "gzip" in layer["mediaType"] else raw)
    return out


def load(archive: Path) -> OciImage:
    with tarfile.open(archive) as outer:
        manifest = _manifest(outer)
        config = json.loads(_blob(outer, manifest["config"]["digest"]))
        image = OciImage(config=config, layer_sizes=[layer["size"] for layer in manifest["layers"]], archive=archive)
        for layer in _layers(outer):
            with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
                for member in inner.getmembers():
                    image.files[member.name.lstrip("./")] = member
    return image
