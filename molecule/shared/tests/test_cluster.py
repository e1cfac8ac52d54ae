"""Verify: the cluster is a real, healthy API and the sample application is Available."""

SAMPLE_DEPLOYMENTS = {
    ("sample-frontend", "web"): 2,
    ("sample-frontend", "catalog"): 1,
    ("sample-backend", "api"): 2,
    ("sample-backend", "ledger"): 1,
}


def test_api_server_reports_expected_version(host, kube):
    expected = host.ansible.get_variables().get("meshops_expected_server_minor")
    version = kube("version", "-o", "json")["serverVersion"]
    assert version["major"] == "1"
    assert version["gitVersion"].startswith("v1."), version
    if expected:
        assert version["minor"].rstrip("+") == str(expected), version


def test_readyz_answers_ok(kube):
    assert kube("get", "--raw", "/readyz", parse=False).strip() == "ok"


def test_nodes_are_ready(kube):
    nodes = kube("get", "nodes", "-o", "json")["items"]
    assert nodes, "the cluster has no nodes"
    for node in nodes:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions.get("Ready") == "True", f"node {node['metadata']['name']} is not Ready"


def test_sample_deployments_available(kube):
    for (namespace, name), replicas in SAMPLE_DEPLOYMENTS.items():
        dep = kube("-n", namespace, "get", "deployment", name, "-o", "json")
        status = dep["status"]
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        assert conditions.get("Available") == "True", f"{namespace}/{name} is not Available: {status}"
        assert status.get("observedGeneration") == dep["metadata"]["generation"], f"{namespace}/{name}"
        assert status.get("availableReplicas") == replicas, f"{namespace}/{name}: {status}"


def test_sample_pods_are_scheduled_on_kwok_nodes(kube):
    nodes = {n["metadata"]["name"] for n in kube("get", "nodes", "-o", "json")["items"]}
    pods = kube("get", "pods", "-l", "version=v1", "-A", "-o", "json")["items"]
    assert len(pods) == sum(SAMPLE_DEPLOYMENTS.values())
    for pod in pods:
        assert pod["spec"].get("nodeName") in nodes, pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
