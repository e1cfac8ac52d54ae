"""Wave analysis decisions (module_utils/analysis.py): settings, figures, thresholds, baseline, bake loop."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import analysis
from ansible_collections.meshops.istio.plugins.module_utils.analysis import (
    bake,
    evaluate,
    observe,
    quantity,
    queries,
    resolve,
    settings_problems,
)


def wl(ns, name, value):
    return {"labels": {"destination_workload_namespace": ns, "destination_workload": name}, "value": value}


def proxy(ns, pod, value):
    return {"labels": {"namespace": ns, "pod": pod}, "value": value}


def observed(rate=10.0, errors=0.0, p99=20.0, ns="shop", name="cart", cpu=None, memory=None, checks=None):
    answers = {
        "requests": [wl(ns, name, rate)] if rate else [],
        "errors": [wl(ns, name, errors)] if errors else [],
        "p99": [wl(ns, name, p99)] if p99 is not None else [],
        "cpu": [proxy(ns, name + "-1", cpu)] if cpu is not None else [],
        "memory": [proxy(ns, name + "-1", memory)] if memory is not None else [],
    }
    for check_name, samples in (checks or {}).items():
        answers["check:" + check_name] = samples
    return observe(answers, "60s")


@pytest.mark.parametrize(
    "text, value",
    [("500m", 0.5), ("1", 1.0), ("256Mi", 256 * 2**20), ("1Gi", 2**30), ("1G", 1e9), ("1.5", 1.5), (2, 2.0)],
)
def test_quantities(text, value):
    assert quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "lots", "1 Gi", "-1", "1GB", True])
def test_malformed_quantities(text):
    assert quantity(text) is None


def test_defaults_are_valid_and_resolved():
    assert settings_problems({}, "w") == []
    s = resolve({}, "w")
    assert (s["bake_time_s"], s["interval_s"], s["window_s"], s["baseline_window_s"]) == (300, 60, 60, 600)
    assert s["sidecar_cpu_cores"] is None and s["sidecar_memory_bytes"] is None


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"success_rate": 101}, "w.success_rate is 101: give a percentage from 0 to 100."),
        ({"success_rate": -1}, "w.success_rate"),
        ({"success_rate": "high"}, "w.success_rate"),
        ({"p99_ms": 0}, "w.p99_ms is 0: give a latency in milliseconds greater than 0."),
        ({"p99_ms": -5}, "w.p99_ms"),
        ({"p99_ratio": 0.5}, "w.p99_ratio"),
        ({"bake_time": "5 minutes"}, "w.bake_time is '5 minutes', not a duration"),
        ({"interval": "0"}, "w.interval must be longer than 0s."),
        ({"interval": "10m", "bake_time": "5m"}, "w.interval (10m) is longer than w.bake_time (5m)"),
        ({"failure_limit": 0}, "w.failure_limit is 0: give a whole number of failed analyses, 1 or more."),
        ({"failure_limit": 1.5}, "w.failure_limit"),
        ({"sidecar_memory": "lots"}, "w.sidecar_memory is 'lots'"),
        ({"sidecar_cpu": "2 cores"}, "w.sidecar_cpu"),
        ({"reporter": "both"}, "w.reporter"),
        ({"allow_no_data": "yes"}, "w.allow_no_data"),
        ({"succes_rate": 99}, "w has unknown key(s) succes_rate"),
        ({"checks": [{"name": "x", "query": "up"}]}, "w.checks[1] needs exactly one of max (fails above) or min"),
        ({"checks": [{"name": "x", "query": "up", "max": 1, "min": 0}]}, "w.checks[1] needs exactly one"),
        ({"checks": [{"query": "up", "max": 1}]}, "w.checks[1] has no name"),
        ({"checks": [{"name": "x", "max": 1}]}, "w.checks[1] has no query"),
        ({"checks": [{"name": "x", "query": "up", "max": "many"}]}, "w.checks[1].max is 'many': give a number."),
        ({"checks": [{"name": "x", "query": "a", "max": 1}, {"name": "x", "query": "b", "min": 0}]}, "two checks"),
        ({"checks": {"name": "x"}}, "w.checks must be a list"),
    ],
)
def test_bad_settings_are_named(bad, named):
    problems = settings_problems(bad, "w")
    assert any(named in p for p in problems), problems
    with pytest.raises(analysis.AnalysisError):
        resolve(bad, "w")


def test_queries_read_the_reporter_and_every_namespace_once():
    q = queries(["b", "a", "a"], "source", 30)
    assert 'reporter="source",destination_workload_namespace=~"a|b"' in q["requests"]
    assert 'response_code=~"5.."' in q["errors"] and "[30s]" in q["errors"]
    assert q["p99"].startswith("histogram_quantile(0.99, sum by (destination_workload_namespace, destination_workload")
    assert 'container="istio-proxy",namespace=~"a|b"' in q["cpu"]
    assert "container_memory_working_set_bytes" in q["memory"]


def test_observe_turns_answers_into_per_workload_figures():
    obs = observed(rate=20.0, errors=1.0, p99=float("nan"), cpu=0.2, memory=50 * 2**20)
    assert obs["workloads"] == [
        {"namespace": "shop", "workload": "cart", "request_rate": 20.0, "success_rate": 95.0, "p99_ms": None}
    ]
    assert obs["sidecars"] == [{"namespace": "shop", "pod": "cart-1", "cpu": 0.2, "memory": 50 * 2**20}]


def test_a_healthy_workload_passes():
    s = resolve({}, "w")
    assert evaluate(observed(), s, ["shop"], observed(), "bake") == {"passed": True, "problems": [], "inconclusive": []}


def test_success_rate_below_threshold_names_workload_metric_baseline_and_threshold():
    s = resolve({}, "w")
    verdict = evaluate(observed(errors=1.0), s, ["shop"], observed(), "bake")
    assert not verdict["passed"]
    assert verdict["problems"] == [
        "shop/cart: success rate 90.00 % is below the threshold 99.00 % (baseline 100.00 %), 10 requests/s in the "
        "last 60s (istio_requests_total reported by the source)."
    ]


def test_p99_absolute_threshold():
    verdict = evaluate(observed(p99=800), resolve({}, "w"), ["shop"], None, "bake")
    assert verdict["problems"] == ["shop/cart: p99 latency 800.0 ms is above the threshold 500.0 ms."]


def test_p99_relative_to_the_baseline():
    s = resolve({"p99_ratio": 1.5}, "w")
    verdict = evaluate(observed(p99=100), s, ["shop"], observed(p99=40), "bake")
    assert verdict["problems"] == [
        "shop/cart: p99 latency 100.0 ms is more than 1.5x the baseline 40.0 ms (threshold 60.0 ms)."
    ]
    # At most 1.5x passes; so does a small absolute increase over a tiny baseline (latency_tolerance_ms).
    assert evaluate(observed(p99=60), s, ["shop"], observed(p99=40), "bake")["passed"]
    assert evaluate(observed(p99=6), s, ["shop"], observed(p99=2), "bake")["passed"]
    assert not evaluate(observed(p99=6), resolve({"latency_tolerance_ms": 0}, "w"), ["shop"], observed(p99=2))["passed"]


def test_the_baseline_stage_judges_absolute_thresholds_only():
    s = resolve({"sidecar_memory": "10Mi"}, "w")
    assert evaluate(observed(p99=100), s, ["shop"], None, "baseline")["passed"]
    assert not evaluate(observed(errors=5.0), s, ["shop"], None, "baseline")["passed"]


def test_no_data_is_inconclusive_and_fails_unless_allowed():
    s = resolve({}, "w")
    verdict = evaluate(observed(rate=0), s, ["shop"], None, "bake")
    assert not verdict["passed"] and verdict["problems"] == []
    assert verdict["inconclusive"][0].startswith("no requests to any workload of namespace shop in the last 60s")
    assert evaluate(observed(rate=0), resolve({"allow_no_data": True}, "w"), ["shop"], None, "bake")["passed"]


def test_a_workload_that_stopped_receiving_requests_is_inconclusive():
    obs = observe({"requests": [wl("shop", "web", 5.0)], "p99": []}, "60s")
    base = observe({"requests": [wl("shop", "web", 5.0), wl("shop", "cart", 3.0)], "p99": []}, "600s")
    verdict = evaluate(obs, resolve({}, "w"), ["shop"], base, "bake")
    assert verdict["inconclusive"] == [
        "shop/cart had 3 requests/s in the baseline and none in the last 60s (istio_requests_total reported by the "
        "source)."
    ]


def test_sidecar_budget():
    s = resolve({"sidecar_cpu": "500m", "sidecar_memory": "64Mi"}, "w")
    verdict = evaluate(observed(cpu=0.7, memory=100 * 2**20), s, ["shop"], None, "bake")
    assert verdict["problems"] == [
        "shop/cart-1: the sidecar uses 700m CPU, above the budget sidecar_cpu 500m.",
        "shop/cart-1: the sidecar uses 100Mi memory, above the budget sidecar_memory 64Mi.",
    ]
    assert evaluate(observed(cpu=0.1, memory=2**20), s, ["shop"], None, "bake")["passed"]
    missing = evaluate(observed(), s, ["shop"], None, "bake")
    assert not missing["passed"] and "no istio-proxy container" in missing["inconclusive"][0]


def test_custom_checks_with_a_direction():
    s = resolve(
        {"checks": [{"name": "ingress-5xx", "query": "q1", "max": 0.01}, {"name": "orders", "query": "q2", "min": 1}]},
        "w",
    )
    bad = observed(checks={"ingress-5xx": [{"labels": {"ingress": "shop"}, "value": 0.2}], "orders": []})
    verdict = evaluate(bad, s, ["shop"], None, "bake")
    assert verdict["problems"] == ["check ingress-5xx{ingress=shop}: 0.2 is above the max 0.01."]
    assert verdict["inconclusive"] == ["check orders returned no samples in the last 60s."]
    good = observed(checks={"ingress-5xx": [{"labels": {}, "value": 0.0}], "orders": [{"labels": {}, "value": 3}]})
    assert evaluate(good, s, ["shop"], None, "bake")["passed"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def run_bake(results, **settings):
    clock = FakeClock()
    answers = iter(results)
    calls = []

    def analyze():
        calls.append(clock.now)
        return {"passed": next(answers), "problems": [], "inconclusive": []}

    return bake(analyze, resolve(settings, "w"), clock=clock, sleep=clock.sleep), calls


def test_bake_analyses_every_interval_for_the_bake_time():
    result, calls = run_bake([True] * 5, bake_time="5m", interval="1m")
    assert result["passed"] and result["failures"] == 0
    assert calls == [60, 120, 180, 240, 300]


def test_bake_fails_at_the_failure_limit_and_stops_early():
    result, calls = run_bake([True, False, False, True, True], bake_time="5m", interval="1m", failure_limit=2)
    assert not result["passed"] and result["failures"] == 2 and calls == [60, 120, 180]


def test_bake_tolerates_fewer_failures_than_the_limit():
    result, calls = run_bake([False, True, True, True, True], bake_time="5m", interval="1m", failure_limit=2)
    assert result["passed"] and result["failures"] == 1 and len(calls) == 5


def test_a_bake_time_of_zero_is_one_analysis_that_must_pass():
    assert run_bake([True], bake_time="0")[0]["passed"]
    result, calls = run_bake([False], bake_time="0", failure_limit=3)
    assert not result["passed"] and calls == [0]


def test_a_last_partial_interval_ends_at_the_bake_time():
    result, calls = run_bake([True] * 3, bake_time="50s", interval="20s")
    assert calls == [20, 40, 50] and result["passed"]


def test_the_record_is_compact_json():
    import datetime
    import json

    report = {"passed": False, "failures": 2, "analyses": [{}, {}, {}], "observed": {"window": "60s"}}
    report["problems"] = [f"p{i}" for i in range(15)]
    text = analysis.record(report, "bake", ["b", "a"], datetime.datetime(2026, 11, 27, tzinfo=datetime.timezone.utc))
    assert json.loads(text) == {
        "at": "2026-11-27T00:00:00Z",
        "stage": "bake",
        "namespaces": ["a", "b"],
        "passed": False,
        "failures": 2,
        "analyses": 3,
        "window": "60s",
        "problems": [f"p{i}" for i in range(10)],
        "inconclusive": [],
    }


def test_the_rollout_defaults_are_the_module_defaults_and_the_survey_offers_them():
    import json

    import yaml
    from ansible_collections.meshops.istio.plugins.filter.rollout import ANALYSIS_VARIABLES
    from conftest import REPO

    defaults = yaml.safe_load((REPO / "roles/rollout/defaults/main.yml").read_text())
    for setting, variable in ANALYSIS_VARIABLES.items():
        assert defaults[variable] == analysis.DEFAULTS[setting], variable
    options = yaml.safe_load((REPO / "roles/rollout/meta/argument_specs.yml").read_text())["argument_specs"]["main"]
    survey = json.loads((REPO / "docs/awx/rollout.json").read_text())["survey"]["spec"]
    for question in survey:
        variable = question["variable"]
        if variable in defaults:
            assert question["default"] == defaults[variable], variable
            assert options["options"][variable]["default"] == defaults[variable], variable


def test_last_analyses_reads_the_annotation_the_role_writes():
    import yaml
    from conftest import REPO

    role_vars = yaml.safe_load((REPO / "roles/namespace_injection/vars/main.yml").read_text())
    assert role_vars["namespace_injection__analysis_annotation"] == analysis.RECORD_ANNOTATION
    ok = analysis.record({"passed": True, "analyses": [{}, {}]}, "bake", ["a"])
    bad = analysis.record({"passed": False, "problems": ["b/api: success rate 80.00 % ..."]}, "bake", ["b"])
    sentences = analysis.last_analyses(
        [
            {"namespace": "a", "annotations": {analysis.RECORD_ANNOTATION: ok}},
            {"namespace": "b", "annotations": {analysis.RECORD_ANNOTATION: bad}},
            {"namespace": "c", "annotations": {}},
        ]
    )
    assert sentences[0].startswith("a: passed at ") and sentences[0].endswith("(2 analyses)")
    assert sentences[1].startswith("b: FAILED at ")
    assert sentences[1].endswith("rolled back: b/api: success rate 80.00 % ...")
    assert len(sentences) == 2


def test_each_analysis_is_heard_of_as_it_is_taken_with_its_elapsed_time():
    clock, heard = FakeClock(), []
    answers = iter([True, False, False])

    def analyze():
        return {"passed": next(answers), "problems": [], "inconclusive": []}

    def taken(number, one, failures):
        heard.append((number, one["elapsed_s"], one["passed"], failures))

    settings = resolve({"bake_time": "5m", "interval": "1m", "failure_limit": 2}, "w")
    bake(analyze, settings, clock=clock, sleep=clock.sleep, taken=taken)
    assert heard == [(1, 60, True, 0), (2, 120, False, 1), (3, 180, False, 2)]


def test_figures_are_the_worst_workload_and_the_highest_sidecar_of_the_namespaces():
    obs = observe(
        {
            "requests": [wl("shop", "cart", 6.0), wl("shop", "pay", 4.0), wl("other", "x", 50.0)],
            "errors": [wl("shop", "pay", 1.0), wl("other", "x", 50.0)],
            "p99": [wl("shop", "cart", 12.5), wl("shop", "pay", 30.0), wl("other", "x", 900.0)],
            "memory": [
                proxy("shop", "cart-1", 70 * 2**20),
                proxy("shop", "pay-1", 90 * 2**20),
                proxy("other", "x", 2**30),
            ],
            "cpu": [],
        },
        "60s",
    )
    assert analysis.figures(obs, ["shop"]) == {
        "request_rate": 10.0,
        "error_rate": 25.0,
        "p99_ms": 30.0,
        "sidecar_memory_bytes": 90 * 2**20,
        "sidecar_cpu": None,
    }
    assert analysis.figures(observe({}, "60s"), ["shop"]) == dict.fromkeys(
        ("request_rate", "error_rate", "p99_ms", "sidecar_memory_bytes", "sidecar_cpu")
    )


def test_a_progress_line_shows_each_figure_against_its_threshold_and_the_verdict():
    settings = resolve({"bake_time": "30s", "interval": "10s", "sidecar_memory": "64Mi"}, "w")
    one = {
        "passed": False,
        "elapsed_s": 20.1,
        "problems": ["shop/pay: success rate 75.00 % is below the threshold 99.00 %."],
        "inconclusive": [],
        "figures": {"request_rate": 10.0, "error_rate": 25.0, "p99_ms": 30.0, "sidecar_memory_bytes": 90 * 2**20},
    }
    line = analysis.progress_line("shop", 2, one, settings, 1)
    assert line == (
        "Bake of shop: analysis 2/3 at 20.1s of 30s - 10 requests/s; success rate 75.00 % (min 99.00 %); "
        "p99 30.0 ms (max 500.0 ms); sidecar memory 90Mi (budget 64Mi) - FAILED (1 of the failure limit 2): "
        "shop/pay: success rate 75.00 % is below the threshold 99.00 %."
    )
    quiet = analysis.progress_line("shop", 1, {"passed": True, "elapsed_s": 10, "figures": {}}, resolve({}, "w"), 0)
    assert quiet.endswith(
        "no requests; success rate no data (min 99.00 %); p99 no data (max 500.0 ms); sidecar memory no data - passed"
    )
