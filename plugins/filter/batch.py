# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Lists of objects for one kubernetes.core.k8s run, and what such a run changed.

The roles hand whole lists to kubernetes.core.k8s (its ``definition`` takes a list): one module run, one client,
one discovery, instead of one module process per object. These filters build those lists and read the result,
which kubernetes.core returns flat for one object and as ``result.results`` for several.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

objects = module_utils("objects")


def namespace_objects(
    names: Sequence[str],
    labels: Optional[Mapping[str, str]] = None,
    annotations: Optional[Mapping[str, str]] = None,
) -> List[Dict[str, Any]]:
    """Namespace definitions, each with the given labels and annotations (none: the object as a field manager that
    owns no label)."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise AnsibleFilterError(f"namespace_objects: expects a list of namespace names, got {names!r}")
    out = []
    for name in names:
        meta: Dict[str, Any] = {"name": str(name)}
        if labels:
            # None stays None: in a merge patch it removes the label.
            meta["labels"] = {str(k): (None if v is None else str(v)) for k, v in labels.items()}
        if annotations:
            meta["annotations"] = {str(k): str(v) for k, v in annotations.items()}
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    return out


def object_definitions(refs: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """References (apiVersion, kind, namespace, name) as minimal definitions, e.g. for a state=absent run."""
    out = []
    for ref in refs:
        meta = {"name": ref["name"]}
        if ref.get("namespace"):
            meta["namespace"] = ref["namespace"]
        out.append({"apiVersion": ref["apiVersion"], "kind": ref["kind"], "metadata": meta})
    return out


def _object_results(registered: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    if not isinstance(registered, Mapping) or registered.get("skipped"):
        return []
    if isinstance(registered.get("sets"), list):  # meshops.istio.apply_sets: each set's results
        return [r for s in registered["sets"] if isinstance(s, Mapping) for r in _object_results(s)]
    if isinstance(registered.get("results"), list):
        return [r for r in registered["results"] if isinstance(r, Mapping)]
    inner = registered.get("result")
    if isinstance(inner, Mapping) and isinstance(inner.get("results"), list):
        return [r for r in inner["results"] if isinstance(r, Mapping)]
    return [registered] if "result" in registered or "method" in registered else []


def changed_objects(registered: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """kind, namespace, name and method of each object a kubernetes.core.k8s run changed (or would, in check mode).

    With --diff, each also carries its diff: kubernetes.core shows no per-object diff for a list run.
    """
    out = []
    for res in _object_results(registered):
        if not res.get("changed"):
            continue
        obj = res.get("result") if isinstance(res.get("result"), Mapping) else {}
        meta = obj.get("metadata") or {}
        details = obj.get("details") or {}  # a Status answer to a delete
        entry = {
            "kind": obj.get("kind") if obj.get("kind") != "Status" else details.get("kind"),
            "namespace": meta.get("namespace"),
            "name": meta.get("name") or details.get("name"),
            "method": res.get("method"),
        }
        if isinstance(res.get("diff"), Mapping):  # run with --diff: what differs, live (before) and declared (after)
            entry["diff"] = {"before": res["diff"].get("before"), "after": res["diff"].get("after")}
        out.append(entry)
    return out


def objects_to_apply(
    declared: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]], field_manager: str
) -> List[Dict[str, Any]]:
    """The declared objects, in order, that a server-side apply by ``field_manager`` would change: the ones not
    already in place in ``live`` (module_utils/objects.py: in_place; any doubt keeps an object)."""
    if not isinstance(declared, (list, tuple)) or not isinstance(live, (list, tuple)):
        raise AnsibleFilterError("objects_to_apply: expected a list of declared objects and a list of live objects")
    if not isinstance(field_manager, str) or not field_manager:
        raise AnsibleFilterError(f"objects_to_apply: expected a field manager name, got {field_manager!r}")
    return objects.objects_to_apply(declared, live, field_manager)


def declared_to_apply(sets: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The steps' declared sets with only the objects an apply would change: a set's C(to_apply) (the objects its
    declare found not in place) instead of its C(objects) where it has one; sets left with nothing are dropped."""
    if not isinstance(sets, (list, tuple)) or not all(isinstance(s, Mapping) for s in sets):
        raise AnsibleFilterError("declared_to_apply: expected the steps' declared sets (a list of dicts)")
    out = []
    for declared in sets:
        wanted = declared["to_apply"] if "to_apply" in declared else declared.get("objects") or []
        if wanted:
            out.append(dict(declared, objects=list(wanted)))
    return out


class FilterModule:
    def filters(self):
        return {
            "namespace_objects": namespace_objects,
            "object_definitions": object_definitions,
            "changed_objects": changed_objects,
            "objects_to_apply": objects_to_apply,
            "declared_to_apply": declared_to_apply,
        }
