"""plugins/module_utils/report.py (the HTML and Markdown run reports, the SVG charts) and plugins/filter/report.py.

The HTML is parsed back (html.parser) and the charts' geometry checked against their own axes; the browser test
(test_report_browser.py) loads the same kind of page in Chromium.
"""

import copy
import html.parser
import re

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter import report as report_filters
from ansible_collections.meshops.istio.plugins.module_utils import report
from conftest import assert_registered, filter_error

MIB = 1024 * 1024
THRESHOLDS = {
    "success_rate": 99.0,
    "p99_ms": 500.0,
    "sidecar_memory_bytes": 256 * MIB,
    "bake_time_s": 30,
    "interval_s": 3,
    "failure_limit": 2,
}


def analysis(elapsed, error_rate, p99, memory_mib, passed=True, problems=(), inconclusive=()):
    return {
        "elapsed_s": elapsed,
        "passed": passed,
        "request_rate": 6.0,
        "error_rate": error_rate,
        "p99_ms": p99,
        "sidecar_memory_bytes": None if memory_mib is None else memory_mib * MIB,
        "problems": list(problems),
        "inconclusive": list(inconclusive),
    }


def sample_report():
    """A rollout stopped at its second wave: one wave passed, one failed and rolled back (a point above the
    threshold, a gap where Prometheus had no data), coverage, a drift entry of each shape, the control plane."""
    return {
        "kind": "rollout",
        "cluster": "local",
        "started": "2026-12-07T02:40:00Z",
        "finished": "2026-12-07T02:49:10Z",
        "check_mode": False,
        "outcome": "stopped",
        "message": "The rollout stopped at the wave payments step: the error rate rose above 1 %; rolled back.",
        "steps": [
            {"name": "install", "status": "done"},
            {"name": "waves", "status": "failed"},
            {"name": "mtls", "status": "not run"},
        ],
        "waves": [
            {
                "name": "internal",
                "namespaces": ["sample-internal"],
                "decision": "passed",
                "thresholds": dict(THRESHOLDS),
                "analyses": [analysis(3.0 * i, 0.0, 4.0 + i, 70 + i) for i in range(1, 11)],
                "problems": [],
            },
            {
                "name": "payments",
                "namespaces": ["sample-payments"],
                "decision": "failed, rolled back",
                "thresholds": dict(THRESHOLDS),
                "analyses": [
                    analysis(3.1, 0.2, 40.0, 71),
                    analysis(6.1, 12.5, 610.0, 72, False, ["error rate 12.5 % above 1 %", "p99 610 ms above 500 ms"]),
                    analysis(9.2, 14.0, None, None, False, ["error rate 14 % above 1 %"], ["no sidecar data"]),
                ],
                "problems": ["error rate 14 % above 1 % in sample-payments/api", "2 failed analyses: rolled back"],
            },
        ],
        "coverage": [
            {"namespace": "sample-internal", "pods": 3, "with_sidecar": 3, "complete": True},
            {"namespace": "sample-payments", "pods": 4, "with_sidecar": 3, "complete": False},
        ],
        "drift": [
            {
                "step": "traffic",
                "kind": "VirtualService",
                "namespace": "shop",
                "name": "baseline-api",
                "field": "spec.http[0].timeout",
                "declared": "5s",
                "live": "30s",
            },
            {
                "step": "traffic",
                "kind": "DestinationRule",
                "namespace": "shop",
                "name": "api",
                "field": "spec.trafficPolicy",
                "declared": {"tls": {"mode": "ISTIO_MUTUAL"}, "loadBalancer": {"simple": "ROUND_ROBIN"}},
                "live": {"tls": {"mode": "DISABLE"}, "loadBalancer": {"simple": "ROUND_ROBIN"}},
            },
        ],
        "control_plane": {"declared": {"version": "1.31.1", "revision": "default"}, "live": [{"name": "istiod"}]},
    }


# ---------------------------------------------------------------------------------------------------------------------
# A small DOM from html.parser, enough to select elements by tag, class and attribute.

VOID = {"br", "meta", "hr", "img", "input", "link"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.parts = tag, dict(attrs), parent, [], []

    @property
    def classes(self):
        return (self.attrs.get("class") or "").split()

    @property
    def text(self):
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def select(self, tag=None, cls=None, **attrs):
        out = []
        for child in self.children:
            if (
                (tag is None or child.tag == tag)
                and (cls is None or cls in child.classes)
                and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            ):
                out.append(child)
            out += child.select(tag, cls, **attrs)
        return out

    def one(self, *args, **kwargs):
        found = self.select(*args, **kwargs)
        assert len(found) == 1, (args, kwargs, len(found))
        return found[0]


class _Builder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        self.current.parts.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        self.current.parts.append(node)

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node is not self.root, f"unbalanced </{tag}>"
        self.current = node.parent

    def handle_data(self, data):
        self.current.parts.append(data)


def dom(text):
    builder = _Builder()
    builder.feed(text)
    builder.close()
    assert builder.current is builder.root, "unclosed elements"
    return builder.root


def num(node, attr):
    return float(node.attrs[attr])


def y_of(chart, value):
    """The y a value has on the chart, from its own tick labels (two ticks define the scale)."""
    ticks = [t for t in chart.select("text", "tick") if t.parent.classes == ["axis", "y"]]
    (v0, y0), (v1, y1) = [(float(t.attrs["data-value"]), float(t.attrs["y"]) - 3.5) for t in (ticks[0], ticks[-1])]
    return y0 + (value - v0) * (y1 - y0) / (v1 - v0)


def x_of(chart, value):
    ticks = [t for t in chart.select("text", "tick") if t.parent.classes == ["axis", "x"]]
    (v0, x0), (v1, x1) = [(float(t.attrs["data-value"]), float(t.attrs["x"])) for t in (ticks[0], ticks[-1])]
    return x0 + (value - v0) * (x1 - x0) / (v1 - v0)


def chart_of(page, wave, metric):
    return page.one("svg", "chart", data_wave=wave, data_metric=metric)


# ---------------------------------------------------------------------------------------------------------------------
# Charts.


def test_the_threshold_line_lies_at_the_thresholds_value():
    chart = dom(report.svg_chart([(0, 0.2, True), (5, 1.0, False), (10, 0.4, True)], threshold=1.0, unit="%")).one(
        "svg"
    )
    line = chart.one("line", "threshold")
    assert line.attrs["data-value"] == "1"
    assert num(line, "y1") == num(line, "y2")
    assert num(line, "y1") == pytest.approx(y_of(chart, 1.0), abs=0.11)
    # A figure equal to the threshold sits on the line; the figures below it lie below it (a larger y).
    at_threshold = chart.one("circle", data_y="1")
    assert num(at_threshold, "cy") == pytest.approx(num(line, "y1"), abs=0.11)
    assert all(num(c, "cy") > num(line, "y1") for c in chart.select("circle") if c is not at_threshold)
    assert "threshold 1 %" in chart.one("text", "threshold-label").text


def test_a_figure_above_the_threshold_is_a_fail_point_above_the_line():
    page = dom(report.render_html(sample_report()))
    chart = chart_of(page, "payments", "error_rate")
    line = chart.one("line", "threshold")
    fails = chart.select("circle", "fail")
    assert [c.attrs["data-y"] for c in fails] == ["12.5", "14"]
    assert all(num(c, "cy") < num(line, "y1") for c in fails)  # above it on screen
    assert [c.attrs["data-y"] for c in chart.select("circle", "pass")] == ["0.2"]
    for circle in chart.select("circle"):
        assert num(circle, "cy") == pytest.approx(y_of(chart, float(circle.attrs["data-y"])), abs=0.11)
        assert num(circle, "cx") == pytest.approx(x_of(chart, float(circle.attrs["data-x"])), abs=0.11)


def test_failed_analyses_are_fail_circles_in_every_chart_with_their_figure():
    page = dom(report.render_html(sample_report()))
    # payments: analyses 2 and 3 failed; analysis 3 has no p99 and no memory figure.
    assert len(chart_of(page, "payments", "error_rate").select("circle", "fail")) == 2
    assert len(chart_of(page, "payments", "p99_ms").select("circle", "fail")) == 1
    assert len(chart_of(page, "payments", "sidecar_memory").select("circle", "fail")) == 1
    assert len(page.select("circle", "fail")) == 4
    internal = chart_of(page, "internal", "p99_ms")
    assert len(internal.select("circle", "pass")) == 10
    assert internal.select("circle", "fail") == []


def test_thresholds_per_metric_error_rate_from_success_rate_memory_in_mib_none_when_null():
    wave = copy.deepcopy(sample_report()["waves"][0])
    wave["thresholds"]["success_rate"] = 99.9
    charts = [dom(c).one("svg") for c in report.wave_charts(wave)]
    assert [c.attrs["data-metric"] for c in charts] == ["error_rate", "p99_ms", "sidecar_memory"]
    assert [c.one("line", "threshold").attrs["data-value"] for c in charts] == ["0.1", "500", "256"]
    wave["thresholds"]["sidecar_memory_bytes"] = None
    memory = dom(report.wave_charts(wave)[2]).one("svg")
    assert memory.select("line", "threshold") == []
    assert "no threshold" in memory.attrs["aria-label"]


def test_nulls_are_gaps_not_zeros():
    points = [(0, 1.0, True), (3, 2.0, True), (6, None, True), (9, 3.0, True), (12, 4.0, False)]
    chart = dom(report.svg_chart(points, threshold=5.0, title="p99 latency", unit="ms")).one("svg")
    lines = chart.select("polyline", "series")
    assert [len(p.attrs["points"].split()) for p in lines] == [2, 2]  # broken at 6 s
    assert [c.attrs["data-x"] for c in chart.select("circle")] == ["0", "3", "9", "12"]
    assert [n.attrs["data-x"] for n in chart.select("path", "nodata")] == ["6"]
    assert "no data" in chart.one("path", "nodata").text
    # Nothing is plotted at zero.
    assert all(c.attrs["data-y"] != "0" for c in chart.select("circle"))


def test_a_single_point_renders_and_no_points_is_a_sentence():
    chart = dom(report.svg_chart([(4.0, 0.5, True)], threshold=1.0, title="Error rate", unit="%")).one("svg")
    assert len(chart.select("circle", "pass")) == 1
    assert chart.select("polyline") == []
    assert chart.select("line", "threshold")
    empty = report.svg_chart([], threshold=1.0, title="Error rate", unit="%", metric="error_rate", wave="w")
    assert "<svg" not in empty
    assert dom(empty).one("p", "no-chart").text == "Error rate: no analyses."


def test_only_nulls_draw_the_axes_and_say_no_data():
    chart = dom(report.svg_chart([(3, None, True), (6, None, False)], threshold=None, title="Memory")).one("svg")
    assert chart.select("circle") == []
    assert len(chart.select("path", "nodata")) == 2
    assert chart.one("text", "no-data").text == "no data from Prometheus"


def test_the_decision_is_marked_at_the_last_analysis():
    page = dom(report.render_html(sample_report()))
    for wave, decision, label, last in (
        ("payments", "failed, rolled back", "rolled back at 9.2 s", 9.2),
        ("internal", "passed", "passed at 30 s", 30.0),
    ):
        for metric in ("error_rate", "p99_ms", "sidecar_memory"):
            chart = chart_of(page, wave, metric)
            marker = chart.one("g", "decision")
            assert marker.attrs["data-decision"] == decision
            assert float(marker.attrs["data-at"]) == last
            assert marker.text == label
            line = marker.one("line")
            assert num(line, "x1") == num(line, "x2") == pytest.approx(x_of(chart, last), abs=0.11)
        error_rate = chart_of(page, wave, "error_rate")
        last_point = error_rate.select("circle")[-1]
        assert num(last_point, "cx") == num(error_rate.one("g", "decision").one("line"), "x1")
    assert "fail" in chart_of(page, "payments", "p99_ms").one("g", "decision").classes


def test_the_x_axis_spans_the_bake_with_round_ticks():
    chart = dom(report.svg_chart([(3, 1.0, True)], x_max=300, title="t")).one("svg")
    xs = [t.attrs["data-value"] for t in chart.select("text", "tick") if t.parent.classes == ["axis", "x"]]
    assert xs == ["0", "100", "200", "300"]
    late = dom(report.svg_chart([(3, 1.0, True), (33, 1.0, True)], x_max=30, title="t")).one("svg")
    assert x_of(late, 33) <= report.WIDTH - report.RIGHT + 0.1  # a late analysis is still inside the plot


@pytest.mark.parametrize(
    ("low", "high", "ticks"),
    [
        (0, 1.1, [0, 0.5, 1, 1.5]),
        (0, 550, [0, 200, 400, 600]),
        (0, 13.75, [0, 5, 10, 15]),
        (0, 0.275, [0, 0.1, 0.2, 0.3]),
        (0, 9, [0, 2.5, 5, 7.5, 10]),
        (2, 2, [2, 2.5, 3, 3.5, 4]),
        (-3, 4, [-4, -2, 0, 2, 4]),
    ],
)
def test_nice_ticks(low, high, ticks):
    assert report.nice_ticks(low, high) == ticks


# ---------------------------------------------------------------------------------------------------------------------
# The page.


def test_all_text_is_escaped():
    evil = "<script>alert(1)</script>"
    data = sample_report()
    data["message"] = f"stopped {evil}"
    data["cluster"] = 'prod"><img src=x onerror=alert(1)>'
    data["waves"][1]["name"] = '"><b>wave</b>'
    data["waves"][1]["namespaces"] = [evil]
    data["waves"][1]["problems"] = [evil]
    data["waves"][1]["analyses"][1]["problems"] = [evil]
    data["coverage"][0]["namespace"] = evil
    data["drift"][0]["name"] = evil
    data["drift"][1]["declared"] = {"x": evil}
    data["control_plane"] = {evil: evil}
    text = report.render_html(data)
    assert "<script" not in text
    assert "<img" not in text
    assert "<b>wave" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = dom(text)
    # Attributes come back exactly as given, as values.
    assert page.one("section", "wave", data_wave='"><b>wave</b>').attrs["data-decision"] == "failed, rolled back"
    assert len(page.select("svg", "chart", data_wave='"><b>wave</b>')) == 3
    assert page.one("tr", data_namespace=evil).select("td")[0].text == evil
    markdown = report.render_markdown(data)
    # Only inside code blocks and code spans, where it is text.
    prose = re.sub(r"(`+).*?\1", "", re.sub(r"(?ms)^(`{3,})diff$.*?^\1$", "", markdown))
    assert "<script>" not in prose
    assert "&lt;" not in markdown  # escaped for Markdown, not HTML-encoded
    assert "\\<script\\>alert(1)\\</script\\>" in markdown


def test_no_external_references():
    text = report.render_html(sample_report())
    assert not re.search(r"(https?|ftp|file|data):", text, re.IGNORECASE)
    assert "url(" not in text and "@import" not in text and "<link" not in text and "<script" not in text
    page = dom(text)
    for node in page.select():
        for attr in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            value = node.attrs.get(attr)
            assert value is None or value.startswith("#"), (node.tag, attr, value)
    assert len(page.one("head").select("meta", charset="utf-8")) == 1


def test_the_page_has_its_sections():
    page = dom(report.render_html(sample_report()))
    assert page.one("head").one("title").text == "Rollout report: local (stopped)"
    assert page.one("body").attrs["data-outcome"] == "stopped"
    assert "rolled back" in page.one("p", "message").text
    assert "9 min 10 s" in page.one("dl", "meta").text
    assert [r.attrs["data-step"] for r in page.select("tr") if "data-step" in r.attrs] == [
        "install",
        "waves",
        "mtls",
    ]
    waves = page.select("section", "wave")
    assert [(w.attrs["data-wave"], w.attrs["data-decision"]) for w in waves] == [
        ("internal", "passed"),
        ("payments", "failed, rolled back"),
    ]
    payments = waves[1]
    assert "error rate at most 1 %" in payments.one("p", "thresholds").text
    assert [li.text for li in payments.one("ul", "problems").select("li")] == sample_report()["waves"][1]["problems"]
    rows = payments.one("table", "analyses").select("tbody")[0].select("tr")
    assert [r.attrs["class"] for r in rows] == ["analysis", "failed", "failed"]
    assert [td.text for td in rows[2].select("td")][:6] == ["9.2 s", "failed", "6 req/s", "14 %", "no data", "no data"]
    assert "inconclusive: no sidecar data" in rows[2].text
    coverage = page.one("section", "coverage")
    assert [td.text.strip() for td in coverage.one("tr", data_namespace="sample-payments").select("td")] == [
        "sample-payments",
        "4",
        "3",
        "75 %",
        "no",
    ]
    drift = page.one("section", "drift")
    entries = drift.select("tr", "drift-entry")
    assert entries[0].one("td", "diff").text == "5s → 30s"
    diff = entries[1].one("pre", "diff")
    assert [s.text for s in diff.select("span", "del")] == ['-    "mode": "ISTIO_MUTUAL"']
    assert [s.text for s in diff.select("span", "add")] == ['+    "mode": "DISABLE"']
    control = page.one("section", "control-plane")
    assert "1.31.1" in control.text and "istiod" in control.text


def test_missing_and_odd_values_render():
    for data in (
        {},
        {"kind": "rollout"},
        {"waves": [{}], "coverage": [{}], "drift": [{}], "steps": [{}], "control_plane": {}},
        {
            "waves": [{"name": 3, "analyses": "none", "thresholds": None, "namespaces": None}, None, "x"],
            "coverage": [None, {"pods": "3", "with_sidecar": None}],
            "steps": "all",
            "drift": [{"declared": None, "live": [1, 2]}],
            "started": "yesterday",
            "finished": 5,
            "check_mode": "maybe",
        },
        {"waves": [{"name": "w", "analyses": [{}, {"elapsed_s": None, "passed": None}, {"elapsed_s": "x"}]}]},
        {"waves": [{"name": "w", "analyses": [{"elapsed_s": float("nan"), "error_rate": float("inf")}]}]},
    ):
        page = dom(report.render_html(data))
        assert page.one("h1")
        assert report.render_markdown(data).startswith("# ")
    page = dom(report.render_html({"waves": [{"name": "w", "decision": "not started"}]}))
    assert len(page.select("p", "no-chart", data_wave="w")) == 3
    assert page.select("svg") == []


def test_check_mode_and_a_drift_report_without_drift():
    page = dom(report.render_html({"kind": "drift", "cluster": "c", "outcome": "no drift", "check_mode": True}))
    assert "a dry run" in page.one("p", "banner").text
    assert page.one("p", "no-drift").text == "No drift: the cluster matches the declared state."
    assert "No drift: the cluster matches the declared state." in report.render_markdown({"kind": "drift"})
    # A rollout without drift has no drift section at all.
    assert dom(report.render_html({"kind": "rollout"})).select("section", "drift") == []


def test_the_same_report_renders_the_same_page():
    assert report.render_html(sample_report()) == report.render_html(sample_report())
    assert report.render_markdown(sample_report()) == report.render_markdown(sample_report())


def test_drift_diff():
    assert report.drift_diff("5s", "30s") == "5s → 30s"
    assert report.drift_diff(3, None) == "3 → null"
    diff = report.drift_diff({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]}).splitlines()
    assert diff[:2] == ["--- declared", "+++ live"]
    assert "-    2" in diff and "+    3" in diff
    assert report.drift_diff("(absent)", {"a": 1}).splitlines()[2:] == [
        "@@ -1 +1,3 @@",
        '-"(absent)"',
        "+{",
        '+  "a": 1',
        "+}",
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Markdown.


def table_rows(markdown, header):
    """The rows of the Markdown table whose header line starts with header, as lists of cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_markdown_tables():
    text = report.render_markdown(sample_report())
    assert text.splitlines()[0] == "# Rollout report: local"
    assert text.splitlines()[2].startswith("**stopped**: The rollout stopped")
    assert ["finished", "2026-12-07T02:49:10Z (9 min 10 s)"] in table_rows(text, "|  |  |")
    assert table_rows(text, "| step | status |") == [["install", "done"], ["waves", "failed"], ["mtls", "not run"]]
    waves = table_rows(text, "| wave | namespaces | decision | summary |")
    assert [row[:3] for row in waves] == [
        ["internal", "sample-internal", "**passed**"],
        ["payments", "sample-payments", "**failed, rolled back**"],
    ]
    assert waves[1][3] == (
        "3 analyses, 2 failed; worst error rate 14 % (threshold 1 %); worst p99 610 ms (threshold 500 ms); "
        "highest sidecar memory 72 MiB (threshold 256 MiB); rolled back at 9.2 s."
    )
    assert waves[0][3].startswith("10 analyses, 0 failed; worst error rate 0 % (threshold 1 %)")
    assert table_rows(text, "| namespace | pods |") == [
        ["sample-internal", "3", "3", "100 %", "yes"],
        ["sample-payments", "4", "3", "75 %", "**no**"],
    ]
    drift = table_rows(text, "| step | object | field |")
    assert drift[0] == ["traffic", "VirtualService shop/baseline-api", "`spec.http[0].timeout`", "`5s`", "`30s`"]
    assert drift[1][2] == "`spec.trafficPolicy`"
    assert "```diff\n--- declared\n+++ live\n" in text
    assert '-    "mode": "ISTIO_MUTUAL"\n+    "mode": "DISABLE"' in text
    analyses = table_rows(text, "| at | result |")  # the first wave's
    assert len(analyses) == 10 and analyses[0][:2] == ["3 s", "passed"]
    assert "\n### Wave payments: failed, rolled back\n" in text
    assert "- 2 failed analyses: rolled back" in text


def test_markdown_escapes_pipes_and_fences_around_backticks():
    data = {"waves": [{"name": "a|b", "problems": ["x | y"]}], "drift": [{"field": "f", "declared": ["```"]}]}
    text = report.render_markdown(data)
    assert "| a\\|b |" in text
    assert "- x \\| y" in text
    assert "````diff" in text  # a fence longer than the backticks inside


# ---------------------------------------------------------------------------------------------------------------------
# The filters.


def test_filters():
    assert_registered(report_filters, 2)
    assert report_filters.report_html(sample_report()) == report.render_html(sample_report())
    assert report_filters.report_markdown(sample_report()) == report.render_markdown(sample_report())
    assert "report_html: expected the run's report" in filter_error(lambda: report_filters.report_html([]))
    assert "got NoneType" in filter_error(lambda: report_filters.report_markdown(None))
    with pytest.raises(AnsibleFilterError):
        report_filters.report_html("text")
