#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: sidecar_status
short_description: Report sidecar injection coverage, or ambient enrollment, per namespace
version_added: 0.2.0
description:
  - Read-only gate for the second step of the staged rollout. For each namespace it reports the injection label
    state (and conflicts such as both labels), how many pods run with, without or opted out of the C(istio-proxy)
    sidecar, which pods need a restart (no sidecar, or injected by another revision) and the workloads that own
    them, the proxy images in use, and whether every eligible pod has a sidecar and is Ready.
  - Pods with C(sidecar.istio.io/inject=false) (label or annotation) are opted out and never counted as missing.
  - With O(dataplane_mode=ambient) it reports ambient enrollment instead, in the same shape. A namespace is labeled
    when it carries C(istio.io/dataplane-mode=ambient). A pod is enrolled when istio-cni has redirected it
    (annotation C(ambient.istio.io/redirection=enabled)) and istiod serves it to ztunnel over HBONE (see
    O(dataplane_mode)). Pods labeled C(istio.io/dataplane-mode=none) are opted out, pods on the host network are not
    eligible, and pods that still run a sidecar are listed to restart.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.wait
  - meshops.istio.read_only
  - meshops.istio.dataplane
options:
  namespaces:
    description: Namespaces to report on.
    type: list
    elements: str
    required: true
  revision:
    description:
      - The Istio revision sidecars should come from. Empty means the namespace's own C(istio.io/rev) label, or
        C(default).
      - Either may name a revision tag (C(istio.io/rev=stable)) - the tag's webhook configuration says which revision
        it points at, and that revision is the one the pods' sidecars must come from.
    type: str
    default: ""
  require_complete:
    description:
      - With O(wait=true), wait until every namespace is complete (labeled, every eligible pod with a sidecar of the
        right revision and Ready); without wait, fail when one is not.
    type: bool
    default: false
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Gate - every eligible pod has a sidecar and is Ready
  meshops.istio.sidecar_status:
    namespaces: [shop-dev]
    require_complete: true
    wait: true
    wait_timeout: 300

- name: Gate - every eligible pod of the namespace is enrolled in ambient mode, as istiod sees it
  meshops.istio.sidecar_status:
    namespaces: [shop-dev]
    dataplane_mode: ambient
    require_complete: true
    wait: true

- name: Report coverage without failing
  meshops.istio.sidecar_status:
    namespaces: [shop-dev, shop-prod]
  register: coverage
"""

RETURN = r"""
complete:
  description: True when every namespace is complete.
  returned: always
  type: bool
coverage_percent:
  description: Share of eligible pods (all pods minus opted-out ones) that run istio-proxy, over all namespaces.
  returned: always
  type: float
namespaces:
  description:
    - Per namespace, C(labels), C(annotations), C(applied) (the label and annotation keys each server-side apply
      field manager owns, as C(labels.<key>) and C(annotations.<key>)), C(label) (C(mode) none, istio-injection,
      revision, disabled or conflict), C(total),
      C(with_proxy), C(without_proxy), C(opted_out), C(not_ready), C(eligible), C(in_mesh) (pods with a sidecar, or
      enrolled), C(coverage_percent), C(proxy_images), C(pods_needing_restart), C(workloads_to_restart),
      C(complete), C(problems).
    - With O(dataplane_mode=ambient), C(label) has C(mode) ambient, sidecar or none, and each namespace has
      C(enrolled), C(host_network), C(not_redirected) and C(not_seen_by_istiod) (pod names) instead of
      C(without_proxy); C(with_proxy) counts pods that still run a sidecar.
    - C(workloads_to_restart) lists the workloads whose pods lack the right sidecar, labeled yet or not.
  returned: always
  type: list
  elements: dict
workloads_to_restart:
  description: All namespaces' workloads to restart, as C(kind), C(namespace), C(name).
  returned: always
  type: list
  elements: dict
problems:
  description: One sentence per problem, naming the object and the remedy.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.meshops.istio.plugins.module_utils import ambient, sidecars
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import WAIT_ARG_SPEC, gather_report

WHAT = {"sidecar": "sidecar coverage", "ambient": "ambient enrollment"}


def gather(kube, params):
    if params["dataplane_mode"] == "ambient":
        return ambient.enrollment(
            kube, kube.namespace_contents(params["namespaces"]), params, params["require_complete"]
        )
    return sidecars.coverage(
        kube.namespace_contents(params["namespaces"]),
        params["revision"] or None,
        params["require_complete"],
        kube.revision_tags(),
    )


def main():
    spec = argument_spec(
        namespaces={"type": "list", "elements": "str", "required": True},
        revision={"type": "str", "default": ""},
        require_complete={"type": "bool", "default": False},
        **ambient.DATAPLANE_ARG_SPEC,
        **WAIT_ARG_SPEC,
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    params = module.params
    report = gather_report(module, lambda kube: gather(kube, params), "complete")
    if params["require_complete"] and not report["complete"]:
        waited = params["waited"] + params["wait_timeout"]
        module.fail_json(
            msg=f"{WHAT[params['dataplane_mode']]} is not complete{f' after {waited}s' if params['wait'] else ''}: "
            + " ".join(report["problems"]),
            changed=False,
            **report,
            **({"waited_s": waited} if params["wait"] else {}),
        )
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
