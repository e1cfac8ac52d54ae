"""Step 5 against the real local cluster and a real Prometheus on loopback: mtls_permissive, mtls_readiness.

Istio is installed by the step 1 tests that run before this file. Each test writes the
Istio-shaped series its own Prometheus scrapes: mTLS traffic, or plaintext from a named client.
"""

from __future__ import annotations

import json

from conftest import run_playbook


def readiness(tmp_path, prometheus, *namespaces) -> dict:
    report = tmp_path / "mtls-report.json"
    result = run_playbook(
        "mtls_readiness.yml",
        {
            "meshops_namespaces": list(namespaces),
            "meshops_prometheus_url": prometheus.url,
            "meshops_report_file": str(report),
        },
        tmp_path,
    )
    assert result.rc == 0, result.out[-3000:]
    return json.loads(report.read_text())


def by_namespace(report: dict) -> dict:
    return {n["namespace"]: n for n in report["namespaces"]}


def policies(kubectl, namespace: str) -> list:
    items = kubectl.json("-n", namespace, "get", "peerauthentications.security.istio.io")["items"]
    return sorted((i["metadata"]["name"], i["spec"].get("mtls", {}).get("mode")) for i in items)


def namespaces_options(prometheus, *namespaces, **extra) -> dict:
    return {
        "mtls_permissive_scope": "namespaces",
        "mtls_permissive_namespaces": list(namespaces),
        "mtls_permissive_prometheus_url": prometheus.url,
        "mtls_permissive_window": 60,
        **extra,
    }


def test_plaintext_sidecar_gap_and_clean_namespaces_are_told_apart(
    cluster, kubectl, tmp_path, mesh_namespaces, loopback_prometheus
):
    clean = mesh_namespaces({"shop": True}, prefix="clean")
    plain = mesh_namespaces({"shop": True}, prefix="plain")
    gap = mesh_namespaces({"shop": True, "legacy-cron": False}, prefix="gap")
    series = loopback_prometheus.series_for
    loopback_prometheus.set_series(
        series((clean, "web"), (clean, "shop"), rate=5.0)
        + series((plain, "web"), (plain, "shop"), rate=5.0)
        + series(("batch", "report-job"), (plain, "shop"), rate=2.0, mtls=False)
        + series((gap, "web"), (gap, "shop"), rate=1.0)
    )
    loopback_prometheus.wait_for('increase(istio_requests_total{connection_security_policy="none"}[1m]) > 0')

    report = readiness(tmp_path, loopback_prometheus, clean, plain, gap)
    ns = by_namespace(report)
    assert report["prometheus"]["reachable"] is True
    assert ns[clean]["ready_for_strict"] is True, ns[clean]["problems"]
    assert ns[clean]["problems"] == []

    assert ns[plain]["ready_for_strict"] is False
    assert ns[plain]["plaintext_sources"][0]["source"] == "batch/report-job"
    assert ns[plain]["plaintext_sources"][0]["destination"] == f"{plain}/shop"
    assert f"Namespace {plain} received plaintext (non-mTLS) traffic" in ns[plain]["problems"][0]
    assert "batch/report-job -> " in ns[plain]["problems"][0]

    assert ns[gap]["ready_for_strict"] is False
    assert ns[gap]["sidecars_complete"] is False
    assert any("have no istio-proxy" in p and "legacy-cron" in p for p in ns[gap]["problems"]), ns[gap]["problems"]
    assert report["ready_for_strict"] is False


def test_prometheus_unreachable_means_evidence_missing_not_ready(cluster, kubectl, tmp_path, mesh_namespace):
    from conftest import free_port

    class Nowhere:
        url = f"http://127.0.0.1:{free_port()}"

    ns = by_namespace(readiness(tmp_path, Nowhere, mesh_namespace))[mesh_namespace]
    assert ns["ready_for_strict"] is False
    assert ns["traffic_evidence"] is False
    assert "the traffic evidence is missing" in ns["problems"][0]
    assert Nowhere.url in ns["problems"][0]


def test_destination_rule_disabling_tls_and_mtls_only_authorization_reported(
    cluster, kubectl, tmp_path, mesh_namespace, loopback_prometheus
):
    loopback_prometheus.set_series(loopback_prometheus.series_for((mesh_namespace, "web"), (mesh_namespace, "shop"), 1))
    loopback_prometheus.wait_for("istio_requests_total")
    kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "networking.istio.io/v1",
                        "kind": "DestinationRule",
                        "metadata": {"name": "no-tls", "namespace": mesh_namespace},
                        "spec": {
                            "host": f"shop.{mesh_namespace}.svc.cluster.local",
                            "trafficPolicy": {"tls": {"mode": "DISABLE"}},
                        },
                    },
                    {
                        "apiVersion": "security.istio.io/v1",
                        "kind": "AuthorizationPolicy",
                        "metadata": {"name": "only-frontend", "namespace": mesh_namespace},
                        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["frontend"]}}]}]},
                    },
                ],
            }
        ),
    )
    ns = by_namespace(readiness(tmp_path, loopback_prometheus, mesh_namespace))[mesh_namespace]
    assert ns["ready_for_strict"] is False
    assert any(f"DestinationRule {mesh_namespace}/no-tls sets tls.mode DISABLE" in p for p in ns["problems"])
    assert ns["mode"] == "PERMISSIVE"
    assert any(
        f"AuthorizationPolicy {mesh_namespace}/only-frontend matches on source.namespaces" in w
        for w in ns["advisories"]
    )


def test_strict_on_a_not_ready_namespace_is_refused_without_change(
    cluster, kubectl, tmp_path, mesh_namespaces, loopback_prometheus
):
    namespace = mesh_namespaces({"shop": True, "legacy-cron": False})
    loopback_prometheus.set_series(loopback_prometheus.series_for((namespace, "web"), (namespace, "shop"), 1))
    result = run_playbook(
        "mtls_permissive.yml",
        namespaces_options(loopback_prometheus, namespace, mtls_permissive_mode="STRICT"),
        tmp_path,
    )
    assert result.rc != 0
    assert f"STRICT refused for {namespace}" in result.out
    assert "legacy-cron" in result.out
    assert policies(kubectl, namespace) == []


def test_permissive_per_namespace_idempotent_check_mode_and_strict_kept(
    cluster, kubectl, tmp_path, mesh_namespaces, loopback_prometheus
):
    namespace, strict_ns = mesh_namespaces(prefix="perm"), mesh_namespaces(prefix="strict")
    loopback_prometheus.set_series(loopback_prometheus.series_for((namespace, "web"), (namespace, "shop"), 1))
    options = namespaces_options(loopback_prometheus, namespace)

    check = run_playbook("mtls_permissive.yml", options, tmp_path, check=True, diff=True)
    assert check.rc == 0, check.out[-3000:]
    assert check.recap()["changed"] == 1
    assert "PERMISSIVE" in check.out
    assert policies(kubectl, namespace) == []

    first = run_playbook("mtls_permissive.yml", options, tmp_path)
    assert first.rc == 0, first.out[-3000:]
    assert policies(kubectl, namespace) == [("default", "PERMISSIVE")]
    again = run_playbook("mtls_permissive.yml", options, tmp_path)
    assert again.rc == 0 and again.recap()["changed"] == 0, again.out[-3000:]

    # A STRICT policy someone set by hand is not lowered without the option.
    kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": strict_ns},
                "spec": {"mtls": {"mode": "STRICT"}},
            }
        ),
    )
    refused = run_playbook("mtls_permissive.yml", namespaces_options(loopback_prometheus, strict_ns), tmp_path)
    assert refused.rc != 0
    assert f"PeerAuthentication {strict_ns}/default is STRICT" in refused.out
    assert "mtls_permissive_allow_lowering_strict" in refused.out
    assert policies(kubectl, strict_ns) == [("default", "STRICT")]

    lowered = run_playbook(
        "mtls_permissive.yml",
        namespaces_options(loopback_prometheus, strict_ns, mtls_permissive_allow_lowering_strict=True),
        tmp_path,
    )
    assert lowered.rc == 0, lowered.out[-3000:]
    assert "LOWERING mTLS" in lowered.out
    assert policies(kubectl, strict_ns) == [("default", "PERMISSIVE")]


def test_strict_on_a_ready_namespace_is_applied(cluster, kubectl, tmp_path, mesh_namespace, loopback_prometheus):
    loopback_prometheus.set_series(loopback_prometheus.series_for((mesh_namespace, "web"), (mesh_namespace, "shop"), 1))
    loopback_prometheus.wait_for("istio_requests_total")
    result = run_playbook(
        "mtls_permissive.yml",
        namespaces_options(loopback_prometheus, mesh_namespace, mtls_permissive_mode="STRICT"),
        tmp_path,
    )
    assert result.rc == 0, result.out[-3000:]
    assert policies(kubectl, mesh_namespace) == [("default", "STRICT")]
