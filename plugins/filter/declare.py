# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Filters for the steps' declared state: what each step's declare reads from the cluster, and whether what they
declare has somewhere to go (every namespace and Service it names exists)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

references = module_utils("references")
queries = module_utils("live_queries")


def declare_live_queries(steps: Sequence[str], istio_namespace: str = "istio-system") -> List[Dict[str, Any]]:
    """The meshops.istio.object_lists queries that the given steps' declares read, each keyed by its step."""
    if isinstance(steps, str) or not isinstance(steps, (list, tuple)):
        raise AnsibleFilterError(f"declare_live_queries: expected a list of step names, got {steps!r}")
    return queries.live_queries(steps, istio_namespace)


def declared_reference_problems(
    declared: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]], creating: Sequence[str] = ()
) -> List[str]:
    """One sentence per declared object whose namespace, or routing whose Service, does not exist in the live
    Namespaces and Services given (the ``references`` queries of declare_live_queries), naming the variable to fix.
    The same check as the meshops.istio.declared_references module, on objects already read."""
    if not isinstance(declared, (list, tuple)) or not isinstance(live, (list, tuple)):
        raise AnsibleFilterError("declared_reference_problems: expected the declared sets and a list of live objects")
    objects = [o for o in live if isinstance(o, Mapping)]
    return references.problems_in(
        declared,
        [o for o in objects if o.get("kind") == "Namespace"],
        [o for o in objects if o.get("kind") == "Service"],
        creating,
    )


class FilterModule:
    def filters(self):
        return {
            "declare_live_queries": declare_live_queries,
            "declared_reference_problems": declared_reference_problems,
        }
