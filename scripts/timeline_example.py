#!/usr/bin/env python3
# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render docs/timeline-example.svg and .png: the timeline of tests/unit's example run (3 nodes x 5 images).

Usage: python3 scripts/timeline_example.py [OUT_DIR]   (default docs/; needs rsvg-convert, from librsvg2-bin)
The renderer and the example are loaded by path, so this runs without the collection's ansible_collections layout.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

TOP = Path(__file__).resolve().parents[1]


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else TOP / "docs"
    reports = load("prefetch_reports", TOP / "plugins" / "module_utils" / "_reports.py")
    examples = load(
        "prefetch_report_examples", TOP / "tests" / "unit" / "plugins" / "module_utils" / "report_examples.py"
    )
    svg = out / "timeline-example.svg"
    svg.write_text(reports.timeline_svg(examples.example_result()), encoding="utf-8")
    subprocess.run(
        ["rsvg-convert", "--background-color=white", "-o", str(out / "timeline-example.png"), str(svg)], check=True
    )
    print(svg, out / "timeline-example.png")


if __name__ == "__main__":
    main()
