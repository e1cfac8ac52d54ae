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
