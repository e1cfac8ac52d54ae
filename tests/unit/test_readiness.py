"""Readiness decisions over API objects recorded from the local cluster (Istio 1.30, Kubernetes 1.36)."""

import copy
import json
from pathlib import Path

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import readiness as r

FIXTURES = Path(__file__).parent / "fixtures"


def load(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def crd():
    return load("crd_virtualservices_established.json")


@pytest.fixture
def istiod():
    return load("deployment_istiod_available.json")


@pytest.fixture
def mwc():
    return load("mwc_istio_sidecar_injector.json")


@pytest.fixture
def vwcs():
    return load("vwcs_istio.json")


def all_core_crds(template):
    out = []
    for name in r.ISTIO_CORE_CRDS:
        obj = copy.deepcopy(template)
        obj["metadata"]["name"] = name
        out.append(obj)
    return out


def test_recorded_crds_established(crd):
    report = r.crd_report(all_core_crds(crd))
    assert report["problems"] == []
    assert all(i["established"] for i in report["items"])


def test_non_istio_crds_ignored(crd):
    other = copy.deepcopy(crd)
    other["metadata"]["name"] = "widgets.example.com"
    report = r.crd_report([*all_core_crds(crd), other])
    assert "widgets.example.com" not in [i["name"] for i in report["items"]]


def test_no_crds_says_install_base():
    report = r.crd_report([])
    assert len(report["problems"]) == 1
    assert "install Istio's base chart" in report["problems"][0]


def test_missing_and_not_established_crds_named(crd):
    crds = all_core_crds(crd)
    crds = [c for c in crds if c["metadata"]["name"] != "sidecars.networking.istio.io"]
    vs = next(c for c in crds if c["metadata"]["name"] == "virtualservices.networking.istio.io")
    for cond in vs["status"]["conditions"]:
        if cond["type"] == "Established":
            cond["status"] = "False"
            cond["message"] = "not all names are accepted"
    problems = r.crd_report(crds)["problems"]
    assert any("sidecars.networking.istio.io are missing" in p for p in problems)
    assert any(
        "virtualservices.networking.istio.io is not Established (not all names are accepted)" in p for p in problems
    )


def test_recorded_istiod_available(istiod):
    report = r.istiod_report([istiod], "istio-system")
    assert report["problems"] == []
    item = report["items"][0]
    assert item["available"] and item["revision"] == "default"
    assert item["version"] == "1.30.4"
    assert item["install_method"] == "helm"


def test_istiod_at_old_generation_is_not_ready(istiod):
    istiod["metadata"]["generation"] = istiod["status"]["observedGeneration"] + 1
    problems = r.istiod_report([istiod], "istio-system")["problems"]
    assert len(problems) == 1
    assert "Deployment istio-system/istiod is not ready" in problems[0]
    assert "has not observed generation" in problems[0]
    assert "kubectl -n istio-system describe deployment istiod" in problems[0]


def test_istiod_unavailable_reports_condition_message(istiod):
    for cond in istiod["status"]["conditions"]:
        if cond["type"] == "Available":
            cond["status"] = "False"
            cond["message"] = "Deployment does not have minimum availability."
    istiod["status"]["availableReplicas"] = 0
    problem = r.istiod_report([istiod], "istio-system")["problems"][0]
    assert "Deployment does not have minimum availability." in problem
    assert "0/1 updated replicas available" in problem


def test_no_istiod_says_where_it_looked():
    problem = r.istiod_report([], "mesh-system")["problems"][0]
    assert "no istiod Deployment (label app=istiod) in namespace mesh-system" in problem


def test_recorded_webhooks_have_ca_and_targets(mwc, vwcs):
    report = r.webhook_report([mwc], vwcs)
    assert report["problems"] == []
    names = [(i["kind"], i["name"]) for i in report["items"]]
    assert ("MutatingWebhookConfiguration", "istio-sidecar-injector") in names
    assert ("ValidatingWebhookConfiguration", "istio-validator-istio-system") in names
    injector = next(i for i in report["items"] if i["name"] == "istio-sidecar-injector")
    assert all(h["target"] == "https://localhost:15017/inject" for h in injector["webhooks"])
    assert all(h["failure_policy"] == "Fail" for h in injector["webhooks"])


def test_webhook_without_ca_bundle_named(mwc, vwcs):
    for hook in mwc["webhooks"]:
        hook["clientConfig"].pop("caBundle", None)
    problems = r.webhook_report([mwc], vwcs)["problems"]
    assert len(problems) == 1
    assert problems[0].startswith("MutatingWebhookConfiguration istio-sidecar-injector has no CA bundle on ")


def test_missing_webhook_configurations_reported():
    problems = r.webhook_report([], [])["problems"]
    assert any("no sidecar injector MutatingWebhookConfiguration" in p for p in problems)
    assert any("no Istio ValidatingWebhookConfiguration" in p for p in problems)


def test_other_revision_filtered_out(mwc, vwcs):
    report = r.webhook_report([mwc], vwcs, revision="canary")
    assert [i["name"] for i in report["items"]] == ["istiod-default-validator"]


def test_recorded_dry_run_pod_was_injected():
    probe = r.injection_probe_result("istio-system", load("pod_probe_injected.json"), None)
    assert probe["injected"] and probe["answered"]
    assert r.injection_problem(probe, {"items": []}) is None


def test_uninjected_pod_or_error_names_webhook_and_target(mwc, vwcs):
    webhooks = r.webhook_report([mwc], vwcs)
    plain = {"spec": {"containers": [{"name": "probe"}]}}
    probe = r.injection_probe_result("istio-system", plain, None)
    assert not probe["injected"]
    problem = r.injection_problem(probe, webhooks)
    assert problem.startswith("MutatingWebhookConfiguration istio-sidecar-injector does not answer")
    err = 'failed calling webhook "object.sidecar-injector.istio.io": connect: connection refused'
    problem = r.injection_problem(r.injection_probe_result("istio-system", None, err), webhooks)
    assert "connection refused" in problem
    assert "https://localhost:15017/inject" in problem


def test_a_probe_refused_by_admission_means_the_injector_answered(mwc, vwcs):
    webhooks = r.webhook_report([mwc], vwcs)
    psa = 'pods "p" is forbidden: violates PodSecurity "restricted:latest": container "istio-init" must not ...'
    probe = r.injection_probe_result("shop", None, psa, refused=True)
    assert (probe["answered"], probe["injected"], probe["admitted"]) == (True, True, False)
    assert probe["message"].startswith("the injector answered, but admission refused the injected pod: ")
    assert r.injection_problem(probe, webhooks) is None
    # The injector's own webhook refusing, or an error that is not a refusal (RBAC, unreachable): not answered.
    own = r.injection_probe_result("shop", None, 'admission webhook "namespace.sidecar-injector.istio.io" denied', True)
    assert not own["answered"] and r.injection_problem(own, webhooks)
    rbac = r.injection_probe_result("shop", None, "forbidden to dry-run create Pod shop/p (User cannot ...)", False)
    assert not rbac["answered"]
    # Refused for a reason that names nothing the injector adds (a policy requiring labels): no evidence it ran.
    policy = 'admission webhook "validate.kyverno.svc" denied the request: label "team" is required'
    unrelated = r.injection_probe_result("shop", None, policy, refused=True)
    assert not unrelated["answered"] and r.injection_problem(unrelated, webhooks)


def test_the_probe_pod_passes_pod_security_restricted_by_itself():
    spec = r.probe_pod("shop")["spec"]
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"]
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def test_probe_pod_labels_follow_revision():
    assert r.probe_pod("ns")["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert r.probe_pod("ns", "canary")["metadata"]["labels"]["istio.io/rev"] == "canary"


def test_validation_probe_requires_istio_denial(vwcs):
    denied = 'admission webhook "validation.istio.io" denied the request: configuration is invalid'
    assert r.validation_probe_result(denied, [])["answered"]
    schema_error = 'The VirtualService "x" is invalid: spec.http[0].timeout: Invalid value'
    webhooks = r.webhook_report([], vwcs)
    probe = r.validation_probe_result(schema_error, ["istio-validator-istio-system"])
    assert not probe["answered"]
    assert "istio-validator-istio-system" in r.validation_problem(probe, webhooks)
    accepted = r.validation_probe_result(None, [])
    assert "was accepted" in accepted["message"]


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("docker.io/istio/pilot:1.30.4", "1.30.4"),
        ("gcr.io/istio-release/pilot:1.30.4-distroless", "1.30.4"),
        ("registry:5000/istio/pilot:1.29.0@sha256:abc", "1.29.0"),
        ("docker.io/istio/pilot", None),
        ("", None),
    ],
)
def test_version_from_image(image, version):
    assert r.version_from_image(image) == version


def test_install_method_detection(istiod):
    assert r.install_method(istiod) == "helm"
    labelled = {"metadata": {"labels": {"meshops.istio/install-method": "istioctl"}}}
    assert r.install_method(labelled) == "istioctl"
    assert r.install_method({"metadata": {"labels": {"install.operator.istio.io/owning-resource": "iop"}}}) == (
        "istioctl"
    )
    assert r.install_method({"metadata": {}}) == "unknown"


def test_summary_collects_everything(istiod):
    ok = r.summarize({"problems": []}, {"problems": []}, extra_problems=[None])
    assert ok == {"ready": True, "problems": []}
    bad = r.summarize({"problems": ["a"]}, extra_problems=["b", None])
    assert bad == {"ready": False, "problems": ["a", "b"]}


# ------------------------------------------------------------------ ambient mode


def gateway_crd(name, version="v1.6.0", channel="standard"):
    annotations = {r.GATEWAY_API_BUNDLE: version, r.GATEWAY_API_CHANNEL: channel} if version else {}
    return {"metadata": {"name": f"{name}.gateway.networking.k8s.io", "annotations": annotations}}


def test_gateway_api_report_takes_the_gateway_crds_bundle_version_and_channel():
    crds = [
        gateway_crd("httproutes"),
        gateway_crd("gateways", "v1.5.1", "experimental"),
        {"metadata": {"name": "x.io"}},
    ]
    assert r.gateway_api_report(crds) == {
        "installed": True,
        "bundle_version": "v1.5.1",
        "channel": "experimental",
        "crds": ["gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"],
    }
    assert r.gateway_api_report([{"metadata": {"name": "x.io"}}])["installed"] is False


@pytest.mark.parametrize(
    ("crds", "problem"),
    [
        ([], None),
        ([gateway_crd("gateways")], None),
        ([gateway_crd("gateways", "v1.5.1")], "Gateway API CRDs v1.5.1 (standard channel) are installed"),
        ([gateway_crd("gateways", channel="experimental")], "v1.6.0 (experimental channel) are installed"),
        ([gateway_crd("gateways", version="")], "Gateway API CRDs (no bundle-version annotation) are installed"),
    ],
)
def test_gateway_api_problems_refuse_another_version_or_channel(crds, problem):
    problems = r.gateway_api_problems(r.gateway_api_report(crds), "1.6.0")
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems
        assert "istio_install_minimal_gateway_api_version" in problems[0]


def daemonset(name, desired=3, ready=3, updated=3, generation=2, observed=2):
    return {
        "metadata": {"name": name, "namespace": "istio-system", "generation": generation},
        "status": {
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "updatedNumberScheduled": updated,
            "observedGeneration": observed,
        },
    }


def test_daemonset_report_wants_every_pod_updated_and_ready_on_every_node():
    report = r.daemonset_report([daemonset("istio-cni-node"), daemonset("ztunnel")])
    assert report["problems"] == [] and all(i["ready"] for i in report["items"])
    report = r.daemonset_report([daemonset("istio-cni-node", ready=2), daemonset("ztunnel", observed=1)])
    assert [i["ready"] for i in report["items"]] == [False, False]
    assert "DaemonSet istio-system/istio-cni-node has 2 of 3 pods ready" in report["problems"][0]
    assert "has not seen the latest change" in report["problems"][1]
    report = r.daemonset_report([daemonset("ztunnel", desired=0, ready=0, updated=0)])
    assert report["problems"][0].startswith("DaemonSet istio-cni-node is missing")
    assert "0 of 0 pods ready" in report["problems"][1]


def test_waypoint_class_accepted_only_with_the_crds_and_istiods_accepted_condition():
    installed = {"installed": True}
    accepted = {
        "metadata": {"name": "istio-waypoint"},
        "status": {"conditions": [{"type": "Accepted", "status": "True"}]},
    }
    assert r.waypoint_class_report([accepted], installed) == {"accepted": True, "problems": []}
    assert "does not exist yet" in r.waypoint_class_report([], installed)["problems"][0]
    pending = {
        "metadata": {"name": "istio-waypoint"},
        "status": {"conditions": [{"type": "Accepted", "status": "Unknown", "message": "Waiting for controller"}]},
    }
    assert "is not Accepted (Waiting for controller)" in r.waypoint_class_report([pending], installed)["problems"][0]
    assert (
        "Gateway API CRDs are not installed" in r.waypoint_class_report([accepted], {"installed": False})["problems"][0]
    )
