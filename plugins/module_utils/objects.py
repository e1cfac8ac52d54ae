# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Reading Kubernetes objects as plain dicts: the small accessors the decision modules share."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

PROXY_CONTAINER = "istio-proxy"


def meta(obj: Dict[str, Any]) -> Dict[str, Any]:
    return obj.get("metadata") or {}


def labels(obj: Dict[str, Any]) -> Dict[str, str]:
    return meta(obj).get("labels") or {}


def condition(obj: Dict[str, Any], ctype: str) -> Optional[Dict[str, Any]]:
    """The status condition of the given type, or None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def workload_status(obj: Dict[str, Any], kind: Optional[str] = None) -> Dict[str, Any]:
    """Whether a Deployment, StatefulSet or DaemonSet is ready: the one rule every gate uses.

    Ready means the controller observed the current generation and every replica runs the current spec, counted as
    `kubectl rollout status` counts them: a Deployment has no old replicas left and spec.replicas (default 1) updated
    and available, a StatefulSet that many updated and ready, a DaemonSet every scheduled pod updated and available.
    A Deployment that reports conditions must also be Available. ``kind`` names the kind of an object that does not
    say it (list items do not).

    Returns ``ready``, ``reasons`` (sentences saying what is missing, empty when ready), ``observed`` (the controller
    saw the current generation; the counts describe an older spec when it has not, so they are not judged) and
    ``replicas`` (how many the workload wants).
    """
    kind = kind or obj.get("kind")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = meta(obj).get("generation")
    observed = status.get("observedGeneration")
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled") or 0
        updated = status.get("updatedNumberScheduled") or 0
        available = status.get("numberAvailable") or 0
    else:
        want = 1 if spec.get("replicas") is None else spec["replicas"]
        updated = status.get("updatedReplicas") or 0
        available = status.get("readyReplicas" if kind == "StatefulSet" else "availableReplicas") or 0
    if generation is not None and (observed is None or observed < generation):
        seen = "none" if observed is None else observed
        reason = f"the controller has not observed generation {generation} yet (observed {seen})"
        return {"ready": False, "reasons": [reason], "observed": False, "replicas": want}
    reasons = []
    if kind == "Deployment" and status.get("conditions"):
        cond = condition(obj, "Available") or {}
        if cond.get("status") != "True":
            reasons.append(f"not Available ({cond.get('message') or 'no Available condition'})")
    # The first count still short, in the order a rollout fills them (kubectl rollout status's order).
    old = (status.get("replicas") or 0) - updated if kind == "Deployment" else 0
    if old > 0:
        reasons.append(
            f"{updated}/{want} replicas updated, {status.get('unavailableReplicas') or 0} unavailable, "
            f"{old} old replicas still running"
        )
    elif updated < want:
        reasons.append(f"{updated}/{want} replicas updated")
    elif available < want:
        counted = "replicas ready" if kind == "StatefulSet" else "updated replicas available"
        reasons.append(f"{available}/{want} {counted}")
    return {"ready": not reasons, "reasons": reasons, "observed": True, "replicas": want}


def proxy_container(pod: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The injected istio-proxy container (a regular or a native-sidecar init container), or None."""
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == PROXY_CONTAINER:
            return container
    return None


def stale(
    managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]], label: str
) -> List[Dict[str, Any]]:
    """Objects carrying label=true that are not in desired: what a role created earlier and no longer wants.

    Returned as references (apiVersion, kind, namespace, name) ready for a delete.
    """
    keep = {(d["kind"], (d.get("metadata") or {}).get("namespace"), d["metadata"]["name"]) for d in desired}
    out = []
    for obj in managed:
        if labels(obj).get(label) != "true":
            continue
        key = (obj.get("kind"), meta(obj).get("namespace"), meta(obj).get("name"))
        if key not in keep:
            out.append({"apiVersion": obj.get("apiVersion"), "kind": key[0], "namespace": key[1], "name": key[2]})
    return out


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """Leaf values by dotted path (list items as [i]): the fields drift names."""
    # Empty containers are skipped: in kubernetes.core's diffs they stand for "nothing differs inside".
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}
