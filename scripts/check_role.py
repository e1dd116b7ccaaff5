"""Check the images role against the modules it calls, as documented by `ansible-doc --json`.

Every option the role passes to a stackrox.prefetch module (in a task or in module_defaults) must exist in that
module; the role variable it passes must have the option's type; every module option must be reachable from the
role. Run with ANSIBLE_COLLECTIONS_PATH pointing at the collection to check (scripts/test-collection.sh does).
Exit status 1 with one line per finding.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import yaml

PREFIX = "stackrox.prefetch."
# Options the role does not expose, and why.
NOT_EXPOSED = {
    ("apply", "state"): "set by the role from images_state",
    ("apply", "objects"): "the rendered objects of the manifest task",
    ("rollout", "progress_file"): "set by the rollout action plugin, never by users",
    ("report", "basename"): "the role names the files after the inventory host (the result's cluster)",
}
# Module option type -> role variable types that may feed it.
COMPATIBLE = {"path": {"path", "str"}, "str": {"str", "path"}, "raw": None}


def module_docs(ansible_doc: str, modules: list[str]) -> dict[str, dict[str, t.Any]]:
    out = subprocess.run(
        [ansible_doc, "--json", *[PREFIX + m for m in modules]], check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(out)
    return {name[len(PREFIX) :]: entry["doc"] for name, entry in data.items()}


def walk_tasks(tasks: list[dict[str, t.Any]]) -> t.Iterator[dict[str, t.Any]]:
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            if key in task:
                yield from walk_tasks(task[key])


def module_calls(role: Path) -> t.Iterator[tuple[str, str, dict[str, t.Any]]]:
    """(file, module, args) for each module task and module_defaults entry of the role."""
    for path in sorted((role / "tasks").glob("*.yml")):
        for task in walk_tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            for key, value in task.items():
                if key.startswith(PREFIX) and isinstance(value, dict):
                    yield path.name, key[len(PREFIX) :], value
            for key, value in (task.get("module_defaults") or {}).items():
                if key.startswith(PREFIX):
                    yield path.name + " (module_defaults)", key[len(PREFIX) :], value


def role_var(value: t.Any, role_vars: dict[str, t.Any]) -> t.Optional[str]:
    """The role variable a task argument is made from, when there is exactly one."""
    names = {n for n in re.findall(r"(?<![.\w])images_[a-z0-9_]+", str(value)) if n in role_vars}
    names.discard("images_state")  # only chooses between values, never passed on
    return names.pop() if len(names) == 1 else None


def check(role: Path, docs: dict[str, dict[str, t.Any]]) -> list[str]:
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    role_vars = spec["argument_specs"]["main"]["options"]
    findings: list[str] = []
    passed: set[tuple[str, str]] = set()
    for where, module, args in module_calls(role):
        if module not in docs:
            findings.append(f"{where}: unknown module {PREFIX}{module}")
            continue
        options = docs[module]["options"]
        for option, value in args.items():
            if option not in options:
                findings.append(f"{where}: {PREFIX}{module} has no option {option!r}")
                continue
            passed.add((module, option))
            var = role_var(value, role_vars)
            if var is None:
                continue
            want = options[option].get("type", "str")
            have = role_vars[var].get("type", "str")
            allowed = COMPATIBLE.get(want, {want})
            if allowed is not None and have != "raw" and have not in allowed:
                findings.append(f"{where}: {var} is {have} but {module}.{option} is {want}")
            if want == "list" and have == "list" and options[option].get("elements") != role_vars[var].get("elements"):
                findings.append(f"{where}: elements of {var} differ from {module}.{option}")
            module_choices, role_choices = options[option].get("choices"), role_vars[var].get("choices")
            if module_choices and role_choices and not set(role_choices) <= set(module_choices):
                findings.append(f"{where}: choices of {var} {role_choices} not all in {module}.{option}")
    for module, doc in docs.items():
        for option in doc["options"]:
            if (module, option) not in passed and (module, option) not in NOT_EXPOSED:
                findings.append(f"{PREFIX}{module}: option {option!r} is not reachable from the role")
    return findings


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: check_role.py ROLE_DIR ANSIBLE_DOC", file=sys.stderr)
        return 2
    role = Path(argv[1])
    docs = module_docs(argv[2], ["manifest", "apply", "rollout", "report"])
    findings = check(role, docs)
    for finding in findings:
        print(f"check-role: {finding}")
    if not findings:
        print(f"check-role: {role}: every module option is reachable and every passed option matches")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
