"""Helpers for tests that talk to an ``ApiServer`` over raw HTTPS (status, headers and body as sent)."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any, Optional

from .server import ApiServer


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)

    def warnings(self) -> list[str]:
        """The texts of the ``Warning`` headers (the ``299 - "..."`` envelope removed)."""
        out = []
        for v in self.headers.get_all("Warning") or []:
            text = v.split(" - ", 1)[1] if " - " in v else v
            if text.startswith('"') and text.endswith('"'):
                text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out.append(text)
        return out


def call(srv: ApiServer, method: str, path: str, body: Any = None, content_type: str = "application/json",
         token: Optional[str] = "admin", timeout: float = 30.0) -> Response:
    """One request; ``token`` is "admin", "viewer", None (no header) or a literal token."""
    ctx = ssl.create_default_context(cafile=str(srv.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=timeout)
    headers = {"Accept": "application/json"}
    if token == "admin":
        headers["Authorization"] = f"Bearer {srv.admin_token}"
    elif token == "viewer":
        headers["Authorization"] = f"Bearer {srv.viewer_token}"
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data: Optional[bytes] = None
    if body is not None:
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()
