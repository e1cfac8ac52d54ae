"""Filters that build object lists for one kubernetes.core.k8s run and read what such a run changed."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.batch import (
    changed_objects,
    namespace_objects,
    object_definitions,
)
from ansible_collections.meshops.istio.plugins.filter.drift import drift_changes
from ansible_collections.meshops.istio.plugins.filter.peer_authentication import (
    peer_authentication_conflicts,
    peer_authentication_objects,
)
from ansible_collections.meshops.istio.plugins.filter.traffic import (
    traffic_baseline_resources,
    traffic_baseline_unblocked,
)


def test_namespace_objects_with_and_without_labels():
    labeled = namespace_objects(["a", "b"], {"istio-injection": "enabled"})
    assert [n["metadata"] for n in labeled] == [
        {"name": "a", "labels": {"istio-injection": "enabled"}},
        {"name": "b", "labels": {"istio-injection": "enabled"}},
    ]
    assert namespace_objects(["a"]) == [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}]
    # None survives: a merge patch removes the label.
    assert namespace_objects(["a"], {"istio.io/rev": None})[0]["metadata"]["labels"] == {"istio.io/rev": None}


def test_namespace_objects_refuses_a_string():
    with pytest.raises(AnsibleFilterError, match="list of namespace names"):
        namespace_objects("shop")


def test_object_definitions_from_references():
    refs = [
        {"apiVersion": "v1", "kind": "Service", "namespace": "istio-system", "name": "kiali"},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "namespace": None, "name": "kiali"},
    ]
    assert object_definitions(refs) == [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kiali", "namespace": "istio-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "kiali"}},
    ]


def _result(kind, name, namespace=None, changed=True, method="apply"):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"changed": changed, "method": method, "result": {"kind": kind, "metadata": meta}}


def test_changed_objects_reads_a_list_run_and_a_single_object_run():
    many = {
        "changed": True,
        "result": {"results": [_result("Namespace", "a"), _result("Namespace", "b", changed=False)]},
    }
    assert changed_objects(many) == [{"kind": "Namespace", "namespace": None, "name": "a", "method": "apply"}]
    single = _result("Namespace", "c")
    assert [o["name"] for o in changed_objects(single)] == ["c"]
    assert changed_objects({"skipped": True}) == []
    status = {"changed": True, "method": "delete", "result": {"kind": "Status", "details": {"kind": "x", "name": "y"}}}
    assert changed_objects(status)[0] == {"kind": "x", "namespace": None, "name": "y", "method": "delete"}
    with_diff = {**_result("VirtualService", "v", "a"), "diff": {"before": {"t": "99s"}, "after": {"t": "10s"}}}
    assert changed_objects(with_diff)[0]["diff"] == {"before": {"t": "99s"}, "after": {"t": "10s"}}


def test_changed_objects_reads_an_apply_sets_run_as_a_converge_registers_it():
    run = {
        "changed": True,
        "sets": [
            {"step": "traffic", "changed": True, "results": [_result("VirtualService", "v", "a")]},
            {"step": "mtls", "changed": False, "results": [_result("Namespace", "b", changed=False)]},
        ],
    }
    assert changed_objects(run) == [{"kind": "VirtualService", "namespace": "a", "name": "v", "method": "apply"}]


def test_drift_reads_a_list_run_per_object():
    changed = _result("VirtualService", "baseline-api", "shop")
    changed["diff"] = {
        "before": {"spec": {"http": [{"timeout": "30s"}]}},
        "after": {"spec": {"http": [{"timeout": "5s"}]}},
    }
    run = {"changed": True, "result": {"results": [changed, _result("DestinationRule", "baseline-api", "shop", False)]}}
    assert drift_changes({"traffic": [run]}) == [
        {
            "step": "traffic",
            "kind": "VirtualService",
            "namespace": "shop",
            "name": "baseline-api",
            "field": "spec.http[0].timeout",
            "declared": "5s",
            "live": "30s",
        }
    ]


def test_unblocked_drops_only_the_kind_of_routing_left_alone():
    desired = traffic_baseline_resources([{"name": n, "namespace": "shop", "port": 80} for n in ("api", "web")])
    kept = traffic_baseline_unblocked(desired, [{"kind": "VirtualService", "service": "api"}])
    assert sorted((o["kind"], o["metadata"]["name"]) for o in kept) == [
        ("DestinationRule", "baseline-api"),
        ("DestinationRule", "baseline-web"),
        ("VirtualService", "baseline-web"),
    ]
    assert traffic_baseline_unblocked(desired, []) == desired


def test_peer_authentication_objects_and_conflicts_limited_to_targets():
    objs = peer_authentication_objects(["a", "b"], "default", "PERMISSIVE")
    assert [(o["metadata"]["namespace"], o["spec"]["mtls"]["mode"]) for o in objs] == [
        ("a", "PERMISSIVE"),
        ("b", "PERMISSIVE"),
    ]
    assert objs[0]["metadata"]["labels"]["meshops.istio/mtls"] == "true"
    live = [
        {"metadata": {"namespace": "a", "name": "other"}, "spec": {"mtls": {"mode": "STRICT"}}},
        {"metadata": {"namespace": "z", "name": "other"}, "spec": {}},
    ]
    assert peer_authentication_conflicts(live, "default", ["a"]) == {"others": ["a/other"], "strict": ["a/other"]}
    assert peer_authentication_conflicts(live, "default")["others"] == ["a/other", "z/other"]
    with pytest.raises(AnsibleFilterError):
        peer_authentication_objects("a", "default", "STRICT")


def test_drift_reports_the_deletions_of_a_declared_set():
    declared = {
        "step": "traffic",
        "field_manager": "meshops-istio-traffic",
        "objects": [],
        "delete": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "namespace": "a", "name": "b"}],
    }
    assert drift_changes({"traffic": [declared]}) == [
        {
            "step": "traffic",
            "kind": "VirtualService",
            "namespace": "a",
            "name": "b",
            "field": "(object)",
            "declared": "absent",
            "live": "present",
        }
    ]
    assert drift_changes({"traffic": [{**declared, "delete": []}]}) == []
