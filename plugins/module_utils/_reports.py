# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reports a run leaves for CI systems and people: JUnit XML, Markdown, JSON and a pull timeline (SVG).

Pure: a result dict in (the role's ``images_result``: ``cluster``, ``name``, ``namespace``, ``failed``, ``msg``,
``nodes``, ``totals``, ``metrics`` as ``stackrox.prefetch.rollout`` returns them, plus ``images``, the instance's
image list), text out. Writing the files is the ``stackrox.prefetch.report`` action plugin's job.

What the agent's summary does not say is not guessed: it counts skipped images without naming them, so without
metrics a node that both pulled and skipped images reports its non-failed images as passed, with a note.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Optional

# Node statuses whose agent ended its run (the summary is there); every other status means the images of the node
# have no outcome yet (still pulling at the timeout, never started, the agent could not start, the node is gone).
FINISHED = ("succeeded", "failed")
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: Any) -> str:
    """Text that XML 1.0 can carry (control characters dropped)."""
    return _XML_ILLEGAL.sub("", str(value))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _nodes(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in result.get("nodes") or [] if isinstance(node, dict)]


def _metrics(result: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    """The metrics' pull attempts, None when they were not collected."""
    metrics = result.get("metrics")
    if not isinstance(metrics, list):
        return None
    return [item for item in metrics if isinstance(item, dict) and item.get("image")]


def instance_title(result: dict[str, Any]) -> str:
    return f"{result.get('cluster') or '?'}: {result.get('namespace') or '?'}/{result.get('name') or '?'}"


# --- one outcome per node x image (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One pull attempt from the metrics: seconds since the first attempt of the instance, error text or ""."""

    node: str
    image: str
    start: float
    duration: float
    error: str


@dataclass
class Case:
    """What one image did on one node: ``outcome`` is passed, failed, skipped or error (the node never finished)."""

    node: str
    image: str
    outcome: str
    seconds: float
    message: str = ""
    attempts: int = 0
    notes: list[str] = field(default_factory=list)


def attempts_from_metrics(metrics: list[dict[str, Any]]) -> list[Attempt]:
    """The attempts in time order, starts relative to the first (the agent records whole seconds of Unix time)."""
    if not metrics:
        return []
    origin = min(_number(item.get("started_at")) for item in metrics)
    attempts = [
        Attempt(
            node=str(item.get("node") or "unknown"),
            image=str(item.get("image")),
            start=_number(item.get("started_at")) - origin,
            duration=max(0.0, _number(item.get("duration_ms")) / 1000.0),
            error=str(item.get("error") or ""),
        )
        for item in metrics
    ]
    return sorted(attempts, key=lambda a: (a.node, a.start, a.image))


def image_list(result: dict[str, Any]) -> list[str]:
    """The instance's images; without the list, every image the nodes or the metrics named."""
    images = [str(image) for image in result.get("images") or [] if str(image).strip()]
    if images:
        return list(dict.fromkeys(images))
    named: set[str] = set()
    for node in _nodes(result):
        named |= set((node.get("errors") or {}).keys()) | set((node.get("retries") or {}).keys())
    named |= {attempt.image for attempt in attempts_from_metrics(_metrics(result) or [])}
    return sorted(named)


def _unfinished_case(node: dict[str, Any], image: str) -> Case:
    status = str(node.get("status") or "unknown")
    message = f"the node did not finish: {status}"
    if node.get("message"):
        message += f" ({node['message']})"
    return Case(str(node.get("node")), image, "error", _number(node.get("seconds")), message)


def _node_cases_from_metrics(node: dict[str, Any], images: list[str], attempts: list[Attempt]) -> list[Case]:
    name, errors = str(node.get("node")), dict(node.get("errors") or {})
    cases = []
    for image in images:
        mine = [attempt for attempt in attempts if attempt.image == image]
        seconds = sum(attempt.duration for attempt in mine)
        if image in errors:
            cases.append(Case(name, image, "failed", seconds, str(errors[image]), len(mine)))
        elif not mine:
            cases.append(Case(name, image, "skipped", 0.0, "already present on the node (not pulled)"))
        elif mine[-1].error:  # a failure the summary left out (truncated): the last attempt says why
            cases.append(Case(name, image, "failed", seconds, mine[-1].error, len(mine)))
        else:
            cases.append(Case(name, image, "passed", seconds, "", len(mine)))
    return cases


def _node_cases_from_summary(node: dict[str, Any], images: list[str]) -> list[Case]:
    """Without metrics the summary names failed images only; skipped ones are told apart only when all are."""
    name, errors = str(node.get("node")), dict(node.get("errors") or {})
    seconds, retries = _number(node.get("seconds")), dict(node.get("retries") or {})
    others = [image for image in images if image not in errors]
    skipped, ok = int(_number(node.get("skipped"))), int(_number(node.get("ok")))
    all_skipped = skipped > 0 and ok == 0 and skipped >= len(others)
    note = ""
    if skipped and not all_skipped:
        note = f"pulled or already present: the agent's summary counts {skipped} skipped image(s) without naming them"
    unnamed = int(_number(node.get("failed"))) - len(errors)
    cases = []
    for image in images:
        attempts = int(_number(retries.get(image))) or (0 if all_skipped else 1)
        if image in errors:
            cases.append(Case(name, image, "failed", seconds, str(errors[image]), attempts))
        elif all_skipped:
            cases.append(Case(name, image, "skipped", 0.0, "already present on the node (not pulled)"))
        else:
            case = Case(name, image, "passed", seconds, "", attempts)
            if note:
                case.notes.append(note)
            if unnamed > 0:
                case.notes.append(f"{unnamed} failed image(s) were left out of the agent's summary")
            cases.append(case)
    return cases


def cases(result: dict[str, Any]) -> list[Case]:
    """One case per node x image, nodes in the report's order; a node with no known image gets one case."""
    images = image_list(result)
    metrics = _metrics(result)
    by_node: dict[str, list[Attempt]] = {}
    for attempt in attempts_from_metrics(metrics or []):
        by_node.setdefault(attempt.node, []).append(attempt)
    found = []
    for node in _nodes(result):
        name = str(node.get("node"))
        status = str(node.get("status") or "unknown")
        if status not in FINISHED:
            found += [_unfinished_case(node, image) for image in images or ["(every image)"]]
        elif not images:
            outcome = "passed" if status == "succeeded" else "failed"
            found.append(
                Case(name, "(every image)", outcome, _number(node.get("seconds")), str(node.get("message") or ""))
            )
        # Metrics name every attempt of a node, unless that node's submission failed (then it has none).
        elif metrics is not None and (name in by_node or not _number(node.get("attempts"))):
            found += _node_cases_from_metrics(node, images, by_node.get(name, []))
        else:
            found += _node_cases_from_summary(node, images)
    return found


# --- JUnit XML (pure) ----------------------------------------------------------------------------------------------


def _seconds_attr(value: float) -> str:
    return f"{value:.3f}"


def _reason_class(reason: str) -> str:
    """The agent's reasons read ``<class>: <detail>`` (DESIGN.md); the class is the failure's type."""
    head = reason.split(":", 1)[0].strip()
    return head if re.fullmatch(r"[a-z_]+", head) else "error"


def junit_xml(result: dict[str, Any]) -> str:
    """One testsuite for the cluster's instance, one testcase per node x image (classname: the node)."""
    found = cases(result)
    counts = {
        "tests": len(found),
        "failures": sum(1 for case in found if case.outcome == "failed"),
        "errors": sum(1 for case in found if case.outcome == "error"),
        "skipped": sum(1 for case in found if case.outcome == "skipped"),
    }
    # Nodes pull side by side: the suite took as long as its slowest node, not the sum of its cases.
    wall = max([_number(node.get("seconds")) for node in _nodes(result)] or [0.0])
    root = ET.Element("testsuites", {"name": "stackrox.prefetch", **_str_values(counts), "time": _seconds_attr(wall)})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _text(instance_title(result)),
            **_str_values(counts),
            "time": _seconds_attr(wall),
            "hostname": _text(result.get("cluster") or ""),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for key in ("cluster", "namespace", "name"):
        ET.SubElement(properties, "property", {"name": key, "value": _text(result.get(key) or "")})
    if result.get("msg"):
        ET.SubElement(properties, "property", {"name": "message", "value": _text(result["msg"])})
    for case in found:
        element = ET.SubElement(
            suite,
            "testcase",
            {"classname": _text(case.node), "name": _text(case.image), "time": _seconds_attr(case.seconds)},
        )
        if case.outcome == "failed":
            failure = ET.SubElement(
                element, "failure", {"message": _text(case.message), "type": _reason_class(case.message)}
            )
            failure.text = _text(f"{case.node}: {case.image}: {case.message} ({case.attempts} attempt(s))")
        elif case.outcome == "error":
            error = ET.SubElement(element, "error", {"message": _text(case.message), "type": "not_finished"})
            error.text = _text(f"{case.node}: {case.image}: {case.message}")
        elif case.outcome == "skipped":
            ET.SubElement(element, "skipped", {"message": _text(case.message)})
        if case.notes:
            ET.SubElement(element, "system-out").text = _text("\n".join(case.notes))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _str_values(values: dict[str, int]) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


# --- Markdown (pure) -----------------------------------------------------------------------------------------------

_STATUS_MARK = {"succeeded": "✅", "failed": "❌", "error": "❌", "gone": "⚠️"}


def _cell(value: Any) -> str:
    """A table cell: one line, pipes escaped, no HTML (GitHub renders it)."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def human_bytes(count: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value, unit = float(count), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} {units[unit]}" if unit == 0 else f"{value:.1f} {units[unit]}"


def _summary_line(result: dict[str, Any]) -> str:
    totals = result.get("totals") or {}
    if not totals:
        return "no node reported" + (f": {result['msg']}" if result.get("msg") else "")
    text = (
        f"{totals.get('nodes', 0)} nodes ({totals.get('nodes_succeeded', 0)} succeeded, "
        f"{totals.get('nodes_failed', 0)} failed), images ok={totals.get('images_ok', 0)} "
        f"failed={totals.get('images_failed', 0)} skipped={totals.get('images_skipped', 0)}"
    )
    if _number(totals.get("bytes")):
        text += f", pulled {human_bytes(_number(totals['bytes']))}"
    return text


def markdown(result: dict[str, Any]) -> str:
    """The per-node table, failed images and warnings, for ``$GITHUB_STEP_SUMMARY`` or a merge request note."""
    verdict = "FAILED" if result.get("failed") else "succeeded"
    lines = [f"### {'❌' if result.get('failed') else '✅'} {_cell(instance_title(result))} {verdict}", ""]
    lines += [_cell(_summary_line(result)), ""]
    if result.get("failed") and result.get("msg") and result.get("totals"):
        lines += [f"> {_cell(result['msg'])}", ""]
    nodes = _nodes(result)
    if nodes:
        lines += [
            "| node | status | ok | failed | skipped | attempts | time | notes |",
            "|---|---|--:|--:|--:|--:|--:|---|",
        ]
        for node in nodes:
            mark = _STATUS_MARK.get(str(node.get("status")), "⏳")
            lines.append(
                f"| {_cell(node.get('node'))} | {mark} {_cell(node.get('status'))} | {int(_number(node.get('ok')))} | "
                f"{int(_number(node.get('failed')))} | {int(_number(node.get('skipped')))} | "
                f"{int(_number(node.get('attempts')))} | {_number(node.get('seconds')):.1f} s | "
                f"{_cell(node.get('message') or '')} |"
            )
        lines.append("")
    failures = [(n, image, reason) for n in nodes for image, reason in sorted((n.get("errors") or {}).items())]
    if failures:
        lines += ["**Failed images**", "", "| node | image | reason |", "|---|---|---|"]
        lines += [f"| {_cell(n.get('node'))} | `{_cell(image)}` | {_cell(reason)} |" for n, image, reason in failures]
        lines.append("")
    warnings = [(n, text) for n in nodes for text in n.get("warnings") or []]
    if warnings:
        lines += ["**Warnings**", ""]
        lines += [f"- {_cell(n.get('node'))}: {_cell(text)}" for n, text in warnings]
        lines.append("")
    return "\n".join(lines)


def json_report(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


# --- the timeline (pure SVG) ---------------------------------------------------------------------------------------

PLOT_WIDTH = 960
TOP = 64  # title and legend
AXIS_HEIGHT = 34
ROW_GAP = 6
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
COLOR_OK = "#3b75af"
COLOR_FAILED = "#d62728"
COLOR_WAIT = "#7f7f7f"
MAX_LANES = 8  # a node pulling more images at once shares lanes (bars get translucent) instead of growing on


@dataclass(frozen=True)
class Bar:
    """One attempt placed in the picture: x and width in pixels, lane inside its node's row."""

    attempt: Attempt
    number: int  # 1-based attempt number of the image on its node
    of: int
    lane: int


@dataclass(frozen=True)
class Row:
    node: str
    y: float  # top of the row
    height: float
    lanes: int
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    label_width: int
    plot_width: int
    span: float  # seconds from the first start to the last end
    lane_height: float
    rows: tuple[Row, ...]

    def x(self, seconds: float) -> float:
        return self.label_width + (seconds / self.span) * self.plot_width if self.span else float(self.label_width)


def _lanes(attempts: list[Attempt]) -> tuple[dict[str, int], int]:
    """Lane per image: all attempts of one image share a lane (retries follow each other), images packed greedily."""
    spans: dict[str, tuple[float, float]] = {}
    for attempt in attempts:
        start, end = spans.get(attempt.image, (attempt.start, attempt.start + attempt.duration))
        spans[attempt.image] = (min(start, attempt.start), max(end, attempt.start + attempt.duration))
    lane_ends: list[float] = []
    lanes: dict[str, int] = {}
    for image, (start, end) in sorted(spans.items(), key=lambda item: (item[1][0], item[0])):
        free = next((index for index, busy_until in enumerate(lane_ends) if busy_until <= start), None)
        if free is None and len(lane_ends) < MAX_LANES:
            lane_ends.append(end)
            free = len(lane_ends) - 1
        elif free is None:  # every lane busy: share the one that frees first (its bars overlap, translucent)
            free = min(range(len(lane_ends)), key=lane_ends.__getitem__)
        lane_ends[free] = max(lane_ends[free], end)
        lanes[image] = free
    return lanes, max(1, len(lane_ends))


def nice_step(span: float, target_ticks: int = 10) -> float:
    """A tick step of 1, 2 or 5 x 10^k seconds giving at most about ``target_ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / target_ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def timeline_layout(result: dict[str, Any]) -> Optional[Layout]:
    """Where every bar goes; None without metrics."""
    metrics = _metrics(result)
    if metrics is None:
        return None
    attempts = attempts_from_metrics(metrics)
    names = [str(node.get("node")) for node in _nodes(result)]
    names += sorted({attempt.node for attempt in attempts} - set(names))
    per_node = {name: [a for a in attempts if a.node == name] for name in names}
    lanes = {name: _lanes(found) for name, found in per_node.items()}
    total_lanes = sum(count for _lanes_of, count in lanes.values()) or 1
    # 3 nodes get tall, labelled bars; 50 nodes x 20 images thin ones, and the picture stays under ~1500 px.
    lane_height = max(3.0, min(16.0, 900.0 / total_lanes))
    longest = max([len(name) for name in names] or [4])
    label_width = min(260, 16 + 7 * longest)
    span = max([a.start + a.duration for a in attempts] or [0.0]) or 1.0
    rows, y = [], float(TOP)
    for name in names:
        lane_of, count = lanes[name]
        height = count * lane_height
        numbered: dict[str, int] = {}
        totals = {image: sum(1 for a in per_node[name] if a.image == image) for image in lane_of}
        bars = []
        for attempt in per_node[name]:
            numbered[attempt.image] = numbered.get(attempt.image, 0) + 1
            bars.append(Bar(attempt, numbered[attempt.image], totals[attempt.image], lane_of[attempt.image]))
        rows.append(Row(name, y, height, count, tuple(bars)))
        y += height + ROW_GAP
    height = math.ceil(y + AXIS_HEIGHT)
    return Layout(label_width + PLOT_WIDTH + 24, height, label_width, PLOT_WIDTH, span, lane_height, tuple(rows))


def _attr(value: Any) -> str:
    """An XML attribute or text value, escaped."""
    return _text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _bar_svg(layout: Layout, row: Row, span: Bar) -> list[str]:
    attempt = span.attempt
    x = layout.x(attempt.start)
    width = max(1.5, layout.x(attempt.start + attempt.duration) - x)
    y = row.y + span.lane * layout.lane_height + 0.5
    height = max(2.0, layout.lane_height - 1.0)
    failed = bool(attempt.error)
    title = f"{row.node}: {attempt.image}: attempt {span.number} of {span.of}"
    title += f", {attempt.duration:.2f} s from {attempt.start:.0f} s"
    if failed:
        title += f", failed: {attempt.error}"
    fill = "url(#failed)" if failed else COLOR_OK
    opacity = ' fill-opacity="0.75"' if row.lanes >= MAX_LANES else ""
    parts = [
        f'<rect class="{"attempt failed" if failed else "attempt"}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
        f'height="{height:.1f}" fill="{fill}"{opacity} stroke="{COLOR_FAILED if failed else "none"}" '
        f'stroke-width="{1 if failed else 0}"><title>{_attr(title)}</title></rect>'
    ]
    if layout.lane_height < 11:
        return parts  # thin lanes (many nodes): the tooltips name the images
    size = min(10.0, height - 2)
    label = _bar_label(span, width)
    if label:
        parts.append(
            f'<text x="{x + 3:.1f}" y="{y + height - 3:.1f}" font-size="{size:.0f}" '
            f'fill="#ffffff" font-weight="bold">{_attr(label)}</text>'
        )
    if failed and span.number == span.of:  # the image ended failed: name it beside its last attempt, in red
        text = f"{span.attempt.image.rsplit('/', 1)[-1]} failed"
        if x + width + 4 + len(text) * 6 <= layout.label_width + layout.plot_width:
            parts.append(
                f'<text x="{x + width + 4:.1f}" y="{y + height - 3:.1f}" font-size="{size:.0f}" '
                f'fill="{COLOR_FAILED}" font-weight="bold">{_attr(text)}</text>'
            )
    return parts


def _bar_label(span: Bar, width: float) -> str:
    """What fits in a bar (about 6 px a character): the image's last path part, and the attempt when retried."""
    short = span.attempt.image.rsplit("/", 1)[-1]
    numbered = f"#{span.number}" if span.of > 1 else ""
    named = f"{short} {numbered}".strip()
    # On a hatched (failed) bar only the short number stays readable.
    for label in (numbered,) if span.attempt.error else (named, numbered):
        if label and len(label) * 6 + 6 <= width:
            return label
    return ""


def _retry_links(layout: Layout, row: Row) -> list[str]:
    """A dashed line across the wait between an image's attempts: the retries read as one story."""
    parts = []
    by_image: dict[str, list[Bar]] = {}
    for span in row.bars:
        by_image.setdefault(span.attempt.image, []).append(span)
    for bars in by_image.values():
        for before, after in zip(bars, bars[1:]):
            x1 = layout.x(before.attempt.start + before.attempt.duration)
            x2 = layout.x(after.attempt.start)
            y = row.y + before.lane * layout.lane_height + layout.lane_height / 2
            if x2 - x1 >= 2:
                parts.append(
                    f'<line class="wait" x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{COLOR_WAIT}" '
                    f'stroke-width="1" stroke-dasharray="3,2"/>'
                )
    return parts


def _axis(layout: Layout) -> list[str]:
    bottom = layout.height - AXIS_HEIGHT
    step = nice_step(layout.span)
    parts = [
        f'<line x1="{layout.label_width}" y1="{bottom:.1f}" x2="{layout.label_width + layout.plot_width}" '
        f'y2="{bottom:.1f}" stroke="#333333" stroke-width="1"/>'
    ]
    tick = 0.0
    while tick <= layout.span + 1e-9:
        x = layout.x(tick)
        label = f"{tick:g} s"
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="#e6e6e6" stroke-width="1"/>'
        )
        parts.append(f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 5:.1f}" stroke="#333333"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 18:.1f}" font-size="11" text-anchor="middle">{label}</text>')
        tick += step
    return parts


def _legend(result: dict[str, Any], layout: Layout, attempts: int, failed: int) -> list[str]:
    title = f"{instance_title(result)}: pull attempts per node ({attempts} attempts, {failed} failed)"
    x = layout.label_width
    return [
        f'<text x="12" y="22" font-size="15" font-weight="bold">{_attr(title)}</text>',
        f'<rect x="{x}" y="34" width="18" height="10" fill="{COLOR_OK}"/>',
        f'<text x="{x + 24}" y="43" font-size="11">pull attempt</text>',
        f'<rect x="{x + 120}" y="34" width="18" height="10" fill="url(#failed)" stroke="{COLOR_FAILED}"/>',
        f'<text x="{x + 144}" y="43" font-size="11">failed attempt</text>',
        f'<line x1="{x + 250}" y1="39" x2="{x + 268}" y2="39" stroke="{COLOR_WAIT}" stroke-dasharray="3,2"/>',
        f'<text x="{x + 274}" y="43" font-size="11">wait before a retry (same image, same lane)</text>',
        f'<text x="{layout.width - 12}" y="43" font-size="10" text-anchor="end" fill="#555555">'
        "start times: whole seconds (the agent's metrics)</text>",
    ]


def _label(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else name[: limit // 2 - 1] + "…" + name[-(limit // 2) :]


def timeline_svg(result: dict[str, Any]) -> Optional[str]:
    """One row per node, one bar per pull attempt (failed ones hatched red, retries joined), axis in seconds."""
    layout = timeline_layout(result)
    if layout is None:
        return None
    bars = [span for row in layout.rows for span in row.bars]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{layout.width}" height="{layout.height}" '
        f'viewBox="0 0 {layout.width} {layout.height}" font-family="{FONT}">',
        "<defs>"
        '<pattern id="failed" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{COLOR_FAILED}"/><rect width="2" height="6" fill="#f7c6c6"/></pattern>'
        "</defs>",
        f'<rect width="{layout.width}" height="{layout.height}" fill="#ffffff"/>',
    ]
    parts += _legend(result, layout, len(bars), sum(1 for span in bars if span.attempt.error))
    parts += _axis(layout)
    label_size = max(7.0, min([12.0] + [row.height for row in layout.rows]))
    for index, row in enumerate(layout.rows):
        if index % 2:
            parts.append(
                f'<rect x="0" y="{row.y - ROW_GAP / 2:.1f}" width="{layout.width}" height="{row.height + ROW_GAP:.1f}" '
                'fill="#f5f5f5"/>'
            )
        parts.append(
            f'<text class="node" x="{layout.label_width - 8}" y="{row.y + label_size * 0.85:.1f}" '
            f'font-size="{label_size:.0f}" text-anchor="end">{_attr(_label(row.node))}</text>'
        )
        if not row.bars:
            parts.append(
                f'<text x="{layout.label_width + 4}" y="{row.y + label_size * 0.8:.1f}" font-size="{label_size:.0f}" '
                'fill="#777777">no pull attempt (images already present, or no metrics from this node)</text>'
            )
        parts += _retry_links(layout, row)
        for span in row.bars:
            parts += _bar_svg(layout, row, span)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- every file of a run -------------------------------------------------------------------------------------------


def report_files(result: dict[str, Any], basename: str) -> dict[str, str]:
    """File name → content for one cluster host: JUnit, Markdown, JSON, and the timeline when metrics are there."""
    files = {
        f"{basename}.junit.xml": junit_xml(result),
        f"{basename}.md": markdown(result),
        f"{basename}.json": json_report(result),
    }
    svg = timeline_svg(result)
    if svg is not None:
        files[f"{basename}.timeline.svg"] = svg
    return files


def safe_basename(name: str) -> str:
    """A file name from an inventory host name: no directory separators, nothing hidden."""
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]+", "_", name).lstrip(".")
    return cleaned or "cluster"
