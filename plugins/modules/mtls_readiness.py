#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: mtls_readiness
short_description: Evidence per namespace for whether mTLS STRICT is safe
version_added: 0.2.0
description:
  - Read-only check for the fifth step of the staged rollout. For each namespace it answers C(ready_for_strict)
    and, when not, says why in sentences that name the objects and the remedy.
  - Data plane - every eligible pod runs a Ready sidecar of the right revision and the namespace is labeled for
    injection; with O(dataplane_mode=ambient), the namespace is labeled for ambient mode and every eligible pod is
    enrolled as istiod sees it. The same logic as M(meshops.istio.sidecar_status).
  - Traffic - Prometheus shows no plaintext requests or TCP connections into the namespace's workloads within
    O(window) (Istio's C(istio_requests_total) and C(istio_tcp_connections_opened_total) reported by the destination
    with C(connection_security_policy) other than C(mutual_tls)); the top plaintext sources are named. When
    Prometheus cannot be asked, the evidence is reported missing and the namespace is not ready.
  - In ambient mode the same query reads ztunnel's L4 metrics - ztunnel reports
    C(istio_tcp_connections_opened_total) for the connections it accepts for its node's enrolled pods, with
    C(connection_security_policy=unknown) for a plaintext client - and a waypoint's C(istio_requests_total).
  - Policies - no DestinationRule (in any namespace) sets C(tls.mode=DISABLE) toward the namespace's services.
  - AuthorizationPolicies that match on mTLS-only fields (principals, namespaces) are reported as advisories while the
    namespace is not STRICT, because plaintext requests never match them; they do not block STRICT.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.prometheus
  - meshops.istio.read_only
  - meshops.istio.dataplane
options:
  namespaces:
    description:
      - Namespaces to assess. Empty means every namespace labeled for injection, or with O(dataplane_mode=ambient)
        every namespace labeled for ambient mode.
    type: list
    elements: str
    default: []
  root_namespace:
    description: Istio's root namespace (mesh-wide PeerAuthentication and AuthorizationPolicies live there).
    type: str
    default: istio-system
  revision:
    description:
      - The Istio revision sidecars should come from; empty means the namespace's label or C(default). Not used in
        ambient mode.
    type: str
    default: ""
  window:
    description: How far back to look for plaintext traffic, in seconds (at least 60).
    type: int
    default: 3600
  top_sources:
    description: How many plaintext sources to name per namespace.
    type: int
    default: 5
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Is shop-dev ready for STRICT?
  meshops.istio.mtls_readiness:
    namespaces: [shop-dev]
    prometheus_url: https://prometheus.example.com
    window: 86400
  register: mtls

- name: Show why not
  ansible.builtin.debug:
    var: mtls.problems
  when: not mtls.ready_for_strict
"""

RETURN = r"""
ready_for_strict:
  description: True when every assessed namespace is ready.
  returned: always
  type: bool
namespaces:
  description:
    - Per namespace, C(namespace), C(mode) (the namespace-wide mTLS mode in force), C(ready_for_strict),
      C(sidecars_complete) (in ambient mode, every eligible pod enrolled), C(traffic_evidence),
      C(plaintext_sources) (C(source), C(destination), C(count)), C(tls_disabled_by), C(problems) and C(advisories).
  returned: always
  type: list
  elements: dict
problems:
  description: Every namespace's problems, one sentence each, naming the object and the remedy.
  returned: always
  type: list
  elements: str
advisories:
  description: AuthorizationPolicies that rely on mTLS-only fields while the mode is not STRICT.
  returned: always
  type: list
  elements: str
prometheus:
  description: C(where) (the URL or Service asked), C(reachable), and C(error) when it was not.
  returned: always
  type: dict
"""

from ansible_collections.meshops.istio.plugins.module_utils import ambient, mtls, sidecars
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import gather_report
from ansible_collections.meshops.istio.plugins.module_utils.prometheus import (
    PROMETHEUS_ARG_SPEC,
    Prometheus,
    PrometheusError,
    hide_url_password,
    window,
)

SECURITY = "security.istio.io/v1"


def in_mesh_namespaces(kube, params):
    namespaces = kube.list("v1", "Namespace")
    return (
        ambient.labeled_names(namespaces)
        if params["dataplane_mode"] == "ambient"
        else sidecars.injected_names(namespaces)
    )


def data_plane(kube, params, names):
    """sidecar_status's coverage of the namespaces, by name: sidecars, or enrollment in ambient mode (istiod's index
    read once for all of them)."""
    contents = kube.namespace_contents(names)
    if params["dataplane_mode"] == "ambient":
        captured, problem = ambient.index_for(kube, contents, params)
        return {read["name"]: ambient.coverage([read], captured, True, problem) for read in contents}
    tags = kube.revision_tags()
    return {read["name"]: sidecars.coverage([read], params["revision"] or None, True, tags) for read in contents}


def gather(kube, params):
    names = params["namespaces"] or in_mesh_namespaces(kube, params)
    span = window(params["window"])
    prometheus = {"where": "", "reachable": False}
    samples, evidence_problem = None, None
    try:
        prom = Prometheus(params, kube)
        prometheus["where"] = prom.where
        samples = prom.query(mtls.plaintext_query(span))
        prometheus["reachable"] = True
    except PrometheusError as exc:
        evidence_problem = str(exc)
        prometheus["error"] = evidence_problem
    peer_auth = kube.list(SECURITY, "PeerAuthentication")
    rules = kube.list("networking.istio.io/v1", "DestinationRule")
    root_authz = kube.list(SECURITY, "AuthorizationPolicy", namespace=params["root_namespace"])
    coverages = data_plane(kube, params, names)
    mode = params["dataplane_mode"]
    reports = []
    for name in names:
        coverage = coverages[name]
        authz = (
            root_authz
            if name == params["root_namespace"]
            else root_authz + kube.list(SECURITY, "AuthorizationPolicy", namespace=name)
        )
        reports.append(
            mtls.namespace_readiness(
                name,
                (coverage["namespaces"] or [None])[0],
                coverage["problems"],
                None if samples is None else mtls.plaintext_sources(samples, name, params["top_sources"], mode),
                evidence_problem,
                mtls.tls_disabling_rules(rules, name),
                mtls.mtls_only_authorization(authz),
                mtls.effective_mode(peer_auth, name, params["root_namespace"]),
                span,
                mode,
            )
        )
    problems = [p for r in reports for p in r["problems"]]
    if not names:
        labeled = "for ambient mode" if mode == "ambient" else "for injection"
        problems.append(f"no namespace is labeled {labeled}, so none can be assessed: list namespaces.")
    return {
        "ready_for_strict": not problems,
        "namespaces": reports,
        "problems": problems,
        "advisories": [w for r in reports for w in r["advisories"]],
        "prometheus": prometheus,
    }


def main():
    spec = argument_spec(
        namespaces={"type": "list", "elements": "str", "default": []},
        root_namespace={"type": "str", "default": "istio-system"},
        revision={"type": "str", "default": ""},
        window={"type": "int", "default": 3600},
        top_sources={"type": "int", "default": 5},
        **ambient.DATAPLANE_ARG_SPEC,
        **PROMETHEUS_ARG_SPEC,
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    hide_url_password(module)
    report = gather_report(module, lambda kube: gather(kube, module.params), "ready_for_strict")
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
