"""The telemetry gate's decisions (module_utils/telemetry.py) and the Prometheus answer parsing."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils.prometheus import (
    Prometheus,
    PrometheusError,
    parse_vector,
    sum_by,
)
from ansible_collections.meshops.istio.plugins.module_utils.telemetry import addon_report, metrics_report, sidecar_pods


def pod(namespace, sidecar=True, phase="Running", deleting=False):
    containers = [{"name": "app"}] + ([{"name": "istio-proxy"}] if sidecar else [])
    meta = {"name": "p", "namespace": namespace}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": containers}, "status": {"phase": phase}}


def deployment(available="True", generation=2, observed=2, message="ok", updated=1, ready=1):
    return {
        "metadata": {"name": "kiali", "generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": observed,
            "replicas": 1,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": available, "message": message}],
        },
    }


def test_sidecar_pods_counts_live_injected_pods_per_namespace():
    pods = [
        pod("a"),
        pod("a"),
        pod("a", sidecar=False),
        pod("b", phase="Succeeded"),
        pod("b", deleting=True),
        pod("c"),
    ]
    assert sidecar_pods(pods) == {"a": 2, "c": 1}


def test_addon_available():
    report = addon_report("kiali", "istio-system", "kiali", deployment())
    assert report["available"] is True and "problem" not in report


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (None, "Deployment istio-system/kiali of the kiali addon does not exist"),
        (deployment(available="False", message="0/1 ready"), "is not ready (not Available (0/1 ready))"),
        # Available is not enough: every replica must run the current spec and be available.
        (deployment(updated=0), "is not ready (0/1 replicas updated, 0 unavailable, 1 old replicas still running)"),
        (deployment(ready=0), "is not ready (0/1 updated replicas available)"),
        (deployment(observed=1), "has not rolled out its latest spec yet"),
    ],
)
def test_addon_problems(obj, fragment):
    report = addon_report("kiali", "istio-system", "kiali", obj)
    assert report["available"] is False
    assert fragment in report["problem"]


def test_metrics_report_names_namespaces_with_sidecars_but_no_series():
    reports, problems = metrics_report({"shop": 3, "pay": 1}, [], {"shop": 4}, "Prometheus at http://p")
    assert reports == [
        {"namespace": "pay", "pods_with_sidecar": 1, "series": 0, "has_metrics": False},
        {"namespace": "shop", "pods_with_sidecar": 3, "series": 4, "has_metrics": True},
    ]
    assert len(problems) == 1
    assert problems[0].startswith("Namespace pay has 1 pod(s) with sidecars but Prometheus at http://p has no")


def test_metrics_report_for_listed_namespace_without_sidecars():
    reports, problems = metrics_report({}, ["shop"], {}, "P")
    assert reports == [{"namespace": "shop", "pods_with_sidecar": 0, "series": 0, "has_metrics": False}]
    assert len(problems) == 1 and problems[0].startswith("Namespace shop has no pods with sidecars")


def test_metrics_report_with_no_sidecars_anywhere_is_not_ready():
    reports, problems = metrics_report({}, [], {}, "P")
    assert reports == [] and "no namespace has pods with sidecars" in problems[0]


def test_parse_vector_and_sum_by():
    body = (
        '{"status":"success","data":{"resultType":"vector","result":['
        '{"metric":{"ns":"a"},"value":[1,"2"]},{"metric":{"ns":"a"},"value":[1,"3"]},'
        '{"metric":{},"value":[1,"7"]},{"metric":{"ns":"b"},"value":[1,"NaN"]}]}}'
    )
    samples = parse_vector(body, "P")
    assert sum_by(samples, "ns")["a"] == 5.0
    assert len(samples) == 4


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("<html>login</html>", "did not answer with Prometheus JSON"),
        ('{"status":"error","error":"parse error at char 3"}', "refused the query: parse error at char 3"),
    ],
)
def test_parse_vector_errors_name_where(body, fragment):
    with pytest.raises(PrometheusError) as err:
        parse_vector(body, "Prometheus at http://p")
    assert str(err.value).startswith("Prometheus at http://p")
    assert fragment in str(err.value)


def test_prometheus_needs_a_url_or_a_service():
    with pytest.raises(PrometheusError, match="no Prometheus given"):
        Prometheus({"prometheus_url": "", "prometheus_service": None})
    assert Prometheus({"prometheus_url": "http://p/"}).where == "Prometheus at http://p"
    svc = Prometheus({"prometheus_service": {"namespace": "istio-system", "name": "prometheus", "port": 9090}})
    assert svc.where == "Prometheus Service istio-system/prometheus:9090 (through the API server)"
