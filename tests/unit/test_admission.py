"""The admission dry run's pure half (module_utils/admission.py): which pod is sent, and how answers read."""

from ansible_collections.meshops.istio.plugins.module_utils import admission


def deployment(name="web", namespace="shop", **template_spec):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}], **template_spec},
            }
        },
    }


def cronjob(name="nightly", namespace="shop"):
    template = deployment(name, namespace)["spec"]["template"]
    return {
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": template}}},
    }


INJECTED = {
    "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}], "initContainers": [{"name": "istio-init"}]}
}


def test_the_pod_sent_is_the_template_selected_by_the_injector():
    pod = admission.admission_pod(deployment())
    assert pod["kind"] == "Pod" and pod["metadata"]["namespace"] == "shop"
    assert pod["metadata"]["generateName"] == "meshops-admission-web-"
    assert pod["metadata"]["labels"] == {"app": "web", "sidecar.istio.io/inject": "true"}
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["containers"][0]["image"] == "app:1"
    revision = admission.admission_pod(deployment(), "canary")["metadata"]["labels"]
    assert revision == {"app": "web", "istio.io/rev": "canary"}
    assert admission.admission_pod(cronjob())["spec"]["containers"][0]["name"] == "app"
    long = admission.admission_pod(deployment("x" * 80))["metadata"]["generateName"]
    assert len(long) <= 58 and long.endswith("-")


def test_the_workload_is_not_changed_and_an_opt_out_is_kept():
    workload = deployment()
    admission.admission_pod(workload)["metadata"]["labels"]["x"] = "y"
    assert workload["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    opted = deployment()
    opted["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"
    assert admission.admission_pod(opted)["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    annotated = deployment()
    annotated["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] = "false"
    assert "sidecar.istio.io/inject" not in admission.admission_pod(annotated)["metadata"]["labels"]
    assert "istio.io/rev" not in admission.admission_pod(annotated, "canary")["metadata"]["labels"]


def test_a_statefulsets_claim_templates_become_volumes_of_the_pod():
    sts = deployment("db")
    sts["kind"] = "StatefulSet"
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}, {"metadata": {"name": "logs"}}]
    sts["spec"]["template"]["spec"]["volumes"] = [{"name": "logs", "configMap": {"name": "x"}}]
    volumes = admission.admission_pod(sts)["spec"]["volumes"]
    assert volumes == [{"name": "logs", "configMap": {"name": "x"}}, {"name": "data", "emptyDir": {}}]
    assert sts["spec"]["template"]["spec"]["volumes"] == [{"name": "logs", "configMap": {"name": "x"}}]  # untouched


def test_a_refusal_names_workload_and_reason():
    reason = 'pods "meshops-admission-web-x" is forbidden: violates PodSecurity "restricted:latest": NET_ADMIN'
    result = admission.admission_result(deployment(), None, reason)
    assert (result["admitted"], result["injected"]) == (False, False)
    assert admission.admission_problems([result]) == [
        f"Deployment shop/web would not be admitted once injected: {reason}"
    ]
    ok = admission.admission_result(deployment("api"), INJECTED, None)
    assert (ok["admitted"], ok["injected"], ok["notes"]) == (True, True, [])
    assert admission.admission_problems([ok]) == []


def test_jobs_hostnetwork_and_opted_out_workloads_are_reported():
    job = admission.admission_result(cronjob(), INJECTED, None)
    assert "is a CronJob: with a classic sidecar its pods keep running" in admission.admission_advisories([job])[0]
    host = admission.admission_result(deployment(hostNetwork=True), {"spec": {}}, None)
    assert host["notes"] == ["uses hostNetwork: Istio does not inject it, so it stays outside the mesh"]
    opted = deployment()
    opted["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] = "false"
    assert "opts out" in admission.admission_result(opted, {"spec": {}}, None)["notes"][0]
    owned = {"metadata": {"ownerReferences": [{"kind": "CronJob", "name": "nightly"}]}}
    assert admission.owned_by_cronjob(owned) and not admission.owned_by_cronjob(deployment())


def test_a_dry_run_that_failed_for_another_reason_is_a_note_not_a_refusal():
    down = 'Internal error occurred: failed calling webhook "object.sidecar-injector.istio.io": connection refused'
    result = admission.admission_result(deployment(), None, down, checked=False)
    assert result["admitted"] is None and not result["injected"]
    assert admission.admission_problems([result]) == []
    assert admission.admission_advisories([result]) == [f"Deployment shop/web could not be checked: {down}."]
