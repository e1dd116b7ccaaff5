"""Per-run certificate authority and server certificate, made with the ``openssl`` CLI.

A fresh CA per run keeps runs independent: a kubeconfig from an older run can never reach a newer server.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCerts:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_certs(directory: Path, common_name: str = "simcluster") -> ServerCerts:
    """Write ca.crt/ca.key and server.crt/server.key (SAN IP:127.0.0.1, DNS:localhost) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    # EC keys are much cheaper to generate than RSA on the shared 2-core machines.
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", f"/CN={common_name}-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.crt", cwd=directory,
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key", cwd=directory)
    _openssl("req", "-new", "-key", "server.key", "-subj", f"/CN={common_name}-apiserver", "-out", "server.csr",
             cwd=directory)
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", "server.ext", "-out", "server.crt", cwd=directory,
    )
    for p in ("ca.key", "server.key"):
        (directory / p).chmod(0o600)
    return ServerCerts(directory / "ca.crt", directory / "server.crt", directory / "server.key")
