# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reports: the JUnit file read back by a JUnit consumer (junitparser), the Markdown table, the JSON, and the
timeline rendered by a real SVG renderer (rsvg-convert, Debian's librsvg2-bin) to a PNG decoded by pypng."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import png
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

from ansible_collections.stackrox.prefetch.plugins.module_utils._reports import (
    Bar,
    Layout,
    Row,
    cases,
    image_list,
    json_report,
    junit_xml,
    markdown,
    nice_step,
    report_files,
    safe_basename,
    timeline_layout,
    timeline_svg,
)
from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.report_examples import example_result

IMAGES = ["r.test/a:1", "r.test/b:1", "r.test/c:1"]


def node(name: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": name,
        "pod": f"p-{name}",
        "status": "succeeded",
        "ok": 3,
        "failed": 0,
        "skipped": 0,
        "attempts": 3,
        "bytes": 3 << 20,
        "seconds": 4.5,
        "errors": {},
        "retries": {},
        "warnings": [],
        "message": "",
    }
    base.update(overrides)
    return base


def result(nodes: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cluster": "prod-east",
        "state": "present",
        "name": "imgs",
        "namespace": "prefetch",
        "changed": True,
        "failed": any(n["status"] != "succeeded" for n in nodes),
        "msg": "",
        "images": IMAGES,
        "nodes": nodes,
        "totals": {"nodes": len(nodes), "nodes_succeeded": 1, "nodes_failed": 0, "images_ok": 3},
        "daemonset": {},
        "metrics": None,
        "metrics_summary": None,
    }
    base.update(overrides)
    return base


def parse_junit(text: str) -> TestSuite:
    """The consumer's view: exactly one suite, whose counters agree with its cases."""
    xml = JUnitXml.fromstring(text)
    suites = list(xml) if isinstance(xml, JUnitXml) else [xml]
    assert len(suites) == 1
    suite = suites[0]
    found = list(suite)
    assert suite.tests == len(found)
    assert suite.failures == sum(1 for c in found if any(isinstance(r, Failure) for r in c.result))
    assert suite.errors == sum(1 for c in found if any(isinstance(r, Error) for r in c.result))
    assert suite.skipped == sum(1 for c in found if any(isinstance(r, Skipped) for r in c.result))
    return suite


def by_case(suite: TestSuite) -> dict[tuple[str, str], Any]:
    return {(case.classname, case.name): case for case in suite}


# --- JUnit -----------------------------------------------------------------------------------------------------------


def test_junit_has_a_testcase_per_node_and_image_with_the_failure_and_its_reason() -> None:
    failed = node("n2", status="failed", ok=2, failed=1, errors={"r.test/b:1": "not_found: manifest unknown"})
    suite = parse_junit(junit_xml(result([node("n1"), failed])))
    assert suite.name == "prod-east: prefetch/imgs"
    cases_ = by_case(suite)
    assert sorted(cases_) == sorted((n, i) for n in ("n1", "n2") for i in IMAGES)
    assert all(case.is_passed for key, case in cases_.items() if key != ("n2", "r.test/b:1"))
    [failure] = cases_[("n2", "r.test/b:1")].result
    assert isinstance(failure, Failure)
    assert failure.message == "not_found: manifest unknown"
    assert failure.type == "not_found"
    assert suite.failures == 1 and suite.errors == 0 and suite.skipped == 0


def test_junit_time_is_the_nodes_run_time_without_metrics_and_the_suite_the_slowest_node() -> None:
    suite = parse_junit(junit_xml(result([node("n1", seconds=4.5), node("n2", seconds=9.25)])))
    assert {case.time for case in suite if case.classname == "n1"} == {4.5}
    assert suite.time == 9.25


def test_junit_time_comes_from_the_metrics_and_images_without_attempts_are_skipped() -> None:
    metrics = [
        {"node": "n1", "image": "r.test/a:1", "started_at": 100, "duration_ms": 1500, "error": "x"},
        {"node": "n1", "image": "r.test/a:1", "started_at": 103, "duration_ms": 2250, "error": ""},
        {"node": "n1", "image": "r.test/b:1", "started_at": 100, "duration_ms": 500, "error": ""},
    ]
    reported = node("n1", ok=2, skipped=1, attempts=3, retries={"r.test/a:1": 2})
    cases_ = by_case(parse_junit(junit_xml(result([reported], metrics=metrics))))
    assert cases_[("n1", "r.test/a:1")].time == 3.75
    assert cases_[("n1", "r.test/b:1")].time == 0.5
    assert cases_[("n1", "r.test/c:1")].is_skipped
    [skipped] = cases_[("n1", "r.test/c:1")].result
    assert "already present" in skipped.message


def test_junit_names_a_failure_the_truncated_summary_left_out_from_the_metrics() -> None:
    metrics = [{"node": "n1", "image": "r.test/c:1", "started_at": 100, "duration_ms": 10, "error": "rpc error: 401"}]
    reported = node("n1", status="failed", ok=0, failed=1, attempts=1)  # errors truncated away
    cases_ = by_case(parse_junit(junit_xml(result([reported], metrics=metrics))))
    [failure] = cases_[("n1", "r.test/c:1")].result
    assert isinstance(failure, Failure) and failure.message == "rpc error: 401"
    assert cases_[("n1", "r.test/a:1")].is_skipped


def test_junit_without_metrics_tells_skipped_images_apart_only_when_every_image_was_skipped() -> None:
    everything_present = node("n1", ok=0, skipped=3, attempts=0)
    some_present = node("n2", ok=2, skipped=1, attempts=2)
    cases_ = by_case(parse_junit(junit_xml(result([everything_present, some_present]))))
    assert all(cases_[("n1", image)].is_skipped for image in IMAGES)
    assert all(cases_[("n2", image)].is_passed for image in IMAGES)
    assert "1 skipped image(s) without naming them" in (cases_[("n2", "r.test/a:1")].system_out or "")


def test_junit_metrics_of_a_node_whose_submission_failed_do_not_make_its_images_skipped() -> None:
    metrics = [{"node": "n1", "image": "r.test/a:1", "started_at": 1, "duration_ms": 10, "error": ""}]
    cases_ = by_case(parse_junit(junit_xml(result([node("n1"), node("n2")], metrics=metrics))))
    assert cases_[("n1", "r.test/b:1")].is_skipped  # n1 has metrics: b was not pulled there
    assert all(cases_[("n2", image)].is_passed for image in IMAGES)  # n2 has none: the summary decides


@pytest.mark.parametrize("status", ["pulling", "pending", "not_started", "unknown", "error", "gone"])
def test_junit_images_of_a_node_that_did_not_finish_are_errors_saying_why(status: str) -> None:
    unfinished = node("n2", status=status, ok=0, attempts=0, message="pulling since 2026-12-04T06:00:00Z")
    cases_ = by_case(parse_junit(junit_xml(result([node("n1"), unfinished]))))
    for image in IMAGES:
        [error] = cases_[("n2", image)].result
        assert isinstance(error, Error)
        assert error.message == f"the node did not finish: {status} (pulling since 2026-12-04T06:00:00Z)"


def test_junit_without_an_image_list_uses_the_images_the_nodes_named_and_one_case_for_a_node_without() -> None:
    failed = node("n1", status="failed", failed=1, errors={"r.test/x:1": "unauthorized: 401"})
    stuck = node("n2", status="error", message="CRI socket does not answer")
    found = cases(result([failed, stuck], images=[]))
    assert [(c.node, c.image, c.outcome) for c in found] == [
        ("n1", "r.test/x:1", "failed"),
        ("n2", "r.test/x:1", "error"),
    ]
    assert [(c.image, c.outcome) for c in cases(result([node("n3")], images=[]))] == [("(every image)", "passed")]
    parse_junit(junit_xml(result([node("n3")], images=[])))


def test_junit_without_nodes_is_an_empty_but_valid_suite_carrying_the_message() -> None:
    text = junit_xml(result([], failed=True, msg="DaemonSet prefetch/imgs schedules no pods", totals={}))
    suite = parse_junit(text)
    assert suite.tests == 0
    assert {p.name: p.value for p in suite.properties()}["message"].startswith("DaemonSet prefetch/imgs")


def test_junit_escapes_markup_and_drops_characters_xml_cannot_carry() -> None:
    reason = 'error: <html> & "quotes" \x1b[31mred\x00'
    failed = node("n1", status="failed", failed=1, errors={"r.test/a:1": reason})
    cases_ = by_case(parse_junit(junit_xml(result([failed]))))
    [failure] = cases_[("n1", "r.test/a:1")].result
    assert failure.message == 'error: <html> & "quotes" [31mred'
    assert failure.type == "error"


def test_junit_of_a_large_run_stays_consistent() -> None:
    run = example_result(50, 20, parallel=4)
    suite = parse_junit(junit_xml(run))
    assert suite.tests == 50 * 20
    assert suite.failures == 1  # the last node misses the last image
    ET.fromstring(junit_xml(run))  # and a plain XML parser agrees it is well-formed


# --- Markdown and JSON -----------------------------------------------------------------------------------------------


def test_markdown_has_a_row_per_node_and_the_failed_images() -> None:
    failed = node("n2", status="failed", ok=2, failed=1, errors={"r.test/b:1": "not_found: manifest | unknown"})
    text = markdown(result([node("n1"), failed], totals={"nodes": 2, "nodes_succeeded": 1, "nodes_failed": 1}))
    lines = text.splitlines()
    assert lines[0] == "### ❌ prod-east: prefetch/imgs FAILED"
    assert "| n1 | ✅ succeeded | 3 | 0 | 0 | 3 | 4.5 s |  |" in lines
    assert "| n2 | ❌ failed | 2 | 1 | 0 | 3 | 4.5 s |  |" in lines
    assert "| n2 | `r.test/b:1` | not_found: manifest \\| unknown |" in lines
    header = lines.index("| node | status | ok | failed | skipped | attempts | time | notes |")
    assert lines[header + 1].count("|") == lines[header].count("|")


def test_markdown_keeps_html_and_newlines_out_of_the_cells_and_lists_warnings() -> None:
    warned = node("n1", message="a\nb <script>", warnings=["node labels: 403 Forbidden"])
    text = markdown(result([warned]))
    assert "| a b &lt;script&gt; |" in text
    assert "- n1: node labels: 403 Forbidden" in text


def test_markdown_without_nodes_says_why() -> None:
    text = markdown(result([], failed=True, msg="timed out", totals={}))
    assert "no node reported: timed out" in text.splitlines()


def test_json_is_the_full_result() -> None:
    run = example_result()
    assert json.loads(json_report(run)) == run


def test_report_files_per_host_and_the_timeline_only_with_metrics() -> None:
    assert sorted(report_files(result([node("n1")]), "prod-east")) == [
        "prod-east.json",
        "prod-east.junit.xml",
        "prod-east.md",
    ]
    assert "prod-east.timeline.svg" in report_files(example_result(), "prod-east")


@pytest.mark.parametrize(
    "name, expected", [("prod-east", "prod-east"), ("../etc/x", "_etc_x"), (".hidden", "hidden"), ("", "cluster")]
)
def test_safe_basename(name: str, expected: str) -> None:
    assert safe_basename(name) == expected


def test_image_list_keeps_order_and_drops_duplicates() -> None:
    assert image_list(result([], images=["b:1", "a:1", "b:1", " "])) == ["b:1", "a:1"]


# --- the timeline ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("span, step", [(0.4, 0.05), (23.5, 5), (60, 10), (600, 100), (1300, 200)])
def test_nice_step(span: float, step: float) -> None:
    assert nice_step(span) == pytest.approx(step)


def test_no_timeline_without_metrics() -> None:
    assert timeline_svg(result([node("n1")])) is None
    assert timeline_layout(result([node("n1")])) is None


def test_timeline_has_one_row_per_node_and_one_bar_per_attempt_retries_in_one_lane() -> None:
    run = example_result()
    layout = timeline_layout(run)
    assert layout is not None
    assert [row.node for row in layout.rows] == [n["node"] for n in run["nodes"]]
    assert sum(len(row.bars) for row in layout.rows) == len(run["metrics"])
    for row in layout.rows:
        lanes: dict[str, set[int]] = {}
        for span in row.bars:
            lanes.setdefault(span.attempt.image, set()).add(span.lane)
        assert all(len(used) == 1 for used in lanes.values())
    svg = ET.fromstring(timeline_svg(run) or "")
    rects = svg.findall(".//{http://www.w3.org/2000/svg}rect")
    classes = [rect.get("class") for rect in rects]
    assert classes.count("attempt failed") == sum(1 for m in run["metrics"] if m["error"])
    assert classes.count("attempt") + classes.count("attempt failed") == len(run["metrics"])
    texts = "".join(svg.itertext())
    assert "0 s" in texts and "20 s" in texts
    assert "app-5:2.0 failed" in texts


def test_timeline_shows_a_node_without_attempts_as_an_empty_row() -> None:
    metrics = [{"node": "n1", "image": "r.test/a:1", "started_at": 10, "duration_ms": 800, "error": ""}]
    svg = timeline_svg(result([node("n1"), node("n2", ok=0, skipped=3, attempts=0)], metrics=metrics)) or ""
    assert "no pull attempt" in svg
    assert len(ET.fromstring(svg).findall(".//{http://www.w3.org/2000/svg}rect[@class='attempt']")) == 1


def rsvg_convert() -> str:
    tool = shutil.which("rsvg-convert")
    if not tool:  # a missing renderer must not pass as a working picture
        pytest.fail("rsvg-convert is missing (Debian package librsvg2-bin): run scripts/bootstrap.sh")
    return tool


def render_png(svg: str, tmp_path: Path) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    source, target = tmp_path / "timeline.svg", tmp_path / "timeline.png"
    source.write_text(svg, encoding="utf-8")
    subprocess.run([rsvg_convert(), "--background-color=white", "-o", str(target), str(source)], check=True)
    width, height, rows, info = png.Reader(filename=str(target)).asRGBA8()
    pixels = [[(row[i], row[i + 1], row[i + 2]) for i in range(0, len(row), 4)] for row in rows]
    assert info["bitdepth"] == 8
    return width, height, pixels


def ink(pixel: tuple[int, int, int]) -> bool:
    """Not the white background, the grey row stripes nor the grid lines."""
    return min(pixel) < 200


def red(pixel: tuple[int, int, int]) -> bool:
    r, g, b = pixel
    return r > 170 and g < 90 and b < 90


def blue(pixel: tuple[int, int, int]) -> bool:
    r, _g, b = pixel
    return b - r > 60


def bar_line(
    pixels: list[list[tuple[int, int, int]]], layout: Layout, row: Row, span: Bar
) -> list[tuple[int, int, int]]:
    """The pixels along a bar's horizontal middle."""
    x0 = layout.x(span.attempt.start)
    x1 = max(x0 + 1.5, layout.x(span.attempt.start + span.attempt.duration))
    y = int(row.y + span.lane * layout.lane_height + layout.lane_height / 2)
    return pixels[y][int(x0) + 1 : max(int(x0) + 2, int(x1) - 1)]


def band(pixels: list[list[tuple[int, int, int]]], layout: Layout, y0: float, y1: float) -> list[tuple[int, int, int]]:
    x0, x1 = layout.label_width + 1, layout.label_width + layout.plot_width
    return [pixel for line in pixels[int(y0) + 1 : int(y1)] for pixel in line[x0:x1]]


@pytest.mark.parametrize("nodes, images", [(3, 5), (50, 20)])
def test_timeline_renders_to_a_png_with_bars_in_every_node_row(nodes: int, images: int, tmp_path: Path) -> None:
    run = example_result(nodes, images, parallel=4 if nodes > 3 else 3)
    layout = timeline_layout(run)
    assert layout is not None
    width, height, pixels = render_png(timeline_svg(run) or "", tmp_path)
    assert (width, height) == (layout.width, layout.height)
    assert height <= 1600
    for row in layout.rows:
        row_pixels = band(pixels, layout, row.y, row.y + row.height)
        assert sum(1 for p in row_pixels if ink(p)) > 0.05 * len(row_pixels), row.node
    for row in layout.rows if nodes <= 3 else ():  # thin lanes blend at their edges: colours checked on big bars
        for span in row.bars:
            line = bar_line(pixels, layout, row, span)
            if span.attempt.error:
                assert any(red(p) for p in line), (row.node, span)
            else:
                assert any(blue(p) for p in line) and not any(red(p) for p in line), (row.node, span)
    # The space between the legend and the first row is background: the bars stay inside their rows.
    assert not any(ink(p) for p in band(pixels, layout, 50, layout.rows[0].y - 1))


def test_timeline_renders_long_names_and_odd_characters(tmp_path: Path) -> None:
    run = copy.deepcopy(example_result())
    for item in run["metrics"]:
        item["node"] = item["node"] + ".compute.internal.example-with-a-very-long-suffix"
        item["error"] = item["error"] and 'rpc error: <"bad"> & more'
    for reported in run["nodes"]:
        reported["node"] += ".compute.internal.example-with-a-very-long-suffix"
    layout = timeline_layout(run)
    assert layout is not None and layout.label_width <= 260
    width, _height, _pixels = render_png(timeline_svg(run) or "", tmp_path)
    assert width == layout.width
