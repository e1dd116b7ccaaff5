"""Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1:<free port>, optionally with htpasswd basic auth."""

from __future__ import annotations

import base64
import contextlib
import http.client
import shutil
import subprocess
import warnings
from pathlib import Path
from types import TracebackType
from typing import Optional

from infra._util import ensure_dir, free_port, log_tail, stop_process, wait_until

REGISTRY_BIN = "/usr/bin/docker-registry"
_START_ATTEMPTS = 3  # a free port can be taken by someone else between probing and binding


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash the registry's htpasswd backend accepts (any ``$2?$`` variant).

    Uses the C library's crypt (libxcrypt on Debian 12 does bcrypt), else the ``bcrypt`` wheel, else ``htpasswd -B``.
    Cost 4 keeps the registry's per-request check cheap: these are throw-away test passwords.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt

            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
            if hashed and hashed.startswith("$2"):
                return hashed
        except (ImportError, AttributeError, ValueError, OSError):
            pass
    try:
        import bcrypt

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    except ImportError:
        pass
    out = subprocess.run(
        ["htpasswd", "-nbBC", "4", "user", password], check=True, capture_output=True, text=True
    ).stdout.strip()
    return out.split(":", 1)[1]


class Registry:
    """A throw-away registry; storage, config and log live under ``workdir``."""

    def __init__(self, workdir: Path | str, htpasswd: Optional[dict[str, str]] = None, name: str = "registry") -> None:
        self.workdir = ensure_dir(Path(workdir) / name)
        self.htpasswd = dict(htpasswd) if htpasswd else None
        self.port = 0
        self.log_path = self.workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def auth_header(self) -> dict[str, str]:
        """Basic-auth header for the first htpasswd user (empty without auth); for the test's own HTTP calls."""
        if not self.htpasswd:
            return {}
        user, password = next(iter(self.htpasswd.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _write_config(self) -> Path:
        storage = ensure_dir(self.workdir / "storage")
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: prefetch-test-only",  # silences the random-secret warning; uploads are single-instance anyway
            "health:",
            "  storagedriver:",
            "    enabled: false",
        ]
        if self.htpasswd:
            htpasswd_file = self.workdir / "htpasswd"
            htpasswd_file.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.htpasswd.items()))
            htpasswd_file.chmod(0o600)
            lines += ["auth:", "  htpasswd:", "    realm: prefetch-test", f"    path: {htpasswd_file}"]
        config = self.workdir / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/v2/")
            status = conn.getresponse().status
        finally:
            conn.close()
        return status in (200, 401)

    def start(self) -> Registry:
        if shutil.which(REGISTRY_BIN) is None:
            raise RuntimeError(f"{REGISTRY_BIN} is missing: run scripts/bootstrap.sh")
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            config = self._write_config()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            if wait_until(lambda: self._proc is not None and self._proc.poll() is None and self._answers(), 15):
                return self
            self.stop()
        raise RuntimeError(f"docker-registry did not come up; log:\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def log_text(self) -> str:
        return log_tail(self.log_path)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
