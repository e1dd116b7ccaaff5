# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the prefetch settings; paired with SETTINGS_ARGUMENT_SPEC in module_utils/_settings.py."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  name:
    description:
      - Name of the prefetch instance.
      - Names the ServiceAccount, the image-list ConfigMap and the DaemonSet, prefixes the other objects
        (C(<name>-node-labeler), C(<name>-metrics), C(<name>-privileged-scc-use)), is the C(app) label of the pods
        and the suffix of the node label C(image-prefetcher.stackrox.io/<name>) the agent writes.
      - A DNS-1123 label of at most 55 characters, so that C(<name>-metrics) stays a valid Service name and label
        value. With O(collect_metrics=true) it must start with a letter (the Service name is a DNS-1035 label).
    type: str
    required: true
  namespace:
    description:
      - Namespace of the instance's namespaced objects.
    type: str
    default: default
  flavor:
    description:
      - Kubernetes distribution of the cluster. It decides where the CRI socket is on the nodes and what the
        prefetch container needs to reach it.
      - V(vanilla) is containerd at C(/var/run/containerd/containerd.sock).
      - V(ocp) is OpenShift with CRI-O at C(/var/run/crio/crio.sock); it adds the Role and RoleBinding
        C(<name>-privileged-scc-use) that let the ServiceAccount use the C(privileged) SCC, the pod annotation
        C(openshift.io/required-scc=privileged), and runs the prefetch init container privileged (SELinux on
        RHCOS keeps other containers off the socket).
      - V(crio) is CRI-O without OpenShift at C(/var/run/crio/crio.sock); not privileged, but the prefetch init
        container gets the SELinux type C(spc_t), which hosts enforcing SELinux need to reach the socket and
        others ignore.
      - V(k3s) and V(rke2) are containerd at C(/run/k3s/containerd/containerd.sock).
      - V(microk8s) is containerd at C(/var/snap/microk8s/common/run/containerd.sock).
    type: str
    default: vanilla
    choices: [vanilla, ocp, crio, k3s, rke2, microk8s]
  image:
    description:
      - Repository of the agent image, without tag or digest (see O(version)).
      - The default names this project's agent image (built from the repository's C(Dockerfile)), which is not the
        Go tool's C(quay.io/stackrox-io/image-prefetcher). Build it and push it to a registry every node can pull
        from, then set O(image) to that repository; the README describes how.
    type: str
    default: quay.io/stackrox-io/prefetch-agent
  version:
    description:
      - Tag of the agent image, by default the version of this collection.
      - A Go pseudo-version such as C(v0.4.2-0.20251126115717-559dd9fd402f) becomes the tag C(sha-559dd9f), as in
        the Go tool. Unlike the Go tool no C(-distro) suffix is ever added, since the one agent image carries libc
        and CA certificates (what credential provider plugins need).
      - A digest C(sha256:<64 hex>) pins the image as C(<image>@sha256:...), and C(<tag>@sha256:<64 hex>) as
        C(<image>:<tag>@sha256:...) (the runtime pulls by the digest; the tag only stays readable). Pinning by digest
        is recommended, since a tag can be moved to other content in the registry and a digest cannot.
    type: str
    default: 0.1.0
  images:
    description:
      - Images to prefetch on every node.
      - Each entry is trimmed like a line of O(images_file); an entry that would be empty, a comment or several lines
        in the image-list file is an error.
      - Combined with O(images_file), the file's images come first, then these.
    type: list
    elements: str
  images_file:
    description:
      - Path of a text file of images on the host the module runs on (usually the controller).
      - The agent's rules apply. One image per line, lines split on newline only, white space trimmed at both ends,
        empty lines and lines starting with C(#) skipped. There are no inline comments, duplicates are kept (each
        image is pulled once).
    type: path
  allow_empty:
    description:
      - Accept an empty image list. Otherwise at least one image is required from O(images) or O(images_file).
    type: bool
    default: false
  secret:
    description:
      - Name of a C(kubernetes.io/dockerconfigjson) Secret in O(namespace) whose credentials the agent uses to pull.
      - It is mounted at C(/tmp/pull-secret) and passed as C(--docker-config=/tmp/pull-secret/.dockerconfigjson).
    type: str
  collect_metrics:
    description:
      - Deploy the metrics aggregator (Deployment and Service C(<name>-metrics), gRPC port 8443, HTTP port 8080) and
        make every agent submit one record per pull attempt to it (C(--metrics-endpoint=<name>-metrics:8443)).
    type: bool
    default: false
  metrics_service_type:
    description:
      - Type of the metrics Service. The Go tool always uses C(LoadBalancer), which exposes unauthenticated pull
        data outside the cluster; V(ClusterIP) keeps it inside.
    type: str
    default: ClusterIP
    choices: [ClusterIP, LoadBalancer]
  credential_provider:
    description:
      - Use the node's kubelet image credential provider plugins. V(GKE) mounts GKE's plugin configuration
        (host C(/etc/srv/kubernetes), file C(cri_auth_config.yaml)) and plugin directory (host
        C(/home/kubernetes/bin)) read-only into the prefetch container and passes them to the agent, as the Go tool
        does. The image does not change.
    type: str
    choices: [GKE]
  cri_socket:
    description:
      - Absolute path of the CRI socket on the nodes, overriding the O(flavor)'s.
      - Its directory is mounted read-only from the host at C(/tmp/cri); the agent connects to
        C(/tmp/cri/<socket file name>).
    type: str
  node_selector:
    description:
      - Node labels the DaemonSet's pods are restricted to (C(nodeSelector)). By default every node.
    type: dict
  tolerations:
    description:
      - Tolerations of the DaemonSet's pods, as in a Pod spec.
      - The default tolerates every taint, as the Go tool does, so that every node gets the images.
    type: list
    elements: dict
    default: [{operator: Exists}]
  priority_class_name:
    description:
      - PriorityClass of the DaemonSet's pods.
    type: str
  resources:
    description:
      - Resource requirements (C(requests) and C(limits)) per container. A container given here replaces its
        defaults as a whole; the others keep theirs.
    type: dict
    suboptions:
      prefetch:
        description:
          - The init container that pulls.
          - "Default C({requests: {cpu: 20m, memory: 16Mi}, limits: {cpu: 1, memory: 256Mi}}), as the Go tool."
        type: dict
      sleep:
        description:
          - The container that keeps the pod running after the pulls.
          - "Default C({requests: {cpu: 5m, memory: 16Mi}, limits: {cpu: 100m, memory: 64Mi}}), as the Go tool."
        type: dict
      aggregator:
        description:
          - The metrics aggregator (O(collect_metrics=true)).
          - "Default C({requests: {cpu: 5m, memory: 16Mi}, limits: {cpu: 100m, memory: 64Mi}}), as the Go tool."
        type: dict
  pull_policy:
    description:
      - V(Always) pulls every image (a present image costs one manifest request).
      - V(IfNotPresent) skips images the node already has (C(--pull-policy=IfNotPresent)).
    type: str
    default: Always
    choices: [Always, IfNotPresent]
  max_parallel_pulls:
    description:
      - Most images one agent pulls at the same time (C(--max-parallel-pulls)).
      - V(0) is no limit, as the Go tool. Beyond about 100 pulls at once containerd 2.x completes none of them; every
        attempt times out and is retried, until the overall timeout (see the collection's C(docs/runtimes.md)).
    type: int
    default: 32
  not_found:
    description:
      - What the agent does when the registry says an image does not exist.
      - V(retry) keeps retrying until the overall timeout, as the Go tool. V(fail) gives up on that image at once
        (C(--not-found=fail)).
    type: str
    default: retry
    choices: [retry, fail]
  parallel_nodes:
    description:
      - Most nodes of this instance pulling at the same time, cluster-wide (C(--parallel-nodes)); V(0) is no limit.
      - Above V(0) each agent takes one of N node-slot Leases C(<name>-slot-<i>) in O(namespace) before it pulls and
        releases it when done; the rendered objects then include a Role and RoleBinding that let the agent's
        ServiceAccount get, list, create and update Leases in that namespace only.
      - The Leases are created by the agents, never rendered; O(stackrox.prefetch.apply#module:state=absent) removes
        them.
    type: int
    default: 0
  canary:
    description:
      - The first node to get a slot pulls alone first (C(--canary)); the images it finds invalid, or missing with
        O(not_found=fail), are reported failed by every later node instead of being pulled again.
      - Needs O(parallel_nodes) above V(0).
    type: bool
    default: false
  initial_pull_attempt_timeout:
    description:
      - Timeout of the first pull attempt of an image; it doubles on each retry. A Go duration such as C(30s) or
        C(1m30s) (units ns, us, ms, s, m, h), greater than zero. The agent's default (30s) applies when unset.
    type: str
  max_pull_attempt_timeout:
    description:
      - Cap of the per-attempt timeout. A Go duration greater than zero; agent default 5m.
    type: str
  overall_timeout:
    description:
      - Deadline of the whole run on a node. A Go duration greater than zero; agent default 20m.
    type: str
  initial_pull_attempt_delay:
    description:
      - Wait before the second attempt of an image; it doubles on each retry. A Go duration, zero or more; agent
        default 1s.
    type: str
  max_pull_attempt_delay:
    description:
      - Cap of the wait between attempts. A Go duration, zero or more; agent default 10m.
    type: str
  agent_debug:
    description:
      - Debug logging of the agent (C(--debug)), with the node's image list before and after the pulls.
    type: bool
    default: false
  agent_progress_interval:
    description:
      - How often at most each agent writes its progress (images done of all, the images it is pulling) onto its own
        pod, as the annotation C(prefetch.stackrox.io/progress) (C(--progress-interval)).
        The M(stackrox.prefetch.rollout) progress lines name the slowest node's image from it.
      - Nothing is written during the first interval, nor when nothing changed, so a node that is done within it costs
        no API write. The agents get a Role allowing C(patch) of C(pods) in the instance's namespace, and only that.
      - A Go duration; V(0s) writes nothing and renders neither the flag nor the Role.
    type: str
    default: 10s
  max_unavailable:
    description:
      - C(maxUnavailable) of the DaemonSet's rolling update, a count of nodes or a percentage. The default replaces
        every pod at once, so a changed image list is pulled everywhere at the same time.
    type: raw
    default: 100%
  network_policy:
    description:
      - Render the NetworkPolicy C(<name>), which admits no ingress traffic to the DaemonSet's pods (they only
        connect out), and with O(collect_metrics=true) the NetworkPolicy C(<name>-metrics), which admits gRPC
        (port 8443) to the aggregator only from this instance's agents and HTTP (port 8080) from anywhere (the API
        server's service proxy, kubelet probes and a C(LoadBalancer) have no pod label to select). Egress is not
        restricted.
      - They take effect only where the cluster's network plugin enforces NetworkPolicies; elsewhere they are
        inert. Set V(false) where NetworkPolicies are managed otherwise (for example by a cluster-wide policy
        engine); M(stackrox.prefetch.apply) then deletes those of an earlier run.
      - Applying them needs permission to manage C(networkpolicies) (API group C(networking.k8s.io)) in O(namespace),
        which the built-in C(admin) and C(edit) roles grant; M(stackrox.prefetch.apply) lists them in any case, to
        find the instance's objects.
    type: bool
    default: true
"""
