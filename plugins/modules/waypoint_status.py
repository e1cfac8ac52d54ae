#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: waypoint_status
short_description: Gate for the traffic baseline in ambient mode - waypoints Programmed, routes Accepted, Services bound
version_added: 0.3.0
description:
  - Read-only gate for the fourth step of the staged rollout in ambient mode, over the objects the step declares
    (its C(traffic_baseline_declared.objects)).
  - C(waypoints) - each waypoint Gateway, declared or named by a declared Service's C(istio.io/use-waypoint) label,
    is of class C(istio-waypoint), C(Programmed) by istiod at its current generation, and the Deployment istiod's
    waypoint controller creates for it (the Gateway's name) is ready.
  - C(routes) - each declared HTTPRoute has istiod's status for its parent Service, C(Accepted) and
    C(ResolvedRefs) at the route's current generation.
  - C(services) - each declared Service labeled C(istio.io/use-waypoint) still has that label, and istiod's
    condition C(istio.io/WaypointBound) on it is C(True).
  - With O(wait=true) it polls until the gate passes and fails with every problem, each naming the object and the
    remedy, when O(wait_timeout) runs out.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.wait
  - meshops.istio.read_only
options:
  objects:
    description:
      - The declared objects. Gateways, HTTPRoutes and Services labeled C(istio.io/use-waypoint) are checked; any
        other kind is ignored.
    type: list
    elements: dict
    required: true
  checks:
    description:
      - Which checks to run. The traffic baseline waits for C(waypoints) alone before it labels Services (a Service
        sent to a waypoint that runs no proxy loses its traffic), then for all three.
    type: list
    elements: str
    choices: [waypoints, routes, services]
    default: [waypoints, routes, services]
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Gate - the waypoints Programmed and running, the routes Accepted, the Services bound
  meshops.istio.waypoint_status:
    objects: "{{ traffic_baseline_declared.objects }}"
    wait: true
    wait_timeout: 300

- name: Wait for the waypoints alone (before labeling the Services that will use them)
  meshops.istio.waypoint_status:
    objects: "{{ traffic_baseline_declared.objects }}"
    checks: [waypoints]
    wait: true
"""

RETURN = r"""
ready:
  description: True when every check asked for passes.
  returned: always
  type: bool
waypoints:
  description: Per waypoint, C(namespace), C(name), C(ready) and C(problem).
  returned: always
  type: list
  elements: dict
routes:
  description: Per HTTPRoute, C(namespace), C(name), C(service) (its parent), C(ready) and C(problem).
  returned: always
  type: list
  elements: dict
services:
  description: Per labeled Service, C(namespace), C(name), C(waypoint), C(ready) and C(problem).
  returned: always
  type: list
  elements: dict
problems:
  description: One sentence per object that does not pass, naming it and the remedy.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.meshops.istio.plugins.module_utils import waypoints
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import WAIT_ARG_SPEC, exit_gate, gather_report
from ansible_collections.meshops.istio.plugins.module_utils.readiness import WAYPOINT_CLASS


def gather(kube, params):
    """The live objects the checks read (a few list requests however many objects), then the pure report."""
    checks = params["checks"]
    targets = waypoints.gate_targets(params["objects"])
    api = waypoints.GATEWAY_API_VERSION
    live = {}
    if "waypoints" in checks and targets["waypoints"]:
        live["Gateway"] = kube.list(api, "Gateway")
        selector = f"gateway.networking.k8s.io/gateway-class-name={WAYPOINT_CLASS}"
        live["Deployment"] = kube.list("apps/v1", "Deployment", label_selector=selector)
    if "routes" in checks and targets["routes"]:
        live["HTTPRoute"] = kube.list(api, "HTTPRoute")
    if "services" in checks:
        for namespace in sorted({t["namespace"] for t in targets["services"]}):
            live.setdefault("Service", []).extend(kube.list("v1", "Service", namespace=namespace))
    return waypoints.gate_report(params["objects"], live, checks)


def main():
    spec = argument_spec(
        objects={"type": "list", "elements": "dict", "required": True},
        checks={
            "type": "list",
            "elements": "str",
            "choices": list(waypoints.CHECKS),
            "default": list(waypoints.CHECKS),
        },
        **WAIT_ARG_SPEC,
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    params = module.params
    report = gather_report(module, lambda kube: gather(kube, params), "ready")
    exit_gate(module, report, "the waypoint gate did not pass")


if __name__ == "__main__":
    main()
