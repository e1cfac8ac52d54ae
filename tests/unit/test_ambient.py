"""Ambient enrollment decisions (module_utils/ambient.py), the guard in ambient mode, the telemetry gate's count of
pods in the mesh, and the local cluster's istio-cni stand-in rules."""

import importlib
import sys
from pathlib import Path

from ansible_collections.meshops.istio.plugins.filter.injection import injection_label_problems
from ansible_collections.meshops.istio.plugins.module_utils import ambient, telemetry

REDIRECTED = {"ambient.istio.io/redirection": "enabled"}


def ns(name="shop", **labels):
    return {"metadata": {"name": name, "labels": labels}}


def pod(name, namespace="shop", annotations=None, labels=None, containers=("app",), ready=True, **spec):
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": annotations or {},
            "labels": labels or {},
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{name}-rs", "controller": True}],
        },
        "spec": {"containers": [{"name": c} for c in containers], "nodeName": "node-0", **spec},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


RS = [{"metadata": {"name": "web-rs", "ownerReferences": [{"kind": "Deployment", "name": "web"}]}}]
AMBIENT_NS = ns(**{"istio.io/dataplane-mode": "ambient"})


def test_a_pod_is_enrolled_only_when_redirected_and_served_over_hbone_by_istiod():
    pods = [pod("web", annotations=REDIRECTED), pod("api", annotations=REDIRECTED), pod("new")]
    report = ambient.namespace_report(AMBIENT_NS, pods, RS, captured={"shop/web"})
    assert (report["enrolled"], report["eligible"], report["in_mesh"]) == (1, 3, 1)
    assert report["not_redirected"] == ["new"] and report["not_seen_by_istiod"] == ["api"]
    assert not report["complete"] and report["workloads_to_restart"] == []
    assert any("not redirected to ztunnel" in p and "new" in p for p in report["problems"])
    assert any("istiod does not serve 1 redirected pods" in p for p in report["problems"])
    done = ambient.namespace_report(AMBIENT_NS, pods[:2], RS, captured={"shop/web", "shop/api"})
    assert done["complete"] and done["problems"] == [] and done["coverage_percent"] == 100.0


def test_opted_out_and_host_network_pods_are_not_eligible_and_sidecar_pods_are_to_restart():
    pods = [
        pod("out", labels={"istio.io/dataplane-mode": "none"}),
        pod("host", hostNetwork=True),
        pod("web", containers=("app", "istio-proxy")),
    ]
    report = ambient.namespace_report(AMBIENT_NS, pods, RS, captured=set())
    assert (report["opted_out"], report["host_network"], report["with_proxy"], report["eligible"]) == (1, 1, 1, 1)
    assert report["workloads_to_restart"] == [{"kind": "Deployment", "namespace": "shop", "name": "web"}]
    assert not report["complete"]


def test_an_unlabeled_namespace_is_never_complete_and_istiods_index_unread_fails_the_coverage():
    read = {"name": "shop", "namespace": ns(), "pods": [], "replicasets": []}
    assert not ambient.coverage([read], set(), require_labeled=False)["namespaces"][0]["complete"]
    labeled = {**read, "namespace": AMBIENT_NS, "pods": [pod("web", annotations=REDIRECTED)]}
    assert ambient.needs_index([labeled]) and not ambient.needs_index([read])
    out = ambient.coverage([labeled], None, require_labeled=True, index_problem="Cannot read istiod's index.")
    assert not out["complete"] and out["problems"][0] == "Cannot read istiod's index."
    unlabeled = ambient.coverage([read], set(), require_labeled=True)
    assert "is not labeled for ambient mode (istio.io/dataplane-mode=ambient)" in unlabeled["problems"][0]


def test_captured_pods_reads_hbone_workloads_of_istiods_index():
    index = {
        "workloads": [
            {"namespace": "shop", "name": "web", "tunnelProtocol": "HBONE", "workloadType": "POD"},
            {"namespace": "shop", "name": "api"},
            {"namespace": "shop", "name": "sidecar", "tunnelProtocol": "HBONE", "nativeTunnel": True},
        ]
    }
    assert ambient.captured_pods(index) == {"shop/web"}
    assert ambient.captured_pods(b'{"workloads": []}') == set()


def test_guard_refuses_a_sidecar_namespace_in_ambient_mode_and_an_ambient_one_in_sidecar_mode():
    sidecar_ns = ns(**{"istio-injection": "enabled"})
    in_ambient = ambient.namespace_report(sidecar_ns, [], [], set())
    problems = injection_label_problems([in_ambient], "meshops.istio/protected", ["istio-injection", "istio.io/rev"])
    assert problems and "is in sidecar mode (istio-injection=enabled)" in problems[0]
    assert (
        injection_label_problems([ambient.namespace_report(AMBIENT_NS, [], [], set())], "p", ["istio-injection"]) == []
    )
    sidecar_report = {"namespace": "shop", "labels": AMBIENT_NS["metadata"]["labels"], "label": {"mode": "none"}}
    problems = injection_label_problems([sidecar_report], "p", ["istio.io/rev", "istio.io/dataplane-mode"])
    assert problems and "is in ambient mode (istio.io/dataplane-mode=ambient)" in problems[0]
    assert injection_label_problems([sidecar_report], "p", "istio.io/rev") == []


def test_telemetry_counts_enrolled_pods_and_not_ztunnel_as_the_mesh():
    ztunnel = pod(
        "ztunnel-x",
        "istio-system",
        labels={"app": "ztunnel", "istio.io/dataplane-mode": "none"},
        containers=("istio-proxy",),
    )
    counts = telemetry.sidecar_pods([ztunnel, pod("web", annotations=REDIRECTED), pod("plain")])
    assert counts == {"shop": 1}


def test_the_local_cni_stand_in_enrolls_by_the_agents_rules():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "local-cluster"))
    cni = importlib.import_module("localcluster.cni")
    nodes = {"node-0"}
    assert cni.enrolled(pod("web"), {"shop"}, nodes)
    assert not cni.enrolled(pod("web"), set(), nodes)
    assert cni.enrolled(pod("web", labels={"istio.io/dataplane-mode": "ambient"}), set(), nodes)
    assert not cni.enrolled(pod("web", labels={"istio.io/dataplane-mode": "none"}), {"shop"}, nodes)
    assert not cni.enrolled(pod("web", containers=("app", "istio-proxy")), {"shop"}, nodes)
    assert not cni.enrolled(pod("web"), {"shop"}, {"node-1"})
    assert not cni.enrolled(pod("web", hostNetwork=True), {"shop"}, nodes)


def test_migration_refuses_protected_namespaces_and_namespaces_in_neither_mode():
    from ansible_collections.meshops.istio.plugins.filter.injection import migration_problems

    mark = "meshops.istio/migration-pending"
    sidecar = ambient.namespace_report(ns("a", **{"istio-injection": "enabled"}), [], [], set())
    plain = ambient.namespace_report(ns("b"), [], [], set())
    killed = {**plain, "annotations": {mark: "ambient"}}
    protected = ambient.namespace_report(ns("c", **{"istio-injection": "enabled", "p": "true"}), [], [], set())
    problems = migration_problems([sidecar, plain, killed, protected], "ambient", "p", mark)
    assert len(problems) == 2
    assert problems[0].startswith("Namespace b is in neither mode") and "Namespace c is labeled p=true" in problems[1]
    back = {"namespace": "d", "labels": {"istio.io/dataplane-mode": "ambient"}, "label": {"enabled": False}}
    assert migration_problems([back], "sidecar", "p", mark) == []


def test_the_uninstall_counts_ambient_namespaces_as_still_in_the_mesh():
    from ansible_collections.meshops.istio.plugins.filter.injection import injected_namespaces

    namespaces = [ns("a", **{"istio-injection": "enabled"}), AMBIENT_NS, ns("c", **{"istio.io/dataplane-mode": "none"})]
    assert injected_namespaces(namespaces) == ["a"]
    assert injected_namespaces(namespaces, ambient=True) == ["a", "shop"]


def test_mtls_readiness_judges_ambient_namespaces_by_enrollment_reading_istiod_once():
    """Step 5 in ambient mode: an enrolled namespace is ready, one whose pods istiod does not serve yet is not, and
    the sentences speak of enrollment, not sidecars."""
    from ansible_collections.meshops.istio.plugins.module_utils import mtls
    from ansible_collections.meshops.istio.plugins.modules import mtls_readiness

    contents = {
        "done": {"namespace": ns("done", **{"istio.io/dataplane-mode": "ambient"}), "pods": [pod("web", "done")]},
        "late": {"namespace": ns("late", **{"istio.io/dataplane-mode": "ambient"}), "pods": [pod("api", "late")]},
    }
    for read in contents.values():
        read["pods"][0]["metadata"]["annotations"] = dict(REDIRECTED)
    index = b'{"workloads": [{"namespace": "done", "name": "web", "tunnelProtocol": "HBONE"}]}'
    reads = []

    class Kube:
        def namespace_contents(self, names):
            return [{"name": n, "replicasets": [], **contents[n]} for n in names]

        def service_proxy_get(self, namespace, service, port, path, params):
            reads.append((namespace, service, port, path))
            return index

    params = {"dataplane_mode": "ambient", "istiod_url": "", "istio_namespace": "istio-system", "revision": ""}
    coverage = mtls_readiness.data_plane(Kube(), params, ["done", "late"])
    assert reads == [("istio-system", "istiod", 15014, "debug/ambientz")]
    assert coverage["done"]["namespaces"][0]["complete"] and not coverage["done"]["problems"]
    late = coverage["late"]
    assert not late["namespaces"][0]["complete"]
    assert "istiod does not serve 1 redirected pods over HBONE yet (api)" in late["problems"][0]

    ready = mtls.namespace_readiness(
        "late", late["namespaces"][0], [], [], None, [], [], "PERMISSIVE", "3600s", "ambient"
    )
    assert not ready["ready_for_strict"]
    assert "not every eligible pod is enrolled in ambient mode: finish the enrollment" in ready["problems"][0]
    samples = [{"labels": {"destination_workload_namespace": "done", "source_workload": "unknown"}, "value": 3}]
    plaintext = mtls.plaintext_sources(samples, "done", 5, "ambient")
    assert plaintext[0]["source"] == "unknown (a client outside the mesh)"
    strict = mtls.namespace_readiness(
        "done", {"complete": True}, [], plaintext, None, [], [], "PERMISSIVE", "1h", "ambient"
    )
    assert "Enroll those clients' namespaces (istio.io/dataplane-mode=ambient)" in strict["problems"][0]
