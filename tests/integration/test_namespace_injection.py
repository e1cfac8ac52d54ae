"""Step 2 against the real local cluster: namespace_injection, sidecar_status, workload_restart.

Runs after test_istio_install_minimal.py (same session cluster), which leaves a ready istiod.
"""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import run_playbook


def deployment(namespace: str, name: str, replicas: int = 1, annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


@pytest.fixture
def namespace(kubectl):
    """A fresh namespace with the given Deployments, all Available; deleted afterwards."""
    created = []

    def make(*deployments: dict, labels: dict | None = None) -> str:
        name = f"inj-{uuid.uuid4().hex[:6]}"
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        items = [ns] + [dict(d, metadata=dict(d["metadata"], namespace=name)) for d in deployments]
        kubectl.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        created.append(name)
        for d in deployments:
            kubectl.run("-n", name, "rollout", "status", f"deployment/{d['metadata']['name']}", "--timeout=120s")
        return name

    yield make
    for name in created:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def pods(kubectl, namespace):
    return kubectl.json("-n", namespace, "get", "pods")["items"]


def has_proxy(pod):
    spec = pod["spec"]
    return "istio-proxy" in [c["name"] for c in spec["containers"] + spec.get("initContainers", [])]


def labels(kubectl, namespace):
    return kubectl.json("get", "namespace", namespace)["metadata"].get("labels", {})


def options(cluster, *namespaces, **extra):
    return {"namespace_injection_namespaces": list(namespaces), "namespace_injection_timeout": 90, **extra}


def test_protected_namespaces_refused_and_nothing_labeled(cluster, kubectl, tmp_path, namespace):
    marked = namespace(deployment("x", "web"), labels={"meshops.istio/protected": "true"})
    result = run_playbook("namespace_injection.yml", options(cluster, "kube-system"), tmp_path)
    assert result.rc != 0
    assert "Namespaces kube-system are protected" in result.out
    result = run_playbook("namespace_injection.yml", options(cluster, marked), tmp_path)
    assert result.rc != 0
    assert f"Namespace {marked} is labeled meshops.istio/protected=true (protected)" in result.out
    assert "istio-injection" not in labels(kubectl, marked)
    assert "istio-injection" not in labels(kubectl, "kube-system")


def test_missing_namespace_refused(cluster, kubectl, tmp_path):
    result = run_playbook("namespace_injection.yml", options(cluster, "no-such-namespace"), tmp_path)
    assert result.rc != 0
    assert "Namespaces no-such-namespace do not exist" in result.out
    assert "namespace_injection_create_namespaces" in result.out
    assert kubectl.run("get", "namespace", "no-such-namespace", check=False).returncode != 0


def test_opted_out_pods_are_not_missing_and_injection_is_idempotent(cluster, kubectl, tmp_path, namespace):
    name = namespace(
        deployment("x", "web", replicas=2),
        deployment("x", "batch", annotations={"sidecar.istio.io/inject": "false"}),
    )
    before = {p["metadata"]["name"] for p in pods(kubectl, name) if p["metadata"]["labels"]["app"] == "batch"}
    first = run_playbook("namespace_injection.yml", options(cluster, name), tmp_path)
    assert first.rc == 0, first.out[-4000:]
    assert labels(kubectl, name)["istio-injection"] == "enabled"
    for pod in pods(kubectl, name):
        if pod["metadata"]["labels"]["app"] == "web":
            assert has_proxy(pod), pod["metadata"]["name"]
        else:
            assert not has_proxy(pod)
    after = {p["metadata"]["name"] for p in pods(kubectl, name) if p["metadata"]["labels"]["app"] == "batch"}
    assert after == before, "the opted-out workload must not be restarted"
    second = run_playbook("namespace_injection.yml", options(cluster, name), tmp_path)
    assert second.rc == 0, second.out[-3000:]
    assert second.recap()["changed"] == 0, second.out[-3000:]
    check = run_playbook("namespace_injection.yml", options(cluster, name), tmp_path, check=True)
    assert check.rc == 0 and check.recap()["changed"] == 0, check.out[-3000:]


def test_check_mode_reports_and_changes_nothing(cluster, kubectl, tmp_path, namespace):
    name = namespace(deployment("x", "web"))
    before = [p["metadata"]["name"] for p in pods(kubectl, name)]
    result = run_playbook("namespace_injection.yml", options(cluster, name), tmp_path, check=True)
    assert result.rc == 0, result.out[-3000:]
    assert f"Check mode: would label {name} and restart web" in result.out
    assert "istio-injection" not in labels(kubectl, name)
    assert [p["metadata"]["name"] for p in pods(kubectl, name)] == before


def test_istiod_stopped_stops_before_labeling(cluster, kubectl, tmp_path, namespace):
    name = namespace(deployment("x", "web"))
    kubectl.run("-n", "istio-system", "scale", "deployment", "istiod", "--replicas=0")
    try:
        kubectl.run("-n", "istio-system", "rollout", "status", "deployment/istiod", "--timeout=60s")
        result = None
        for _attempt in range(20):
            result = run_playbook("namespace_injection.yml", options(cluster, name), tmp_path)
            if "does not answer" in result.out:
                break
        assert result.rc != 0
        assert "MutatingWebhookConfiguration istio-sidecar-injector does not answer" in result.out
        assert "Nothing was labeled or restarted." in result.out
        assert "istio-injection" not in labels(kubectl, name)
    finally:
        kubectl.run("-n", "istio-system", "scale", "deployment", "istiod", "--replicas=1")
        ready = run_playbook(
            "readiness.yml",
            {
                "meshops_kubeconfig": cluster["kubeconfig"],
                "meshops_report_path": str(tmp_path / "ready.json"),
                "meshops_wait": True,
                "meshops_wait_timeout": 120,
            },
            tmp_path,
        )
        assert ready.rc == 0, ready.out[-2000:]


def test_workload_that_never_becomes_ready_is_rolled_back(cluster, kubectl, tmp_path, namespace):
    # The injected sidecar asks for 1000 CPUs: the restarted pods can never be scheduled. The restart waits out the
    # whole timeout for them, so it is short; the rollback's restart (pods kwok starts at once) has the same one.
    name = namespace(
        deployment("x", "greedy", annotations={"sidecar.istio.io/proxyCPU": "1000"}),
        deployment("x", "web"),
    )
    result = run_playbook("namespace_injection.yml", options(cluster, name, namespace_injection_timeout=15), tmp_path)
    assert result.rc != 0
    assert f"Enabling injection in {name} failed" in result.out, result.out[-4000:]
    assert "greedy" in result.out
    assert "Rolled back: the injection label was removed" in result.out
    assert "istio-injection" not in labels(kubectl, name)
    kubectl.run("-n", name, "rollout", "status", "deployment/greedy", "--timeout=120s")
    kubectl.run("-n", name, "rollout", "status", "deployment/web", "--timeout=120s")
    for pod in pods(kubectl, name):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        assert not has_proxy(pod), f"{pod['metadata']['name']} still has a sidecar after rollback"


def test_ten_deployments_enabled_and_timed(cluster, kubectl, tmp_path, namespace):
    name = namespace(*[deployment("x", f"svc-{i}") for i in range(10)])
    first = run_playbook("namespace_injection.yml", options(cluster, name, namespace_injection_batch_size=5), tmp_path)
    assert first.rc == 0, first.out[-4000:]
    assert all(has_proxy(p) for p in pods(kubectl, name) if not p["metadata"].get("deletionTimestamp"))
    second = run_playbook("namespace_injection.yml", options(cluster, name), tmp_path)
    assert second.rc == 0 and second.recap()["changed"] == 0, second.out[-3000:]
    print(f"\n10 Deployments: enable injection {first.seconds:.1f}s, no-op rerun {second.seconds:.1f}s")


PENDING = "meshops.istio/injection-pending"


def annotations(kubectl, namespace):
    return kubectl.json("get", "namespace", namespace)["metadata"].get("annotations", {})


def test_failed_gate_rolls_back_only_what_no_gate_confirmed(cluster, kubectl, tmp_path, namespace):
    # An earlier run injected `healthy` and its gate passed: confirmed, no pending mark left.
    healthy = namespace(deployment("x", "web"))
    first = run_playbook("namespace_injection.yml", options(cluster, healthy), tmp_path)
    assert first.rc == 0, first.out[-3000:]
    assert labels(kubectl, healthy)["istio-injection"] == "enabled"
    assert PENDING not in annotations(kubectl, healthy)
    healthy_pods = sorted(p["metadata"]["name"] for p in pods(kubectl, healthy))

    # `killed` was labeled by a run that died before its gate (the label and the pending mark, as that run's field
    # manager sets them); `greedy` is new and its restarted pods can never be scheduled.
    killed = namespace(deployment("x", "web"))
    mark = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": killed, "labels": {"istio-injection": "enabled"}, "annotations": {PENDING: "true"}},
    }
    kubectl.run("apply", "--server-side", "--field-manager=meshops-istio-injection", "-f", "-", stdin=json.dumps(mark))
    greedy = namespace(deployment("x", "greedy", annotations={"sidecar.istio.io/proxyCPU": "1000"}))

    result = run_playbook(
        "namespace_injection.yml", options(cluster, healthy, killed, greedy, namespace_injection_timeout=15), tmp_path
    )
    assert result.rc != 0
    assert f"Rolled back: the injection label was removed from {killed}, {greedy}" in result.out, result.out[-3000:]
    assert f"Left labeled, because an earlier run injected them and their gate passed then: {healthy}." in result.out
    # The earlier, gated injection is untouched: still labeled, its pods never restarted.
    assert labels(kubectl, healthy)["istio-injection"] == "enabled"
    assert sorted(p["metadata"]["name"] for p in pods(kubectl, healthy)) == healthy_pods
    for name in (killed, greedy):
        assert "istio-injection" not in labels(kubectl, name), name
        assert PENDING not in annotations(kubectl, name), name
    kubectl.run("-n", greedy, "rollout", "status", "deployment/greedy", "--timeout=120s")
    for pod in pods(kubectl, greedy):
        if not pod["metadata"].get("deletionTimestamp"):
            assert not has_proxy(pod), f"{pod['metadata']['name']} still has a sidecar after rollback"


def restricted(workload: dict) -> dict:
    """The Deployment made to pass Pod Security 'restricted' as it is (its sidecar will not)."""
    spec = workload["spec"]["template"]["spec"]
    spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    for container in spec["containers"]:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return workload


def test_a_namespace_whose_pods_admission_would_refuse_once_injected_is_not_labeled(
    cluster, kubectl, tmp_path, namespace
):
    """Pod Security 'restricted' refuses istio-init's NET_ADMIN/NET_RAW: the server-side dry run of the injected
    pod template finds it before the label is set, and the message names the workload and the admission reason."""
    guarded = namespace(restricted(deployment("x", "web")), labels={"pod-security.kubernetes.io/enforce": "restricted"})

    # The namespace's own state (the cluster-wide snapshot would also see earlier tests' namespaces vanish).
    def state():
        deployments = kubectl.json("-n", guarded, "get", "deployments")["items"]
        return (
            labels(kubectl, guarded),
            sorted((d["metadata"]["name"], d["metadata"]["generation"]) for d in deployments),
            sorted((p["metadata"]["name"], has_proxy(p)) for p in pods(kubectl, guarded)),
        )

    before = state()
    result = run_playbook("namespace_injection.yml", options(cluster, guarded), tmp_path)
    assert result.rc != 0
    assert f"Deployment {guarded}/web would not be admitted once injected" in result.out, result.out[-3000:]
    assert "violates PodSecurity" in result.out, result.out[-3000:]
    assert "Nothing was labeled or restarted" in result.out
    assert "istio-injection" not in labels(kubectl, guarded)
    assert state() == before


def test_a_cronjob_in_a_namespace_is_reported(cluster, kubectl, tmp_path, namespace):
    ns = namespace(deployment("x", "web"))
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": ns},
        "spec": {
            "schedule": "0 0 1 1 *",
            "suspend": True,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "job", "image": "registry.k8s.io/pause:3.10"}],
                        }
                    }
                }
            },
        },
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(cron))
    result = run_playbook("namespace_injection.yml", options(cluster, ns), tmp_path)
    assert result.rc == 0, result.out[-3000:]
    assert f"CronJob {ns}/nightly is a CronJob: with a classic sidecar its pods keep running" in result.out
    assert labels(kubectl, ns).get("istio-injection") == "enabled"
