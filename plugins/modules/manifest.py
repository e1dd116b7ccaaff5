#!/usr/bin/python
# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: manifest
short_description: Render the Kubernetes objects of an image prefetch instance
version_added: 0.1.0
description:
  - Renders every Kubernetes object of one prefetch instance (ServiceAccount, node-labelling RBAC, image-list
    ConfigMap, NetworkPolicies, DaemonSet, and per flavor and option the OpenShift SCC Role/RoleBinding and the
    metrics aggregator) and returns them as a list and as a multi-document YAML string.
  - Never contacts a cluster. Apply the result with M(stackrox.prefetch.apply), or write it with O(dest) for
    C(kubectl apply -f) or GitOps.
  - The objects mean the same as those of the Go tool's C(deploy) generator for the same settings, apart from the
    deliberate differences listed in the collection's C(docs/manifests.md). The main ones are the agent image
    (this project's), the image-list ConfigMap (rendered here, the Go tool leaves it to the user), the
    C(app.kubernetes.io/*) labels on every object, the pod annotation C(prefetch.stackrox.io/config-hash) (a changed
    image list or setting replaces the pods, so the nodes pull again), a C(ClusterIP) metrics Service unless asked
    otherwise, per-instance SCC Role/RoleBinding names, hardened pod and container security contexts, the
    service-account token mounted into the prefetch init container only, NetworkPolicies (O(network_policy)),
    health probes on the metrics aggregator and a C(RollingUpdate) strategy with O(max_unavailable).
author:
  - stackrox.prefetch contributors (@stackrox)
requirements:
  - PyYAML (comes with ansible-core) on the host the module runs on.
extends_documentation_fragment:
  - stackrox.prefetch.settings
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: With O(dest), reports whether the file would change without writing it.
  diff_mode:
    support: full
    details: With O(dest), shows the file's old and new content.
  platform:
    platforms: posix
options:
  dest:
    description:
      - Write the YAML to this file on the host the module runs on. The task reports C(changed) only when the
        content differs. The parent directory must exist.
    type: path
notes:
  - The image list is read on the host the module runs on; the nodes get it through the ConfigMap.
  - The checksum covers the image list and the agent settings, not the content of the pull secret; after rotating
    the secret, re-run the pulls by changing a setting or restarting the DaemonSet.
seealso:
  - module: stackrox.prefetch.apply
  - module: stackrox.prefetch.rollout
"""

EXAMPLES = r"""
- name: Render an instance for a vanilla (containerd) cluster
  stackrox.prefetch.manifest:
    name: my-images
    image: registry.example.com/tools/prefetch-agent
    images:
      - quay.io/stackrox-io/main:4.5.0
      - quay.io/stackrox-io/scanner:4.5.0
  register: rendered

- name: Write an OpenShift manifest with a pull secret and metrics for kubectl or GitOps
  stackrox.prefetch.manifest:
    name: my-images
    namespace: prefetch
    flavor: ocp
    images_file: files/images.txt
    secret: my-pull-secret
    collect_metrics: true
    dest: /tmp/prefetch.yaml

- name: Limit the pulls and give up on missing images at once
  stackrox.prefetch.manifest:
    name: ci-images
    flavor: k3s
    images: [registry.example.com/ci/runner:2.1]
    max_parallel_pulls: 4
    not_found: fail
    overall_timeout: 30m
    node_selector:
      node-role.kubernetes.io/worker: ""
"""

RETURN = r"""
objects:
  description: The rendered Kubernetes objects, in apply order.
  returned: success
  type: list
  elements: dict
  sample:
    - apiVersion: v1
      kind: ServiceAccount
      metadata:
        name: my-images
        namespace: default
        labels:
          app.kubernetes.io/name: image-prefetcher
          app.kubernetes.io/instance: my-images
          app.kubernetes.io/managed-by: stackrox.prefetch
yaml:
  description: The objects as a multi-document YAML string, each document starting with C(---).
  returned: success
  type: str
  sample: "---\napiVersion: v1\nkind: ServiceAccount\n..."
checksum:
  description:
    - sha256 of the distinct images and of every setting that reaches the pods; the DaemonSet's pod template carries
      it as the annotation C(prefetch.stackrox.io/config-hash).
  returned: success
  type: str
  sample: 5f0c3e1c2b0d4b6f9a4e7d1c8b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a
dest:
  description: The file the YAML was written to (or would be, in check mode).
  returned: when O(dest) is set
  type: str
  sample: /tmp/prefetch.yaml
"""

import os
import tempfile
import typing as t

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.stackrox.prefetch.plugins.module_utils._manifest import (
    ManifestError,
    manifest_argument_spec,
    manifest_result,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._render import HAS_YAML


def argument_spec() -> dict[str, dict[str, t.Any]]:
    return manifest_argument_spec()


def read_existing(path: str) -> t.Optional[str]:
    """The current content of dest, or None when there is no such file."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def write_atomically(module: AnsibleModule, path: str, content: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(prefix=".manifest-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(to_bytes(content))
        module.atomic_move(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.unlink(temp_path)


def write_dest(module: AnsibleModule, path: str, content: str, result: dict[str, t.Any]) -> None:
    """Write the YAML when it differs; record changed and the diff."""
    if os.path.isdir(path):
        module.fail_json(msg=f"dest {path!r} is a directory, not a file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        module.fail_json(msg=f"dest {path!r}: the directory {os.path.dirname(os.path.abspath(path))!r} does not exist")
    try:
        before = read_existing(path)
    except OSError as error:
        module.fail_json(msg=f"dest {path!r} cannot be read: {to_native(error.strerror or error)}")
    result["dest"] = path
    result["changed"] = before != content
    if module._diff:
        result["diff"] = {
            "before": before or "",
            "after": content,
            "before_header": path if before is not None else f"{path} (absent)",
            "after_header": path,
        }
    if result["changed"] and not module.check_mode:
        try:
            write_atomically(module, path, content)
        except OSError as error:
            module.fail_json(msg=f"dest {path!r} cannot be written: {to_native(error.strerror or error)}")


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"))
    try:
        result, warnings = manifest_result(module.params)
    except ManifestError as error:
        module.fail_json(msg=str(error))
    for warning in warnings:
        module.warn(warning)
    if module.params["dest"]:
        write_dest(module, module.params["dest"], result["yaml"], result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
