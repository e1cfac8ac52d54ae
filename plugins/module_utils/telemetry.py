# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The telemetry gate's decisions: addons Available, Istio's metrics present where sidecars run."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ansible_collections.meshops.istio.plugins.module_utils import objects
from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import (
    DATAPLANE_MODE_LABEL,
    REDIRECTION_ANNOTATION,
)

# Istio's standard metrics: an HTTP/gRPC request counter and the TCP equivalent.
ISTIO_METRICS = ("istio_requests_total", "istio_tcp_connections_opened_total")


def in_mesh(pod: Mapping[str, Any]) -> bool:
    """A pod whose traffic Istio's proxies report: it carries an istio-proxy sidecar, or istio-cni redirected it to
    ztunnel (ambient mode). ztunnel's own pods (their container is named istio-proxy too) are the proxy, not a
    workload of the mesh."""
    meta = objects.meta(pod)
    if (meta.get("annotations") or {}).get(REDIRECTION_ANNOTATION) == "enabled":
        return True
    if (meta.get("labels") or {}).get("app") == "ztunnel" and (meta.get("labels") or {}).get(
        DATAPLANE_MODE_LABEL
    ) == "none":
        return False
    return objects.proxy_container(pod) is not None


def sidecar_pods(pods: Iterable[Mapping[str, Any]]) -> Dict[str, int]:
    """{namespace: number of live pods in the mesh (in_mesh)}."""
    counts: Dict[str, int] = {}
    for pod in pods:
        if objects.meta(pod).get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if in_mesh(pod):
            ns = objects.meta(pod).get("namespace") or ""
            counts[ns] = counts.get(ns, 0) + 1
    return counts


def addon_report(name: str, namespace: str, deployment: str, obj: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Whether an addon's Deployment exists and is ready by the one workload rule (objects.workload_status): its
    current generation observed, every replica updated and available, and Available."""
    ref = f"Deployment {namespace}/{deployment}"
    report: Dict[str, Any] = {"name": name, "namespace": namespace, "deployment": deployment, "available": False}
    if obj is None:
        report["problem"] = (
            f"{ref} of the {name} addon does not exist: install it (role meshops.istio.telemetry_addons, "
            f"telemetry_addons_{name}_mode=install) or mark the addon external."
        )
        return report
    status = objects.workload_status(obj, "Deployment")
    if not status["observed"]:
        report["problem"] = (
            f"{ref} of the {name} addon has not rolled out its latest spec yet: wait, or check its events."
        )
    elif not status["ready"]:
        report["problem"] = (
            f"{ref} of the {name} addon is not ready ({'; '.join(status['reasons'])}): check its pods with "
            f"`kubectl -n {namespace} describe deployment {deployment}`."
        )
    else:
        report["available"] = True
    report["ready_replicas"] = (obj.get("status") or {}).get("readyReplicas", 0)
    return report


def metrics_report(
    sidecars: Mapping[str, int],
    namespaces: List[str],
    seen: Mapping[str, float],
    where: str,
    metrics: Tuple[str, ...] = ISTIO_METRICS,
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Per namespace: pods with sidecars and Istio series seen; a problem for sidecars without metrics.

    namespaces: the namespaces to check; empty means every namespace with sidecars.
    seen: {namespace: number of Istio series naming it as source or destination}.
    """
    wanted = list(namespaces) or sorted(ns for ns, count in sidecars.items() if count)
    reports = []
    problems = []
    for ns in wanted:
        pods = sidecars.get(ns, 0)
        series = int(seen.get(ns, 0))
        reports.append({"namespace": ns, "pods_with_sidecar": pods, "series": series, "has_metrics": series > 0})
        if series:
            continue
        if pods:
            problems.append(
                f"Namespace {ns} has {pods} pod(s) with sidecars but {where} has no {' or '.join(metrics)} series "
                "for it: send traffic through its services, then check that Prometheus scrapes the sidecars "
                "(port 15020, path /stats/prometheus) and that the mesh-wide Telemetry does not disable metrics."
            )
        else:
            problems.append(
                f"Namespace {ns} has no pods with sidecars, so it reports no Istio metrics: enable injection "
                "there first (role meshops.istio.namespace_injection)."
            )
    if not wanted:
        problems.append(
            "no namespace has pods with sidecars, so there is no Istio traffic to see: enable injection first "
            "(role meshops.istio.namespace_injection)."
        )
    return reports, problems
