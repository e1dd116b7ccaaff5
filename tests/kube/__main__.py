"""``python -m kube up --dir DIR [--nodes N] [--registry-upstream HOST:PORT] [--name NAME] [--runtime RUNTIME]``.

Writes DIR/kubeconfig, DIR/kubeconfig-viewer and DIR/cluster.json, prints ``ready``, and runs until SIGTERM/SIGINT,
then stops everything it started. Logs go to DIR/kube.log.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional

from infra.runtime import RUNTIMES
from kube.cluster import RUNTIME_ENV, KubeCluster


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kube")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a local Kubernetes cluster and run until SIGTERM/SIGINT")
    up.add_argument("--dir", required=True, type=Path)
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--registry-upstream", default=None, help="HOST:PORT of a running registry (else one is started)")
    up.add_argument("--name", default="kube")
    up.add_argument("--runtime", choices=RUNTIMES, default=None,
                    help=f"the nodes' container runtime (default: ${RUNTIME_ENV}, else containerd)")
    args = parser.parse_args(argv)

    args.dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=str(args.dir / "kube.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    done = threading.Event()

    def on_signal(_signum: int, _frame: Optional[FrameType]) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = KubeCluster(args.dir, nodes=args.nodes, registry_upstream=args.registry_upstream, name=args.name,
                          runtime=args.runtime)
    try:
        cluster.start()
        if done.is_set():
            return 0
        print("ready", flush=True)
        while not done.wait(1.0):
            pass
    except Exception as exc:
        print(f"kube: {exc}", file=sys.stderr, flush=True)
        logging.exception("start failed")
        return 1
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
