"""No secret the tests use shows up in anything a run leaves behind: the play's output at -vvv (module arguments
and results), the role's report and result, the rendered manifest, and the agent's own log (with --debug).

Secrets in play: the admin's bearer token given as ``images_api_key`` (instead of a kubeconfig), and a pull
secret's password, its ``auth`` value and the whole ``.dockerconfigjson``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from e2e.support import Cluster, ref, role_vars, run_playbook

HOST = "local"
PASSWORD = "e2e-S3cret-pa55word-7f3c"  # a throw-away test credential, searched for below
USER = "e2e-puller"


def _pull_secret(cluster: Cluster, namespace: str) -> tuple[str, str]:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = json.dumps({"auths": {"registry.test:5000": {"username": USER, "password": PASSWORD, "auth": auth}}})
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "pull", "--type=kubernetes.io/dockerconfigjson",
                    f"--from-literal=.dockerconfigjson={config}")
    return auth, config


def test_no_secret_in_any_output(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    name = "e2e-secrets"
    auth, config = _pull_secret(cluster, name)
    token = cluster.api.token
    secrets = {"bearer token": token, "password": PASSWORD, "auth": auth, "dockerconfigjson": config,
               "dockerconfigjson (base64)": base64.b64encode(config.encode()).decode()}
    values = role_vars(cluster, name, [ref("e2e/app0")], images_secret="pull", images_agent_debug=True,
                       images_host=cluster.info["api_url"], images_api_key=token,
                       images_ca_cert=cluster.info["ca_path"])
    del values["images_kubeconfig"]
    result = run_playbook(workdir / "present", collections_path, {HOST: values}, verbosity=3)
    assert result.rc == 0, result.stdout[-4000:]
    rendered = run_playbook(workdir / "rendered", collections_path, {HOST: {
        **values, "images_state": "rendered", "images_dest": str(workdir / "rendered.yaml")}}, verbosity=3)
    assert rendered.rc == 0, rendered.stdout[-4000:]

    outputs = {"play -vvv": result.stdout, "rendered play -vvv": rendered.stdout,
               "result": json.dumps(result.results), "rendered manifest": (workdir / "rendered.yaml").read_text()}
    for pod in cluster.pods(name):
        outputs[f"agent log {pod['metadata']['name']}"] = cluster.pod_log(name, pod["metadata"]["name"], "prefetch")
    assert any("debug" in text.lower() for key, text in outputs.items() if key.startswith("agent log")), \
        "the agent did not run with --debug"
    leaks = [(what, where) for what, secret in secrets.items() for where, text in outputs.items() if secret in text]
    assert leaks == [], leaks
