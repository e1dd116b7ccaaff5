#!/usr/bin/python
# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: apply
short_description: Apply or remove the Kubernetes objects of an image prefetch instance
version_added: 0.1.0
description:
  - Applies the objects rendered by M(stackrox.prefetch.manifest) with server-side apply (field manager
    C(stackrox.prefetch)), or removes every object of an instance.
  - Everything is validated before the first write, namely the shape of every object, that the server serves every kind,
    that the namespace exists (or O(create_namespace)), that its Pod Security level admits the prefetch pods (they
    mount the CRI socket through a hostPath volume, which the C(baseline) and C(restricted) levels reject), that the
    pull secret the DaemonSet uses exists and has type C(kubernetes.io/dockerconfigjson), and a server-side dry-run
    of every object (which also surfaces permission denials and field-manager conflicts).
  - Idempotent. Each object is compared with the server's dry-run result, ignoring what the server maintains itself
    (resourceVersion, managedFields, generation, timestamps, uid, status); unchanged objects are not written, so a
    second identical run reports C(changed=false) and sends no write.
  - O(state=present) also deletes the objects of the instance that O(objects) no longer include (found as
    O(state=absent) finds them), after applying the others, for example the C(<name>-metrics) Deployment and Service
    once C(collect_metrics) is off; they are reported with action C(deleted) (check mode deletes nothing).
  - O(state=absent) deletes every object of the instance found by the labels C(app.kubernetes.io/name=image-prefetcher),
    C(app.kubernetes.io/instance=<name>) and C(app.kubernetes.io/managed-by=stackrox.prefetch), namespaced and
    cluster-scoped (ClusterRole, ClusterRoleBinding) alike. It deletes the DaemonSet and Deployment first and waits
    until their pods are gone, then the RBAC and the rest, and waits until those are gone.
  - The cluster-scoped objects belong to the namespace named by their label C(prefetch.stackrox.io/namespace) (or by a
    binding's ServiceAccount subject). O(state=absent) leaves those of another namespace alone, and O(state=present)
    fails before any write when they belong to the same instance name in another namespace.
  - When the task fails after its first write (the API server failed, went away, or the task was interrupted), the
    message and RV(objects) say which objects were written, and RV(not_written) which were not (the first being the
    one that failed, and whether its request may have taken effect all the same); running the task again finishes
    the job, writing only what is missing or differs.
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
    details: Only server-side dry-runs (C(dryRun=All)) are sent; nothing is written.
  diff_mode:
    support: full
    details: Returns before/after of every object that would change; Secret data is never shown.
  platform:
    platforms: posix
options:
  objects:
    description:
      - The objects to apply, usually RV(stackrox.prefetch.manifest#module:objects) of the manifest module.
      - Every object must carry the instance labels the manifest module sets.
      - Required with O(state=present). With O(state=absent) they are deleted by name too, even without labels.
    type: list
    elements: dict
  state:
    description:
      - V(present) applies O(objects); V(absent) removes every object of the instance.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - The instance name. Required with O(state=absent) when no O(objects) are given.
      - With O(objects) it is taken from their C(app.kubernetes.io/instance) label and, when given, must match it.
    type: str
  namespace:
    description:
      - The instance namespace. Required with O(state=absent) when no O(objects) are given.
      - With O(objects) it is taken from the objects and, when given, must match them.
    type: str
  create_namespace:
    description:
      - Create the namespace when it does not exist, labelled C(pod-security.kubernetes.io/enforce=privileged)
        (and C(audit)/C(warn)) so that Pod Security admission admits the prefetch pods.
      - An existing namespace is never changed.
    type: bool
    default: false
  force_conflicts:
    description:
      - Take over fields that another field manager owns (server-side apply C(force=true)).
      - Without it such a conflict fails the task before anything is written, naming the manager(s) and fields.
    type: bool
    default: false
  remove_node_labels:
    description:
      - With O(state=absent), also remove the label C(image-prefetcher.stackrox.io/<sanitised name>) that the agent
        wrote on every node.
    type: bool
    default: false
  wait_timeout:
    description:
      - With O(state=absent), how many seconds to wait, in all, until the deleted objects and the DaemonSet's pods are
        gone (first the workloads and their pods, then the other objects).
      - Objects still present after that fail the task; pods still terminating only give a warning.
      - In both states, also the time within which requests that failed for a passing reason are retried (see the
        notes); no retry starts that would end after it.
    type: int
    default: 120
notes:
  - Secrets are never applied by this module and their content never appears in results or diffs.
  - The kinds it looks for, to prune and to remove an instance, are ServiceAccount, ConfigMap, NetworkPolicy
    (C(networking.k8s.io/v1)), Service, Deployment, DaemonSet, Role and RoleBinding in the namespace, and ClusterRole
    and ClusterRoleBinding; the user needs to list them, and to apply and delete those it manages.
seealso:
  - module: stackrox.prefetch.manifest
  - module: stackrox.prefetch.rollout
"""

EXAMPLES = r"""
- name: Render an instance
  stackrox.prefetch.manifest:
    name: my-images
    namespace: prefetch
    images: [quay.io/stackrox-io/main:4.5.0]
  register: rendered

- name: Apply it, creating the namespace
  stackrox.prefetch.apply:
    objects: "{{ rendered.objects }}"
    create_namespace: true
    kubeconfig: ~/.kube/config

- name: Remove the instance and its node labels
  stackrox.prefetch.apply:
    state: absent
    name: my-images
    namespace: prefetch
    remove_node_labels: true
"""

RETURN = r"""
objects:
  description: One entry per object, in the order they were applied or deleted.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: The object's kind.
      type: str
      sample: DaemonSet
    apiVersion:
      description: The object's apiVersion.
      type: str
      sample: apps/v1
    name:
      description: The object's name.
      type: str
      sample: my-images
    namespace:
      description: The object's namespace; null for cluster-scoped objects.
      type: str
      sample: prefetch
    action:
      description: What happened (or, in check mode, would happen).
      type: str
      choices: [created, updated, unchanged, deleted, absent]
  sample:
    - {kind: ServiceAccount, apiVersion: v1, name: my-images, namespace: prefetch, action: unchanged}
    - {kind: DaemonSet, apiVersion: apps/v1, name: my-images, namespace: prefetch, action: updated}
not_written:
  description:
    - The writes that were planned and not done because the task failed, in the order they would have been made;
      empty when the failure came before the first write (nothing was written) or in check mode.
  returned: failure
  type: list
  elements: dict
  contains:
    kind:
      description: The object's kind.
      type: str
    apiVersion:
      description: The object's apiVersion.
      type: str
    name:
      description: The object's name.
      type: str
    namespace:
      description: The object's namespace; null for cluster-scoped objects.
      type: str
    action:
      description: What was planned.
      type: str
      choices: [created, updated, deleted]
    error:
      description: For the first entry, the write that failed, the error; null for the others.
      type: str
    maybe_done:
      description:
        - For the first entry, true when its request may have reached the server and taken effect all the same (the
          connection broke after it was sent, or the server failed while handling it).
      type: bool
  sample:
    - {kind: DaemonSet, apiVersion: apps/v1, name: my-images, namespace: prefetch, action: created,
       error: "cannot apply DaemonSet prefetch/my-images: HTTP 500 ...", maybe_done: true}
name:
  description: The instance name.
  returned: success
  type: str
  sample: my-images
namespace:
  description: The instance namespace.
  returned: success
  type: str
  sample: prefetch
"""

import os
import time
import traceback
import typing as t

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.stackrox.prefetch.plugins.module_utils._apply import (
    Applier,
    Instance,
    resolve_instance,
    validate_object_shapes,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._auth import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    build_api_client,
    protect_kubeconfig_secrets,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import Cluster
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    InterruptedRunError,
    PrefetchError,
    ValidationError,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._interrupt import guard


def argument_spec() -> dict[str, t.Any]:
    spec: dict[str, t.Any] = {key: dict(value) for key, value in AUTH_ARG_SPEC.items()}
    spec.update(
        objects={"type": "list", "elements": "dict"},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        name={"type": "str"},
        namespace={"type": "str"},
        create_namespace={"type": "bool", "default": False},
        force_conflicts={"type": "bool", "default": False},
        remove_node_labels={"type": "bool", "default": False},
        wait_timeout={"type": "int", "default": 120},
    )
    return spec


def resolve_request(params: dict[str, t.Any]) -> tuple[Instance, list[dict[str, t.Any]]]:
    """Validate the options and the objects without touching any cluster."""
    objects = list(params.get("objects") or [])
    validate_object_shapes(objects)
    if params["wait_timeout"] < 0:
        raise ValidationError(f"wait_timeout must be 0 or more, got {params['wait_timeout']}")
    if params["state"] == "present":
        if not objects:
            raise ValidationError("state=present needs objects (the objects of stackrox.prefetch.manifest)")
        if params["remove_node_labels"]:
            raise ValidationError("remove_node_labels applies to state=absent only")
        return resolve_instance(objects, params.get("name"), params.get("namespace")), objects
    if params.get("name") and params.get("namespace"):
        if objects:
            resolve_instance(objects, params["name"], params["namespace"])
        return Instance(params["name"], params["namespace"]), objects
    if not objects:
        raise ValidationError("state=absent needs name and namespace, or the instance's objects")
    return resolve_instance(objects, params.get("name"), params.get("namespace")), objects


def partial_result(applier: t.Optional[Applier], error: Exception) -> dict[str, t.Any]:
    """The message and what was done before a failure: the objects written, and those not written."""
    message = str(error)
    if applier is None:
        return {"msg": message, "objects": [], "changed": False}
    ending, not_written = applier.failure_report(error)
    if ending and isinstance(error, (ClusterError, InterruptedRunError)):
        message += f"; {ending}"
    return {"msg": message, "objects": applier.objects, "changed": applier.changed, "not_written": not_written}


def run(module: AnsibleModule, applier_factory: t.Callable[[t.Any], Applier]) -> None:
    params = module.params
    applier: t.Optional[Applier] = None
    doing = "checking the options"

    def describe() -> str:
        return doing

    try:
        with guard(describe):
            instance, objects = resolve_request(params)
            verb = "applying" if params["state"] == "present" else "removing"
            doing = f"{verb} instance {instance.namespace}/{instance.name}"
            deadline = time.monotonic() + params["wait_timeout"]
            applier = applier_factory(Cluster(build_api_client(params, os.environ), deadline=deadline))
            if params["state"] == "present":
                applier.present(objects, instance, params["create_namespace"])
            else:
                applier.absent(instance, objects, params["remove_node_labels"])
    except PrefetchError as error:
        module.fail_json(**partial_result(applier, error))
    except Exception as error:  # a bug: one line for the user, the traceback only with -vvv
        failure = partial_result(applier, error)
        failure["msg"] = f"unexpected error: {type(error).__name__}: {error}"
        module.fail_json(exception=traceback.format_exc(), **failure)
    if applier is None:  # unreachable: every path without an applier ended in fail_json
        module.fail_json(msg="internal error: no result")
        return
    for warning in applier.warnings:
        module.warn(warning)
    result: dict[str, t.Any] = {
        "changed": applier.changed,
        "objects": applier.objects,
        "name": instance.name,
        "namespace": instance.namespace,
    }
    if module._diff:
        result["diff"] = applier.diffs
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    protect_kubeconfig_secrets(module)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    params = module.params

    def make_applier(cluster: t.Any) -> Applier:
        return Applier(
            cluster,
            check_mode=module.check_mode,
            diff_mode=module._diff,
            force_conflicts=params["force_conflicts"],
            wait_timeout=float(params["wait_timeout"]),
        )

    run(module, make_applier)


if __name__ == "__main__":
    main()
