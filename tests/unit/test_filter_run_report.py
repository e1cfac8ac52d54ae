"""The run record the reports render (plugins/filter/run_report.py): decisions per wave, coverage, outcome."""

from ansible_collections.meshops.istio.plugins.filter.run_report import run_report

WAVES = [
    {"name": "payments", "namespaces": ["pay"]},
    {"name": "shop", "namespaces": ["shop", "cart"]},
    {"name": "later", "namespaces": ["later"]},
]


def bake(namespaces, passed, figures=None):
    one = {"elapsed_s": 3.0, "passed": passed, "problems": [] if passed else ["pay/checkout: success rate 60.00 %"]}
    one["inconclusive"] = []
    one["figures"] = figures or {"request_rate": 6.0, "error_rate": 0.0 if passed else 40.0, "p99_ms": 4.0}
    return {
        "namespaces": namespaces,
        "passed": passed,
        "analyses": [one],
        "problems": one["problems"],
        "inconclusive": [],
        "thresholds": {"success_rate": 99.0, "p99_ms": 500.0, "bake_time_s": 6, "interval_s": 3},
    }


def test_each_wave_gets_its_decision_from_its_bake_and_where_the_run_stopped():
    report = run_report(
        "rollout",
        cluster="prod-eu",
        steps=["install", "injection", "wave payments", "wave shop", "wave later"],
        done=["install", "injection", "wave payments"],
        stopped={"step": "wave shop", "msg": "The rollout stopped at the wave shop step", "rolled_back": True},
        waves=WAVES,
        bakes=[bake(["pay"], True), bake(["cart"], False)],
    )
    assert report["outcome"] == "stopped" and report["message"] == "The rollout stopped at the wave shop step"
    decisions = {w["name"]: w["decision"] for w in report["waves"]}
    assert decisions == {"payments": "passed", "shop": "failed, rolled back", "later": "not started"}
    shop = report["waves"][1]
    assert shop["analyses"] == [
        {
            "elapsed_s": 3.0,
            "passed": False,
            "problems": ["pay/checkout: success rate 60.00 %"],
            "inconclusive": [],
            "request_rate": 6.0,
            "error_rate": 40.0,
            "p99_ms": 4.0,
        }
    ]
    assert shop["thresholds"]["success_rate"] == 99.0 and shop["problems"] == ["pay/checkout: success rate 60.00 %"]
    assert [s["status"] for s in report["steps"]] == ["done", "done", "done", "failed", "not run"]


def test_a_wave_without_a_bake_is_unchanged_when_done_and_failed_when_its_gate_stopped_the_run():
    report = run_report(
        "rollout",
        cluster="c",
        done=["wave payments"],
        stopped={"step": "wave shop", "msg": "Wave shop did not pass its gate: sidecars", "rolled_back": False},
        waves=WAVES,
    )
    assert [w["decision"] for w in report["waves"]] == ["done, no bake", "failed", "not started"]
    assert report["waves"][1]["problems"] == ["Wave shop did not pass its gate: sidecars"]


def test_coverage_is_the_latest_read_of_each_namespace_and_drift_sets_the_outcome():
    before = {"namespaces": [{"namespace": "pay", "eligible": 2, "with_proxy": 0, "complete": False}]}
    after = {"namespaces": [{"namespace": "pay", "eligible": 2, "with_proxy": 2, "complete": True}]}
    report = run_report("rollout", cluster="c", coverage=[before, {"skipped": True}, after])
    assert report["coverage"] == [{"namespace": "pay", "pods": 2, "with_sidecar": 2, "complete": True}]
    assert report["outcome"] == "complete"
    assert run_report("drift", cluster="c")["outcome"] == "no drift"
    assert run_report("drift", cluster="c", drift=[{"kind": "Namespace"}])["outcome"] == "drift"


def test_the_upgrade_names_its_groups_without_the_wave_prefix():
    report = run_report(
        "upgrade",
        cluster="c",
        done=["pilot"],
        stopped={"step": "payments", "msg": "Moving payments failed"},
        waves=[{"name": "pilot", "namespaces": ["p"]}, WAVES[0]],
        bakes=[bake(["pay"], False)],
        wave_step="",
    )
    assert [w["decision"] for w in report["waves"]] == ["done, no bake", "failed, rolled back"]


def test_a_wave_refused_before_its_label_failed_without_a_rollback():
    report = run_report(
        "rollout",
        cluster="c",
        done=["wave payments"],
        stopped={"step": "wave shop", "msg": "Before any label, the analysis does not pass", "rolled_back": True},
        waves=WAVES[:2],
        bakes=[bake(["pay"], True)],
    )
    assert [w["decision"] for w in report["waves"]] == ["passed", "failed"]
