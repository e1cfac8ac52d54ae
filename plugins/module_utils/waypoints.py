# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Step 4 in ambient mode: the traffic baseline's L7 policy on waypoints, as Gateway API objects. No I/O.

In ambient mode a listed Service's request timeout is enforced by a waypoint (an Envoy per namespace that istiod's
waypoint controller deploys for a Gateway of class istio-waypoint), configured by an HTTPRoute whose parent is the
Service, and activated by the label istio.io/use-waypoint on the Service. This module renders those objects (the
traffic baseline's declare, module_utils/traffic.py) and judges what istiod made of them (the gate, module
meshops.istio.waypoint_status).

Only fields of the Gateway API standard channel are rendered: the CRDs step 1 installs are that channel, and the
experimental fields (HTTPRoute ``retry`` among them) are not served there.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.meshops.istio.plugins.module_utils.objects import condition, workload_status
from ansible_collections.meshops.istio.plugins.module_utils.objects import labels as _labels
from ansible_collections.meshops.istio.plugins.module_utils.objects import meta as _meta
from ansible_collections.meshops.istio.plugins.module_utils.readiness import WAYPOINT_CLASS

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
# On a Service or namespace: the waypoint (a Gateway of that name in the Service's namespace) its traffic goes
# through. On a Service, it wins over its namespace's.
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
# On a waypoint Gateway: which traffic it handles (service, the default, is what the baseline's routes need).
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
# The condition istiod's ambient controller writes on a Service labeled with a waypoint.
WAYPOINT_BOUND = "istio.io/WaypointBound"
# The listener every waypoint has: HBONE from ztunnel on port 15008.
MESH_LISTENER = {"name": "mesh", "port": 15008, "protocol": "HBONE"}
# Durations as the Gateway API CRDs validate them (GEP-2257): 1 to 4 whole numbers of h, m, s or ms, each up to
# 5 digits. No fractions: '1.5s' is '1500ms' here.
_GATEWAY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
CHECKS = ("waypoints", "routes", "services")


def gateway_duration(value: Any) -> bool:
    """Whether the Gateway API accepts this duration string (HTTPRoute timeouts)."""
    return isinstance(value, str) and bool(_GATEWAY_DURATION.match(value))


def waypoint_gateway(namespace: str, name: str, labels: Mapping[str, str]) -> Dict[str, Any]:
    """The namespace's waypoint: a Gateway of class istio-waypoint for the traffic addressed to its Services."""
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "labels": {**labels, WAYPOINT_FOR_LABEL: "service"}},
        "spec": {"gatewayClassName": WAYPOINT_CLASS, "listeners": [dict(MESH_LISTENER)]},
    }


def service_route(metadata: Mapping[str, Any], service: str, port: int, timeout: str) -> Dict[str, Any]:
    """An HTTPRoute on the Service's port (its parent): every request to the Service itself, with the timeout.

    The fields the API server defaults (the match on every path, the backend's group, kind and weight) are written
    out, so that the live object holds exactly what was declared and a rerun finds it in place."""
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": dict(metadata),
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": service, "port": port}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": port, "weight": 1}],
                    "timeouts": {"request": timeout},
                }
            ],
        },
    }


def service_label(namespace: str, service: str, waypoint: Optional[str]) -> Dict[str, Any]:
    """The Service as this role applies it: the use-waypoint label alone, or (waypoint None) nothing, which releases
    the label this field manager applied before."""
    metadata: Dict[str, Any] = {"name": service, "namespace": namespace}
    if waypoint is not None:
        metadata["labels"] = {USE_WAYPOINT_LABEL: waypoint}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata}


def owns_label(obj: Mapping[str, Any], field_manager: str, label: str = USE_WAYPOINT_LABEL) -> bool:
    """Whether ``field_manager`` applied the label on this object (its Apply entry in managedFields holds it)."""
    for entry in _meta(dict(obj)).get("managedFields") or []:
        if not isinstance(entry, Mapping) or entry.get("manager") != field_manager or entry.get("operation") != "Apply":
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        if f"f:{label}" in fields:
            return True
    return False


def route_parent(route: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """(namespace, name) of every Service an HTTPRoute names as its parent (a mesh route, which waypoints serve)."""
    namespace = _meta(dict(route)).get("namespace")
    out = []
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if isinstance(ref, Mapping) and ref.get("kind") == "Service" and (ref.get("group") or "") == "":
            out.append((ref.get("namespace") or namespace, ref.get("name")))
    return out


# ------------------------------------------------------------------ the gate: what istiod made of the objects


def _unmet(obj: Mapping[str, Any], cond: Optional[Mapping[str, Any]], missing: str) -> Optional[str]:
    """Why the condition is not True at the object's current generation (None when it is)."""
    if not cond:
        return missing
    if cond.get("status") != "True":
        return f"{cond.get('reason') or cond.get('status')}: {cond.get('message') or 'no message'}"
    generation, seen = _meta(dict(obj)).get("generation"), cond.get("observedGeneration")
    if generation is not None and seen is not None and seen < generation:
        return f"istiod has not seen generation {generation} yet, its status is of generation {seen}"
    return None


def _index(objects: Iterable[Mapping[str, Any]]) -> Dict[Tuple[Any, Any], Mapping[str, Any]]:
    return {(_meta(dict(o)).get("namespace"), _meta(dict(o)).get("name")): o for o in objects}


def _report(base: Dict[str, Any], problem: str) -> Dict[str, Any]:
    return {**base, "ready": not problem, "problem": problem}


def waypoint_problem(
    namespace: str, name: str, gateway: Optional[Mapping[str, Any]], deployment: Optional[Mapping[str, Any]]
) -> str:
    """Why a waypoint Gateway does not pass ("" when it does): Programmed by istiod at its current generation, and
    the Deployment istiod's waypoint controller made for it (same name) ready."""
    where = f"waypoint Gateway {namespace}/{name}"
    if gateway is None:
        return f"{where} does not exist."
    klass = (gateway.get("spec") or {}).get("gatewayClassName")
    if klass != WAYPOINT_CLASS:
        return f"{where} is of class {klass}, not {WAYPOINT_CLASS}: it cannot carry the baseline's routes."
    why = _unmet(gateway, condition(dict(gateway), "Programmed"), "no status from istiod yet")
    if why:
        return (
            f"{where} is not Programmed ({why}): istiod's waypoint controller programs it when istiod runs in "
            f"ambient mode. Check `kubectl -n {namespace} describe gateway {name}` and istiod's log."
        )
    if deployment is None:
        return (
            f"{where} is Programmed, but istiod has not created its Deployment {namespace}/{name} yet: check "
            "istiod's log (its waypoint controller deploys it)."
        )
    status = workload_status(dict(deployment), "Deployment")
    if not status["ready"]:
        return (
            f"the {where} runs no ready proxy yet: Deployment {namespace}/{name} is {'; '.join(status['reasons'])}. "
            f"Check `kubectl -n {namespace} describe deployment {name}` and its pods' events."
        )
    return ""


def route_problem(namespace: str, name: str, service: str, route: Optional[Mapping[str, Any]]) -> str:
    """Why an HTTPRoute whose parent is the Service does not pass ("" when it does): istiod's status for that
    parent says Accepted and ResolvedRefs at the route's current generation."""
    where = f"HTTPRoute {namespace}/{name}"
    if route is None:
        return f"{where} does not exist."
    parents = [
        p
        for p in (route.get("status") or {}).get("parents") or []
        if (p.get("parentRef") or {}).get("kind") == "Service" and (p.get("parentRef") or {}).get("name") == service
    ]
    if not parents:
        return (
            f"{where} has no status from istiod for its parent Service {namespace}/{service} yet: istiod writes it "
            f"once it has read the route. Check `kubectl -n {namespace} get httproute {name} -o yaml` and istiod's "
            "log."
        )
    conditions = {c.get("type"): c for c in parents[0].get("conditions") or []}
    for ctype in ("Accepted", "ResolvedRefs"):
        why = _unmet(route, conditions.get(ctype), "no condition yet")
        if why:
            return (
                f"{where} is not {ctype} by istiod for Service {namespace}/{service} ({why}): fix the route as the "
                f"message says, or check `kubectl -n {namespace} get httproute {name} -o yaml`."
            )
    return ""


def service_problem(namespace: str, name: str, waypoint: str, service: Optional[Mapping[str, Any]]) -> str:
    """Why a Service labeled to use a waypoint does not pass ("" when it does): the label is still there, and
    istiod's condition istio.io/WaypointBound says it is bound."""
    where = f"Service {namespace}/{name}"
    if service is None:
        return f"{where} does not exist."
    label = _labels(dict(service)).get(USE_WAYPOINT_LABEL)
    if label != waypoint:
        return (
            f"{where} has {USE_WAYPOINT_LABEL}={label or '(none)'}, not {waypoint}: another writer changed it; rerun "
            "the traffic baseline to restore it."
        )
    why = _unmet(service, condition(dict(service), WAYPOINT_BOUND), "no status from istiod yet")
    if why:
        return (
            f"{where} is not bound to waypoint {namespace}/{waypoint} ({why}): istiod binds it when the waypoint "
            f"exists and serves Services. Check `kubectl -n {namespace} get service {name} -o yaml` "
            "(status.conditions)."
        )
    return ""


def gate_targets(objects: Sequence[Mapping[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """What the gate checks for the declared objects: each waypoint the labeled Services use (declared or not), each
    HTTPRoute with its parent Service, and each labeled Service."""
    waypoints, routes, services = {}, [], []
    for obj in objects:
        meta = _meta(dict(obj))
        namespace, name = meta.get("namespace"), meta.get("name")
        if obj.get("kind") == "Gateway":
            waypoints[(namespace, name)] = {"namespace": namespace, "name": name}
        elif obj.get("kind") == "HTTPRoute":
            for parent_ns, parent in route_parent(obj):
                if parent_ns == namespace:
                    routes.append({"namespace": namespace, "name": name, "service": parent})
        elif obj.get("kind") == "Service" and USE_WAYPOINT_LABEL in (meta.get("labels") or {}):
            waypoint = meta["labels"][USE_WAYPOINT_LABEL]
            services.append({"namespace": namespace, "name": name, "waypoint": waypoint})
            waypoints.setdefault((namespace, waypoint), {"namespace": namespace, "name": waypoint})
    return {"waypoints": list(waypoints.values()), "routes": routes, "services": services}


def gate_report(
    objects: Sequence[Mapping[str, Any]],
    live: Mapping[str, Sequence[Mapping[str, Any]]],
    checks: Sequence[str] = CHECKS,
) -> Dict[str, Any]:
    """The gate over the declared objects, against the live Gateways, Deployments, HTTPRoutes and Services (by
    kind in ``live``): ready when every check asked for passes; one problem sentence per object that does not."""
    targets = gate_targets(objects)
    gateways, deployments = _index(live.get("Gateway") or []), _index(live.get("Deployment") or [])
    routes, services = _index(live.get("HTTPRoute") or []), _index(live.get("Service") or [])
    report: Dict[str, Any] = {"waypoints": [], "routes": [], "services": []}
    if "waypoints" in checks:
        report["waypoints"] = [
            _report(t, waypoint_problem(t["namespace"], t["name"], gateways.get(_key(t)), deployments.get(_key(t))))
            for t in targets["waypoints"]
        ]
    if "routes" in checks:
        report["routes"] = [
            _report(t, route_problem(t["namespace"], t["name"], t["service"], routes.get(_key(t))))
            for t in targets["routes"]
        ]
    if "services" in checks:
        report["services"] = [
            _report(t, service_problem(t["namespace"], t["name"], t["waypoint"], services.get(_key(t))))
            for t in targets["services"]
        ]
    problems = [r["problem"] for part in ("waypoints", "routes", "services") for r in report[part] if not r["ready"]]
    return {"ready": not problems, **report, "problems": problems}


def _key(target: Mapping[str, Any]) -> Tuple[Any, Any]:
    return (target["namespace"], target["name"])
