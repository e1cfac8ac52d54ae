#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: declared_references
short_description: Refuse declared objects for namespaces or Services that do not exist
version_added: 0.2.0
description:
  - Read-only gate run before a step changes anything. Takes the steps' declared sets (the C(<role>_declared) facts
    the roles' C(declare.yml) entry points set) and fails, naming the variable each set comes from, when an object
    would go into a namespace that does not exist, or when routing is declared for a Service that does not exist.
  - Without it, a list apply writes the objects for the namespaces that exist and then fails on the first missing
    one, leaving the step half-applied.
  - One Namespace list and, when Services are named, one Service list, whatever the number of objects.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.read_only
options:
  declared:
    description:
      - Declared sets, each with C(objects) (definitions; their C(metadata.namespace) must exist), C(source) (the
        variable the objects come from, named in messages) and optionally C(services) (the Services the objects
        are for, each C(namespace/name)).
    type: list
    elements: dict
    required: true
  creating:
    description:
      - Namespaces the run creates before these objects are applied (for example the pilot namespaces with
        C(namespace_injection_create_namespaces), or the Istio namespace before step 1). They count as existing.
    type: list
    elements: str
    default: []
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Refuse PeerAuthentications for namespaces that do not exist
  meshops.istio.declared_references:
    declared:
      - "{{ mtls_permissive_declared }}"
"""

RETURN = r"""
problems:
  description: One sentence per missing namespace or Service, naming the variable to fix. Empty when all exist.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.meshops.istio.plugins.module_utils import references
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError


def main():
    spec = argument_spec(
        declared={"type": "list", "elements": "dict", "required": True},
        creating={"type": "list", "elements": "str", "default": []},
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    declared = module.params["declared"]
    namespaces, services = references.needed(declared)
    live_ns, live_svc = [], []
    if namespaces:
        try:
            kube = Kube(module)
            live_ns = kube.list("v1", "Namespace")
            live_svc = kube.list("v1", "Service") if services else []
        except KubeError as exc:
            module.fail_json(msg=str(exc), problems=[str(exc)])
    found = references.problems_in(declared, live_ns, live_svc, module.params["creating"])
    if found:
        module.fail_json(msg=" ".join(found) + " Nothing was changed.", problems=found)
    module.exit_json(changed=False, problems=[])


if __name__ == "__main__":
    main()
