"""The simulated Kubernetes API server (``from simcluster.apiserver import ApiServer``)."""

from __future__ import annotations

from .server import ApiServer, RequestRecord

__all__ = ["ApiServer", "RequestRecord"]
