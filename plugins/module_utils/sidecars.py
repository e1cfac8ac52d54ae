# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Sidecar coverage and workload rollouts: pure functions over API objects.

Used by the modules sidecar_status, workload_restart and mtls_readiness; nothing
here does I/O (the reads are Kube.namespace_contents in module_utils/k8s/resource.py), so unit tests feed
recorded objects.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import INJECTION_LABEL, REVISION_LABEL
from ansible_collections.meshops.istio.plugins.module_utils.objects import condition, proxy_container, workload_status
from ansible_collections.meshops.istio.plugins.module_utils.objects import meta as _meta

INJECT_OPT = "sidecar.istio.io/inject"
STATUS_ANNOTATION = "sidecar.istio.io/status"
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
RESTARTABLE_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
API_VERSION = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "ReplicaSet": "apps/v1"}


def label_state(namespace: Dict[str, Any]) -> Dict[str, Any]:
    """Which injection label a namespace carries, and whether that is a conflict."""
    labels = _meta(namespace).get("labels") or {}
    injection = labels.get(INJECTION_LABEL)
    revision = labels.get(REVISION_LABEL)
    if injection is not None and revision is not None:
        mode = "conflict"
    elif injection == "enabled":
        mode = "istio-injection"
    elif injection is not None:
        mode = "disabled"
    elif revision is not None:
        mode = "revision"
    else:
        mode = "none"
    return {
        "mode": mode,
        "enabled": mode in ("istio-injection", "revision"),
        # What Istio's injector does with new pods: istio-injection=enabled wins, any other istio-injection value
        # turns injection off, and istio.io/rev alone selects a revision. The one rule for "injected namespace".
        "injects": injection == "enabled" or (injection is None and revision is not None),
        "istio_injection": injection,
        "revision": revision,
    }


def applied_fields(obj: Dict[str, Any]) -> Dict[str, List[str]]:
    """The labels and annotations each server-side apply field manager owns on an object, from its managedFields:
    {manager: ["labels.<key>", "annotations.<key>", ...]}. A re-apply by that manager of the same keys with the
    values the object has changes nothing."""
    out: Dict[str, List[str]] = {}
    for entry in _meta(obj).get("managedFields") or []:
        if entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        metadata = (entry.get("fieldsV1") or {}).get("f:metadata") or {}
        owned = [
            f"{part}.{key[2:]}"
            for part in ("labels", "annotations")
            for key in metadata.get(f"f:{part}") or {}
            if key.startswith("f:")
        ]
        out[entry.get("manager") or ""] = sorted(owned)
    return out


def injected_names(namespaces: List[Dict[str, Any]]) -> List[str]:
    """Sorted names of the namespaces whose new pods Istio injects (see label_state's ``injects``)."""
    return sorted(_meta(ns).get("name") for ns in namespaces if label_state(ns)["injects"])


def opted_out(pod: Dict[str, Any]) -> bool:
    """Pods that say sidecar.istio.io/inject: "false" (label or annotation) never get a sidecar."""
    meta = _meta(pod)
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        if str(source.get(INJECT_OPT, "")).lower() == "false":
            return True
    return False


def live_pods(pods: Iterable[Dict[str, Any]]) -> Iterable[Dict[str, Any]]:
    """The pods that count: neither finished (Succeeded, Failed) nor being deleted."""
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed") and not _meta(pod).get("deletionTimestamp"):
            yield pod


def injected_revision(pod: Dict[str, Any]) -> Optional[str]:
    raw = (_meta(pod).get("annotations") or {}).get(STATUS_ANNOTATION)
    if not raw:
        return None
    try:
        return json.loads(raw).get("revision")
    except (TypeError, ValueError):
        return None


def pod_ready(pod: Dict[str, Any]) -> bool:
    ready = condition(pod, "Ready")
    return bool(ready) and ready.get("status") == "True"


def not_ready_reason(pod: Dict[str, Any]) -> str:
    """The first useful reason a pod is not Ready: unschedulable, waiting container, or the condition's reason."""
    status = pod.get("status") or {}
    scheduled = condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return scheduled.get("message") or scheduled.get("reason") or "not scheduled"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"{cs.get('name')}: {waiting.get('reason', 'waiting')}"
    ready = condition(pod, "Ready")
    if ready and ready.get("status") != "True":
        return ready.get("reason") or ""
    return status.get("phase", "")


def owner_workload(pod: Dict[str, Any], replicasets: Dict[str, Dict[str, Any]]) -> Optional[Tuple[str, str]]:
    """(kind, name) of the Deployment/StatefulSet/DaemonSet that owns a pod, or None for a bare pod."""
    for ref in _meta(pod).get("ownerReferences") or []:
        if not ref.get("controller", True):
            continue
        if ref.get("kind") in ("StatefulSet", "DaemonSet"):
            return ref["kind"], ref["name"]
        if ref.get("kind") == "ReplicaSet":
            rs = replicasets.get(ref["name"])
            for rs_ref in _meta(rs or {}).get("ownerReferences") or []:
                if rs_ref.get("kind") == "Deployment":
                    return "Deployment", rs_ref["name"]
            return "ReplicaSet", ref["name"]
        return ref.get("kind"), ref.get("name")
    return None


def namespace_report(
    namespace: Dict[str, Any],
    pods: Iterable[Dict[str, Any]],
    replicasets: Iterable[Dict[str, Any]],
    revision: Optional[str] = None,
    tags: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """Sidecar coverage of one namespace and which workloads need a restart to get (the right) sidecar.

    revision (or the namespace's istio.io/rev label) may name a revision tag: tags maps each tag to the revision it
    points at, which is what the injector records on the pods it injects."""
    name = _meta(namespace).get("name")
    state = label_state(namespace)
    rs_by_name = {_meta(rs).get("name"): rs for rs in replicasets}
    wanted_rev = revision or state["revision"] or "default"
    wanted_rev = (tags or {}).get(wanted_rev, wanted_rev)
    counts = {"total": 0, "with_proxy": 0, "without_proxy": 0, "opted_out": 0, "not_ready": 0}
    needing_restart: List[Dict[str, Any]] = []
    workloads: Dict[Tuple[str, str], Dict[str, Any]] = {}
    bare: List[str] = []
    versions: Dict[str, int] = {}
    not_ready: List[str] = []
    for pod in live_pods(pods):
        meta = _meta(pod)
        counts["total"] += 1
        pod_name = meta.get("name")
        if opted_out(pod):
            counts["opted_out"] += 1
            continue
        proxy = proxy_container(pod)
        reason = None
        if proxy is None:
            counts["without_proxy"] += 1
            reason = "no istio-proxy container"
        else:
            counts["with_proxy"] += 1
            image = proxy.get("image", "")
            versions[image] = versions.get(image, 0) + 1
            rev = injected_revision(pod)
            if rev and rev != wanted_rev:
                reason = f"injected by revision {rev}, not {wanted_rev}"
        if not pod_ready(pod):
            counts["not_ready"] += 1
            why = not_ready_reason(pod)
            not_ready.append(f"{pod_name} ({why})" if why else pod_name)
        if reason:
            # Listed whether or not the namespace is labeled yet: these are the workloads a
            # restart must cover once it is (the role plans with this before labeling).
            owner = owner_workload(pod, rs_by_name)
            needing_restart.append({"pod": pod_name, "reason": reason, "owner": owner})
            if owner and owner[0] in RESTARTABLE_KINDS:
                workloads[owner] = {"kind": owner[0], "namespace": name, "name": owner[1]}
            else:
                bare.append(pod_name)
    eligible = counts["total"] - counts["opted_out"]
    coverage = 100.0 if eligible == 0 else round(100.0 * counts["with_proxy"] / eligible, 1)
    problems = []
    if state["mode"] == "conflict":
        problems.append(
            f"Namespace {name} carries both istio-injection={state['istio_injection']} and "
            f"istio.io/rev={state['revision']}: remove one of the two labels."
        )
    if state["enabled"] and counts["without_proxy"]:
        missing = [p["pod"] for p in needing_restart if p["reason"] == "no istio-proxy container"]
        problems.append(
            f"Namespace {name}: {counts['without_proxy']} of {eligible} eligible pods have no istio-proxy "
            f"({', '.join(sorted(missing)[:5])}{', ...' if len(missing) > 5 else ''}): restart their workloads "
            "(role meshops.istio.namespace_injection does it)."
        )
    for pod_name in sorted(bare):
        problems.append(
            f"Pod {name}/{pod_name} has no controller that can be restarted: delete and recreate it to inject it."
        )
    if state["enabled"] and not_ready:
        problems.append(
            f"Namespace {name}: pods not Ready: {', '.join(sorted(not_ready)[:5])}"
            f"{', ...' if len(not_ready) > 5 else ''}. Check `kubectl -n {name} describe pod` for their events."
        )
    return {
        "namespace": name,
        "labels": dict(_meta(namespace).get("labels") or {}),
        "annotations": dict(_meta(namespace).get("annotations") or {}),
        "applied": applied_fields(namespace),
        "label": state,
        **counts,
        # What this mode counts as in the mesh (module_utils/ambient.py's reports count enrolled pods).
        "in_mesh": counts["with_proxy"],
        "eligible": eligible,
        "coverage_percent": coverage,
        "proxy_images": dict(sorted(versions.items())),
        "pods_needing_restart": sorted(needing_restart, key=lambda p: p["pod"]),
        "workloads_to_restart": sorted(workloads.values(), key=lambda w: (w["kind"], w["name"])),
        "complete": state["enabled"] and counts["without_proxy"] == 0 and not needing_restart and not not_ready,
        "problems": problems,
    }


def rollout_status(obj: Dict[str, Any]) -> Dict[str, Any]:
    """Whether a Deployment/StatefulSet/DaemonSet rollout finished, by the one workload rule (objects.workload_status:
    the way kubectl rollout status decides, and a Deployment Available)."""
    status = workload_status(obj)
    if status["ready"]:
        return {"done": True, "message": f"{status['replicas']} replicas updated and available"}
    return {"done": False, "message": "; ".join(status["reasons"])}


def restart_patch(timestamp: str) -> Dict[str, Any]:
    """The pod-template annotation `kubectl rollout restart` sets."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: timestamp}}}}}


def batches(items: List[Any], size: int) -> List[List[Any]]:
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [items[i : i + size] for i in range(0, len(items), size)]


def coverage(
    contents: List[Dict[str, Any]],
    revision: Optional[str],
    require_labeled: bool,
    tags: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """Sidecar coverage of namespaces, from what Kube.namespace_contents read (each: name, namespace or None when it
    does not exist, pods, replicasets) and the revision tags (Kube.revision_tags). Used by sidecar_status and
    mtls_readiness."""
    reports = {
        read["name"]: namespace_report(read["namespace"], read["pods"], read["replicasets"], revision, tags)
        for read in contents
        if read["namespace"] is not None
    }
    return coverage_of(reports.values(), [read["name"] for read in contents], require_labeled)


def coverage_of(reports: Iterable[Dict[str, Any]], names: Sequence[str], require_labeled: bool) -> Dict[str, Any]:
    """The coverage of the namespaces ``names`` (in that order) from per-namespace reports (namespace_report, as
    coverage returns them under ``namespaces``; a name with no report does not exist). So a report of many
    namespaces answers for a few of them exactly as a read of those few would."""
    by_name = {r["namespace"]: r for r in reports}
    found = []
    problems = []
    for name in names:
        report = by_name.get(name)
        if report is None:
            problems.append(f"Namespace {name} does not exist: create it or remove it from the list.")
            continue
        found.append(report)
        problems.extend(report["problems"])
        if require_labeled and not report["label"]["enabled"]:
            wanted = (
                "for ambient mode (istio.io/dataplane-mode=ambient)"
                if report.get("dataplane_mode") == "ambient"
                else "for injection (istio-injection=enabled or istio.io/rev)"
            )
            problems.append(
                f"Namespace {name} is not labeled {wanted}: label it (role meshops.istio.namespace_injection)."
            )
    eligible = sum(r["eligible"] for r in found)
    in_mesh = sum(r.get("in_mesh", r["with_proxy"]) for r in found)
    return {
        "complete": not problems and all(r["complete"] for r in found),
        "coverage_percent": 100.0 if eligible == 0 else round(100.0 * in_mesh / eligible, 1),
        "namespaces": found,
        "workloads_to_restart": [w for r in found for w in r["workloads_to_restart"]],
        "problems": problems,
    }
