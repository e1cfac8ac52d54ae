"""Filters in plugins/filter/drift.py: check-mode results in, field-level drift and a Markdown report out."""

from ansible_collections.meshops.istio.plugins.filter.drift import drift_changes, drift_markdown


def k8s_result(kind, namespace, name, before=None, after=None, method="update", changed=True, item=None):
    res = {
        "changed": changed,
        "method": method,
        "result": {"kind": kind, "metadata": {"namespace": namespace, "name": name}},
    }
    if before is not None or after is not None:
        res["diff"] = {"before": before or {}, "after": after or {}}
    if item is not None:
        res["item"] = item
    return res


def test_a_changed_field_reports_declared_and_live_values():
    vs = k8s_result(
        "VirtualService",
        "shop",
        "baseline-api",
        before={"spec": {"http": [{"timeout": "30s"}]}, "metadata": {"resourceVersion": "5", "generation": 3}},
        after={"spec": {"http": [{"timeout": "5s"}]}, "metadata": {"resourceVersion": "6", "generation": 4}},
    )
    assert drift_changes({"traffic": [{"results": [vs, {"changed": False}]}]}) == [
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


def test_a_removed_label_and_a_missing_object():
    label = k8s_result(
        "Namespace", None, "shop", before={}, after={"metadata": {"labels": {"istio-injection": "enabled"}}}
    )
    missing = k8s_result("Deployment", "istio-system", "kiali", method="create")
    listed = {"changed": True, "result": {"results": [missing, {"changed": False, "method": "update"}]}}
    changes = drift_changes({"injection": [{"results": [label]}], "telemetry": [listed]})
    assert changes[0]["field"] == "metadata.labels.istio-injection"
    assert (changes[0]["declared"], changes[0]["live"]) == ("enabled", "(absent)")
    assert changes[1] == {
        "step": "telemetry",
        "kind": "Deployment",
        "namespace": "istio-system",
        "name": "kiali",
        "field": "(object)",
        "declared": "present",
        "live": "missing",
    }


def test_benign_mutations_and_autoscaled_replicas_are_not_drift():
    webhook = k8s_result(
        "MutatingWebhookConfiguration",
        None,
        "istio-sidecar-injector",
        before={"webhooks": [{"clientConfig": {"caBundle": "live"}, "failurePolicy": "Fail"}]},
        after={"webhooks": [{"clientConfig": {"caBundle": ""}, "failurePolicy": "Ignore"}]},
    )
    deploy = k8s_result(
        "Deployment", "istio-system", "istiod", before={"spec": {"replicas": 4}}, after={"spec": {"replicas": 1}}
    )
    hpa = {
        "metadata": {"namespace": "istio-system"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "istiod"}},
    }
    assert drift_changes({"install": [webhook, deploy]}, [hpa]) == []
    assert [c["field"] for c in drift_changes({"install": [deploy]})] == ["spec.replicas"]


def test_deletions_skipped_tasks_and_helm_releases():
    stale = {"changed": True, "item": {"apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": "old"}}
    helm = {"changed": True, "command": "helm upgrade ...", "status": {"name": "istiod", "namespace": "istio-system"}}
    changes = drift_changes({"traffic": [{"results": [stale]}, {"skipped": True}], "install": [helm]})
    assert changes[0]["field"] == "(object)" and (changes[0]["declared"], changes[0]["live"]) == ("absent", "present")
    assert changes[1]["kind"] == "HelmRelease" and changes[1]["name"] == "istiod"


def test_markdown_report():
    assert "No drift" in drift_markdown([])
    text = drift_markdown(
        [
            {
                "step": "mtls",
                "kind": "PeerAuthentication",
                "namespace": "istio-system",
                "name": "default",
                "field": "spec.mtls.mode",
                "declared": "PERMISSIVE",
                "live": "DISABLE",
            }
        ],
        "Drift report: prod",
    )
    assert text.startswith("# Drift report: prod")
    assert "1 drifted field(s) in 1 object(s)." in text
    assert "| mtls | PeerAuthentication istio-system/default | `spec.mtls.mode` | PERMISSIVE | DISABLE |" in text


def test_markdown_report_shows_the_control_plane_declared_and_live():
    control_plane = {
        "declared": {"version": "1.31.1", "revision": "default", "method": "helm"},
        "live": [
            {"namespace": "istio-system", "name": "istiod", "version": "1.30.4", "revision": "default"},
            {
                "namespace": "istio-system",
                "name": "istiod-b",
                "version": "1.31.1",
                "revision": "b",
                "install_method": "helm",
            },
        ],
    }
    text = drift_markdown([], "Drift report: prod", ["shop: passed"], control_plane)
    assert "No drift" in text
    assert "- declared: Istio 1.31.1, revision default, helm" in text
    assert "- live: Deployment istio-system/istiod: Istio 1.30.4, revision default" in text
    assert "- live: Deployment istio-system/istiod-b: Istio 1.31.1, revision b, helm" in text
    assert text.index("## Control plane") < text.index("## Last wave analyses")
    none_live = drift_markdown([], "t", (), {"declared": {"version": "1.31.1"}, "live": []})
    assert "- live: no istiod Deployment" in none_live


def test_server_side_apply_of_a_missing_object_and_empty_containers():
    missing = k8s_result(
        "Deployment",
        "istio-system",
        "kiali",
        before={},
        after={"kind": "Deployment", "metadata": {"name": "kiali"}, "spec": {"replicas": 1}},
    )
    unlabeled = k8s_result(
        "Namespace",
        None,
        "shop",
        before={"metadata": {"labels": {}}},
        after={"metadata": {"labels": {"istio-injection": "enabled"}}},
    )
    changes = drift_changes({"telemetry": [missing], "injection": [unlabeled]})
    assert [(c["name"], c["field"], c["declared"], c["live"]) for c in changes] == [
        ("kiali", "(object)", "present", "missing"),
        ("shop", "metadata.labels.istio-injection", "enabled", "(absent)"),
    ]


def test_drift_shows_each_wave_namespace_last_analysis_from_the_dry_run_results():
    import json as _json

    from ansible_collections.meshops.istio.plugins.filter.drift import drift_analyses

    record = _json.dumps({"at": "2026-11-27T01:00:00Z", "passed": True, "analyses": 5})
    namespace = {
        "kind": "Namespace",
        "metadata": {"name": "shop", "annotations": {"meshops.istio/last-analysis": record}},
    }
    results = {
        "injection": [{"result": {"results": [{"changed": False, "result": namespace}]}}],
        "traffic": [{"result": {"results": [{"changed": False, "result": {"kind": "DestinationRule"}}]}}],
    }
    sentences = drift_analyses(results)
    assert sentences == ["shop: passed at 2026-11-27T01:00:00Z (5 analyses)"]
    text = drift_markdown([], "Drift report: c1", sentences)
    assert text.endswith("## Last wave analyses\n\n- shop: passed at 2026-11-27T01:00:00Z (5 analyses)\n")
    assert drift_analyses({}) == []
    # The same namespace, as a converge's apply (meshops.istio.apply_sets) registers it.
    converged = {"injection": {"sets": [{"step": "injection", "results": [{"changed": False, "result": namespace}]}]}}
    assert drift_analyses(converged) == sentences
