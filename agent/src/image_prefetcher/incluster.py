"""In-cluster Kubernetes API access with the standard library only (no `kubernetes` client in the agent image).

Mirrors client-go's `rest.InClusterConfig`: the API server is `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
authenticated with the pod's service-account token and verified against the service-account CA. Unlike client-go, a
missing or unreadable CA file is an error (client-go falls back to the system roots): the one request we make carries
the token, so it only goes to a server proven by the cluster's CA.

The token is re-read from its file for every request (projected tokens rotate while the pod runs).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class InClusterError(Exception):
    """No usable in-cluster configuration (not in a pod, or the service-account files are missing)."""


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes

    def error_text(self) -> str:
        """A short reason for a failed call: the Status `message` when the server sent one (as client-go shows it)."""
        try:
            message = json.loads(self.body.decode("utf-8")).get("message")
        except (ValueError, AttributeError, UnicodeDecodeError):
            message = None
        if isinstance(message, str) and message:
            return message[:300]
        reason = http.client.responses.get(self.status, "")
        return f"the server responded with status {self.status} {reason}".rstrip()


@dataclass(frozen=True)
class InClusterConfig:
    host: str
    port: int
    token_path: Path
    ca_path: Path
    namespace: str | None

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def read_token(self) -> str:
        try:
            token = self.token_path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise InClusterError(f"open {self.token_path}: {_os_reason(err)}") from None
        if not token:
            raise InClusterError(f"service-account token file {self.token_path} is empty")
        return token

    def ssl_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=str(self.ca_path))
        except (OSError, ssl.SSLError) as err:
            raise InClusterError(f"cannot load CA {self.ca_path}: {_os_reason(err)}") from None

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> ApiResponse:
        """One blocking HTTPS request with the bearer token; raises OSError/ssl.SSLError/InClusterError on failure."""
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=body, headers=self._headers(headers))
            response = conn.getresponse()
            return ApiResponse(response.status, response.read(1 << 20))
        finally:
            conn.close()

    def stream(
        self, path: str, timeout: float, on_connect: Callable[[http.client.HTTPConnection], None]
    ) -> Iterator[bytes]:
        """A blocking GET read line by line (a watch: one JSON event per line), until the server ends it.

        ``on_connect`` gets the connection before anything is sent, so that another thread can end a blocked read
        by shutting its socket down (asyncio cannot cancel a thread). A non-2xx answer raises StreamRefused."""
        conn = self._connection(timeout)
        on_connect(conn)
        try:
            conn.request("GET", path, headers=self._headers({}))
            response = conn.getresponse()
            if not 200 <= response.status < 300:
                raise StreamRefused(ApiResponse(response.status, response.read(1 << 20)))
            while line := response.readline(1 << 20):
                yield line
        finally:
            conn.close()

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context())

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        all_headers = {"Accept": "application/json", "User-Agent": "image-prefetcher", **extra}
        all_headers["Authorization"] = f"Bearer {self.read_token()}"
        return all_headers


class StreamRefused(Exception):
    """A streamed request answered with a non-2xx status (``response``)."""

    def __init__(self, response: ApiResponse) -> None:
        super().__init__(f"{response.status}: {response.error_text()}")
        self.response = response


def _os_reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[:1].lower() + err.strerror[1:]
    return str(err)


def load_incluster_config(
    environ: Mapping[str, str] | None = None, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> InClusterConfig:
    """Build the config the way client-go does; raises InClusterError with client-go's texts where it has one."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise InClusterError(
            "unable to load in-cluster configuration, "
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"
        )
    try:
        port_number = int(port)
    except ValueError:
        raise InClusterError(f"invalid KUBERNETES_SERVICE_PORT {port!r}") from None
    if not 0 < port_number < 65536:
        raise InClusterError(f"invalid KUBERNETES_SERVICE_PORT {port!r}")
    config = InClusterConfig(host, port_number, sa_dir / "token", sa_dir / "ca.crt", _read_namespace(sa_dir))
    config.read_token()  # fail now (as client-go does) rather than at the first request
    if not config.ca_path.is_file():
        raise InClusterError(f"open {config.ca_path}: no such file or directory")
    return config


def _read_namespace(sa_dir: Path) -> str | None:
    try:
        return (sa_dir / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
