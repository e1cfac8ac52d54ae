#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: istio_readiness
short_description: Report whether an Istio control plane is ready, and why not
version_added: 0.2.0
description:
  - Read-only gate for the first step of the staged rollout. Checks that every Istio CRD is Established, that the
    istiod Deployments are Available at their current generation, that the sidecar injector and validation webhooks
    exist with a CA bundle, and that they actually answer.
  - The injector is probed with a server-side dry-run create of a pod that the injector webhook selects; the
    validation webhook with a server-side dry-run create of an invalid VirtualService. Nothing is persisted.
  - Every problem is a sentence that names the object and what to do.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.wait
  - meshops.istio.read_only
options:
  namespace:
    description: The namespace istiod runs in.
    type: str
    default: istio-system
  revision:
    description:
      - Only consider this Istio revision. Empty means the default (unrevisioned) install.
    type: str
    default: ""
  expected_version:
    description:
      - When set, an istiod of O(revision) (of the default revision when O(revision) is empty) running any other
        version is a problem. Other revisions keep their own versions.
    type: str
  probe_injection:
    description: Probe the sidecar injector with a server-side dry-run pod create.
    type: bool
    default: true
  probe_namespace:
    description:
      - Namespace for the injector probe's dry-run pod. Defaults to O(namespace).
      - The probe pod carries C(sidecar.istio.io/inject=true) (or C(istio.io/rev) for a revision), so the injector
        selects it in any namespace that is not labeled to opt out.
    type: str
  probe_namespaces:
    description:
      - Probe the injector in each of these namespaces (one dry-run pod each, in one module run), in addition to
        O(probe_namespace). Each must exist.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  probe_validation:
    description: Probe Istio's validation webhook with a server-side dry-run create of an invalid VirtualService.
    type: bool
    default: true
  admission_namespaces:
    description:
      - For each workload (Deployment, StatefulSet, DaemonSet, CronJob, Job not owned by a CronJob) in these
        namespaces, a server-side dry-run create of its pod template as a Pod that the injector selects, so the API
        server injects it and runs every admission check on the result (Pod Security refusing istio-init's
        NET_ADMIN and NET_RAW, ResourceQuota or LimitRange refusing the sidecar's requests, other webhooks).
        Nothing is created. Run it before labeling a namespace; results in RV(admission).
      - Refusals do not make RV(ready) false; they are listed in RV(admission_problems).
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  helm_releases:
    description:
      - Also read these Helm releases of O(namespace) (their latest revision each) from the Secrets Helm 3 stores
        them in, without the helm binary, in one request; results in RV(helm_releases). Drift compares them with
        the declared chart version and values this way.
      - Needs read access to Secrets of O(namespace) (as Helm itself does).
    type: list
    elements: str
    default: []
    version_added: 0.3.0
  ambient:
    description:
      - Also gate on Istio's ambient data plane. Every pod of the DaemonSets C(istio-cni-node) and C(ztunnel) in
        O(namespace) must be updated and ready on every node they schedule to. istiod must also have accepted the
        GatewayClass C(istio-waypoint), which it creates only when it runs in ambient mode.
      - Results in RV(ambient).
    type: bool
    default: false
    version_added: 0.3.0
requirements:
  - kubernetes >= 24.2.0
  - PyYAML >= 3.11
"""

EXAMPLES = r"""
- name: Gate - the control plane must be ready before injection starts
  meshops.istio.istio_readiness:
    namespace: istio-system
    expected_version: 1.30.3
    wait: true
    wait_timeout: 300
  register: readiness

- name: Report without failing, with connection details from the action group
  module_defaults:
    group/meshops.istio.k8s:
      kubeconfig: /secure/kubeconfig
      context: prod-eu-1
  meshops.istio.istio_readiness:
  register: readiness

- name: Show the problems
  ansible.builtin.debug:
    var: readiness.problems
  when: not readiness.ready
"""

RETURN = r"""
ready:
  description: True when every check passed.
  returned: always
  type: bool
problems:
  description: One sentence per problem, naming the object and the remedy.
  returned: always
  type: list
  elements: str
versions:
  description: Istio versions of the istiod Deployments found (from their images).
  returned: always
  type: list
  elements: str
  sample: ["1.30.3"]
revisions:
  description: Istio revisions found on istiod Deployments and webhook configurations.
  returned: always
  type: list
  elements: str
  sample: ["default"]
crds:
  description: Istio CRDs found, each with C(name) and C(established), and the C(missing) required ones.
  returned: always
  type: dict
kubernetes_version:
  description: The API server's version (C(gitVersion)).
  returned: always
  type: str
  sample: v1.36.3
istiod:
  description: istiod Deployments with C(name), C(namespace), C(revision), C(version), C(image), C(install_method)
    (helm, istioctl or unknown), C(available) and C(reasons).
  returned: always
  type: list
  elements: dict
istiod_all:
  description: Every istiod Deployment of O(namespace), whatever its revision, as in RV(istiod) (the same list when
    O(revision) is empty).
  returned: always
  type: list
  elements: dict
  version_added: 0.3.0
webhooks:
  description: Injector and validator webhook configurations, each webhook with C(failure_policy), C(has_ca_bundle)
    and C(target).
  returned: always
  type: list
  elements: dict
injection_probe:
  description: Result of the injector probe (C(namespace), C(answered), C(injected), C(message)); empty when skipped.
    With several probe namespaces, the first that failed (or the first).
  returned: always
  type: dict
validation_probe:
  description: Result of the validation probe (C(answered), C(message)); empty when skipped.
  returned: always
  type: dict
injection_probes:
  description: One injector probe result per probed namespace.
  returned: always
  type: list
  elements: dict
  version_added: 0.2.0
admission:
  description:
    - One result per workload of O(admission_namespaces) - C(namespace), C(kind), C(name), C(admitted) (null when
      the dry run failed for a reason that says nothing about the pod, such as an unreachable injector; see
      C(notes)), C(injected), C(message) (the API server's reason) and C(notes) (hostNetwork, opted out, a Job or
      CronJob with a classic sidecar, not checked).
  returned: always
  type: list
  elements: dict
  version_added: 0.2.0
admission_problems:
  description: One sentence per workload that would be refused once injected, naming it and the reason.
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
admission_advisories:
  description: One sentence per note (workloads that stay outside the mesh, Jobs and CronJobs).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
helm_releases:
  description:
    - One entry per release of O(helm_releases), in that order - C(name), C(found), and when found C(revision),
      C(status) (C(deployed), C(failed), C(pending-upgrade)... or C(unreadable) with an C(error)), C(chart),
      C(version) (the chart's) and C(values) (the values given at install or upgrade, as C(helm get values) prints).
  returned: always
  type: list
  elements: dict
  version_added: 0.3.0
gateway_api:
  description:
    - The Gateway API CRDs installed - C(installed), C(bundle_version) and C(channel) (the annotations of the Gateway
      CRD, for example V(v1.6.0) and V(standard)), and C(crds) (their names).
  returned: always
  type: dict
  version_added: 0.3.0
ambient:
  description:
    - With O(ambient), C(daemonsets) (per DaemonSet C(name), C(found), C(ready), C(desired), C(pods_ready),
      C(updated)) and C(waypoint_class_accepted). Empty otherwise.
  returned: always
  type: dict
  version_added: 0.3.0
elapsed:
  description: Seconds spent, including waiting.
  returned: always
  type: float
"""

import time

from ansible_collections.meshops.istio.plugins.module_utils import admission, helm_release
from ansible_collections.meshops.istio.plugins.module_utils import readiness as logic
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError, KubeRefused
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import WAIT_ARG_SPEC, exit_gate, gather_report

# Valid for the CRD schema, invalid for istiod ("http, tcp or tls must be provided"):
# only Istio's validation webhook can reject it.
INVALID_VIRTUAL_SERVICE_SPEC = {"hosts": ["meshops-validation-probe.invalid"]}


def gather(kube, params):
    ns = params["namespace"]
    revision = params["revision"] or None
    server = kube.server_version()
    every_crd = kube.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    crds = logic.crd_report(every_crd)
    gateway_api = logic.gateway_api_report(every_crd)
    every_istiod = kube.list("apps/v1", "Deployment", namespace=ns, label_selector="app=istiod")
    deployments = [d for d in every_istiod if logic.revision_of(d) == revision] if revision else every_istiod
    istiod = logic.istiod_report(deployments, ns)
    webhooks = logic.webhook_report(
        kube.list("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        kube.list("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
        revision,
    )
    extra = []
    if params["expected_version"]:
        # The version asked for is the revision's (the default one's without a revision): another revision running
        # beside it, as during a canary upgrade, keeps its own version.
        for item in istiod["items"]:
            if item["revision"] != (revision or "default"):
                continue
            if item["version"] and item["version"] != params["expected_version"]:
                extra.append(
                    f"Deployment {item['namespace']}/{item['name']} runs Istio {item['version']}, "
                    f"not the expected {params['expected_version']}: upgrade it or change expected_version."
                )

    injection, probes = {}, []
    if params["probe_injection"]:
        wanted = [n for n in [params["probe_namespace"], *params["probe_namespaces"]] if n] or [ns]
        for probe_ns in dict.fromkeys(wanted):
            try:
                pod = kube.dry_run_create(logic.probe_pod(probe_ns, revision))
                probes.append(logic.injection_probe_result(probe_ns, pod, None))
            except KubeError as exc:
                probes.append(logic.injection_probe_result(probe_ns, None, str(exc), isinstance(exc, KubeRefused)))
        failed = [p for p in probes if not p["injected"]]
        injection = (failed or probes)[0]
        extra.extend(logic.injection_problem(p, webhooks) for p in failed or probes[:1])

    admission_results = []
    for admission_ns in dict.fromkeys(params["admission_namespaces"]):
        for api_version, kind in admission.WORKLOAD_KINDS:
            for workload in kube.list(api_version, kind, namespace=admission_ns):
                if kind == "Job" and admission.owned_by_cronjob(workload):
                    continue  # its CronJob's template is checked
                try:
                    pod = kube.dry_run_create(admission.admission_pod(workload, revision))
                    admission_results.append(admission.admission_result(workload, pod, None))
                except KubeRefused as exc:
                    admission_results.append(admission.admission_result(workload, None, str(exc)))
                except KubeError as exc:  # not an answer about the pod (an injector down, RBAC): not checked
                    admission_results.append(admission.admission_result(workload, None, str(exc), checked=False))

    validation = {}
    if params["probe_validation"] and not crds["missing"]:
        vs = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"generateName": "meshops-validation-probe-", "namespace": ns},
            "spec": INVALID_VIRTUAL_SERVICE_SPEC,
        }
        names = [i["name"] for i in webhooks["items"] if i["kind"] == "ValidatingWebhookConfiguration"]
        try:
            kube.dry_run_create(vs)
            validation = logic.validation_probe_result(None, names)
        except KubeError as exc:
            validation = logic.validation_probe_result(str(exc), names)
        extra.append(logic.validation_problem(validation, webhooks))

    ambient = {}
    if params["ambient"]:
        daemonsets = logic.daemonset_report(kube.list("apps/v1", "DaemonSet", namespace=ns))
        classes = kube.list(f"{logic.GATEWAY_API_GROUP}/v1", "GatewayClass") if gateway_api["installed"] else []
        waypoint = logic.waypoint_class_report(classes, gateway_api)
        ambient = {"daemonsets": daemonsets["items"], "waypoint_class_accepted": waypoint["accepted"]}
        extra.extend(daemonsets["problems"] + waypoint["problems"])

    releases = []
    if params["helm_releases"]:
        selector = helm_release.release_selector(params["helm_releases"])
        secrets = kube.list("v1", "Secret", namespace=ns, label_selector=selector)
        releases = helm_release.latest_releases(secrets, params["helm_releases"])

    summary = logic.summarize(crds, istiod, webhooks, extra_problems=extra)
    return {
        **summary,
        **logic.versions_and_revisions(istiod, webhooks),
        "kubernetes_version": server.get("gitVersion", ""),
        "crds": {"items": crds["items"], "missing": crds["missing"]},
        "istiod": istiod["items"],
        "istiod_all": logic.istiod_report(every_istiod, ns)["items"] if revision else istiod["items"],
        "webhooks": webhooks["items"],
        "injection_probe": injection,
        "injection_probes": probes,
        "validation_probe": validation,
        "admission": admission_results,
        "admission_problems": [
            f"Namespace {p['namespace']}: {p['message']}"
            for p in probes
            if not p["admitted"] and p["namespace"] in params["admission_namespaces"]
        ]
        + admission.admission_problems(admission_results),
        "admission_advisories": admission.admission_advisories(admission_results),
        "helm_releases": releases,
        "gateway_api": gateway_api,
        "ambient": ambient,
    }


def main():
    spec = argument_spec(
        namespace={"type": "str", "default": "istio-system"},
        revision={"type": "str", "default": ""},
        expected_version={"type": "str"},
        probe_injection={"type": "bool", "default": True},
        probe_namespace={"type": "str"},
        probe_namespaces={"type": "list", "elements": "str", "default": []},
        probe_validation={"type": "bool", "default": True},
        admission_namespaces={"type": "list", "elements": "str", "default": []},
        helm_releases={"type": "list", "elements": "str", "default": []},
        ambient={"type": "bool", "default": False},
        **WAIT_ARG_SPEC,
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    params = module.params
    start = time.monotonic()
    report = gather_report(module, lambda kube: gather(kube, params), "ready")
    report["elapsed"] = round(time.monotonic() - start, 2)
    exit_gate(module, report, f"the Istio control plane in namespace {params['namespace']} is not ready")


if __name__ == "__main__":
    main()
