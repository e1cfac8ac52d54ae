# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Drift: the check-mode results of the rollout's steps in, field-level differences out (JSON and Markdown)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

analysis = module_utils("analysis")
objects = module_utils("objects")

# Fields the API server or controllers own: never drift.
VOLATILE = re.compile(
    r"^(metadata\.(resourceVersion|generation|managedFields|uid|creationTimestamp|selfLink)"
    r"|metadata\.annotations\.deployment\.kubernetes\.io/revision|status)(\.|\[|$)"
)
# Known benign mutations: istiod patches its webhooks' CA bundle and failure policy.
BENIGN = (
    re.compile(r"^webhooks\[\d+\]\.clientConfig\.caBundle$"),
    re.compile(r"^webhooks\[\d+\]\.failurePolicy$"),
)


def _show(value: Any) -> Any:
    return "(absent)" if value is None else value


def _ref(obj: Mapping[str, Any], item: Any) -> Dict[str, Optional[str]]:
    meta = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta.get("name")}
    if not ref["name"] and isinstance(item, Mapping):
        # Loops over references (deletions) or definitions.
        src = item if "kind" in item else {}
        imeta = item.get("metadata") or {}
        ref = {
            "kind": src.get("kind"),
            "namespace": src.get("namespace") or imeta.get("namespace"),
            "name": src.get("name") or imeta.get("name"),
        }
    return ref


def _entries(step: str, res: Mapping[str, Any], autoscaled: set) -> List[Dict[str, Any]]:
    if not res.get("changed"):
        return []
    obj = res.get("result") if isinstance(res.get("result"), Mapping) else {}
    ref = _ref(obj, res.get("item"))
    base = {"step": step, **ref}
    if "command" in res and "status" in res and not ref["name"]:
        # kubernetes.core.helm: the release would be upgraded.
        status = res.get("status") or {}
        return [
            {
                "step": step,
                "kind": "HelmRelease",
                "namespace": status.get("namespace"),
                "name": status.get("name") or "release",
                "field": "values or chart",
                "declared": "as in the inventory",
                "live": "differs",
            }
        ]
    method = res.get("method")
    if method == "create":
        return [{**base, "field": "(object)", "declared": "present", "live": "missing"}]
    if method == "delete" or (isinstance(res.get("item"), Mapping) and "kind" in res["item"] and not obj):
        return [{**base, "field": "(object)", "declared": "absent", "live": "present"}]
    diff = res.get("diff")
    if not isinstance(diff, Mapping) or not ("before" in diff or "after" in diff):
        return [{**base, "field": "(run with --diff to see fields)", "declared": "?", "live": "?"}]
    if not diff.get("before") and "kind" in (diff.get("after") or {}):
        # A server-side apply of an object that does not exist: everything differs, kind included
        # (for an existing object, kind and apiVersion are never in the diff).
        return [{**base, "field": "(object)", "declared": "present", "live": "missing"}]
    before, after = objects.flatten(diff.get("before") or {}), objects.flatten(diff.get("after") or {})
    out = []
    for path in sorted(set(before) | set(after)):
        if VOLATILE.match(path) or any(p.match(path) for p in BENIGN):
            continue
        if path == "spec.replicas" and (ref["kind"], ref["namespace"], ref["name"]) in autoscaled:
            continue
        if before.get(path) == after.get(path):
            continue
        out.append({**base, "field": path, "declared": _show(after.get(path)), "live": _show(before.get(path))})
    return out


def _walk(step: str, res: Any, autoscaled: set) -> List[Dict[str, Any]]:
    if isinstance(res, (list, tuple)):
        return [e for r in res for e in _walk(step, r, autoscaled)]
    if not isinstance(res, Mapping) or res.get("skipped"):
        return []
    if "field_manager" in res and isinstance(res.get("delete"), list):
        # A step's declared set (<role>_declared): what a converge would delete (objects labeled as ours that are
        # no longer declared, as read from the cluster) is drift as it stands.
        return [
            {
                "step": step,
                "kind": ref.get("kind"),
                "namespace": ref.get("namespace"),
                "name": ref.get("name"),
                "field": "(object)",
                "declared": "absent",
                "live": "present",
            }
            for ref in res["delete"]
            if isinstance(ref, Mapping)
        ]
    if isinstance(res.get("results"), list):
        return _walk(step, res["results"], autoscaled)
    inner = res.get("result")
    if isinstance(inner, Mapping) and isinstance(inner.get("results"), list):
        return _walk(step, inner["results"], autoscaled)
    return _entries(step, res, autoscaled)


def drift_changes(
    results_by_step: Mapping[str, Any], autoscalers: Sequence[Mapping[str, Any]] = ()
) -> List[Dict[str, Any]]:
    """Field-level drift from check-mode results: step, kind, namespace, name, field, declared, live.

    autoscalers: HorizontalPodAutoscaler objects; spec.replicas of their targets is not drift.
    """
    if not isinstance(results_by_step, Mapping):
        raise AnsibleFilterError("drift_changes: expects a mapping of step name to registered results")
    autoscaled = set()
    for hpa in autoscalers or []:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        autoscaled.add((target.get("kind"), (hpa.get("metadata") or {}).get("namespace"), target.get("name")))
    out: List[Dict[str, Any]] = []
    for step, results in results_by_step.items():
        out.extend(_walk(str(step), results, autoscaled))
    return out


def _objects(res: Any) -> List[Mapping[str, Any]]:
    """The objects kubernetes.core.k8s results carry (a dry run returns each object as the server would store it)."""
    if isinstance(res, (list, tuple)):
        return [o for r in res for o in _objects(r)]
    if not isinstance(res, Mapping):
        return []
    if isinstance(res.get("results"), list):
        return _objects(res["results"])
    if isinstance(res.get("sets"), list):  # meshops.istio.apply_sets (a converge's apply)
        return _objects(res["sets"])
    inner = res.get("result")
    if isinstance(inner, Mapping):
        return _objects(inner["results"]) if isinstance(inner.get("results"), list) else [inner]
    return []


def drift_analyses(results_by_step: Mapping[str, Any]) -> List[str]:
    """The last wave analysis of each injected namespace, from the injection step's dry-run results (one sentence
    each; see analysis.last_analyses): drift shows it without reading the cluster again."""
    objects = _objects((results_by_step or {}).get("injection"))
    metas = [o.get("metadata") or {} for o in objects if o.get("kind") == "Namespace"]
    namespaces = [{"namespace": m.get("name"), "annotations": m.get("annotations")} for m in metas]
    return analysis.last_analyses(namespaces)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text.replace("|", "\\|").replace("\n", " ")


def _control_plane_lines(control_plane: Mapping[str, Any]) -> List[str]:
    def describe(item: Mapping[str, Any]) -> str:
        method = item.get("install_method", item.get("method"))
        known = "" if method in (None, "unknown") else f", {method}"
        return f"Istio {item.get('version') or '(version unknown)'}, revision {item.get('revision', 'default')}{known}"

    declared = control_plane.get("declared") or {}
    lines = ["", "## Control plane", "", f"- declared: {describe(declared)}"]
    live = control_plane.get("live") or []
    lines += [f"- live: Deployment {i.get('namespace')}/{i.get('name')}: {describe(i)}" for i in live]
    if not live:
        lines.append("- live: no istiod Deployment")
    return lines


def drift_markdown(
    entries: Iterable[Mapping[str, Any]],
    title: str = "Drift report",
    analyses: Sequence[str] = (),
    control_plane: Optional[Mapping[str, Any]] = None,
) -> str:
    """A Markdown report for people: one table row per drifted field, the control plane, the last wave analyses."""
    entries = list(entries)
    lines = [f"# {title}", ""]
    tail = _control_plane_lines(control_plane) if control_plane else []
    tail += ["", "## Last wave analyses", ""] + [f"- {a}" for a in analyses] if analyses else []
    if not entries:
        lines.append("No drift: the cluster matches the declared state.")
        return "\n".join(lines + tail) + "\n"
    objects = {(e["kind"], e.get("namespace"), e["name"]) for e in entries}
    lines += [f"{len(entries)} drifted field(s) in {len(objects)} object(s).", ""]
    lines += ["| step | object | field | declared | live |", "| --- | --- | --- | --- | --- |"]
    for e in entries:
        where = f"{e['namespace']}/{e['name']}" if e.get("namespace") else str(e["name"])
        lines.append(
            f"| {_cell(e['step'])} | {_cell(e['kind'])} {_cell(where)} | `{_cell(e['field'])}` "
            f"| {_cell(e['declared'])} | {_cell(e['live'])} |"
        )
    return "\n".join(lines + tail) + "\n"


class FilterModule:
    def filters(self):
        return {"drift_changes": drift_changes, "drift_markdown": drift_markdown, "drift_analyses": drift_analyses}
