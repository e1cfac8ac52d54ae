#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: telemetry_status
short_description: Gate for the telemetry step - addons Available, Prometheus answering, Istio metrics present
version_added: 0.2.0
description:
  - Read-only gate for the third step of the staged rollout.
  - Checks that the Deployment of every listed addon exists and is ready at its current generation - every replica
    updated and available, no old replica left, and Available.
  - Asks Prometheus (at O(prometheus_url), or through the API server's service proxy) for Istio's standard metrics
    (C(istio_requests_total), C(istio_tcp_connections_opened_total)) per namespace, as source or destination, and
    reports every namespace that runs pods with sidecars but has no such series.
  - When Prometheus cannot be reached it says so, naming the URL; it never reports metrics it did not see.
  - With O(wait=true) it polls until the gate passes and fails with every problem when O(wait_timeout) runs out.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.prometheus
  - meshops.istio.wait
  - meshops.istio.read_only
options:
  addons:
    description:
      - Installed addons whose Deployment (named like the addon, as in Istio's addon manifests) must be Available.
    type: list
    elements: str
    default: []
  addon_namespace:
    description: Namespace of the addons' Deployments.
    type: str
    default: istio-system
  namespaces:
    description:
      - Namespaces that must have Istio metrics. Empty means every namespace with at least one pod with a sidecar.
    type: list
    elements: str
    default: []
  require_metrics:
    description:
      - Ask Prometheus and require Istio metrics in O(namespaces). When false, only the addons are checked and
        Prometheus is not contacted.
    type: bool
    default: true
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Gate - addons Available and Istio metrics flowing from every namespace with sidecars
  meshops.istio.telemetry_status:
    addons: [grafana, kiali]
    prometheus_url: https://prometheus.example.com
    wait: true
    wait_timeout: 300

- name: Ask the in-cluster Prometheus addon through the API server
  meshops.istio.telemetry_status:
    addons: [prometheus]
    prometheus_service: {namespace: istio-system, name: prometheus, port: 9090}
    namespaces: [shop-dev]
"""

RETURN = r"""
ready:
  description: True when every addon is Available and, with O(require_metrics), every namespace has Istio metrics.
  returned: always
  type: bool
addons:
  description: Per addon, C(name), C(namespace), C(deployment), C(available), C(ready_replicas) and C(problem).
  returned: always
  type: list
  elements: dict
prometheus:
  description: C(where) (the URL or Service asked), C(reachable) and C(error) when it was not.
  returned: always
  type: dict
namespaces:
  description: Per namespace, C(namespace), C(pods_with_sidecar), C(series) (Istio series naming it) and C(has_metrics).
  returned: always
  type: list
  elements: dict
problems:
  description: One sentence per problem, naming the object or URL and the remedy.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.meshops.istio.plugins.module_utils import telemetry
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import WAIT_ARG_SPEC, exit_gate, gather_report
from ansible_collections.meshops.istio.plugins.module_utils.prometheus import (
    PROMETHEUS_ARG_SPEC,
    Prometheus,
    PrometheusError,
    hide_url_password,
    sum_by,
)


def istio_series_by_namespace(prom):
    """{namespace: Istio series naming it as source or destination workload namespace}."""
    selector = '{__name__=~"' + "|".join(telemetry.ISTIO_METRICS) + '"}'
    seen = {}
    for label in ("destination_workload_namespace", "source_workload_namespace"):
        for ns, count in sum_by(prom.query(f"count by ({label}) ({selector})"), label).items():
            seen[ns] = seen.get(ns, 0) + count
    return seen


def gather(kube, params):
    problems = []
    addons = []
    namespace = params["addon_namespace"]
    for name in params["addons"]:
        report = telemetry.addon_report(name, namespace, name, kube.get("apps/v1", "Deployment", name, namespace))
        addons.append(report)
        if report.get("problem"):
            problems.append(report["problem"])
    prometheus = {"where": "", "reachable": False}
    namespaces = []
    if params["require_metrics"]:
        try:
            prom = Prometheus(params, kube)
            prometheus["where"] = prom.where
            seen = istio_series_by_namespace(prom)
            prometheus["reachable"] = True
        except PrometheusError as exc:
            prometheus["error"] = str(exc)
            problems.append(f"the Istio metrics evidence is missing: {exc}")
        else:
            sidecars = telemetry.sidecar_pods(kube.list("v1", "Pod"))
            namespaces, metric_problems = telemetry.metrics_report(sidecars, params["namespaces"], seen, prom.where)
            problems.extend(metric_problems)
    return {
        "ready": not problems,
        "addons": addons,
        "prometheus": prometheus,
        "namespaces": namespaces,
        "problems": problems,
    }


def main():
    spec = argument_spec(
        addons={"type": "list", "elements": "str", "default": []},
        addon_namespace={"type": "str", "default": "istio-system"},
        namespaces={"type": "list", "elements": "str", "default": []},
        require_metrics={"type": "bool", "default": True},
        **PROMETHEUS_ARG_SPEC,
        **WAIT_ARG_SPEC,
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    hide_url_password(module)
    params = module.params
    report = gather_report(module, lambda kube: gather(kube, params), "ready")
    exit_gate(module, report, "the telemetry gate did not pass")


if __name__ == "__main__":
    main()
