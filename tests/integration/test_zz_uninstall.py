"""The way back, last in the session (it removes Istio): the uninstall playbook, gated step by step.

An injected namespace (the real istiod injects its pods) that is not declared blocks the removal
of Istio; declared, it is uninjected (label removed, pods restarted without sidecars) and Istio goes.
"""

from __future__ import annotations

import json
import uuid

from conftest import deployment, run_playbook


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
    options = {"istio_install_minimal_method": "istioctl", "meshops_target": "local-cluster"}

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
    kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
