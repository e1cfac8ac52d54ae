"""The fleet report (plugins/filter/fleet.py): each cluster's row, the summary over the play's hosts, its Markdown."""

from ansible_collections.meshops.istio.plugins.filter.fleet import fleet_markdown, fleet_record, fleet_report
from ansible_collections.meshops.istio.plugins.filter.run_report import run_report

DRIFT = [{"step": "traffic", "kind": "VirtualService", "namespace": "shop", "name": "cart", "field": "spec.http"}]
READY = {"ready": True, "versions": ["1.31.1"], "revisions": ["default"]}


def test_a_clean_drift_run_is_ok_with_its_istio():
    run = run_report("drift", cluster="east", drift=[])
    row = fleet_record("drift", cluster="east", run=run, istio=[None, {"skipped": True}, READY])
    assert row["status"] == "ok"
    assert row["istio"] == {"versions": ["1.31.1"], "revisions": ["default"]}
    assert row["drift"] == [] and row["failure"] == {}


def test_drift_found_then_corrected_or_not():
    run = run_report("drift", cluster="east", drift=DRIFT)
    assert fleet_record("drift", cluster="east", run=run)["status"] == "drift"
    row = fleet_record("drift", cluster="east", run=run, corrected=True)
    assert row["status"] == "corrected"
    assert row["drift"] == [{"kind": "VirtualService", "namespace": "shop", "name": "cart", "field": "spec.http"}]


def test_a_failure_wins_and_keeps_its_task_and_message():
    run = run_report(
        "rollout",
        cluster="canary",
        steps=["install", "injection"],
        done=["install"],
        stopped={"step": "injection", "msg": "stopped at injection"},
    )
    row = fleet_record("rollout", cluster="canary", run=run, failure={"task": "Step injection", "message": "boom"})
    assert row["status"] == "failed"
    assert row["steps_done"] == ["install"] and row["stopped_at"] == "injection"
    assert row["failure"] == {"task": "Step injection", "message": "boom"}


def test_the_summary_lists_hosts_in_order_and_the_untouched():
    records = [
        fleet_record("rollout", cluster="canary", failure={"task": "t", "message": "m"}),
        fleet_record("drift", cluster="us"),  # another kind's row is not this run's
    ]
    summary = fleet_report(records, ["canary", "eu", "us"], "rollout")
    assert [c["cluster"] for c in summary["clusters"]] == ["canary", "eu", "us"]
    assert summary["failed"] == ["canary"]
    assert summary["not_touched"] == ["eu", "us"]
    assert summary["counts"]["not touched"] == 2 and summary["counts"]["failed"] == 1
    assert summary["ok"] is False


def test_all_clean_is_ok_and_drift_is_named():
    clean = fleet_record("drift", cluster="a", run=run_report("drift", cluster="a"))
    drifted = fleet_record("drift", cluster="b", run=run_report("drift", cluster="b", drift=DRIFT))
    assert fleet_report([clean], ["a"], "drift")["ok"] is True
    summary = fleet_report([clean, drifted], ["a", "b"], "drift")
    assert summary["ok"] is False and summary["drifted"] == ["b"] and summary["failed"] == []


def test_markdown_has_a_row_per_cluster_the_failures_and_the_untouched():
    records = [
        fleet_record("verify", cluster="a", istio=[READY], gates={"control plane": True, "sidecars": False}),
        fleet_record("verify", cluster="b", failure={"task": "Connection guard", "message": "no | answer"}),
    ]
    text = fleet_markdown(fleet_report(records, ["a", "b", "c"], "verify"))
    assert text.startswith("# Fleet verify: 3 cluster(s)\n")
    assert "| a | ok | 1.31.1 | default | - | - | - | gates not passed: sidecars |" in text
    assert "| b | failed | - | - | - | - | - | Connection guard |" in text
    assert "- **b** (Connection guard): no | answer" in text
    assert text.rstrip().endswith("Not touched: c")
