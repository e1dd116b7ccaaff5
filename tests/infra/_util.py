"""Small helpers shared by the infra modules: free ports, readiness polling, process shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``check`` until it returns true or ``timeout_s`` passes; returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if check():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def stop_process(proc: subprocess.Popen[bytes], term_timeout_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL; always reaps the child so no zombie is left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=term_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    else:
        proc.wait()


def log_tail(path: Path, max_chars: int = 4000) -> str:
    """The end of a daemon's log file, for failure messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-max_chars:].decode("utf-8", "replace")


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path
