#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: apply_sets
short_description: Server-side apply several sets of objects, each with its own field manager, in one run
version_added: 0.2.0
description:
  - Each set's objects are server-side applied with the set's field manager, as M(kubernetes.core.k8s) does with
    O(kubernetes.core.k8s#module:apply=true) and O(kubernetes.core.k8s#module:server_side_apply) (its own service
    does the work), but every set shares one module run, one client and one API discovery where a loop of
    M(kubernetes.core.k8s) would start one module process per set.
  - In check mode every apply is a server-side dry run (admission and validation run, nothing is stored), and with
    diff on each object's result carries the difference from the live object. The drift playbook compares every
    step's declared objects with the cluster this way.
  - Stops at the first object the API server refuses, naming it; objects applied before it stay applied (each
    apply is idempotent, so a rerun converges).
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description: Server-side dry runs; nothing is stored.
  diff_mode:
    support: full
    description: Each object's result has C(diff) (before and after, the fields that differ).
  idempotent:
    support: full
    description: Server-side apply of the same objects with the same field manager changes nothing the second time.
options:
  sets:
    description:
      - The sets of objects, applied in this order. Each is a dict with C(step) (a name returned with its results;
        the drift playbook uses the rollout step), C(field_manager) (of every apply of the set), C(objects)
        (complete definitions) and optionally C(force_conflicts) (take over fields another manager owns; default
        false). Other keys are ignored, so the steps' declared sets (the C(<role>_declared) facts) go in as they are.
    type: list
    elements: dict
    required: true
  autoscalers:
    description:
      - Also list every HorizontalPodAutoscaler (C(autoscaling/v2), all namespaces) in the same run, returned in
        RV(autoscalers). The drift playbook needs them (the replicas an autoscaler owns are not drift) and saves a
        module run this way.
    type: bool
    default: false
    version_added: 0.3.0
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Compare two steps' declared objects with the cluster (dry runs, one module run)
  meshops.istio.apply_sets:
    sets:
      - step: traffic
        field_manager: meshops-istio-traffic
        objects: "{{ routing_objects }}"
      - step: mtls
        field_manager: meshops-istio-mtls
        objects: "{{ peer_authentications }}"
  check_mode: true
  diff: true
  register: dry_run
"""

RETURN = r"""
sets:
  description: One entry per set, in the order of O(sets).
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: The set's C(step).
      type: str
    field_manager:
      description: The set's field manager.
      type: str
    changed:
      description: Whether any object of the set changed (in check mode, would change).
      type: bool
    results:
      description: >-
        One result per object, as M(kubernetes.core.k8s) returns it: C(changed), C(method), C(result) (the object
        as the API server stored it, or would store it) and, with diff on, C(diff).
      type: list
      elements: dict
autoscalers:
  description: The HorizontalPodAutoscalers of every namespace, with O(autoscalers=true); empty otherwise.
  returned: always
  type: list
  elements: dict
  version_added: 0.3.0
"""

from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError


def problems(sets):
    """What is wrong with the sets given, one sentence each (nothing is applied when there is any)."""
    out = []
    for i, item in enumerate(sets):
        where = f"sets[{i}] ({item.get('step') or 'no step'})"
        if not item.get("step") or not isinstance(item.get("step"), str):
            out.append(f"{where}: step must be a non-empty string")
        if not item.get("field_manager") or not isinstance(item.get("field_manager"), str):
            out.append(f"{where}: field_manager must be a non-empty string")
        objects = item.get("objects")
        if not isinstance(objects, list) or not all(isinstance(o, dict) and o.get("kind") for o in objects):
            out.append(f"{where}: objects must be a list of object definitions, each with a kind")
    return out


def main():
    spec = argument_spec(
        sets={"type": "list", "elements": "dict", "required": True},
        autoscalers={"type": "bool", "default": False},
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    wrong = problems(module.params["sets"])
    if wrong:
        module.fail_json(msg="apply_sets: " + "; ".join(wrong) + ". Nothing was applied.")
    out = []
    step = None
    autoscalers = []
    try:
        kube = Kube(module)
        if module.params["autoscalers"]:
            autoscalers = kube.list("autoscaling/v2", "HorizontalPodAutoscaler")
        for item in module.params["sets"]:
            step = item["step"]
            results = kube.apply(item["objects"], item["field_manager"], bool(item.get("force_conflicts")))
            out.append(
                {
                    "step": step,
                    "field_manager": item["field_manager"],
                    "changed": any(r.get("changed") for r in results),
                    "results": results,
                }
            )
    except KubeError as exc:
        where = f" (set {step}; sets done before it: {', '.join(s['step'] for s in out) or 'none'})" if step else ""
        module.fail_json(msg=f"{exc}{where}", sets=out)
    module.exit_json(changed=any(s["changed"] for s in out), sets=out, autoscalers=autoscalers)


if __name__ == "__main__":
    main()
