"""Verify step 1: Istio's minimal profile is installed and its control plane really answers."""

import json
import uuid

INVALID_VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "meshops-verify-invalid", "namespace": "default"},
    # Valid for the CRD schema; only istiod's validation rejects a VirtualService without routes.
    "spec": {"hosts": ["meshops-verify.invalid"]},
}


def test_istio_crds_established(kube):
    crds = [c for c in kube("get", "crd", "-o", "json")["items"] if c["metadata"]["name"].endswith(".istio.io")]
    assert len(crds) >= 14, [c["metadata"]["name"] for c in crds]
    for crd in crds:
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", crd["metadata"]["name"]


def test_istiod_available_and_nothing_beyond_minimal(kube):
    dep = kube("-n", "istio-system", "get", "deployment", "istiod", "-o", "json")
    conditions = {c["type"]: c["status"] for c in dep["status"]["conditions"]}
    assert conditions.get("Available") == "True"
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
    # Step 3's addons carry meshops.istio/telemetry=true; everything else in istio-system is step 1's.
    deployments = kube("-n", "istio-system", "get", "deployments", "-l", "!meshops.istio/telemetry", "-o", "json")
    names = {d["metadata"]["name"] for d in deployments["items"]}
    assert names == {"istiod"}, f"the minimal profile installs istiod only, found {names}"
    # mTLS is never forced: the only PeerAuthentication is step 5's PERMISSIVE one.
    peer_auth = kube("get", "peerauthentications.security.istio.io", "-A", "-o", "json")["items"]
    modes = {(p["metadata"]["namespace"], p["spec"]["mtls"]["mode"]) for p in peer_auth}
    assert modes <= {("istio-system", "PERMISSIVE")}, modes


def test_istio_readiness_module_reports_ready(host, kubeconfig):
    result = host.ansible("meshops.istio.istio_readiness", f"kubeconfig={kubeconfig}", check=True)
    assert result["ready"] is True, result.get("problems")
    assert result["injection_probe"]["injected"] is True
    assert result["validation_probe"]["answered"] is True
    assert result["changed"] is False


def test_invalid_virtualservice_rejected_by_istiod(host, kubeconfig):
    cmd = host.run("echo %s | kubectl --kubeconfig %s create -f -", json.dumps(INVALID_VIRTUAL_SERVICE), kubeconfig)
    assert cmd.rc != 0, "istiod accepted an invalid VirtualService"
    assert 'admission webhook "validation.istio.io" denied the request' in cmd.stderr, cmd.stderr


def test_pod_in_labeled_namespace_gets_istio_proxy(host, kube):
    namespace = f"meshops-verify-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", namespace, parse=False)
    try:
        kube("label", "namespace", namespace, "istio-injection=enabled", parse=False)
        pod = kube(
            "-n", namespace, "run", "probe", "--image=registry.k8s.io/pause:3.10", "--restart=Never", "-o", "json"
        )
        names = [c["name"] for c in pod["spec"]["containers"]] + [
            c["name"] for c in pod["spec"].get("initContainers", [])
        ]
        assert "istio-proxy" in names, names
    finally:
        kube("delete", "namespace", namespace, "--wait=false", parse=False)
