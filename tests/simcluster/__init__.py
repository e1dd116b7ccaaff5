"""Simulated Kubernetes control plane and process kubelets (test infrastructure, see README.md).

Kept light: importing ``simcluster`` must not start anything or import heavy modules.
"""

from __future__ import annotations

from typing import Any

from .apiserver import ApiServer

__all__ = ["ApiServer", "SimCluster"]


def __getattr__(name: str) -> Any:
    # SimCluster pulls in grpc and the infra package: imported on first use only.
    if name == "SimCluster":
        from .cluster import SimCluster

        return SimCluster
    raise AttributeError(name)
