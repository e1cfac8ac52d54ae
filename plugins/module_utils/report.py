# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Run reports for people: one self-contained HTML file and a Markdown summary, from the report dict that a rollout,
upgrade or drift run records beside its JSON.

The HTML has inline CSS only, no script, no font and no URL, so it opens the same from an AWX artifact, a file share
or a mail attachment, and prints. Per wave, three line charts (error rate, p99 latency, sidecar memory over the bake)
are drawn as inline SVG by :func:`svg_chart`, with the threshold and the decision marked. Every chart element the
browser test looks for carries a stable hook: ``svg.chart[data-metric][data-wave]``, ``circle.point.pass|fail``,
``line.threshold``, ``g.decision[data-decision]``.

Pure stdlib and no I/O. Every value comes from Ansible and is treated as untrusted: a missing key, a value of the
wrong type or a null (Prometheus had no data) renders as such, never as a zero, and all text is escaped.
"""

from __future__ import annotations

import datetime
import difflib
import html
import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

MIB = 1024 * 1024

# A chart's point: seconds into the bake, the figure (None: no data) and whether that analysis passed (None: unknown).
Point = Tuple[float, Optional[float], Optional[bool]]

# The three charts of a wave: data-metric hook, title, unit, the analysis key, the divisor to the unit.
METRICS: Tuple[Tuple[str, str, str, str, float], ...] = (
    ("error_rate", "Error rate", "%", "error_rate", 1.0),
    ("p99_ms", "p99 latency", "ms", "p99_ms", 1.0),
    ("sidecar_memory", "Sidecar memory", "MiB", "sidecar_memory_bytes", float(MIB)),
)

# Chart geometry (SVG user units): the plot area lies inside the margins; the title and the decision label sit in
# two rows above it, tick labels and the axis caption below it.
WIDTH, HEIGHT = 360, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 40, 36
COLORS = {
    True: "#1a7f37",
    False: "#cf222e",
    None: "#6e7781",
    "series": "#0969da",
    "threshold": "#bc4c00",
    "grid": "#d8dee4",
    "axis": "#57606a",
    "text": "#1f2328",
}

# --------------------------------------------------------------------------------------------------------------------
# Values from Ansible: defensive accessors and formatting.


def _e(value: Any) -> str:
    """Text, escaped for HTML content and attribute values alike."""
    return html.escape(_text(value), quote=True)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _fmt(value)
    return _json(value)


def _json(value: Any, indent: Optional[int] = None) -> str:
    try:
        return json.dumps(value, indent=indent, sort_keys=True, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # keys of mixed types cannot be sorted
        return json.dumps(value, indent=indent, default=str, ensure_ascii=False)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _dicts(value: Any) -> List[Mapping[str, Any]]:
    return [item for item in _list(value) if isinstance(item, Mapping)]


def _num(value: Any) -> Optional[float]:
    """A finite number, or None (null, missing, not a number; a numeric string from a template counts)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    """A number for people: at most three significant figures below 100, no trailing zeros."""
    number = _num(value)
    if number is None:
        return "" if value is None else str(value)
    size = abs(number)
    if size >= 100 or number == int(number):
        text = f"{number:.0f}"
    elif size >= 10:
        text = f"{number:.1f}"
    elif size >= 1:
        text = f"{number:.2f}"
    else:
        text = f"{number:.3g}" if "e" not in f"{number:.3g}" else f"{number:.6f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _tick(value: float) -> str:
    text = f"{round(value, 9):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _c(value: float) -> str:
    """A coordinate, rounded to a tenth of a unit."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _seconds(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "?"
    if number >= 100 or number == int(number):
        return f"{number:.0f} s"
    return f"{number:.1f} s"


def _duration(started: Any, finished: Any) -> str:
    def parse(value: Any) -> Optional[datetime.datetime]:
        if not isinstance(value, str) or not value:
            return None
        try:
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None

    start, end = parse(started), parse(finished)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return ""
    seconds = int((end - start).total_seconds())
    if seconds < 0:
        return ""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes or hours else []
    return " ".join([*parts, f"{secs} s"])


def _with_unit(value: Optional[float], unit: str) -> str:
    if value is None:
        return "no data"
    return f"{_fmt(value)} {unit}" if unit else _fmt(value)


# --------------------------------------------------------------------------------------------------------------------
# Classes for statuses, outcomes and decisions (HTML badges).


def _outcome_class(outcome: str) -> str:
    return {"complete": "ok", "no drift": "ok", "failed": "bad", "stopped": "warn", "drift": "warn"}.get(
        outcome, "muted"
    )


def _status_class(status: str) -> str:
    return {"done": "ok", "passed": "ok", "failed": "bad"}.get(status, "muted")


def _decision_class(decision: str) -> str:
    if decision == "passed":
        return "ok"
    return "bad" if decision.startswith("failed") else "muted"


def decision_text(decision: Any, at: Any = None) -> str:
    """The label of a wave's decision marker: ``passed at 30 s``, ``rolled back at 9.2 s``, ``failed at 9.2 s``."""
    decision = _text(decision)
    if not decision or _num(at) is None:
        return decision
    if decision == "failed, rolled back":
        return f"rolled back at {_seconds(at)}"
    if decision in ("passed", "failed"):
        return f"{decision} at {_seconds(at)}"
    return decision


# --------------------------------------------------------------------------------------------------------------------
# Charts.


def nice_ticks(low: float, high: float, count: int = 4) -> List[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) from at or below low to at or above high."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("nice_ticks: low and high must be finite numbers")
    if high < low:
        low, high = high, low
    if high == low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    return [round(first + i * step, 9) for i in range(round((last - first) / step) + 1)]


def _points(points: Any) -> List[Point]:
    out = []
    for item in _list(points):
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            continue
        x = _num(item[0])
        if x is None:
            continue
        passed = item[2] if len(item) > 2 and isinstance(item[2], bool) else None
        out.append((x, _num(item[1]), passed))
    return sorted(out, key=lambda p: p[0])


def svg_chart(
    points: Sequence[Point],
    threshold: Optional[float] = None,
    title: str = "",
    unit: str = "",
    decision_at: Optional[float] = None,
    decision: Optional[str] = None,
    x_max: Optional[float] = None,
    metric: str = "",
    wave: str = "",
    notes: Optional[Sequence[str]] = None,
) -> str:
    """One line chart as inline SVG (for an HTML page: no xmlns, no script, no URL).

    points: (seconds into the bake, figure or None for no data, passed) per analysis. x runs from 0 to the larger of
    x_max (the bake time) and the last point; y from 0 (or the lowest figure) to a round number above the highest
    figure and the threshold. Each figure is a circle, class ``point pass`` or ``point fail`` (``point unknown`` when
    passed is not a bool), joined by a line that breaks at a None (a gap, never a zero); a None is a grey cross on the
    time axis. threshold: a dashed horizontal line (``line.threshold``) with its label; none when None. decision_at
    and decision: a vertical line (``g.decision[data-decision]``) labelled with :func:`decision_text`. notes: one
    sentence per point (same order as given, after sorting by x) for the point's tooltip.

    No points at all: a short paragraph (``p.no-chart``) saying there were no analyses, instead of an empty chart.
    """
    unit_text = f" {unit}" if unit else ""
    caption = f"{title} ({unit})" if unit else title
    pts = _points(points)
    note_list = [_text(n) for n in _list(notes)]
    hooks = f'data-metric="{_e(metric)}" data-wave="{_e(wave)}"'
    if not pts:
        return f'<p class="no-chart" {hooks}>{_e(title)}: no analyses.</p>'
    limit = _num(threshold)
    values = [y for _x, y, _ok in pts if y is not None]
    span = [*values, *([limit] if limit is not None else [])]
    low = min([0.0, *span])
    high = max(span) if span else 1.0
    high = high * 1.1 if high > 0 else (1.0 if high == low else high)
    y_ticks = nice_ticks(low, high)
    y0, y1 = y_ticks[0], y_ticks[-1]
    # x runs from 0 to the bake's end (or the last analysis, if later) exactly, with round ticks inside.
    x0, x1 = 0.0, max([p[0] for p in pts] + [_num(x_max) or 0.0])
    x1 = x1 if x1 > 0 else 1.0
    x_ticks = [t for t in nice_ticks(x0, x1, 5) if t <= x1 * (1 + 1e-9)]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h

    def sx(x: float) -> float:
        return LEFT + plot_w * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return TOP + plot_h * (1 - (y - y0) / (y1 - y0))

    failed = sum(1 for _x, _y, passed in pts if passed is False)
    summary = [f"{caption} over the bake{f' of wave {wave}' if wave else ''}: {len(pts)} analyses, {failed} failed"]
    if values:
        summary.append(f"highest {_fmt(max(values))}{unit_text}")
    else:
        summary.append("no data")
    summary.append(f"threshold {_fmt(limit)}{unit_text}" if limit is not None else "no threshold")
    label = decision_text(decision, decision_at)
    if label:
        summary.append(f"decision: {label}")
    aria = "; ".join(summary) + "."
    text_style = f'font-size="10" fill="{COLORS["axis"]}"'
    halo = 'paint-order="stroke" stroke="#ffffff" stroke-width="3" stroke-linejoin="round"'
    out = [
        f'<svg class="chart" {hooks} viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{_e(aria)}" font-family="system-ui, sans-serif">',
        f"<title>{_e(aria)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="15" font-size="12" font-weight="600" fill="{COLORS["text"]}">'
        f"{_e(caption)}</text>",
        '<g class="axis y">',
    ]
    for tick in y_ticks:
        y = _c(sy(tick))
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="{COLORS["grid"]}"/>'
            f'<text class="tick" data-value="{_tick(tick)}" x="{LEFT - 6}" y="{_c(sy(tick) + 3.5)}" '
            f'text-anchor="end" {text_style}>{_tick(tick)}</text>'
        )
    out.append("</g>")
    out.append('<g class="axis x">')
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_c(bottom)}" y2="{_c(bottom)}" stroke="{COLORS["axis"]}"/>'
    )
    for tick in x_ticks:
        x = _c(sx(tick))
        out.append(
            f'<line x1="{x}" x2="{x}" y1="{_c(bottom)}" y2="{_c(bottom + 4)}" stroke="{COLORS["axis"]}"/>'
            f'<text class="tick" data-value="{_tick(tick)}" x="{x}" y="{_c(bottom + 15)}" text-anchor="middle" '
            f"{text_style}>{_tick(tick)}</text>"
        )
    out.append(
        f'<text x="{_c(LEFT + plot_w / 2)}" y="{HEIGHT - 4}" text-anchor="middle" {text_style}>'
        "seconds into the bake</text></g>"
    )
    if limit is not None:
        y = _c(sy(limit))
        text_y = _c(sy(limit) - 4 if sy(limit) - 4 > TOP + 8 else sy(limit) + 12)
        out.append(
            f'<line class="threshold" data-value="{_tick(limit)}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" '
            f'stroke="{COLORS["threshold"]}" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text class="threshold-label" x="{WIDTH - RIGHT - 6}" y="{text_y}" text-anchor="end" font-size="10" '
            f'fill="{COLORS["threshold"]}" {halo}>threshold {_e(_fmt(limit))}{_e(unit_text)}</text>'
        )
    # The decision marker, under the figures.
    at = _num(decision_at)
    if label and at is not None:
        x = sx(min(max(at, x0), x1))
        state = {"ok": "pass", "bad": "fail"}.get(_decision_class(_text(decision)), "other")
        color = {"pass": COLORS[True], "fail": COLORS[False]}.get(state, COLORS[None])
        right = x > LEFT + plot_w / 2
        out.append(
            f'<g class="decision {state}" data-decision="{_e(decision)}" data-at="{_tick(at)}">'
            f'<line x1="{_c(x)}" x2="{_c(x)}" y1="{TOP - 10}" y2="{_c(bottom)}" stroke="{color}" stroke-width="1.5"/>'
            f'<text x="{_c(x - 4 if right else x + 4)}" y="{TOP - 9}" text-anchor="{"end" if right else "start"}" '
            f'font-size="11" font-weight="600" fill="{color}">{_e(label)}</text></g>'
        )
    # The line through the figures, broken at every gap.
    run: List[str] = []
    runs: List[List[str]] = []
    for x, y, _ok in pts:
        if y is None:
            runs.append(run)
            run = []
        else:
            run.append(f"{_c(sx(x))},{_c(sy(y))}")
    runs.append(run)
    for run in runs:
        if len(run) > 1:
            out.append(
                f'<polyline class="series" points="{" ".join(run)}" fill="none" stroke="{COLORS["series"]}" '
                'stroke-width="1.5" stroke-linejoin="round"/>'
            )
    for index, (x, y, passed) in enumerate(pts):
        note = note_list[index] if index < len(note_list) else ""
        verdict = {True: "passed", False: "failed", None: "result unknown"}[passed]
        tip = f"{_seconds(x)}: {_with_unit(y, unit)} ({verdict}{f': {note}' if note else ''})"
        if y is None:
            cx, cy = sx(x), bottom
            out.append(
                f'<path class="nodata" data-x="{_tick(x)}" d="M{_c(cx - 3)} {_c(cy - 3)}L{_c(cx + 3)} {_c(cy + 3)}'
                f'M{_c(cx - 3)} {_c(cy + 3)}L{_c(cx + 3)} {_c(cy - 3)}" stroke="{COLORS[None]}" stroke-width="1.5">'
                f"<title>{_e(tip)}</title></path>"
            )
            continue
        state = {True: "pass", False: "fail", None: "unknown"}[passed]
        radius = "4.5" if passed is False else "3.5"
        out.append(
            f'<circle class="point {state}" data-x="{_tick(x)}" data-y="{_tick(y)}" cx="{_c(sx(x))}" cy="{_c(sy(y))}" '
            f'r="{radius}" fill="{COLORS[passed]}" stroke="#ffffff" stroke-width="1"><title>{_e(tip)}</title></circle>'
        )
    if not values:
        out.append(
            f'<text class="no-data" x="{_c(LEFT + plot_w / 2)}" y="{_c(TOP + plot_h / 2)}" text-anchor="middle" '
            f'font-size="11" fill="{COLORS[None]}">no data from Prometheus</text>'
        )
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------------------------------------------------
# Waves: figures, summaries and charts.


def _wave_figures(wave: Mapping[str, Any]) -> Dict[str, Any]:
    """What a wave's summary says: analyses, failures, worst figures, thresholds in the charts' units."""
    thresholds = _dict(wave.get("thresholds"))
    analyses = _dicts(wave.get("analyses"))
    success = _num(thresholds.get("success_rate"))
    memory = _num(thresholds.get("sidecar_memory_bytes"))
    limits = {
        "error_rate": None if success is None else round(100.0 - success, 9),
        "p99_ms": _num(thresholds.get("p99_ms")),
        "sidecar_memory": None if memory is None else memory / MIB,
    }
    worst = {}
    for metric, _title, _unit, key, scale in METRICS:
        values = [v / scale for v in (_num(a.get(key)) for a in analyses) if v is not None]
        worst[metric] = max(values) if values else None
    elapsed = [x for x in (_num(a.get("elapsed_s")) for a in analyses) if x is not None]
    return {
        "analyses": analyses,
        "failed": sum(1 for a in analyses if a.get("passed") is False),
        "limits": limits,
        "worst": worst,
        "last_at": max(elapsed) if elapsed else None,
        "bake": _num(thresholds.get("bake_time_s")),
    }


def wave_summary(wave: Mapping[str, Any]) -> str:
    """One line per wave: analyses and failures, the worst figures against their thresholds, the decision."""
    wave = _dict(wave)
    fig = _wave_figures(wave)
    count = len(fig["analyses"])
    parts = [f"{count} analys{'is' if count == 1 else 'es'}, {fig['failed']} failed"]
    if count:
        for metric, words, unit in (
            ("error_rate", "worst error rate", "%"),
            ("p99_ms", "worst p99", "ms"),
            ("sidecar_memory", "highest sidecar memory", "MiB"),
        ):
            limit = fig["limits"][metric]
            bound = f" (threshold {_fmt(limit)} {unit})" if limit is not None else ""
            parts.append(f"{words} {_with_unit(fig['worst'][metric], unit)}{bound}")
    decision = decision_text(wave.get("decision"), fig["last_at"]) or "no decision"
    return "; ".join(parts) + f"; {decision}."


def wave_charts(wave: Mapping[str, Any]) -> List[str]:
    """The three charts of a wave (see :func:`svg_chart`), in METRICS order."""
    wave = _dict(wave)
    fig = _wave_figures(wave)
    name = _text(wave.get("name"))
    timed = [a for a in fig["analyses"] if _num(a.get("elapsed_s")) is not None]
    timed.sort(key=lambda a: _num(a.get("elapsed_s")) or 0.0)
    notes = ["; ".join(_text(p) for p in [*_list(a.get("problems")), *_list(a.get("inconclusive"))]) for a in timed]
    charts = []
    for metric, title, unit, key, scale in METRICS:
        points = []
        for analysis in timed:
            value = _num(analysis.get(key))
            passed = analysis.get("passed")
            points.append((_num(analysis.get("elapsed_s")), None if value is None else value / scale, passed))
        charts.append(
            svg_chart(
                points,
                threshold=fig["limits"][metric],
                title=title,
                unit=unit,
                decision_at=fig["last_at"],
                decision=_text(wave.get("decision")) or None,
                x_max=fig["bake"],
                metric=metric,
                wave=name,
                notes=notes,
            )
        )
    return charts


def _thresholds_text(thresholds: Mapping[str, Any]) -> List[str]:
    success = _num(thresholds.get("success_rate"))
    p99 = _num(thresholds.get("p99_ms"))
    memory = _num(thresholds.get("sidecar_memory_bytes"))
    bake, interval = _num(thresholds.get("bake_time_s")), _num(thresholds.get("interval_s"))
    limit = _num(thresholds.get("failure_limit"))
    out = []
    if success is not None:
        out.append(f"success rate at least {_fmt(success)} % (error rate at most {_fmt(100 - success)} %)")
    if p99 is not None:
        out.append(f"p99 latency at most {_fmt(p99)} ms")
    out.append(f"sidecar memory at most {_fmt(memory / MIB)} MiB" if memory is not None else "no sidecar memory limit")
    if bake is not None:
        out.append(f"bake {_seconds(bake)}" + (f", an analysis every {_seconds(interval)}" if interval else ""))
    if limit is not None:
        out.append(f"failure limit {_fmt(limit)}")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Drift diffs.


def drift_diff(declared: Any, live: Any) -> str:
    """How live differs from declared: ``declared → live`` for scalars; for a mapping or a list on either side, a
    unified diff of both as indented JSON (``--- declared``, ``+++ live``)."""
    if isinstance(declared, (Mapping, list, tuple)) or isinstance(live, (Mapping, list, tuple)):
        before = _json(declared, indent=2).splitlines()
        after = _json(live, indent=2).splitlines()
        return "\n".join(difflib.unified_diff(before, after, "declared", "live", lineterm="", n=2))
    return f"{_value(declared)} → {_value(live)}"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _json(value)


def _object(entry: Mapping[str, Any]) -> str:
    kind, namespace, name = _text(entry.get("kind")), _text(entry.get("namespace")), _text(entry.get("name"))
    where = f"{namespace}/{name}" if namespace else name
    return f"{kind} {where}".strip()


# --------------------------------------------------------------------------------------------------------------------
# HTML.

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1200px; padding: 16px 24px 40px; color: #1f2328; background: #ffffff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p { margin: 6px 0; }
.message { font-size: 15px; overflow-wrap: anywhere; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
.meta dt { color: #57606a; }
.meta dd { margin: 0; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-weight: 600; font-size: 13px;
  border: 1px solid transparent; white-space: nowrap; }
.badge.ok { background: #dafbe1; color: #116329; border-color: #aceebb; }
.badge.bad { background: #ffebe9; color: #a40e26; border-color: #ffcecb; }
.badge.warn { background: #fff8c5; color: #7d4e00; border-color: #f0d990; }
.badge.muted { background: #eaeef2; color: #424a53; border-color: #d0d7de; }
.banner { padding: 6px 10px; border-radius: 6px; background: #ddf4ff; border: 1px solid #b6e3ff; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td { background: #fff5f5; }
.nodata { color: #6e7781; font-style: italic; }
.scroll { overflow-x: auto; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
code { overflow-wrap: anywhere; }
td.diff { min-width: 22em; }
td.value code { display: block; max-width: 24em; }
pre.diff { margin: 0; padding: 4px 6px; background: #f6f8fa; border-radius: 4px; white-space: pre-wrap; }
pre.diff .add { color: #116329; background: #e6ffec; }
pre.diff .del { color: #a40e26; background: #ffebe9; }
pre.diff .hunk { color: #8250df; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
svg.chart { width: 360px; max-width: 100%; height: auto; border: 1px solid #d0d7de; border-radius: 6px;
  background: #ffffff; }
p.no-chart { width: 360px; max-width: 100%; padding: 12px; border: 1px dashed #d0d7de; border-radius: 6px;
  color: #57606a; }
.legend { color: #57606a; font-size: 13px; }
.legend .key { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin: 0 4px 0 10px; }
.legend .line { display: inline-block; width: 18px; height: 0; margin: 0 4px 3px 10px; vertical-align: middle; }
.bar { display: inline-block; width: 120px; height: 10px; background: #eaeef2; border-radius: 5px;
  overflow: hidden; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #1a7f37; }
.bar.partial span { background: #bf8700; }
ul.problems { margin: 4px 0 8px; padding-left: 20px; }
footer { margin-top: 32px; color: #57606a; font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section.wave { break-before: auto; }
  .charts { gap: 6px; }
  svg.chart, p.no-chart { width: calc((100% - 12px) / 3); }
  .charts, svg.chart, tr { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  .scroll { overflow: visible; }
}
"""


def _badge(text: Any, state: str) -> str:
    return f'<span class="badge {state}">{_e(text)}</span>'


def _cell(value: Any, unit: str = "") -> str:
    number = _num(value)
    if number is None:
        return '<td class="num nodata">no data</td>'
    return f'<td class="num">{_e(_with_unit(number, unit))}</td>'


def _html_header(report: Mapping[str, Any], kind: str) -> List[str]:
    outcome = _text(report.get("outcome"))
    cluster = _text(report.get("cluster"))
    started, finished = report.get("started"), report.get("finished")
    duration = _duration(started, finished)
    check_mode = report.get("check_mode")
    rows = [
        ("kind", _e(report.get("kind") or "unknown")),
        ("cluster", _e(cluster or "unknown")),
        ("outcome", _e(outcome or "unknown")),
        ("started", _e(started or "unknown")),
        ("finished", _e(finished or "unknown") + (f" ({_e(duration)})" if duration else "")),
        ("check mode", "yes (a dry run: nothing was changed)" if check_mode is True else _e(check_mode or "no")),
    ]
    badge = _badge(outcome or "unknown", _outcome_class(outcome))
    out = ["<header>", f"<h1>{_e(kind)} report: {_e(cluster or 'unknown cluster')} {badge}</h1>"]
    if report.get("message"):
        out.append(f'<p class="message">{_e(report.get("message"))}</p>')
    if check_mode is True:
        out.append('<p class="banner">Check mode: a dry run, nothing was changed.</p>')
    out.append('<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>")
    out.append("</header>")
    return out


def _html_steps(steps: List[Mapping[str, Any]]) -> List[str]:
    if not steps:
        return []
    out = ['<section class="steps"><h2>Steps</h2><table><thead><tr><th>step</th><th>status</th></tr></thead><tbody>']
    for step in steps:
        status = _text(step.get("status"))
        out.append(
            f'<tr data-step="{_e(step.get("name"))}"><td>{_e(step.get("name"))}</td>'
            f"<td>{_badge(status or 'unknown', _status_class(status))}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return out


def _html_waves(waves: List[Mapping[str, Any]]) -> List[str]:
    if not waves:
        return []
    out = [
        '<section class="waves"><h2>Waves</h2>',
        '<p class="legend">Each chart: one point per analysis over the bake'
        f'<span class="key" style="background:{COLORS[True]}"></span>passed'
        f'<span class="key" style="background:{COLORS[False]}"></span>failed'
        f'<span class="line" style="border-top:2px dashed {COLORS["threshold"]}"></span>threshold'
        f'<span class="line" style="border-top:2px solid {COLORS["axis"]}"></span>decision'
        "; a grey cross on the time axis: no data.</p>",
        '<div class="scroll"><table class="wave-list"><thead><tr><th>wave</th><th>namespaces</th><th>decision</th>'
        "<th>summary</th></tr></thead><tbody>",
    ]
    for index, wave in enumerate(waves, 1):
        decision = _text(wave.get("decision"))
        out.append(
            f'<tr><td><a href="#wave-{index}">{_e(wave.get("name") or f"wave {index}")}</a></td>'
            f"<td>{_e(', '.join(_text(n) for n in _list(wave.get('namespaces'))))}</td>"
            f"<td>{_badge(decision or 'unknown', _decision_class(decision))}</td><td>{_e(wave_summary(wave))}</td></tr>"
        )
    out.append("</tbody></table></div>")
    for index, wave in enumerate(waves, 1):
        out += _html_wave(index, wave)
    out.append("</section>")
    return out


def _html_wave(index: int, wave: Mapping[str, Any]) -> List[str]:
    name = _text(wave.get("name"))
    decision = _text(wave.get("decision"))
    fig = _wave_figures(wave)
    namespaces = ", ".join(_text(n) for n in _list(wave.get("namespaces")))
    out = [
        f'<section class="wave" id="wave-{index}" data-wave="{_e(name)}" data-decision="{_e(decision)}">',
        f"<h3>Wave {_e(name or index)} {_badge(decision or 'unknown', _decision_class(decision))}</h3>",
        f'<p class="decision-text">{_e(wave_summary(wave))}</p>',
    ]
    if namespaces:
        out.append(f"<p>Namespaces: {_e(namespaces)}</p>")
    thresholds = _thresholds_text(_dict(wave.get("thresholds")))
    if thresholds:
        out.append(f'<p class="thresholds">Thresholds: {_e("; ".join(thresholds))}.</p>')
    problems = _list(wave.get("problems"))
    if problems:
        out.append('<ul class="problems">' + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul>")
    out.append('<div class="charts">' + "".join(wave_charts(wave)) + "</div>")
    analyses = fig["analyses"]
    if analyses:
        out.append(
            '<div class="scroll"><table class="analyses"><thead><tr><th>at</th><th>result</th><th>requests</th>'
            "<th>error rate</th><th>p99</th><th>sidecar memory</th><th>problems</th></tr></thead><tbody>"
        )
        for analysis in analyses:
            passed = analysis.get("passed")
            result = {True: _badge("passed", "ok"), False: _badge("failed", "bad")}.get(passed, _badge("?", "muted"))
            memory = _num(analysis.get("sidecar_memory_bytes"))
            notes = [_e(p) for p in _list(analysis.get("problems"))]
            notes += [f'<span class="nodata">inconclusive: {_e(p)}</span>' for p in _list(analysis.get("inconclusive"))]
            out.append(
                f'<tr class="{"failed" if passed is False else "analysis"}"><td class="num">'
                f"{_e(_seconds(analysis.get('elapsed_s')))}</td><td>{result}</td>"
                f"{_cell(analysis.get('request_rate'), 'req/s')}{_cell(analysis.get('error_rate'), '%')}"
                f"{_cell(analysis.get('p99_ms'), 'ms')}{_cell(None if memory is None else memory / MIB, 'MiB')}"
                f"<td>{'<br>'.join(notes)}</td></tr>"
            )
        out.append("</tbody></table></div>")
    out.append("</section>")
    return out


def _html_coverage(coverage: List[Mapping[str, Any]]) -> List[str]:
    if not coverage:
        return []
    out = [
        '<section class="coverage"><h2>Mesh coverage</h2><div class="scroll"><table><thead><tr><th>namespace</th>'
        "<th>pods</th><th>with sidecar</th><th>coverage</th><th>complete</th></tr></thead><tbody>"
    ]
    for item in coverage:
        pods, with_sidecar = _num(item.get("pods")), _num(item.get("with_sidecar"))
        share = None if not pods or with_sidecar is None else max(0.0, min(1.0, with_sidecar / pods))
        if share is None:
            meter = '<span class="nodata">no pods</span>' if pods == 0 else '<span class="nodata">unknown</span>'
        else:
            meter = (
                f'<span class="bar{"" if share == 1 else " partial"}" title="{_fmt(share * 100)} %">'
                f'<span style="width:{share * 100:.1f}%"></span></span> {_fmt(share * 100)} %'
            )
        complete = item.get("complete")
        state = {True: ("yes", "ok"), False: ("no", "bad")}.get(complete, ("?", "muted"))
        out.append(
            f'<tr data-namespace="{_e(item.get("namespace"))}"><td>{_e(item.get("namespace"))}</td>'
            f"{_cell(pods)}{_cell(with_sidecar)}<td>{meter}</td><td>{_badge(*state)}</td></tr>"
        )
    out.append("</tbody></table></div></section>")
    return out


def _diff_html(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            lines.append(f"<b>{_e(line)}</b>")
        elif line.startswith("+"):
            lines.append(f'<span class="add">{_e(line)}</span>')
        elif line.startswith("-"):
            lines.append(f'<span class="del">{_e(line)}</span>')
        elif line.startswith("@@"):
            lines.append(f'<span class="hunk">{_e(line)}</span>')
        else:
            lines.append(_e(line))
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"


def _short(value: Any, size: int = 160) -> str:
    text = _value(value)
    return text if len(text) <= size else text[: size - 1] + "…"


def _html_drift(report: Mapping[str, Any]) -> List[str]:
    entries = _dicts(report.get("drift"))
    if not entries and report.get("kind") != "drift":
        return []
    out = ['<section class="drift"><h2>Drift</h2>']
    if not entries:
        out.append('<p class="no-drift">No drift: the cluster matches the declared state.</p></section>')
        return out
    objects = {(_text(e.get("kind")), _text(e.get("namespace")), _text(e.get("name"))) for e in entries}
    out.append(f"<p>{len(entries)} drifted field(s) in {len(objects)} object(s).</p>")
    out.append(
        '<div class="scroll"><table><thead><tr><th>step</th><th>object</th><th>field</th><th>declared</th>'
        "<th>live</th><th>difference</th></tr></thead><tbody>"
    )
    for entry in entries:
        declared, live = entry.get("declared"), entry.get("live")
        diff = drift_diff(declared, live)
        structured = isinstance(declared, (Mapping, list, tuple)) or isinstance(live, (Mapping, list, tuple))
        out.append(
            f'<tr class="drift-entry"><td>{_e(entry.get("step"))}</td><td>{_e(_object(entry))}</td>'
            f'<td><code>{_e(entry.get("field"))}</code></td><td class="value"><code>{_e(_short(declared))}</code></td>'
            f'<td class="value"><code>{_e(_short(live))}</code></td>'
            f'<td class="diff">{_diff_html(diff) if structured else f"<code>{_e(diff)}</code>"}</td></tr>'
        )
    out.append("</tbody></table></div></section>")
    return out


def _kv_table(mapping: Mapping[str, Any], depth: int = 0) -> str:
    rows = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value and depth < 3:
            shown = _kv_table(value, depth + 1)
        elif isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            shown = _e(", ".join(_text(v) for v in value)) or '<span class="nodata">none</span>'
        elif isinstance(value, (Mapping, list, tuple)):
            shown = f"<code>{_e(_json(value))}</code>"
        else:
            shown = _e(value) if value is not None else '<span class="nodata">none</span>'
        rows.append(f"<tr><th>{_e(key)}</th><td>{shown}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _html_control_plane(control_plane: Any) -> List[str]:
    if not isinstance(control_plane, Mapping) or not control_plane:
        return []
    return ['<section class="control-plane"><h2>Control plane</h2>', _kv_table(control_plane), "</section>"]


def _kind(report: Mapping[str, Any]) -> str:
    kind = _text(report.get("kind"))
    return {"rollout": "Rollout", "upgrade": "Upgrade", "drift": "Drift"}.get(kind, kind.capitalize() or "Run")


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: inline CSS, inline SVG charts, no script, no URL."""
    report = _dict(report)
    kind = _kind(report)
    cluster = _text(report.get("cluster")) or "unknown cluster"
    outcome = _text(report.get("outcome")) or "unknown"
    body = [
        *_html_header(report, kind),
        "<main>",
        *_html_steps(_dicts(report.get("steps"))),
        *_html_waves(_dicts(report.get("waves"))),
        *_html_coverage(_dicts(report.get("coverage"))),
        *_html_drift(report),
        *_html_control_plane(report.get("control_plane")),
        "</main>",
        "<footer>Written by the meshops.istio collection.</footer>",
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(kind)} report: {_e(cluster)} ({_e(outcome)})</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            f'<body data-kind="{_e(report.get("kind"))}" data-outcome="{_e(outcome)}">',
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


# --------------------------------------------------------------------------------------------------------------------
# Markdown.


def _md(value: Any) -> str:
    """Text for a Markdown table cell or line: one line, pipes and markup characters escaped (GitHub renders raw HTML,
    so < and > are escaped too)."""
    text = _text(value).replace("\r", " ").replace("\n", " ")
    for char in "\\`*[]<>|":
        text = text.replace(char, "\\" + char)
    return text


def _code(value: Any) -> str:
    """A Markdown code span (names, fields, values): nothing inside is markup; pipes escaped for tables."""
    text = _text(value).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    if not text:
        return ""
    ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _cell in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _fence(text: str, info: str = "") -> List[str]:
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return [ticks + info, text, ticks]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report's facts as Markdown tables, for terminals and pull requests (no charts: one summary line per wave)."""
    report = _dict(report)
    kind = _kind(report)
    outcome = _text(report.get("outcome")) or "unknown"
    started, finished = report.get("started"), report.get("finished")
    duration = _duration(started, finished)
    lines = [f"# {_md(kind)} report: {_md(report.get('cluster') or 'unknown cluster')}", ""]
    lines.append(f"**{_md(outcome)}**" + (f": {_md(report.get('message'))}" if report.get("message") else ""))
    lines.append("")
    check_mode = report.get("check_mode")
    lines += _md_table(
        ["", ""],
        [
            ["kind", _md(report.get("kind") or "unknown")],
            ["cluster", _md(report.get("cluster") or "unknown")],
            ["started", _md(started or "unknown")],
            ["finished", _md(finished or "unknown") + (f" ({duration})" if duration else "")],
            ["check mode", "yes (a dry run: nothing was changed)" if check_mode is True else _md(check_mode or "no")],
        ],
    )
    steps = _dicts(report.get("steps"))
    if steps:
        lines += ["", "## Steps", ""]
        lines += _md_table(["step", "status"], [[_md(s.get("name")), _md(s.get("status"))] for s in steps])
    waves = _dicts(report.get("waves"))
    if waves:
        lines += ["", "## Waves", ""]
        lines += _md_table(
            ["wave", "namespaces", "decision", "summary"],
            [
                [
                    _md(w.get("name")),
                    _md(", ".join(_text(n) for n in _list(w.get("namespaces")))),
                    f"**{_md(w.get('decision') or 'unknown')}**",
                    _md(wave_summary(w)),
                ]
                for w in waves
            ],
        )
        for wave in waves:
            lines += _md_wave(wave)
    coverage = _dicts(report.get("coverage"))
    if coverage:
        lines += ["", "## Mesh coverage", ""]
        rows = []
        for item in coverage:
            pods, with_sidecar = _num(item.get("pods")), _num(item.get("with_sidecar"))
            share = f"{_fmt(with_sidecar / pods * 100)} %" if pods and with_sidecar is not None else "-"
            complete = {True: "yes", False: "**no**"}.get(item.get("complete"), "?")
            rows.append([_md(item.get("namespace")), _md(_fmt(pods)), _md(_fmt(with_sidecar)), share, complete])
        lines += _md_table(["namespace", "pods", "with sidecar", "coverage", "complete"], rows)
    lines += _md_drift(report)
    control_plane = report.get("control_plane")
    if isinstance(control_plane, Mapping) and control_plane:
        lines += ["", "## Control plane", ""]
        rows = [
            [_md(k), _code(v) if isinstance(v, (Mapping, list, tuple)) else _md(v)] for k, v in control_plane.items()
        ]
        lines += _md_table(["", ""], rows)
    return "\n".join(lines) + "\n"


def _md_wave(wave: Mapping[str, Any]) -> List[str]:
    fig = _wave_figures(wave)
    lines = ["", f"### Wave {_md(wave.get('name'))}: {_md(wave.get('decision') or 'unknown')}", ""]
    thresholds = _thresholds_text(_dict(wave.get("thresholds")))
    if thresholds:
        lines += [f"Thresholds: {_md('; '.join(thresholds))}.", ""]
    lines.append(_md(wave_summary(wave)))
    problems = _list(wave.get("problems"))
    if problems:
        lines += ["", *(f"- {_md(p)}" for p in problems)]
    if fig["analyses"]:
        rows = []
        for analysis in fig["analyses"]:
            memory = _num(analysis.get("sidecar_memory_bytes"))
            notes = [_md(p) for p in _list(analysis.get("problems"))]
            notes += [f"inconclusive: {_md(p)}" for p in _list(analysis.get("inconclusive"))]
            rows.append(
                [
                    _seconds(analysis.get("elapsed_s")),
                    {True: "passed", False: "**failed**"}.get(analysis.get("passed"), "?"),
                    _with_unit(_num(analysis.get("request_rate")), "req/s"),
                    _with_unit(_num(analysis.get("error_rate")), "%"),
                    _with_unit(_num(analysis.get("p99_ms")), "ms"),
                    _with_unit(None if memory is None else memory / MIB, "MiB"),
                    "; ".join(notes),
                ]
            )
        lines += [""]
        lines += _md_table(["at", "result", "requests", "error rate", "p99", "sidecar memory", "problems"], rows)
    return lines


def _md_drift(report: Mapping[str, Any]) -> List[str]:
    entries = _dicts(report.get("drift"))
    if not entries and report.get("kind") != "drift":
        return []
    lines = ["", "## Drift", ""]
    if not entries:
        return [*lines, "No drift: the cluster matches the declared state."]
    objects = {(_text(e.get("kind")), _text(e.get("namespace")), _text(e.get("name"))) for e in entries}
    lines += [f"{len(entries)} drifted field(s) in {len(objects)} object(s).", ""]
    rows, diffs = [], []
    for entry in entries:
        declared, live = entry.get("declared"), entry.get("live")
        rows.append(
            [
                _md(entry.get("step")),
                _md(_object(entry)),
                _code(entry.get("field")),
                _code(_short(declared)),
                _code(_short(live)),
            ]
        )
        if isinstance(declared, (Mapping, list, tuple)) or isinstance(live, (Mapping, list, tuple)):
            diffs.append((entry, drift_diff(declared, live)))
    lines += _md_table(["step", "object", "field", "declared", "live"], rows)
    for entry, diff in diffs:
        lines += ["", f"{_md(_object(entry))} {_code(entry.get('field'))}:", ""]
        lines += _fence(diff, "diff")
    return lines
