"""Verify step 2: every sample pod was restarted into a sidecar injected by the real istiod."""

import json

SAMPLE_NAMESPACES = ("sample-frontend", "sample-backend")


def test_sample_namespaces_labeled_once(kube):
    for name in SAMPLE_NAMESPACES:
        labels = kube("get", "namespace", name, "-o", "json")["metadata"]["labels"]
        assert labels.get("istio-injection") == "enabled", labels
        assert "istio.io/rev" not in labels, "a namespace must never carry both injection labels"


def test_every_sample_pod_has_an_injected_ready_sidecar(kube):
    for name in SAMPLE_NAMESPACES:
        pods = kube("-n", name, "get", "pods", "-o", "json")["items"]
        assert pods, f"no pods in {name}"
        for pod in pods:
            containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
            assert "istio-proxy" in [c["name"] for c in containers], pod["metadata"]["name"]
            status = json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])
            assert status["revision"] == "default"
            ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
            assert ready == "True", pod["metadata"]["name"]


def test_sidecar_status_reports_complete(host, kubeconfig):
    result = host.ansible(
        "meshops.istio.sidecar_status",
        f"kubeconfig={kubeconfig} namespaces={','.join(SAMPLE_NAMESPACES)}",
        check=True,
    )
    assert result["complete"] is True, result["problems"]
    assert result["coverage_percent"] == 100.0
    assert result["workloads_to_restart"] == []
