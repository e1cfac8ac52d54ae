#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: object_lists
short_description: List objects of several kinds in one module run
version_added: 0.2.0
description:
  - Read-only. Runs one list request per query (kind, optional namespace and label selector) with one client and
    one API discovery, where kubernetes.core.k8s_info in a loop would start a module process per kind.
  - A kind the API server does not serve lists as empty (for example Istio's kinds before Istio is installed).
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.read_only
options:
  queries:
    description: What to list.
    type: list
    elements: dict
    required: true
    suboptions:
      api_version:
        description: API group and version, for example C(networking.istio.io/v1).
        type: str
        required: true
      kind:
        description: Kind, for example C(VirtualService).
        type: str
        required: true
      namespace:
        description: Only this namespace. Empty lists every namespace (or a cluster-scoped kind).
        type: str
        default: ""
      label_selectors:
        description: Label selectors, all of which must match.
        type: list
        elements: str
        default: []
      field_selectors:
        description: Field selectors, all of which must match, for example C(metadata.name=istio).
        type: list
        elements: str
        default: []
        version_added: 0.3.0
      metadata_only:
        description: O(metadata_only) for this query alone; unset, the module's.
        type: bool
        version_added: 0.3.0
      key:
        description:
          - A name to find this query's objects under in RV(by_key); queries with the same key add to one list.
            The rollout reads every step's live objects in one run and hands each step its own.
        type: str
        version_added: 0.3.0
  metadata_only:
    description:
      - Return only C(apiVersion), C(kind) and C(metadata) (name, namespace, labels, annotations, uid,
        ownerReferences) of each object, to keep large objects (ConfigMaps of dashboards) out of the result.
    type: bool
    default: false
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Read the baseline's kinds in every namespace, in one run
  meshops.istio.object_lists:
    queries:
      - {api_version: networking.istio.io/v1, kind: DestinationRule}
      - {api_version: networking.istio.io/v1, kind: VirtualService}
  register: routing

- name: Use them
  ansible.builtin.debug:
    msg: "{{ routing.resources | length }} objects, {{ routing.lists[1] | length }} VirtualServices"
"""

RETURN = r"""
lists:
  description: The objects of each query, in the order of O(queries).
  returned: always
  type: list
  elements: list
resources:
  description: The objects of every query, in one list.
  returned: always
  type: list
  elements: dict
by_key:
  description: The objects of the queries that have a C(key), by key (in the order of O(queries)).
  returned: always
  type: dict
  version_added: 0.3.0
"""

from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError

METADATA_KEYS = ("name", "namespace", "labels", "annotations", "uid", "ownerReferences")


def metadata_of(obj):
    """An object reduced to what identifies and labels it."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in METADATA_KEYS if k in meta},
    }


def main():
    spec = argument_spec(
        queries={
            "type": "list",
            "elements": "dict",
            "required": True,
            "options": {
                "api_version": {"type": "str", "required": True},
                "kind": {"type": "str", "required": True},
                "namespace": {"type": "str", "default": ""},
                "label_selectors": {"type": "list", "elements": "str", "default": []},
                "field_selectors": {"type": "list", "elements": "str", "default": []},
                "metadata_only": {"type": "bool"},
                "key": {"type": "str", "no_log": False},
            },
        },
        metadata_only={"type": "bool", "default": False},
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    try:
        kube = Kube(module)
        lists = [
            kube.list(
                q["api_version"],
                q["kind"],
                namespace=q["namespace"] or None,
                label_selector=",".join(q["label_selectors"]) or None,
                field_selector=",".join(q["field_selectors"]) or None,
            )
            for q in module.params["queries"]
        ]
    except KubeError as exc:
        module.fail_json(msg=str(exc))
    # Items of a list answer do not always carry their kind: give each the one it was listed as.
    for query, objs in zip(module.params["queries"], lists):
        for obj in objs:
            obj.setdefault("apiVersion", query["api_version"])
            obj.setdefault("kind", query["kind"])
    queries = module.params["queries"]
    lists = [
        [metadata_of(obj) for obj in objs] if _metadata_only(query, module.params["metadata_only"]) else objs
        for query, objs in zip(queries, lists)
    ]
    by_key = {}
    for query, objs in zip(queries, lists):
        if query.get("key"):
            by_key.setdefault(query["key"], []).extend(objs)
    module.exit_json(changed=False, lists=lists, resources=[obj for objs in lists for obj in objs], by_key=by_key)


def _metadata_only(query, default):
    return default if query.get("metadata_only") is None else query["metadata_only"]


if __name__ == "__main__":
    main()
