"""Sync the collection into BUILD_ROOT/ansible_collections/stackrox/prefetch/ (the layout ansible-test needs).

The file set is what `ansible-galaxy collection build` puts in the tarball (galaxy.yml's build_ignore plus
ansible-galaxy's own ignores, same fnmatch rules), plus galaxy.yml itself (ansible-test reads it). The sync is in
place: unchanged files are not rewritten and tests/output (ansible-test's results) is kept, so a run that is
reading the tree is not pulled from under it; files that left the collection are removed.
"""

from __future__ import annotations

import filecmp
import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# ansible-galaxy's built-in ignores (ansible/galaxy/collection/__init__.py, _build_files_manifest_walk).
GALAXY_IGNORES = ["MANIFEST.json", "FILES.json", "galaxy.yaml", ".git", "*.pyc", "*.retry", "tests/output"]
GALAXY_IGNORE_DIRS = frozenset({"CVS", ".bzr", ".hg", ".git", ".svn", "__pycache__", ".tox"})
# Kept in the destination: ansible-test's results, and the tree's own empty git repository (see init_git).
# ansible-lint's cache (.ansible) too, so that it is not rebuilt on every sync.
KEEP_IN_DEST = frozenset({"tests/output", ".git", ".ansible"})


def collection_files(src: Path) -> list[str]:
    """Relative paths of the files the tarball would hold, plus galaxy.yml."""
    meta = yaml.safe_load((src / "galaxy.yml").read_text(encoding="utf-8"))
    patterns = [*GALAXY_IGNORES, f"{meta['namespace']}-{meta['name']}-*.tar.gz", *meta.get("build_ignore", [])]
    files = ["galaxy.yml"]

    def ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) for p in patterns)

    def walk(directory: Path, rel_base: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = f"{rel_base}{entry.name}"
            if entry.is_dir():
                if entry.name in GALAXY_IGNORE_DIRS or ignored(rel) or entry.is_symlink():
                    continue
                walk(Path(entry.path), rel + "/")
            elif not ignored(rel) and rel != "galaxy.yml":
                files.append(rel)

    walk(src, "")
    return files


def sync(src: Path, dest: Path, files: list[str]) -> tuple[int, int]:
    """Copy new or changed files, delete stale ones; returns (copied, removed)."""
    copied = removed = 0
    for rel in files:
        target = dest / rel
        if target.is_file() and filecmp.cmp(src / rel, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        copied += 1
    wanted = set(files)
    for root, dirs, names in os.walk(dest, topdown=True):
        rel_root = os.path.relpath(root, dest)
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if rel_root + d not in KEEP_IN_DEST]
        for name in names:
            if rel_root + name not in wanted:
                os.unlink(os.path.join(root, name))
                removed += 1
    for root, _dirs, _names in os.walk(dest, topdown=False):
        rel_root = os.path.relpath(root, dest)
        if any(rel_root == keep or rel_root.startswith(keep + "/") for keep in KEEP_IN_DEST):
            continue
        if root != str(dest) and not os.listdir(root):
            os.rmdir(root)
    return copied, removed


def init_git(dest: Path) -> None:
    """Give the tree its own (empty) git repository.

    ansible-test lists content with `git ls-files --cached --others --exclude-standard` from the nearest .git up
    the path; without one here it would find the project's repository, where build/ is ignored, and see no files.
    """
    if not (dest / ".git" / "HEAD").exists():
        subprocess.run(["git", "init", "-q", str(dest)], check=True)
    (dest / ".git" / "info").mkdir(exist_ok=True)
    # Tool output is not content: ansible-test's results and ansible-lint's cache.
    (dest / ".git" / "info" / "exclude").write_text("/tests/output/\n/.ansible/\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: build_tree.py SRC_DIR BUILD_ROOT", file=sys.stderr)
        return 2
    src, build_root = Path(argv[1]).resolve(), Path(argv[2]).resolve()
    meta = yaml.safe_load((src / "galaxy.yml").read_text(encoding="utf-8"))
    dest = build_root / "ansible_collections" / meta["namespace"] / meta["name"]
    dest.mkdir(parents=True, exist_ok=True)
    files = collection_files(src)
    copied, removed = sync(src, dest, files)
    init_git(dest)
    print(f"build-tree: {dest}: {len(files)} files, {copied} copied, {removed} removed", file=sys.stderr)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
