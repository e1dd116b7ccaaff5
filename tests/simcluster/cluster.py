"""``SimCluster``: registry (optional), API server, N nodes (containerd + fault proxy), controllers and kubelets.

    with SimCluster(tmp_path / "sim", nodes=3) as cluster:
        cluster.kubeconfig, cluster.info["nodes"][0]["proxy_control_url"], cluster.client.list("Pod")

Everything it starts is stopped by ``stop()`` (also on a failed start). See docs/DESIGN.md "Simulated cluster".
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

from infra.images import push_test_image
from infra.registry import Registry
from simcluster.client import ApiClient
from simcluster.controllers import ControllerManager
from simcluster.informer import Informer
from simcluster.kubelet import Kubelet
from simcluster.nodes import TEST_REGISTRY, NodeConfig, SimNode, default_node_configs, register_node

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
AGENT_REPOSITORY = "stackrox/prefetch-agent"
AGENT_TAG = "sim"
AGENT_IMAGE = f"{TEST_REGISTRY}/{AGENT_REPOSITORY}"
COMPONENT_NAMESPACE = "kube-system"


def agent_argv() -> list[str]:
    """The real agent: the venv's console script, else the source tree through this interpreter."""
    for candidate in (Path(sys.prefix) / "bin" / "image-prefetcher", REPO / ".venv" / "bin" / "image-prefetcher"):
        if candidate.exists():
            return [str(candidate)]
    src = REPO / "agent" / "src"
    return [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {str(src)!r}); from image_prefetcher.cli import main; sys.exit(main())"]


def _api_server_class() -> Any:
    from simcluster.apiserver import ApiServer  # the API engineer's package

    return ApiServer


def component_token(admin: ApiClient, service_account: str) -> str:
    """A long-lived token for a simulated component, as ``system:serviceaccount:kube-system:<name>``.

    Controllers and kubelets must not act as ``admin``: tests tell the user's writes (the play's, as ``admin``) from
    the cluster's own by the request log's ``user`` field.
    """
    if admin.get_or_none("Namespace", COMPONENT_NAMESPACE) is None:
        admin.create("Namespace", {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": COMPONENT_NAMESPACE}})
    if admin.get_or_none("ServiceAccount", service_account, COMPONENT_NAMESPACE) is None:
        admin.create("ServiceAccount", {"apiVersion": "v1", "kind": "ServiceAccount",
                                        "metadata": {"name": service_account, "namespace": COMPONENT_NAMESPACE}},
                     COMPONENT_NAMESPACE)
    unbound = {"metadata": {"name": "", "uid": ""}}
    return admin.token_request(COMPONENT_NAMESPACE, service_account, unbound, expiration_s=7 * 24 * 3600,
                               bound=False)


class SimCluster:
    def __init__(self, directory: Path | str, nodes: int = 3, registry_upstream: Optional[str] = None,
                 name: str = "sim", node_configs: Optional[list[NodeConfig]] = None) -> None:
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.node_configs = node_configs or default_node_configs(name, nodes)
        self.registry_upstream = registry_upstream
        self.registry: Optional[Registry] = None
        self.api: Any = None
        self.client: Optional[ApiClient] = None
        self.nodes: list[SimNode] = []
        self.controllers: Optional[ControllerManager] = None
        self.services: Optional[Informer] = None
        self.kubelets: list[Kubelet] = []
        self.info: dict[str, Any] = {}
        self.kubeconfig = self.dir / "kubeconfig"
        self.kubeconfig_viewer = self.dir / "kubeconfig-viewer"
        self.cluster_json = self.dir / "cluster.json"

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> SimCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        upstream = self.registry_upstream
        if upstream is None:
            self.registry = Registry(self.dir, name="registry").start()
            upstream = self.registry.host
        push_test_image(upstream, AGENT_REPOSITORY, AGENT_TAG, size_mib=0.25, layers=1, seed="prefetch-agent")
        self.api = _api_server_class()(self.dir / "apiserver").start()
        self.api.write_kubeconfig(self.kubeconfig, "admin")
        self.api.write_kubeconfig(self.kubeconfig_viewer, "viewer")
        ca_path = str(self.api.ca_path)
        admin = ApiClient(self.api.url, self.api.admin_token, ca_path, "simcluster/bootstrap")
        self.client = admin
        controller_token = component_token(admin, "simcluster-controller-manager")
        controllers_client = ApiClient(self.api.url, controller_token, ca_path, "simcluster/controller-manager")
        for config in self.node_configs:
            node = SimNode(self.dir, config, upstream)
            self.nodes.append(node)
            node.start()
            register_node(self.client, config)
        self.controllers = ControllerManager(controllers_client)
        self.controllers.start()
        self.services = Informer(controllers_client, "Service").start()
        ca_pem = Path(ca_path).read_bytes()
        port = int(self.api.url.rsplit(":", 1)[1].rstrip("/"))
        for node in self.nodes:
            assert node.containerd is not None
            token = component_token(admin, f"simcluster-kubelet-{node.name}")
            client = ApiClient(self.api.url, token, ca_path, f"kubelet/{node.name}")
            kubelet = Kubelet(client, node.name, node.dir, node.host_root, node.containerd.address, port, ca_pem,
                              agent_argv(), self.services, prepare_host=node.layout_host_root)
            self.kubelets.append(kubelet.start())
        self.info = {
            "name": self.name, "api_url": self.api.url, "ca_path": ca_path,
            "kubeconfig": str(self.kubeconfig), "kubeconfig_viewer": str(self.kubeconfig_viewer),
            "request_log_url": self.api.url.rstrip("/") + "/_sim/requests",
            "registry": {"name": TEST_REGISTRY, "upstream": upstream, "own": self.registry is not None,
                         "dir": str(self.registry.workdir) if self.registry else None},
            "agent_image": {"image": AGENT_IMAGE, "version": AGENT_TAG, "ref": f"{AGENT_IMAGE}:{AGENT_TAG}"},
            "nodes": [node.to_json() for node in self.nodes],
        }
        self.cluster_json.write_text(json.dumps(self.info, indent=2) + "\n")

    def stop(self) -> None:
        """Stops everything that was started, in reverse order; safe to call twice."""
        for kubelet in self.kubelets:
            with contextlib.suppress(Exception):
                kubelet.stop()
        self.kubelets = []
        if self.services is not None:
            self.services.stop()
            self.services = None
        if self.controllers is not None:
            self.controllers.stop()
            self.controllers = None
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        self.nodes = []
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.stop()
            self.api = None
        if self.registry is not None:
            self.registry.stop()
            self.registry = None

    def __enter__(self) -> SimCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- helpers for tests ---------------------------------------------------------------------------
    def node(self, name: str) -> SimNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)
