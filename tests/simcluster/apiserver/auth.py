"""Bearer-token authentication and the simulator's fixed authorization rules.

Users: ``admin`` (everything), ``viewer`` (get/list/watch only) and ServiceAccount tokens minted by TokenRequest
(``system:serviceaccount:<ns>:<name>``, allowed everything: RBAC objects are stored but not evaluated).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

READ_VERBS = {"get", "list", "watch"}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = field(default_factory=tuple)
    read_only: bool = False

    def allowed(self, verb: str) -> bool:
        return verb in READ_VERBS or not self.read_only


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenAuthority:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self.admin_token = secrets.token_hex(24)
        self.viewer_token = secrets.token_hex(24)
        self._static = {
            self.admin_token: User("admin", ("system:masters", "system:authenticated")),
            self.viewer_token: User("viewer", ("system:authenticated",), read_only=True),
        }
        self._issued: dict[str, tuple[User, float]] = {}

    def authenticate(self, header: Optional[str]) -> Optional[User]:
        if not header or not header.startswith("Bearer "):
            return None
        token = header[len("Bearer "):].strip()
        if token in self._static:
            return self._static[token]
        with self._lock:
            entry = self._issued.get(token)
        if entry is None or entry[1] < time.time():
            return None
        return entry[0]

    def token_for(self, user: str) -> str:
        return {"admin": self.admin_token, "viewer": self.viewer_token}[user]

    def issue_service_account_token(self, ns: str, name: str, uid: str, audiences: list[str],
                                    expiration_s: int, issuer: str) -> tuple[str, float]:
        """A JWT-shaped token (HS256 with a per-run key) that this server accepts until it expires."""
        now = int(time.time())
        exp = now + expiration_s
        sub = f"system:serviceaccount:{ns}:{name}"
        claims = {"aud": audiences, "exp": exp, "iat": now, "nbf": now, "iss": issuer, "sub": sub,
                  "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}}}
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        token = f"{head}.{body}.{sig}"
        user = User(sub, ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"))
        with self._lock:
            self._issued[token] = (user, float(exp))
        return token, float(exp)


def forbidden_text(user: User, verb: str, plural: str, group: str, ns: Optional[str],
                   subresource: str = "") -> str:
    """``User "viewer" cannot patch resource "daemonsets" in API group "apps" in the namespace "x"``."""
    res = f"{plural}/{subresource}" if subresource else plural
    where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
    return f'User "{user.name}" cannot {verb} resource "{res}" in API group "{group}" {where}'
