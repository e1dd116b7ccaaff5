# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed exceptions shared by every module of the collection.

module_utils raise these; each module's ``main()`` turns them into ``fail_json`` with
``str(error)`` as the message, so the message must already name the object and the cause
and must never contain a secret.
"""

from __future__ import annotations


class PrefetchError(Exception):
    """Base class of every error the collection raises on purpose."""


class ValidationError(PrefetchError):
    """A setting or an input file is invalid; raised before anything is rendered or sent."""


# --- cluster-facing errors (raised by _cluster/_apply/_rollout; owned by the apply/rollout modules) ---


class ClusterError(PrefetchError):
    """The Kubernetes API server answered with an error or could not be reached.

    ``outcome_unknown``: the failed request was a write that may have reached the server before the failure (the
    connection broke after it was sent, or the server failed while handling it), so it may have taken effect.
    """

    def __init__(self, message: str, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class ClusterUnreachableError(ClusterError):
    """Connection refused, DNS failure, TLS failure or timeout talking to the API server."""


class UnauthorizedError(ClusterError):
    """HTTP 401: the API server rejected the credentials."""


class ForbiddenError(ClusterError):
    """HTTP 403: the user may not perform the verb on the resource."""


class NotFoundError(ClusterError):
    """HTTP 404 on an object or an API path that has to exist."""


class ConflictError(ClusterError):
    """HTTP 409 from server-side apply: other field managers own fields we set."""


class InterruptedRunError(PrefetchError):
    """SIGINT or SIGTERM reached the module (Ctrl-C, ansible-playbook stopped, or the controller went away)."""


class MissingSecretError(PrefetchError):
    """The pull secret named by the DaemonSet is missing or not of type kubernetes.io/dockerconfigjson."""


class RolloutError(PrefetchError):
    """The rollout failed, timed out or was interrupted; ``result`` carries the partial per-node report."""

    def __init__(self, message: str, result: dict | None = None, interrupted: bool = False) -> None:
        super().__init__(message)
        self.result = result or {}
        self.interrupted = interrupted
