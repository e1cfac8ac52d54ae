"""The way back, last in the session (it removes Istio): the uninstall playbook, gated step by step.

An injected namespace (the real istiod injects its pods) that is not declared blocks the removal
of Istio; declared, it is uninjected (label removed, pods restarted without sidecars) and Istio goes.
Two real sidecars (hack/local-cluster/dataplane.py) watch it happen: the baseline leaves their config before
istiod goes, and their applications still reach each other in plaintext afterwards.
"""

from __future__ import annotations

import json
import sys
import uuid

from conftest import REPO, deployment, run_playbook

sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
import dataplane  # real sidecars: pilot-agent and upstream Envoy on loopback (issue 18)


def injected(kubectl) -> list:
    items = kubectl.json("get", "namespaces")["items"]
    return sorted(
        n["metadata"]["name"]
        for n in items
        if n["metadata"].get("labels", {}).get("istio-injection") == "enabled"
        or "istio.io/rev" in n["metadata"].get("labels", {})
    )


def proxies(kubectl, namespace) -> list:
    pods = kubectl.json("-n", namespace, "get", "pods")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return sorted(any(c["name"] == "istio-proxy" for c in p["spec"]["containers"]) for p in live)


def test_uninstall_refuses_while_injected_then_removes_everything_in_reverse(cluster, kubectl, tmp_path):
    namespace = f"un-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", namespace)
    kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(namespace, "web", sidecar=False)))
    kubectl.run("-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s")
    result = run_playbook("namespace_injection.yml", {"namespace_injection_namespaces": [namespace]}, tmp_path)
    assert result.rc == 0, result.out[-3000:]
    assert proxies(kubectl, namespace) == [True]
    # The data plane: a Service with a baseline of its own, between two real sidecars.
    mesh_namespace = f"un-mesh-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", mesh_namespace)
    kubectl.run("apply", "-f", "-", stdin=json.dumps(dataplane.Mesh.service_object(mesh_namespace)))
    baseline = [{"name": "echo", "namespace": mesh_namespace, "port": 80, "timeout": "5s"}]
    result = run_playbook("traffic_baseline.yml", {"traffic_baseline_services": baseline}, tmp_path)
    assert result.rc == 0, result.out[-3000:]
    mesh = dataplane.Mesh(mesh_namespace, server_ip="127.0.0.71", client_ip="127.0.0.72").start()
    try:
        mesh.wait_for_route_timeout("5s")
        uninstall_in_reverse(kubectl, tmp_path, namespace, baseline)
        # The baseline went although the extra vars still list it (as a user's rollout vars file does), and it
        # left the sidecars' config while istiod was still there to push it: no request timeout
        # (Istio's default 0s), no outlier detection.
        assert kubectl.json("-n", mesh_namespace, "get", "virtualservices.networking.istio.io")["items"] == []
        mesh.wait_for_route_timeout("0s")
        assert "outlier_detection" not in mesh.cluster(), mesh.cluster()
        # Istio is gone; the applications still talk in plaintext, directly and through the sidecar's listener.
        assert dataplane.request("127.0.0.1", mesh.app.port, "/").status == 200
        assert mesh.plaintext("/").status == 200
    finally:
        mesh.stop()
        kubectl.run("delete", "namespace", mesh_namespace, "--wait=false", check=False)
    kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def uninstall_in_reverse(kubectl, tmp_path, namespace: str, baseline: list) -> None:
    options = {
        "istio_install_minimal_method": "istioctl",
        "meshops_target": "local-cluster",
        "traffic_baseline_services": baseline,
    }

    refused = run_playbook("playbooks/uninstall.yml", {**options, "rollout_pilot_namespaces": []}, tmp_path)
    assert refused.rc != 0
    assert f"{namespace}" in refused.out and "are still labeled for injection" in refused.out
    assert "Istio was not touched" in refused.out
    assert kubectl.run("-n", "istio-system", "get", "deployment", "istiod", check=False).returncode == 0

    # Declared the way an AWX survey gives a rollout its waves (rollout_waves_json), one wave per namespace: the
    # uninstall reads the same plan as the rollout and unlabels every wave (issue 17).
    waves = [{"name": f"wave-{i}", "namespaces": [ns]} for i, ns in enumerate(injected(kubectl))]
    survey = {**options, "rollout_pilot_namespaces": [], "rollout_waves": [], "rollout_waves_json": json.dumps(waves)}
    result = run_playbook("playbooks/uninstall.yml", survey, tmp_path)
    assert result.rc == 0, result.out[-4000:]
    assert injected(kubectl) == []
    assert proxies(kubectl, namespace) == [False]
    assert kubectl.run("-n", "istio-system", "get", "deployment", "istiod", check=False).returncode != 0
    webhooks = kubectl.json("get", "mutatingwebhookconfigurations")["items"]
    assert [w["metadata"]["name"] for w in webhooks if "istio" in w["metadata"]["name"]] == []
