"""The one workload readiness rule (module_utils/objects.py: workload_status) that every gate uses."""

import json
from pathlib import Path

import pytest
from ansible_collections.meshops.istio.plugins.module_utils.objects import workload_status

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def istiod():
    """A ready Deployment as the local cluster's controller manager reported it."""
    return json.loads((FIXTURES / "deployment_istiod_available.json").read_text())


def set_available(dep, status, message):
    for cond in dep["status"]["conditions"]:
        if cond["type"] == "Available":
            cond["status"] = status
            cond["message"] = message


def test_recorded_deployment_is_ready(istiod):
    assert workload_status(istiod) == {"ready": True, "reasons": [], "observed": True, "replicas": 1}


def test_deployment_with_old_replicas_is_not_ready(istiod):
    # A rolling update half way: 2 new replicas up, 1 old one not yet scaled down (the old one keeps it Available).
    istiod["spec"]["replicas"] = 2
    istiod["status"].update(replicas=3, updatedReplicas=2, availableReplicas=3, unavailableReplicas=0)
    status = workload_status(istiod)
    assert status["ready"] is False
    assert status["reasons"] == ["2/2 replicas updated, 0 unavailable, 1 old replicas still running"]


def test_generation_not_observed_yet_judges_nothing_else(istiod):
    istiod["metadata"]["generation"] = 2
    set_available(istiod, "False", "Deployment does not have minimum availability.")
    istiod["status"]["availableReplicas"] = 0
    status = workload_status(istiod)
    assert status == {
        "ready": False,
        "reasons": ["the controller has not observed generation 2 yet (observed 1)"],
        "observed": False,
        "replicas": 1,
    }


def test_available_false_gives_its_message_even_with_full_counts(istiod):
    set_available(istiod, "False", "Deployment does not have minimum availability.")
    status = workload_status(istiod)
    assert status["ready"] is False
    assert status["reasons"] == ["not Available (Deployment does not have minimum availability.)"]


def test_available_false_and_counts_short_gives_both(istiod):
    set_available(istiod, "False", "Deployment does not have minimum availability.")
    istiod["status"]["availableReplicas"] = 0
    assert workload_status(istiod)["reasons"] == [
        "not Available (Deployment does not have minimum availability.)",
        "0/1 updated replicas available",
    ]


def test_available_condition_counts_only_when_conditions_are_reported(istiod):
    istiod["status"]["conditions"] = [c for c in istiod["status"]["conditions"] if c["type"] != "Available"]
    assert workload_status(istiod)["reasons"] == ["not Available (no Available condition)"]
    del istiod["status"]["conditions"]
    assert workload_status(istiod)["ready"] is True


def test_list_items_name_their_kind(istiod):
    # Items of a list carry no kind: the caller says it, and the Deployment rules (Available) apply.
    del istiod["kind"]
    set_available(istiod, "False", "nope")
    assert workload_status(istiod)["ready"] is True
    assert workload_status(istiod, "Deployment")["reasons"] == ["not Available (nope)"]


@pytest.mark.parametrize(
    ("status", "ready", "reasons"),
    [
        ({"updatedReplicas": 3, "readyReplicas": 3, "replicas": 3}, True, []),
        ({"updatedReplicas": 2, "readyReplicas": 3, "replicas": 3}, False, ["2/3 replicas updated"]),
        ({"updatedReplicas": 3, "readyReplicas": 2, "replicas": 3}, False, ["2/3 replicas ready"]),
    ],
)
def test_statefulset_counts_updated_and_ready(status, ready, reasons):
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 4},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 4, **status},
    }
    assert workload_status(sts) == {"ready": ready, "reasons": reasons, "observed": True, "replicas": 3}


@pytest.mark.parametrize(
    ("updated", "available", "reasons"),
    [
        (3, 3, []),
        (1, 3, ["1/3 replicas updated"]),
        (3, 2, ["2/3 updated replicas available"]),
    ],
)
def test_daemonset_counts_scheduled_pods(updated, available, reasons):
    ds = {
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
        },
    }
    status = workload_status(ds)
    assert status["reasons"] == reasons
    assert status["ready"] is (reasons == [])
    assert status["replicas"] == 3


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_zero_replicas_is_ready(kind):
    obj = {
        "kind": kind,
        "metadata": {"name": "idle", "generation": 2},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 2},
    }
    assert workload_status(obj) == {"ready": True, "reasons": [], "observed": True, "replicas": 0}


def test_missing_status_is_not_ready():
    obj = {"kind": "Deployment", "metadata": {"name": "new", "generation": 1}, "spec": {"replicas": 2}}
    status = workload_status(obj)
    assert status["ready"] is False and status["observed"] is False
    assert status["reasons"] == ["the controller has not observed generation 1 yet (observed none)"]
    # Without a generation either (an object built by hand), the counts still say it is not ready.
    del obj["metadata"]["generation"]
    assert workload_status(obj)["reasons"] == ["0/2 replicas updated"]
