"""Verify step 3: addons Available, the Telemetry accepted by istiod, the metrics gate passing on a real Prometheus."""

import json

ADDONS = ("grafana", "kiali", "jaeger")


def test_installed_addons_are_available_and_labeled(kube):
    for name in ADDONS:
        dep = kube("-n", "istio-system", "get", "deployment", name, "-o", "json")
        available = [c for c in dep["status"].get("conditions", []) if c["type"] == "Available"]
        assert available and available[0]["status"] == "True", f"{name}: {dep['status']}"
        assert dep["metadata"]["labels"]["meshops.istio/telemetry"] == "true"
        assert dep["metadata"]["labels"]["meshops.istio/addon"] == name
    # Prometheus is external in the local scenario: the role must not install one.
    assert (
        kube("-n", "istio-system", "get", "deployments", "-l", "meshops.istio/addon=prometheus", "-o", "json")["items"]
        == []
    )


def test_kiali_is_wired_to_the_external_prometheus_and_the_installed_addons(host, kube):
    url = host.ansible("ansible.builtin.debug", "var=meshops_prometheus_url", check=False)["meshops_prometheus_url"]
    config = kube("-n", "istio-system", "get", "configmap", "kiali", "-o", "json")["data"]["config.yaml"]
    assert f"url: {url}" in config
    assert "internal_url: http://tracing.istio-system:16685/jaeger" in config
    assert "internal_url: http://grafana.istio-system:3000" in config


def test_mesh_wide_telemetry_accepted_by_istiod(host, kube, kubeconfig):
    telemetry = kube("-n", "istio-system", "get", "telemetries.telemetry.istio.io", "mesh-default", "-o", "json")
    assert telemetry["spec"]["tracing"][0]["providers"] == [{"name": "zipkin"}]
    assert telemetry["spec"]["tracing"][0]["randomSamplingPercentage"] == 1.0
    assert telemetry["spec"]["accessLogging"][0]["disabled"] is True
    assert "metrics" not in telemetry["spec"], "metrics stay at Istio's defaults"
    # Every Telemetry write goes through istiod's validating webhook, which fails closed: the object
    # exists, so istiod accepted it. A server-side dry run of a copy passes the same webhook again now.
    webhooks = kube("get", "validatingwebhookconfigurations", "-o", "json")["items"]
    istiod = [
        h
        for w in webhooks
        for h in w["webhooks"]
        if any("telemetry.istio.io" in r["apiGroups"] for r in h["rules"]) and h["failurePolicy"] == "Fail"
    ]
    assert istiod, "no fail-closed istiod validating webhook covers telemetry.istio.io"
    clean = {k: telemetry[k] for k in ("apiVersion", "kind", "spec")}
    clean["metadata"] = {"name": "mesh-default", "namespace": "istio-system"}
    renamed = dict(clean, metadata={"name": "dry-run-copy", "namespace": "istio-system"})
    cmd = host.run(
        "echo %s | kubectl --kubeconfig %s create --dry-run=server -f - -o name", json.dumps(renamed), kubeconfig
    )
    assert cmd.rc == 0, cmd.stderr


def test_metrics_gate_passes_against_the_real_prometheus(host):
    url = host.ansible("ansible.builtin.debug", "var=meshops_prometheus_url", check=False)["meshops_prometheus_url"]
    kubeconfig = host.ansible("ansible.builtin.debug", "var=meshops_kubeconfig", check=False)["meshops_kubeconfig"]
    result = host.ansible(
        "meshops.istio.telemetry_status",
        f"kubeconfig={kubeconfig} prometheus_url={url} addons=grafana,kiali,jaeger",
        check=False,
    )
    assert result["ready"] is True, result["problems"]
    assert result["prometheus"]["reachable"] is True
    by_ns = {n["namespace"]: n for n in result["namespaces"]}
    for namespace in ("sample-frontend", "sample-backend"):
        assert by_ns[namespace]["has_metrics"] is True
        assert by_ns[namespace]["pods_with_sidecar"] > 0
