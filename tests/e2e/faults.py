"""Helpers of the API fault tests: an API fault proxy (tests/infra/apiproxy.py) in front of a cluster's API server,
a kubeconfig that points the modules at it, and the modules' own client for the proxy's self-tests."""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2e.support import ADMIN_USER, Cluster
from infra.apiproxy import ApiProxy
from kube.pki import Pki, kubeconfig


@contextlib.contextmanager
def api_proxy(cluster: Cluster, workdir: Path) -> Iterator[ApiProxy]:
    """A proxy in front of ``cluster``'s API server, serving a certificate of the cluster's CA for 127.0.0.1."""
    ca = Path(cluster.info["ca_path"])
    workdir.mkdir(parents=True, exist_ok=True)
    cert = Pki.load(ca.parent).issue("apiproxy", "api-fault-proxy", server=True, ips=("127.0.0.1",),
                                     out_dir=workdir)
    with ApiProxy(cluster.info["api_url"], ca, *cert) as proxy:
        yield proxy


def proxy_kubeconfig(cluster: Cluster, proxy: ApiProxy, path: Path) -> Path:
    """The admin's kubeconfig (same token, same CA), with the proxy as the server."""
    return kubeconfig(path, proxy.url, Path(cluster.info["ca_path"]), ADMIN_USER, token=cluster.api.token)


def collection_module(collections_path: Path, name: str) -> Any:
    """``plugins/module_utils/<name>`` of the installed collection, imported as the modules import it."""
    if str(collections_path) not in sys.path:
        sys.path.insert(0, str(collections_path))
    return importlib.import_module(f"ansible_collections.stackrox.prefetch.plugins.module_utils.{name}")


def module_cluster(collections_path: Path, cluster: Cluster, proxy: ApiProxy, workdir: Path,
                   budget_s: float) -> Any:
    """The modules' client (``_cluster.Cluster`` built by ``_auth.build_api_client``, urllib3 retries off) through
    the proxy, with a deadline ``budget_s`` from now."""
    auth = collection_module(collections_path, "_auth")
    clusters = collection_module(collections_path, "_cluster")
    config = proxy_kubeconfig(cluster, proxy, workdir / "proxy-kubeconfig")
    return clusters.Cluster(auth.build_api_client({"kubeconfig": str(config)}, {}),
                            deadline=time.monotonic() + budget_s)
