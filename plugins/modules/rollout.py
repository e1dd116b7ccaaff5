#!/usr/bin/python
# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout
short_description: Wait until every node of an image prefetch instance has pulled, and report per node
version_added: 0.1.0
description:
  - Follows the instance's DaemonSet and its pods with list + watch (resuming from the last resourceVersion and
    listing again when the server answers 410 Gone), not by polling.
  - The rollout is complete when the DaemonSet controller has observed the current generation,
    C(updatedNumberScheduled) == C(desiredNumberScheduled) == C(numberAvailable), nothing is unavailable, and the
    C(prefetch) init container of every current pod has terminated. A DaemonSet that schedules no pod at all
    (C(desiredNumberScheduled) 0) is a failure, never a silent success.
  - Reads every pod's C(prefetch) init-container termination message (the agent's JSON summary) and returns a
    per-node report and totals. With O(fail_on_pull_error) the task fails when any node failed any image, naming
    the node(s), image(s) and reason(s).
  - When the agent cannot start on a node (its summary carries C(fatal), for example a CRI socket that does not
    answer or an unreadable pull secret, also read from C(lastState) while the init container crash-loops; or a
    crash-looping init container whose last termination message is not JSON) the task fails at once, without
    waiting for O(timeout), naming the node(s) and the reason. An agent image that does not pull keeps the task
    waiting (registries can fail for a while).
  - When the agent of a node reports warnings (a step after its pulls failed, for example the node-label PATCH was
    denied because the instance's ClusterRole is missing), the node's entry carries them in RV(nodes[].warnings)
    and the module emits one warning per such node; the node's status still says whether its images are there.
  - On timeout the task fails with the partial report, saying which nodes are still pulling, which never started
    and why (pending reasons, image pull errors of the agent itself, the DaemonSet's warning events such as a
    Pod Security rejection), and the API server's last failure when it was failing.
  - A watch that ends or breaks is resumed from the last event's resourceVersion, a resourceVersion the server no
    longer has (410 Gone, also as a watch event) makes it list again; a request that still fails after the retries
    (see the notes), or is refused (401, 403), fails the task at once, naming the DaemonSet, the request and the
    cause, with the partial report.
  - >-
    With a node-slot cap (the instance rendered with C(parallel_nodes) above 0, read from the C(--parallel-nodes)
    and C(--canary) arguments of the DaemonSet's C(prefetch) init container), the module also lists and watches the
    instance's Leases (label C(app.kubernetes.io/instance=<name>) in O(namespace)). A node whose agent runs
    without holding a slot Lease C(<name>-slot-<i>) (or the canary Lease C(<name>-canary)) is reported V(waiting)
    for a slot, one that holds one V(pulling). A node that released its slot after its agent started is done
    pulling and only finishing (node label, metrics), so it stays V(pulling). Leases that may not be listed (403) or
    watched leave the report without V(waiting) (running agents are V(pulling)), never failing the task.
  - >-
    With the cap on, once a node finished, the module estimates the waves the cap needs, C(ceil(nodes /
    parallel_nodes)) (one more for the canary) times one wave, the median time a finished node pulled (its
    summary's C(seconds) minus C(waited)), from the first agent's start; when that ends after O(timeout) it emits
    one warning, for example C(timeout 600s is likely too short for 6 nodes at parallel_nodes=2: 3 waves of ~250s
    each need ~750s; raise timeout or parallel_nodes), also printed at once as a progress line. On timeout the
    message says how many nodes were still waiting for a node slot.
  - Read-only; never reports C(changed).
author:
  - stackrox.prefetch contributors (@stackrox)
requirements:
  - kubernetes (the Python client) on the host the module runs on.
extends_documentation_fragment:
  - stackrox.prefetch.k8s_auth
  - stackrox.prefetch.api_retries
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads. In check mode a DaemonSet that does not exist yet is not an error.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  name:
    description: The instance name (the DaemonSet's name).
    type: str
    required: true
  namespace:
    description: The instance namespace.
    type: str
    required: true
  timeout:
    description:
      - How many seconds to wait for the rollout to complete.
      - Also the time within which requests that failed for a passing reason are retried (see the notes).
    type: int
    default: 1200
  fail_on_pull_error:
    description: Fail the task when any node reports a failed image.
    type: bool
    default: true
  collect_metrics:
    description:
      - Fetch the metrics aggregator's C(/metrics) through the API server's service proxy
        (C(/api/v1/namespaces/<namespace>/services/<name>-metrics:<metrics_port>/proxy/metrics)) and return them.
      - The instance must have been rendered with C(collect_metrics=true).
      - A failed fetch is a warning, not a failure.
    type: bool
    default: false
  metrics_port:
    description: The metrics Service's HTTP port, by name or number.
    type: str
    default: http
  progress_interval:
    description:
      - >-
        While waiting, print one progress line for this host when something changed, at most one every this many
        seconds, and none during the first interval, for example C(prod-east: 7/20 nodes done, 11 pulling, 2 not
        started; slowest: node-4 pulling for 2m05s); with C(parallel_nodes), nodes waiting for a node slot are
        counted apart (C(2 pulling, 9 waiting for a slot)). V(0) prints none.
      - Printed by the module's action plugin on the controller while the module runs. The module writes the state into
        a file of the task's temporary directory; on the controller (a local connection, as with the role's default
        C(images_delegate_to=localhost)) the plugin polls it, on another host it reads it through the connection
        once an interval (one C(cat) command), so a line comes up to an interval later. With C(async), no progress
        line is printed; the result is the same.
    type: int
    default: 10
  progress_file:
    description:
      - Set by the module's action plugin, not by users. The file the module replaces with a JSON snapshot of the
        rollout (node counts by status, the slowest node) whenever it changes, for the progress lines.
    type: path
seealso:
  - module: stackrox.prefetch.apply
"""

EXAMPLES = r"""
- name: Wait for every node and fail when an image could not be pulled
  stackrox.prefetch.rollout:
    name: my-images
    namespace: prefetch
    timeout: 900
  register: prefetch

- name: Show the nodes that failed
  ansible.builtin.debug:
    msg: "{{ prefetch.nodes | selectattr('status', 'equalto', 'failed') | map(attribute='node') | list }}"

- name: Wait, keep going on pull errors, and fetch the per-attempt metrics
  stackrox.prefetch.rollout:
    name: my-images
    namespace: prefetch
    fail_on_pull_error: false
    collect_metrics: true
"""

RETURN = r"""
nodes:
  description: One entry per node, sorted by node name. Also returned when the task fails.
  returned: when the DaemonSet exists
  type: list
  elements: dict
  contains:
    node:
      description: The node name.
      type: str
    pod:
      description: The pod on that node (null when there is none).
      type: str
    status:
      description:
        - V(succeeded) every image is present; V(failed) some image is not (see RV(nodes[].errors));
          V(pulling) the agent runs (with C(parallel_nodes), it holds a node slot or the canary Lease, or has
          released its slot and is finishing); V(waiting) the agent runs and waits for a node slot (only with
          C(parallel_nodes) and Leases the credentials may list); V(pending) the init container waits (for example
          the agent's own image does not
          pull); V(not_started) no pod or not scheduled yet; V(unknown) the agent's summary is missing or unreadable;
          V(error) the agent cannot start (fatal start-up error or crash loop; RV(nodes[].message) says why);
          V(gone) the node was deleted during the rollout before its agent reported.
      type: str
      choices: [succeeded, failed, pulling, waiting, pending, not_started, unknown, error, gone]
    node_state:
      description:
        - The node itself, from its Node object. V(ready); V(not_ready) its Ready condition is not True (for
          example the kubelet stopped posting status; RV(nodes[].message) gives the condition); V(cordoned)
          unschedulable (the DaemonSet's pod still runs there); V(deleted) the Node object is gone.
        - Missing when the Nodes cannot be listed with the given credentials.
      type: str
      returned: when the Nodes can be listed
      choices: [ready, not_ready, cordoned, deleted]
    ok:
      description: Images pulled in this run.
      type: int
    failed:
      description: Images not present at the end.
      type: int
    skipped:
      description: Images already present and not pulled again.
      type: int
    attempts:
      description: Pull attempts in total.
      type: int
    bytes:
      description: Size of the pulled images.
      type: int
    seconds:
      description: Wall time of the agent's run (with C(parallel_nodes), the wait for a slot included).
      type: float
    waited:
      description: Seconds the agent waited for a node slot before pulling (C(0) when it got one at once).
      type: float
      returned: when the node is done and the instance runs with C(parallel_nodes)
    canary:
      description: V(true) on the canary node, which pulled alone first (C(canary=true)).
      type: bool
      returned: on the canary node, when it is done
    errors:
      description: Image to short reason, for the failed images.
      type: dict
    retries:
      description: Image to number of attempts, for images that needed more than one.
      type: dict
    warnings:
      description:
        - >-
          What failed after the node's pulls, one line per step of the agent, C(<step>: <reason>), for example
          C(node labels: failed to patch node node-1: 403 Forbidden: nodes "node-1" is forbidden: ...) (the node
          label was not written and the node keeps the value it had) or C(metrics submission: gave up after 5
          call(s): ...). Never holds credentials.
        - Empty when nothing failed, and for agents that predate the field.
      type: list
      elements: str
    message:
      description: Why the node is not done (or notes about an incomplete summary); empty otherwise.
      type: str
  sample:
    - node: node-1
      pod: my-images-x7k2p
      status: failed
      ok: 3
      failed: 1
      skipped: 0
      attempts: 6
      bytes: 31457280
      seconds: 4.21
      errors: {"registry.example.com/missing:v1": "not_found: manifest unknown"}
      retries: {"registry.example.com/app:v1": 2}
      warnings: []
      message: ""
totals:
  description: Sums over the nodes.
  returned: when the DaemonSet exists
  type: dict
  contains:
    nodes:
      description: Nodes reported.
      type: int
    nodes_succeeded:
      description: Nodes with status succeeded.
      type: int
    nodes_failed:
      description: Nodes with status failed.
      type: int
    nodes_error:
      description: Nodes with status error (the agent cannot start).
      type: int
    nodes_gone:
      description: Nodes with status gone (deleted during the rollout).
      type: int
    nodes_with_warnings:
      description: Nodes whose agent reported warnings (see RV(nodes[].warnings)).
      type: int
    images_ok:
      description: Sum of ok.
      type: int
    images_failed:
      description: Sum of failed.
      type: int
    images_skipped:
      description: Sum of skipped.
      type: int
    bytes:
      description: Sum of bytes.
      type: int
daemonset:
  description: The DaemonSet's status counters and generation.
  returned: when the DaemonSet exists
  type: dict
  sample:
    desiredNumberScheduled: 3
    currentNumberScheduled: 3
    updatedNumberScheduled: 3
    numberReady: 3
    numberAvailable: 3
    numberUnavailable: 0
    numberMisscheduled: 0
    observedGeneration: 2
    generation: 2
metrics:
  description: The aggregator's list of pull attempts (upstream field names).
  returned: when O(collect_metrics=true) and the fetch worked
  type: list
  elements: dict
  sample:
    - {attempt_id: 2f0c..., started_at: 1732460000, image: "registry.example.com/app:v1", duration_ms: 812,
       node: node-1, size_bytes: 10485760}
metrics_summary:
  description: Per node, from the metrics, the pull attempts, failed attempts and bytes.
  returned: when O(collect_metrics=true) and the fetch worked
  type: dict
  sample: {node-1: {attempts: 4, failed_attempts: 1, bytes: 31457280}}
"""

import os
import time
import traceback
import typing as t

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.stackrox.prefetch.plugins.module_utils._auth import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    build_api_client,
    protect_kubeconfig_secrets,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import Cluster
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    PrefetchError,
    RolloutError,
    ValidationError,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._interrupt import guard
from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import SnapshotWriter
from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import (
    RolloutWaiter,
    metrics_summary,
    node_warnings,
    pull_failure_message,
)


def argument_spec() -> dict[str, t.Any]:
    spec: dict[str, t.Any] = {key: dict(value) for key, value in AUTH_ARG_SPEC.items()}
    spec.update(
        name={"type": "str", "required": True},
        namespace={"type": "str", "required": True},
        timeout={"type": "int", "default": 1200},
        fail_on_pull_error={"type": "bool", "default": True},
        collect_metrics={"type": "bool", "default": False},
        metrics_port={"type": "str", "default": "http"},
        progress_interval={"type": "int", "default": 10},
        progress_file={"type": "path"},
    )
    return spec


def validate(params: dict[str, t.Any]) -> None:
    if params["timeout"] <= 0:
        raise ValidationError(f"timeout must be a positive number of seconds, got {params['timeout']}")
    if params["progress_interval"] < 0:
        interval = params["progress_interval"]
        raise ValidationError(f"progress_interval must be 0 (none) or a number of seconds, got {interval}")
    for option in ("name", "namespace", "metrics_port"):
        if not str(params[option]).strip():
            raise ValidationError(f"{option} must not be empty")


def add_metrics(module: AnsibleModule, waiter: RolloutWaiter, result: dict[str, t.Any]) -> None:
    try:
        metrics = waiter.fetch_metrics(str(module.params["metrics_port"]))
    except PrefetchError as error:
        module.warn(f"metrics not collected: {error}")
        return
    result["metrics"] = metrics
    result["metrics_summary"] = metrics_summary(metrics)


def run(module: AnsibleModule) -> None:
    params = module.params
    validate(params)
    deadline = time.monotonic() + params["timeout"]  # also the bound of every retry (the api_retries notes)
    cluster = Cluster(build_api_client(params, os.environ), deadline=deadline)
    waiter = RolloutWaiter(cluster, params["name"], params["namespace"], float(params["timeout"]))
    if params["progress_file"] and params["progress_interval"] > 0:
        waiter.on_progress = SnapshotWriter(params["progress_file"], waiter.report, waiter.warnings)
    daemonset = waiter.existing_daemonset()
    if daemonset is None:
        if module.check_mode:
            module.exit_json(changed=False, msg=f"{waiter.target} does not exist (check mode: nothing was applied)")
        raise RolloutError(f"{waiter.target} not found; apply the instance first (stackrox.prefetch.apply)")
    try:
        state = waiter.wait(daemonset)
    except RolloutError as error:
        for line in waiter.warnings:  # the waves estimate explains a timeout best
            module.warn(line)
        if params["collect_metrics"] and error.result and not error.interrupted:
            add_metrics(module, waiter, error.result)
        raise
    for line in waiter.warnings:
        module.warn(line)
    result: dict[str, t.Any] = waiter.report(state)  # wait() returns only while the DaemonSet exists
    if params["collect_metrics"]:
        add_metrics(module, waiter, result)
    for report in result["nodes"]:
        if report["status"] == "unknown":
            module.warn(f"node {report['node']}: {report['message']}")
    for line in node_warnings(result["nodes"]):
        module.warn(line)
    if params["fail_on_pull_error"] and result["totals"]["nodes_failed"]:
        module.fail_json(msg=pull_failure_message(result["nodes"]), changed=False, **result)
    module.exit_json(changed=False, **result)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    protect_kubeconfig_secrets(module)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    params = module.params
    target = f"DaemonSet {params['namespace']}/{params['name']}"
    try:
        with guard(lambda: f"waiting for {target}"):
            run(module)
    except RolloutError as error:
        module.fail_json(msg=str(error), changed=False, **error.result)
    except PrefetchError as error:
        module.fail_json(msg=str(error), changed=False)
    except Exception as error:  # a bug: one line for the user, the traceback only with -vvv
        module.fail_json(
            msg=f"unexpected error: {type(error).__name__}: {error}", exception=traceback.format_exc(), changed=False
        )


if __name__ == "__main__":
    main()
