"""The HTML run report in a real browser: Debian's headless Chromium loads the file (tests/browser.py) and the page
shows its charts and decisions, with no console error and no request beyond the file itself.

Without /usr/bin/chromium the tests skip, except under CI (make test installs the package: make browser), where a
missing browser fails them.
"""

import os
import time

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import report
from conftest import load_script
from test_report import sample_report

CHROMIUM = "/usr/bin/chromium"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _browser():
    if not os.path.exists(CHROMIUM):
        if _in_ci():
            pytest.fail(f"{CHROMIUM} is missing under CI: install Debian's chromium package (make browser)")
        pytest.skip(f"{CHROMIUM} is missing (make browser installs Debian's chromium package)")
    pytest.importorskip("websocket", reason="websocket-client (a dependency of kubernetes) is not installed")
    return load_script("tests/browser.py", "meshops_browser")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    browser = _browser()
    path = tmp_path_factory.mktemp("report") / "rollout.html"
    path.write_text(report.render_html(sample_report()), encoding="utf-8")
    with browser.open_page(str(path), timeout=20) as page:
        page.url = path.resolve().as_uri()
        yield page


def test_no_console_errors_and_no_requests_beyond_the_file(page):
    assert page.errors == []
    assert [m for m in page.console if m["level"] == "warning"] == []
    assert page.requests == [page.url]
    assert page.evaluate("document.readyState") == "complete"
    assert page.evaluate("document.characterSet") == "UTF-8"
    assert page.evaluate("document.title") == "Rollout report: local (stopped)"


def test_six_charts_for_the_two_waves(page):
    charts = page.evaluate("[...document.querySelectorAll('svg.chart')].map(s => [s.dataset.wave, s.dataset.metric])")
    assert charts == [
        [wave, metric] for wave in ("internal", "payments") for metric in ("error_rate", "p99_ms", "sidecar_memory")
    ]
    # Each is inside its wave's section, which carries the decision.
    sections = page.evaluate(
        "[...document.querySelectorAll('section.wave')].map(s => [s.dataset.wave, s.dataset.decision,"
        " s.querySelectorAll('svg.chart').length])"
    )
    assert sections == [["internal", "passed", 3], ["payments", "failed, rolled back", 3]]


def test_every_chart_and_its_parts_are_drawn(page):
    boxes = page.evaluate(
        "[...document.querySelectorAll('svg.chart')].map(s => { const b = s.getBoundingClientRect();"
        " const style = getComputedStyle(s); return [b.width, b.height, style.display, style.visibility,"
        " s.querySelectorAll('circle.point').length, s.querySelector('text.chart-title').getBBox().width]; })"
    )
    assert len(boxes) == 6
    for width, height, display, visibility, points, title_width in boxes:
        assert width > 100 and height > 50
        assert display != "none" and visibility == "visible"
        assert points > 0
        assert title_width > 0
    circles = page.evaluate(
        "[...document.querySelectorAll('circle.point')].map(c => { const b = c.getBoundingClientRect();"
        " return b.width * b.height; })"
    )
    assert circles and all(area > 0 for area in circles)


def test_each_chart_has_its_threshold_line(page):
    lines = page.evaluate(
        "[...document.querySelectorAll('svg.chart')].map(s => { const l = s.querySelector('line.threshold');"
        " return l && [l.dataset.value, l.getBoundingClientRect().width,"
        " getComputedStyle(l).strokeDasharray, s.querySelector('text.threshold-label').textContent]; })"
    )
    assert [line[0] for line in lines] == ["1", "500", "256"] * 2
    assert all(line[1] > 100 for line in lines)
    assert all(line[2] not in ("", "none") for line in lines)  # dashed
    assert [line[3] for line in lines[:3]] == ["threshold 1 %", "threshold 500 ms", "threshold 256 MiB"]


def test_the_failed_waves_decision_is_visible(page):
    badge = page.evaluate(
        "(() => { const b = document.querySelector('section.wave[data-wave=\"payments\"] h3 .badge');"
        " const r = b.getBoundingClientRect(); return [b.innerText, r.width > 0 && r.height > 0,"
        " getComputedStyle(b).color]; })()"
    )
    assert badge[:2] == ["failed, rolled back", True]
    markers = page.evaluate(
        "[...document.querySelectorAll('section.wave[data-wave=\"payments\"] g.decision')].map(g =>"
        " [g.dataset.decision, g.querySelector('text').textContent, g.querySelector('text').getBBox().width,"
        " g.querySelector('line').getBoundingClientRect().height])"
    )
    assert len(markers) == 3
    for decision, text, text_width, line_height in markers:
        assert (decision, text) == ("failed, rolled back", "rolled back at 9.2 s")
        assert text_width > 0 and line_height > 50
    # The summary says so in words as well.
    summary = page.evaluate("document.querySelector('section.wave[data-wave=\"payments\"] .decision-text').innerText")
    assert summary.endswith("rolled back at 9.2 s.")


def test_fail_points_sit_above_the_threshold_on_screen(page):
    assert page.evaluate("document.querySelectorAll('circle.point.fail').length") == 4
    assert page.evaluate("document.querySelectorAll('circle.point.pass').length") == 10 * 3 + 3
    geometry = page.evaluate(
        '(() => { const s = document.querySelector(\'svg.chart[data-wave="payments"][data-metric="error_rate"]\');'
        " const line = s.querySelector('line.threshold').getBoundingClientRect();"
        " const centre = c => { const b = c.getBoundingClientRect(); return b.top + b.height / 2; };"
        " return [line.top, [...s.querySelectorAll('circle.fail')].map(centre),"
        " [...s.querySelectorAll('circle.pass')].map(centre)]; })()"
    )
    line_y, fails, passes = geometry
    assert len(fails) == 2 and all(y < line_y for y in fails)
    assert len(passes) == 1 and all(y > line_y for y in passes)


def test_a_screenshot_of_the_page(page, tmp_path):
    path = tmp_path / "report.png"
    page.screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    height = int.from_bytes(data[20:24], "big")
    assert height > 1000  # the whole page, not only the viewport


def test_the_check_sees_console_errors_and_requests(tmp_path):
    """The checks above can fail: a page with a console error, an exception and an external image is caught."""
    browser = _browser()
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><meta charset="utf-8"><title>bad</title><img src="http://example.invalid/x.png">'
        "<script>console.error('boom'); undefinedFunction();</script>",
        encoding="utf-8",
    )
    with browser.open_page(str(bad), timeout=20) as page:
        deadline = time.monotonic() + 5
        while len(page.errors) < 3 and time.monotonic() < deadline:
            page.evaluate("1")  # let events arrive
        errors = page.errors
        requests = page.requests
        pid, workdir = page.pid, page.workdir
        assert os.path.isdir(workdir)
    # Afterwards the browser's whole process group is gone, and its profile with it.
    assert browser.live_processes(pid) == []
    assert not os.path.exists(workdir)
    assert "boom" in errors
    assert any("undefinedFunction" in e for e in errors)
    assert any("ERR_NAME_NOT_RESOLVED" in e or "Failed to load resource" in e for e in errors), errors
    assert "http://example.invalid/x.png" in requests


def test_a_missing_browser_is_a_clear_error(tmp_path):
    pytest.importorskip("websocket", reason="websocket-client (a dependency of kubernetes) is not installed")
    browser = load_script("tests/browser.py", "meshops_browser")
    message = r"install Debian's chromium package \(make browser\)"
    with pytest.raises(browser.BrowserError, match=message), browser.open_page(executable=str(tmp_path / "chromium")):
        pass
