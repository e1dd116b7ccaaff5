"""The committed generated code matches protos/*.proto, and it works with the installed protobuf/grpcio."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

from casedata import REPO

from image_prefetcher._proto import cri_pb2, cri_pb2_grpc, metrics_pb2, metrics_pb2_grpc

GENERATED = REPO / "agent" / "src" / "image_prefetcher" / "_proto"


def test_generated_code_is_in_sync(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "proto.sh"), str(tmp_path)], check=True, timeout=120, capture_output=True
    )
    fresh = tmp_path / "image_prefetcher" / "_proto"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in GENERATED.iterdir() if p.name != "__pycache__")
    _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, names, shallow=False)
    assert (mismatch, errors) == ([], []), "run `make proto` and commit the result"


def test_wire_names_match_the_real_apis() -> None:
    assert cri_pb2.DESCRIPTOR.package == "runtime.v1"
    services = cri_pb2.DESCRIPTOR.services_by_name
    assert sorted(m.name for m in services["ImageService"].methods) == ["ImageStatus", "ListImages", "PullImage"]
    assert [m.name for m in services["RuntimeService"].methods] == ["Version"]
    fields = {f.name: f.number for f in cri_pb2.PullImageRequest.DESCRIPTOR.fields}
    assert fields == {"image": 1, "auth": 2}
    assert {f.name: f.number for f in cri_pb2.Image.DESCRIPTOR.fields}["size"] == 4
    assert metrics_pb2.DESCRIPTOR.package == ""
    assert metrics_pb2.DESCRIPTOR.services_by_name["Metrics"].methods_by_name["Submit"].full_name == "Metrics.Submit"
    assert hasattr(cri_pb2_grpc, "ImageServiceStub") and hasattr(metrics_pb2_grpc, "MetricsStub")


def test_messages_round_trip() -> None:
    request = cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image="r/a:v1"), auth=cri_pb2.AuthConfig(username="u"))
    assert cri_pb2.PullImageRequest.FromString(request.SerializeToString()) == request
    result = metrics_pb2.Result(attempt_id="x", started_at=1700000000, size_bytes=5)
    assert metrics_pb2.Result.FromString(result.SerializeToString()).size_bytes == 5
