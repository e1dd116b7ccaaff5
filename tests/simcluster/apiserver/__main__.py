"""``python -m simcluster.apiserver --dir DIR [--port N]``: serve until SIGTERM/SIGINT (for manual use)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .server import ApiServer


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m simcluster.apiserver")
    ap.add_argument("--dir", required=True, type=Path, help="work directory (certificates, kubeconfigs, log)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--name", default="sim")
    args = ap.parse_args()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    srv = ApiServer(args.dir, port=args.port, name=args.name).start()
    try:
        admin = srv.write_kubeconfig(args.dir / "kubeconfig")
        viewer = srv.write_kubeconfig(args.dir / "kubeconfig-viewer", user="viewer")
        print(f"kubeconfig {admin}", flush=True)
        print(f"viewer-kubeconfig {viewer}", flush=True)
        print(f"url {srv.url}", flush=True)
        done.wait()
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
