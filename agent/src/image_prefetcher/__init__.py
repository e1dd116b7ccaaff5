"""image-prefetcher: pulls a list of OCI images onto a Kubernetes node through the CRI API."""

from __future__ import annotations

__version__ = "0.1.0"
