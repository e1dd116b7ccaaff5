"""Make the working tree importable as ``ansible_collections.stackrox.prefetch`` (the renderer's import names).

A temporary ``ansible_collections/stackrox/prefetch`` symbolic link to the repository stands in for the built tree,
so these tests render from the files as they are now, without a build step.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

_TOP = Path(__file__).resolve().parents[2]
_ROOT = Path(tempfile.mkdtemp(prefix="prefetch-security-"))
(_ROOT / "ansible_collections" / "stackrox").mkdir(parents=True)
(_ROOT / "ansible_collections" / "stackrox" / "prefetch").symlink_to(_TOP, target_is_directory=True)
sys.path.insert(0, str(_ROOT))
atexit.register(shutil.rmtree, _ROOT, True)  # removes the link, never what it points to
