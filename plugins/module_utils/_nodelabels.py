# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node label the agent writes for an instance (BEHAVIOR.md §5, TESTCASES.md §6).

``apply`` with ``remove_node_labels: true`` must compute the very key the agent wrote, so this
follows the agent's sanitisation step by step.
"""

from __future__ import annotations

import re

NODE_LABEL_PREFIX = "image-prefetcher.stackrox.io/"
_OUTSIDE_ALLOWED = re.compile(r"[^a-zA-Z0-9._-]+")
_MAX_NAME_BYTES = 63
_FALLBACK_NAME = "prefetcher"


def sanitize_instance_name(name: str) -> str:
    """Replace disallowed runs with one '-', cut to 63 bytes, trim '.', '_', '-' at both ends."""
    replaced = _OUTSIDE_ALLOWED.sub("-", name)
    # After the replacement only ASCII is left, so 63 characters are 63 bytes.
    truncated = replaced[:_MAX_NAME_BYTES]
    trimmed = truncated.strip("._-")
    return trimmed or _FALLBACK_NAME


def node_label_key(instance_name: str) -> str:
    """The label key ``image-prefetcher.stackrox.io/<sanitised name>``."""
    return NODE_LABEL_PREFIX + sanitize_instance_name(instance_name)
