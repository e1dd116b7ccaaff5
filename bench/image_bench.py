"""Agent image figures for ``make bench``: size and start-up time, against a naive baseline built in the same run.

- ours: the repository's Dockerfile (`scratch` + the runtime closure of the Debian packages), from ``make image``.
- baseline: the obvious single-stage image (the same Debian base + ``apt-get install`` of the same packages + the
  agent), built now from the same base so the ratio compares like with like.
- start-up: inside the image (so no container-runtime overhead is counted), the median wall time of
  ``image-prefetcher --help`` and of a bare ``python3 -c pass`` (the interpreter's floor), 15 runs each.

Prints one JSON object.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from agent_image.build import ARCHIVE, LOCAL_BASE, REPO
from agent_image.oci import load

ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
BASELINE_DOCKERFILE = f"""FROM {LOCAL_BASE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      python3-grpcio python3-protobuf python3-yaml ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/* \\
 && apt-get clean
COPY agent/src/image_prefetcher /usr/lib/python3/dist-packages/image_prefetcher
COPY agent/packaging/image-prefetcher /usr/local/bin/image-prefetcher
ENTRYPOINT ["image-prefetcher"]
"""
TIMING = """
import statistics, subprocess, time
def median(cmd):
    runs = []
    for _ in range(15):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)
print(median(["image-prefetcher", "--help"]), median(["python3", "-c", "pass"]))
"""


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, env=ENV, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout


def build_baseline(workdir: Path) -> Path:
    dockerfile = workdir / "Dockerfile.baseline"
    dockerfile.write_text(BASELINE_DOCKERFILE)
    tag = "localhost/stackrox/prefetch-agent-baseline:bench"
    sh("buildah", "bud", "--quiet", "--layers=false", "--network", "host", "-f", str(dockerfile), "-t", tag, str(REPO))
    archive = workdir / "baseline.oci.tar"
    sh("buildah", "push", "--quiet", tag, f"oci-archive:{archive}:baseline:bench")
    sh("buildah", "rmi", tag)
    return archive


def startup_seconds(archive: Path) -> tuple[float, float]:
    container = sh("buildah", "from", "--quiet", f"oci-archive:{archive}").strip()
    try:
        out = sh("buildah", "run", "--user", "65534:65534", container, "--", "python3", "-c", TIMING)
    finally:
        sh("buildah", "rm", container)
    agent, floor = (float(x) for x in out.split())
    return agent, floor


def figures(archive: Path) -> dict[str, Any]:
    image = load(archive)
    agent, floor = startup_seconds(archive)
    return {
        "compressed_mib": round(image.compressed_size / 2**20, 1),
        "uncompressed_mib": round(image.uncompressed_size / 2**20, 1),
        "layers": len(image.layer_sizes),
        "help_startup_s": round(agent, 3),
        "python_floor_s": round(floor, 3),
    }


def main() -> int:
    if not ARCHIVE.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "image.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="prefetch-image-bench-") as tmp:
        ours = figures(ARCHIVE)
        baseline = figures(build_baseline(Path(tmp)))
    result = {
        "benchmark": "agent image",
        "ours": ours,
        "baseline_single_stage": baseline,
        "ratio_compressed": round(ours["compressed_mib"] / baseline["compressed_mib"], 2),
        "ratio_uncompressed": round(ours["uncompressed_mib"] / baseline["uncompressed_mib"], 2),
        "ratio_help_startup": round(ours["help_startup_s"] / baseline["help_startup_s"], 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
