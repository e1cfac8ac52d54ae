"""What istio-cni's node agent tells istiod about a pod in ambient mode, which no agent tells it here.

In ambient mode the istio-cni node agent sets up each enrolled pod's traffic redirection to the node's ztunnel, then
annotates the pod ``ambient.istio.io/redirection: enabled``; when the pod leaves the mesh (its namespace loses the
``istio.io/dataplane-mode=ambient`` label, or the pod is labeled ``istio.io/dataplane-mode=none``) it undoes the
redirection and removes the annotation. istiod reads that annotation: a pod that carries it is a workload reached
over HBONE in istiod's ambient index (``/debug/ambientz``), which is what the collection's enrollment gate checks.

kwok runs the istio-cni-node DaemonSet's pods but no agent in them, so nobody would set the annotation. The istiod
supervisor calls :meth:`CniAgentStandIn.tick` every second; while the DaemonSet exists it sets and removes the
annotation by the agent's rules, for pods on a node whose istio-cni-node pod is Ready. It does nothing else: no
redirection exists, and istiod's reaction to the annotation is istiod's own. Only the Python standard library.
"""

from __future__ import annotations

import urllib.parse

REDIRECTION = "ambient.istio.io/redirection"
MODE_LABEL = "istio.io/dataplane-mode"
AGENT = "/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node"
AGENT_PODS = "/api/v1/namespaces/istio-system/pods?labelSelector=" + urllib.parse.quote("k8s-app=istio-cni-node")
AMBIENT_NAMESPACES = "/api/v1/namespaces?labelSelector=" + urllib.parse.quote(f"{MODE_LABEL}=ambient")


def ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def enrolled(pod: dict, ambient_namespaces: set[str], agent_nodes: set[str]) -> bool:
    """Whether the agent would redirect this pod: in an ambient namespace (or labeled ambient itself), not opted
    out, no sidecar of its own, not on the host network, running on a node whose agent is Ready."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    mode = (meta.get("labels") or {}).get(MODE_LABEL)
    if mode == "none" or (mode != "ambient" and meta.get("namespace") not in ambient_namespaces):
        return False
    if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
        return False
    if spec.get("hostNetwork") or any(c.get("name") == "istio-proxy" for c in spec.get("containers") or []):
        return False
    return spec.get("nodeName") in agent_nodes


class CniAgentStandIn:
    """One tick: annotate the pods the agent would redirect, and un-annotate the others."""

    def __init__(self, api) -> None:
        self.api = api

    def tick(self) -> list[str]:
        if self.api.get(AGENT) is None:
            return []
        agents = (self.api.get(AGENT_PODS) or {}).get("items") or []
        agent_nodes = {(p.get("spec") or {}).get("nodeName") for p in agents if ready(p)}
        namespaces = (self.api.get(AMBIENT_NAMESPACES, metadata_only=True) or {}).get("items") or []
        ambient = {(n.get("metadata") or {}).get("name") for n in namespaces}
        changed = []
        for pod in (self.api.get("/api/v1/pods") or {}).get("items") or []:
            meta = pod.get("metadata") or {}
            want = enrolled(pod, ambient, agent_nodes)
            if want == ((meta.get("annotations") or {}).get(REDIRECTION) == "enabled"):
                continue
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            self.api.merge_patch(path, {"metadata": {"annotations": {REDIRECTION: "enabled" if want else None}}})
            changed.append(f"{meta['namespace']}/{meta['name']} {'enrolled' if want else 'left the mesh'}")
        return changed
