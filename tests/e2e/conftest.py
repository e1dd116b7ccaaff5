"""Session fixtures: the installed collection and a running local Kubernetes cluster (tests/kube).

scripts/test-e2e.sh builds and installs the tarball, starts ``python -m kube up`` and pushes the test images, then
passes ``E2E_COLLECTIONS_PATH`` and ``E2E_CLUSTER_DIR``. Run directly (``pytest tests/e2e``), the fixtures do the
same themselves (tarball build + install into a temp dir, an in-process KubeCluster), and stop what they started.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Optional

import pytest

from e2e.faults import api_proxy
from e2e.support import Cluster, install_collection, push_all
from infra.apiproxy import ApiProxy
from kube.cluster import KubeCluster


def _interrupt(_signum: int, _frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (scripts/test-e2e.sh's trap, CI timeouts) must still run the fixtures' teardown: the clusters they
    # started run daemons and agent processes.
    del config
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("E2E_COLLECTIONS_PATH")
    if given:
        return Path(given)
    return install_collection(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    given = os.environ.get("E2E_CLUSTER_DIR")
    if given:
        yield Cluster(Path(given))
        return
    directory = tmp_path_factory.mktemp("kube")
    with KubeCluster(directory, nodes=3, name="kube") as kube:
        push_all(kube.info["registry"]["upstream"])
        yield Cluster(directory)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def apiproxy(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProxy]:
    """An API fault proxy (tests/infra/apiproxy.py) in front of the session cluster's API server, one per module."""
    with api_proxy(cluster, tmp_path_factory.mktemp("apiproxy")) as proxy:
        yield proxy


@pytest.fixture()
def px(apiproxy: ApiProxy) -> Iterator[ApiProxy]:
    """The module's API fault proxy without rules and with an empty request log; the test's rules go after it."""
    apiproxy.clear_rules()
    apiproxy.clear_requests()
    yield apiproxy
    apiproxy.clear_rules()
