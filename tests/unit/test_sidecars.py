"""Sidecar coverage and rollout decisions (module_utils/sidecars.py)."""

import copy
import json
from pathlib import Path

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import sidecars as s

FIXTURES = Path(__file__).parent / "fixtures"


def ns(name="shop", **labels):
    return {"metadata": {"name": name, "labels": labels}}


@pytest.fixture
def injected():
    """A pod as the real istiod injected it (server-side dry run on the local cluster)."""
    pod = json.loads((FIXTURES / "pod_probe_injected.json").read_text())
    pod["metadata"]["name"] = "web-abc-1"
    pod["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-abc", "controller": True}]
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def plain(name, owner=("ReplicaSet", "api-123"), ready=True, **annotations):
    meta = {"name": name, "annotations": annotations}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


REPLICASETS = [
    {"metadata": {"name": "web-abc", "ownerReferences": [{"kind": "Deployment", "name": "web"}]}},
    {"metadata": {"name": "api-123", "ownerReferences": [{"kind": "Deployment", "name": "api"}]}},
]


@pytest.mark.parametrize(
    ("labels", "mode", "enabled"),
    [
        ({}, "none", False),
        ({"istio-injection": "enabled"}, "istio-injection", True),
        ({"istio-injection": "disabled"}, "disabled", False),
        ({"istio.io/rev": "canary"}, "revision", True),
        ({"istio-injection": "enabled", "istio.io/rev": "canary"}, "conflict", False),
    ],
)
def test_label_state(labels, mode, enabled):
    state = s.label_state(ns(**labels))
    assert (state["mode"], state["enabled"]) == (mode, enabled)


def test_recorded_injected_pod_is_recognised(injected):
    assert s.proxy_container(injected)["name"] == "istio-proxy"
    assert s.injected_revision(injected) == "default"
    assert s.pod_ready(injected)
    assert s.owner_workload(injected, {r["metadata"]["name"]: r for r in REPLICASETS}) == ("Deployment", "web")


def test_complete_namespace(injected):
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [injected], REPLICASETS)
    assert report["complete"] and report["problems"] == []
    assert report["coverage_percent"] == 100.0
    assert list(report["proxy_images"].values()) == [1]


def test_unlabeled_namespace_lists_workloads_to_restart_but_no_problem(injected):
    report = s.namespace_report(ns(), [injected, plain("api-1"), plain("api-2")], REPLICASETS)
    assert not report["complete"]
    assert report["workloads_to_restart"] == [{"kind": "Deployment", "namespace": "shop", "name": "api"}]
    assert report["problems"] == []
    assert report["coverage_percent"] == pytest.approx(33.3)


def test_labeled_namespace_with_missing_sidecars_is_a_problem(injected):
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [injected, plain("api-1")], REPLICASETS)
    assert not report["complete"]
    assert "1 of 2 eligible pods have no istio-proxy (api-1)" in report["problems"][0]


def test_opted_out_pods_not_counted_as_missing(injected):
    opted = plain("batch-1", owner=("StatefulSet", "batch"), **{"sidecar.istio.io/inject": "false"})
    labelled = plain("job-1", owner=("DaemonSet", "agent"))
    labelled["metadata"]["labels"] = {"sidecar.istio.io/inject": "false"}
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [injected, opted, labelled], REPLICASETS)
    assert report["opted_out"] == 2 and report["eligible"] == 1
    assert report["complete"], report["problems"]
    assert report["workloads_to_restart"] == []


def test_other_revision_needs_restart(injected):
    report = s.namespace_report(ns(**{"istio.io/rev": "canary"}), [injected], REPLICASETS)
    assert report["pods_needing_restart"][0]["reason"] == "injected by revision default, not canary"
    assert report["workloads_to_restart"][0]["name"] == "web"
    assert not report["complete"]


def test_a_revision_tag_resolves_to_the_revision_it_points_at(injected):
    """Namespaces labeled with a tag (istio.io/rev=stable) want sidecars from the tag's revision: the injector
    records the revision, not the tag, on the pods it injects."""
    labeled = ns(**{"istio.io/rev": "stable"})
    report = s.namespace_report(labeled, [injected], REPLICASETS, tags={"stable": "default"})
    assert report["pods_needing_restart"] == []
    assert report["complete"]
    moved = s.namespace_report(labeled, [injected], REPLICASETS, tags={"stable": "1-31-1"})
    assert moved["pods_needing_restart"][0]["reason"] == "injected by revision default, not 1-31-1"
    asked = s.namespace_report(ns(), [injected], REPLICASETS, "canary", {"canary": "default"})
    assert asked["pods_needing_restart"] == []


def test_bare_pod_cannot_be_restarted(injected):
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [plain("lonely", owner=None)], [])
    assert any("Pod shop/lonely has no controller" in p for p in report["problems"])
    assert report["workloads_to_restart"] == []


def test_not_ready_pod_blocks_completion(injected):
    slow = copy.deepcopy(injected)
    slow["status"]["conditions"][0]["status"] = "False"
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [slow], REPLICASETS)
    assert not report["complete"]
    assert any("pods not Ready: web-abc-1" in p for p in report["problems"])


def test_finished_pods_ignored(injected):
    done = plain("job-x")
    done["status"]["phase"] = "Succeeded"
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [injected, done], REPLICASETS)
    assert report["total"] == 1


def deployment(generation=2, observed=2, replicas=2, updated=2, available=2, current=2):
    return {
        "kind": "Deployment",
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": current,
            "updatedReplicas": updated,
            "availableReplicas": available,
        },
    }


@pytest.mark.parametrize(
    ("obj", "done", "fragment"),
    [
        (deployment(), True, "2 replicas updated and available"),
        (deployment(observed=1), False, "the controller has not observed generation 2 yet (observed 1)"),
        (deployment(updated=1), False, "1 old replicas still running"),
        (deployment(updated=1, current=1), False, "1/2 replicas updated"),
        (deployment(available=1), False, "1/2 updated replicas available"),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 2,
                },
            },
            False,
            "2/3",
        ),
        (
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 1},
            },
            True,
            "1 replicas",
        ),
    ],
)
def test_rollout_status(obj, done, fragment):
    status = s.rollout_status(obj)
    assert status["done"] is done
    assert fragment in status["message"]


def test_restart_patch_and_batches():
    assert s.restart_patch("T")["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "T"
    }
    assert s.batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError, match="at least 1"):
        s.batches([1], 0)


def test_not_ready_reason_explains_unschedulable(injected):
    pending = copy.deepcopy(injected)
    pending["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available: 3 Insufficient cpu."}
        ],
    }
    report = s.namespace_report(ns(**{"istio-injection": "enabled"}), [pending], REPLICASETS)
    assert any("web-abc-1 (0/3 nodes are available: 3 Insufficient cpu.)" in p for p in report["problems"])
    crashing = copy.deepcopy(injected)
    crashing["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [{"name": "istio-proxy", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }
    assert s.not_ready_reason(crashing) == "istio-proxy: CrashLoopBackOff"


def test_one_rule_for_an_injected_namespace_used_by_the_filter_and_mtls_readiness():
    from ansible_collections.meshops.istio.plugins.filter import injection
    from ansible_collections.meshops.istio.plugins.modules import mtls_readiness

    def ns(name, **labels):
        return {"metadata": {"name": name, "labels": labels}}

    namespaces = [
        ns("enabled", **{"istio-injection": "enabled"}),
        ns("revision", **{"istio.io/rev": "canary"}),
        ns("both", **{"istio-injection": "enabled", "istio.io/rev": "canary"}),
        ns("off-with-revision", **{"istio-injection": "disabled", "istio.io/rev": "canary"}),
        ns("off", **{"istio-injection": "disabled"}),
        ns("plain"),
    ]
    expected = ["both", "enabled", "revision"]
    assert s.injected_names(namespaces) == expected
    assert injection.injected_namespaces(namespaces) == expected

    class Kube:
        def list(self, api_version, kind):
            assert (api_version, kind) == ("v1", "Namespace")
            return namespaces

    assert mtls_readiness.in_mesh_namespaces(Kube(), {"dataplane_mode": "sidecar"}) == expected
    ambient = [
        *namespaces,
        ns("amb", **{"istio.io/dataplane-mode": "ambient"}),
        ns("no", **{"istio.io/dataplane-mode": "none"}),
    ]
    namespaces[:] = ambient
    assert mtls_readiness.in_mesh_namespaces(Kube(), {"dataplane_mode": "ambient"}) == ["amb"]
    assert injection.injected_namespaces(ambient, ambient=True) == ["amb", *expected]


def test_applied_fields_lists_what_each_apply_manager_owns():
    namespace = ns("shop", **{"istio-injection": "enabled"})
    namespace["metadata"]["managedFields"] = [
        {
            "manager": "meshops-istio-injection",
            "operation": "Apply",
            "fieldsV1": {
                "f:metadata": {
                    "f:labels": {"f:istio-injection": {}},
                    "f:annotations": {"f:meshops.istio/injection-pending": {}},
                }
            },
        },
        {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}},
        {"manager": "meshops-istio-analysis", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:annotations": {}}}},
    ]
    assert s.applied_fields(namespace) == {
        "meshops-istio-injection": ["annotations.meshops.istio/injection-pending", "labels.istio-injection"],
        "meshops-istio-analysis": [],
    }
    assert s.applied_fields(ns("bare")) == {}


def three_namespaces(injected):
    """What Kube.namespace_contents reads for shop (labeled, injected), api (unlabeled) and gone (missing)."""
    labeled = {"name": "shop", "namespace": ns(**{"istio-injection": "enabled"}), "pods": [injected]}
    plain_ns = {"name": "api", "namespace": ns("api"), "pods": [plain("api-1")]}
    missing = {"name": "gone", "namespace": None, "pods": [], "replicasets": []}
    return [dict(c, replicasets=REPLICASETS) for c in (labeled, plain_ns)] + [missing]


def test_coverage_of_what_was_read_names_missing_and_unlabeled_namespaces(injected):
    contents = three_namespaces(injected)
    out = s.coverage(contents, None, require_labeled=True)
    assert [r["namespace"] for r in out["namespaces"]] == ["shop", "api"]
    assert out["coverage_percent"] == 50.0 and out["complete"] is False
    assert out["workloads_to_restart"] == [{"kind": "Deployment", "namespace": "api", "name": "api"}]
    assert out["problems"] == [
        "Namespace api is not labeled for injection (istio-injection=enabled or istio.io/rev): label it "
        "(role meshops.istio.namespace_injection).",
        "Namespace gone does not exist: create it or remove it from the list.",
    ]
    assert s.coverage(contents[:1], None, require_labeled=False)["complete"] is True


def test_a_read_of_many_namespaces_answers_for_some_of_them_as_a_read_of_those(injected):
    contents = three_namespaces(injected)
    everything = s.coverage(contents, None, require_labeled=False)
    for names in (["shop"], ["api"], ["gone", "shop"], ["api", "shop", "gone"]):
        wanted = [next(c for c in contents if c["name"] == name) for name in names]
        assert s.coverage_of(everything["namespaces"], names, False) == s.coverage(wanted, None, False)
    # A namespace the read did not cover is reported as missing, so a narrowed read never hides one.
    assert s.coverage_of(everything["namespaces"], ["other"], False)["complete"] is False
