"""Simulated Kubernetes control plane and process kubelets (test infrastructure, see README.md).

Kept light: importing ``simcluster`` must not start anything or import heavy modules.
"""

from __future__ import annotations

from .apiserver import ApiServer

__all__ = ["ApiServer"]
