# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Traffic baseline decisions: a compact service list in, validated DestinationRules and VirtualServices out (in
ambient mode, DestinationRules, waypoints and HTTPRoutes: module_utils/waypoints.py).

Pure logic over plain data, behind the traffic_baseline_* filters (plugins/filter/traffic.py). A refused service
list raises InvalidInput naming every service and field at once; the filter hands it on as AnsibleFilterError.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.meshops.istio.plugins.module_utils import durations, objects, waypoints
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.readiness import WAYPOINT_CLASS
from ansible_collections.meshops.istio.plugins.module_utils.waypoints import USE_WAYPOINT_LABEL

MANAGED_LABEL = "meshops.istio/traffic-baseline"
SERVICE_LABEL = "meshops.istio/service"
NAME_PREFIX = "baseline-"

DEFAULTS: Dict[str, Any] = {
    "timeout": "10s",
    "retries": {"attempts": 3, "per_try_timeout": "3s", "retry_on": "connect-failure,refused-stream,unavailable,503"},
    "load_balancer": "LEAST_REQUEST",
    "connection_pool": {
        "max_connections": 1024,
        "http1_max_pending_requests": 1024,
        "http2_max_requests": 1024,
        "max_requests_per_connection": 0,
    },
    "outlier_detection": {
        "consecutive_5xx_errors": 5,
        "interval": "10s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    },
}

LOAD_BALANCERS = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH")
RETRY_ON = {
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
}
# Service keys that mean complex routing: refused unless advanced routing is allowed.
ADVANCED_KEYS = ("http_match", "route_weights", "mirror", "fault")
SERVICE_KEYS = {"name", "namespace", "port", "take_over", "timeout", "retries", "load_balancer"}
SERVICE_KEYS |= {"connection_pool", "outlier_detection", *ADVANCED_KEYS}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Istio's field names for the advanced routing keys of a service entry.
_ISTIO_FIELDS = {"http_match": "match", "route_weights": "route", "mirror": "mirror", "fault": "fault"}
DATAPLANE_MODES = ("sidecar", "ambient")
# The kinds this role creates, and so may delete. Never a Service: on a Service it applies one label.
CREATED_KINDS = ("DestinationRule", "VirtualService", "Gateway", "HTTPRoute")
# Why retries are refused in ambient mode (filter traffic_baseline_resources names the variable that holds them).
_NO_RETRIES_IN_AMBIENT = (
    "has no HTTPRoute equivalent in ambient mode: the Gateway API standard channel (the CRDs step 1 installs) has no "
    "retry field, and Istio reads timeouts.backendRequest without one as the whole request's timeout. Remove it: the "
    "waypoint then applies Istio's default retry policy (2 retries on connect-failure, refused-stream, unavailable, "
    "cancelled and retriable-status-codes). Or keep the sidecar baseline (traffic_baseline_dataplane_mode: sidecar)"
)


class _Errors:
    def __init__(self) -> None:
        self.items: List[str] = []

    def add(self, where: str, field: str, message: str) -> None:
        self.items.append(f"{where}: {field} {message}")


def _seconds(value: Any, where: str, field: str, errors: _Errors) -> Optional[float]:
    """The duration in seconds; Istio takes it as a string (rendered as given) and of at least 1ms."""
    seconds = durations.duration_seconds(value) if isinstance(value, str) else None
    if seconds is None:
        errors.add(where, field, f"must be a duration like '500ms', '3s' or '1m' (Istio's format), got {value!r}")
        return None
    if seconds < 0.001:
        errors.add(where, field, f"must be at least 1ms, got {value!r}")
        return None
    return seconds


def _int(value: Any, where: str, field: str, low: int, high: int, errors: _Errors) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(where, field, f"must be a whole number from {low} to {high}, got {value!r}")
        return None
    if not low <= value <= high:
        errors.add(where, field, f"must be from {low} to {high}, got {value}")
        return None
    return value


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _policy(svc: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    policy = {}
    for key in ("timeout", "retries", "load_balancer", "connection_pool", "outlier_detection"):
        if isinstance(defaults.get(key), Mapping) and isinstance(svc.get(key), Mapping):
            policy[key] = _merge(defaults[key], svc[key])
        else:
            policy[key] = copy.deepcopy(svc.get(key, defaults.get(key)))
    return policy


def _validate(where: str, policy: Mapping[str, Any], errors: _Errors, ambient: bool = False) -> None:
    timeout = _seconds(policy["timeout"], where, "timeout", errors)
    retries = policy["retries"]
    if ambient:
        if timeout is not None and not waypoints.gateway_duration(policy["timeout"]):
            errors.add(
                where,
                "timeout",
                "must be a Gateway API duration in ambient mode (whole numbers of h, m, s or ms, up to 5 digits "
                f"each: '1500ms', not '1.5s'), got {policy['timeout']!r}",
            )
    elif not isinstance(retries, Mapping):
        errors.add(where, "retries", f"must be a mapping with attempts, per_try_timeout, retry_on; got {retries!r}")
    else:
        _int(retries.get("attempts"), where, "retries.attempts", 0, 10, errors)
        per_try = _seconds(retries.get("per_try_timeout"), where, "retries.per_try_timeout", errors)
        if timeout is not None and per_try is not None and per_try > timeout:
            errors.add(
                where,
                "retries.per_try_timeout",
                f"({retries.get('per_try_timeout')}) must not be longer than timeout ({policy['timeout']})",
            )
        retry_on = retries.get("retry_on")
        conditions = [c.strip() for c in str(retry_on or "").split(",") if c.strip()]
        unknown = [c for c in conditions if c not in RETRY_ON and not re.fullmatch(r"[1-5][0-9][0-9]", c)]
        if not conditions or unknown:
            errors.add(
                where,
                "retries.retry_on",
                f"has unknown conditions {unknown or [retry_on]}: use Istio's retry-on values "
                "(for example connect-failure,refused-stream,unavailable,503)",
            )
    if policy["load_balancer"] not in LOAD_BALANCERS:
        errors.add(
            where, "load_balancer", f"must be one of {', '.join(LOAD_BALANCERS)}, got {policy['load_balancer']!r}"
        )
    pool = policy["connection_pool"]
    if not isinstance(pool, Mapping):
        errors.add(where, "connection_pool", f"must be a mapping, got {pool!r}")
    else:
        for key in ("max_connections", "http1_max_pending_requests", "http2_max_requests"):
            _int(pool.get(key), where, f"connection_pool.{key}", 1, 1_000_000, errors)
        _int(
            pool.get("max_requests_per_connection"),
            where,
            "connection_pool.max_requests_per_connection",
            0,
            1_000_000,
            errors,
        )
    outlier = policy["outlier_detection"]
    if not isinstance(outlier, Mapping):
        errors.add(where, "outlier_detection", f"must be a mapping, got {outlier!r}")
    else:
        _int(outlier.get("consecutive_5xx_errors"), where, "outlier_detection.consecutive_5xx_errors", 1, 1000, errors)
        _seconds(outlier.get("interval"), where, "outlier_detection.interval", errors)
        _seconds(outlier.get("base_ejection_time"), where, "outlier_detection.base_ejection_time", errors)
        _int(outlier.get("max_ejection_percent"), where, "outlier_detection.max_ejection_percent", 0, 100, errors)


def _metadata(svc: Mapping[str, Any]) -> Dict[str, Any]:
    labels = {MANAGED_LABEL: "true", SERVICE_LABEL: svc["name"], "app.kubernetes.io/managed-by": "meshops.istio"}
    return {"name": NAME_PREFIX + svc["name"], "namespace": svc["namespace"], "labels": labels}


def _host(svc: Mapping[str, Any]) -> str:
    return f"{svc['name']}.{svc['namespace']}.svc.cluster.local"


def _destination_rule(svc: Mapping[str, Any], policy: Mapping[str, Any]) -> Dict[str, Any]:
    pool, outlier = policy["connection_pool"], policy["outlier_detection"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _metadata(svc),
        "spec": {
            "host": _host(svc),
            "trafficPolicy": {
                "loadBalancer": {"simple": policy["load_balancer"]},
                "connectionPool": {
                    "tcp": {"maxConnections": pool["max_connections"]},
                    "http": {
                        "http1MaxPendingRequests": pool["http1_max_pending_requests"],
                        "http2MaxRequests": pool["http2_max_requests"],
                        "maxRequestsPerConnection": pool["max_requests_per_connection"],
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": outlier["consecutive_5xx_errors"],
                    "interval": outlier["interval"],
                    "baseEjectionTime": outlier["base_ejection_time"],
                    "maxEjectionPercent": outlier["max_ejection_percent"],
                },
            },
        },
    }


def _virtual_service(svc: Mapping[str, Any], policy: Mapping[str, Any], advanced: Mapping[str, Any]) -> Dict[str, Any]:
    retries = policy["retries"]
    route: Dict[str, Any] = {
        "route": [{"destination": {"host": _host(svc), "port": {"number": svc["port"]}}}],
        "timeout": policy["timeout"],
        "retries": {
            "attempts": retries["attempts"],
            "perTryTimeout": retries["per_try_timeout"],
            "retryOn": retries["retry_on"],
        },
    }
    route.update(copy.deepcopy(dict(advanced)))
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _metadata(svc),
        "spec": {"hosts": [_host(svc)], "http": [route]},
    }


def _ambient_problems(where: str, svc: Mapping[str, Any], errors: _Errors) -> None:
    """What a service entry asks for that ambient mode's HTTPRoutes cannot carry."""
    if "retries" in svc:
        errors.add(where, "retries", _NO_RETRIES_IN_AMBIENT)
    advanced = sorted(k for k in ADVANCED_KEYS if k in svc)
    if advanced:
        errors.add(
            where,
            ", ".join(advanced),
            "is Istio VirtualService routing, which the baseline's HTTPRoutes do not carry in ambient mode: remove "
            "it, and route such traffic with an HTTPRoute of your own (the baseline leaves it alone)",
        )


def resources(
    services: Sequence[Any],
    defaults: Optional[Mapping[str, Any]] = None,
    advanced_routing: bool = False,
    dataplane_mode: str = "sidecar",
    waypoint: str = "waypoint",
) -> List[Dict[str, Any]]:
    """Validate the compact service list and render its objects: per service a DestinationRule and a VirtualService
    (sidecar mode), or a DestinationRule, an HTTPRoute and the Service's istio.io/use-waypoint label, with one
    waypoint Gateway named ``waypoint`` per namespace (ambient mode; in that order: the waypoints first, the labels
    that activate them last).

    All problems are collected and raised together (InvalidInput), each naming the service and the field.
    """
    if dataplane_mode not in DATAPLANE_MODES:
        raise InvalidInput(
            f"traffic_baseline_resources: traffic_baseline_dataplane_mode must be one of {', '.join(DATAPLANE_MODES)}, "
            f"got {dataplane_mode!r}. Nothing was applied."
        )
    ambient = dataplane_mode == "ambient"
    merged_defaults = _merge(DEFAULTS, defaults or {})
    errors = _Errors()
    if ambient:
        if not isinstance(waypoint, str) or not _DNS_LABEL.match(waypoint):
            errors.items.append(f"traffic_baseline_waypoint_name must be a DNS label, got {waypoint!r}")
        if "retries" in (defaults or {}):
            errors.add("traffic_baseline_defaults", "retries", _NO_RETRIES_IN_AMBIENT)
    seen = set()
    rendered: Dict[str, List[Dict[str, Any]]] = {"waypoints": [], "routing": [], "labels": []}
    for index, svc in enumerate(services):
        if not isinstance(svc, Mapping):
            errors.add(
                f"service #{index + 1}", "entry", f"must be a mapping with name, namespace and port, got {svc!r}"
            )
            continue
        where = f"service {svc.get('namespace', '?')}/{svc.get('name', '#' + str(index + 1))}"
        for key in sorted(set(svc) - SERVICE_KEYS):
            errors.add(where, key, "is not a known field (see the role's argument spec)")
        for key in ("name", "namespace"):
            value = svc.get(key)
            if not isinstance(value, str) or not _DNS_LABEL.match(value):
                errors.add(where, key, f"must be a DNS label (lower case letters, digits, '-'), got {value!r}")
        _int(svc.get("port"), where, "port", 1, 65535, errors)
        key = (svc.get("namespace"), svc.get("name"))
        if key in seen:
            errors.add(where, "name", "is listed twice: keep one entry per service")
        seen.add(key)
        advanced = {k: svc[k] for k in ADVANCED_KEYS if k in svc}
        if ambient:
            _ambient_problems(where, svc, errors)
        elif advanced and not advanced_routing:
            errors.add(
                where,
                ", ".join(sorted(advanced)),
                "is complex routing, which the staged path avoids early: remove it, or set "
                "traffic_baseline_advanced_routing: true deliberately",
            )
        policy = _policy(svc, merged_defaults)
        _validate(where, policy, errors, ambient)
        if errors.items:
            continue
        rendered["routing"].append(_destination_rule(svc, policy))
        if not ambient:
            rendered["routing"].append(
                _virtual_service(svc, policy, {_ISTIO_FIELDS[k]: v for k, v in advanced.items()})
            )
            continue
        route = waypoints.service_route(_metadata(svc), svc["name"], svc["port"], policy["timeout"])
        rendered["routing"].append(route)
        rendered["labels"].append(waypoints.service_label(svc["namespace"], svc["name"], waypoint))
        if all(objects.meta(w)["namespace"] != svc["namespace"] for w in rendered["waypoints"]):
            labels = {MANAGED_LABEL: "true", "app.kubernetes.io/managed-by": "meshops.istio"}
            rendered["waypoints"].append(waypoints.waypoint_gateway(svc["namespace"], waypoint, labels))
    if errors.items:
        raise InvalidInput("traffic_baseline_resources: " + "; ".join(errors.items) + ". Nothing was applied.")
    return rendered["waypoints"] + rendered["routing"] + rendered["labels"]


def _hosts(obj: Mapping[str, Any]) -> List[str]:
    """The hosts a VirtualService or DestinationRule names, short ones also in full (name.namespace.svc...)."""
    spec = obj.get("spec") or {}
    found = list(spec.get("hosts") or [])
    if spec.get("host"):
        found.append(spec["host"])
    short = []
    for h in found:
        short.append(h)
        ns = (obj.get("metadata") or {}).get("namespace")
        if "." not in h and ns:
            short.append(f"{h}.{ns}.svc.cluster.local")
    return short


def foreign(
    existing: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]], field_manager: str = ""
) -> List[Dict[str, Any]]:
    """Hand-made VirtualServices/DestinationRules (not managed by this collection) for the hosts we would manage; in
    ambient mode also the hand-made L7 routing of a listed Service (an HTTPRoute or VirtualService for it, or a
    waypoint chosen for it or its namespace by another writer than ``field_manager``) and a waypoint Gateway of the
    role's name that this collection does not manage (_ambient_foreign)."""
    wanted = {}
    for obj in desired:
        for h in _hosts(obj):
            wanted[(obj["kind"], h)] = (obj.get("metadata") or {}).get("labels", {}).get(SERVICE_LABEL)
    out = []
    for obj in existing:
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_LABEL) == "true":
            continue
        for h in _hosts(obj):
            if (obj.get("kind"), h) in wanted:
                out.append(
                    {
                        "kind": obj.get("kind"),
                        "namespace": meta.get("namespace"),
                        "name": meta.get("name"),
                        "host": h,
                        "service": wanted[(obj.get("kind"), h)],
                    }
                )
                break
    return out + _ambient_foreign(existing, desired, field_manager)


# What a Service's hand-made L7 routing withholds in ambient mode: the baseline's route and the label activating it.
_L7 = ["HTTPRoute", "Service"]
_TAKE_OVER = "Set take_over: true on that service to manage it anyway"


def _withheld(obj: Mapping[str, Any], service: Tuple[str, str], why: str, what: str = "") -> Dict[str, Any]:
    """A foreign entry of ambient mode for ``obj``: it withholds that service's (namespace, name) route and
    use-waypoint label, or (a waypoint Gateway, service name "") the baseline's Gateway of that namespace."""
    kind, meta = obj.get("kind"), objects.meta(dict(obj))
    ref = (
        f"{kind} {meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else f"{kind} {meta.get('name')}"
    )
    what = what or f"no baseline HTTPRoute and no {USE_WAYPOINT_LABEL} label"
    tail = f", and service {service[1]} gets {what}. {_TAKE_OVER}." if service[1] else "."
    return {
        "kind": kind,
        "namespace": meta.get("namespace") or meta.get("name"),
        "name": meta.get("name"),
        "service": service[1],
        "service_namespace": service[0],
        "withholds": ["Gateway"] if kind == "Gateway" else _L7,
        "message": f"{ref} {why}: left untouched{tail}",
    }


def _ambient_foreign(
    existing: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]], field_manager: str
) -> List[Dict[str, Any]]:
    listed = {}  # (namespace, service) -> the waypoint its label names
    for obj in desired:
        meta = objects.meta(dict(obj))
        if obj.get("kind") == "Service":
            listed[(meta.get("namespace"), meta.get("name"))] = (meta.get("labels") or {}).get(USE_WAYPOINT_LABEL)
    if not listed:
        return []
    hosts = {f"{name}.{ns}.svc.cluster.local": (ns, name) for ns, name in listed}
    gateways = {_subject(o)[0]: objects.meta(dict(o)).get("name") for o in desired if o.get("kind") == "Gateway"}
    out = []
    for obj in existing:
        kind, meta = obj.get("kind"), objects.meta(dict(obj))
        ns, name, labels = meta.get("namespace"), meta.get("name"), meta.get("labels") or {}
        if labels.get(MANAGED_LABEL) == "true" and kind in CREATED_KINDS:
            continue
        if kind == "HTTPRoute":
            for parent in sorted(set(waypoints.route_parent(obj)) & set(listed)):
                out.append(_withheld(obj, parent, f"already routes Service {parent[0]}/{parent[1]}"))
        elif kind == "VirtualService":
            for host in sorted({h for h in _hosts(obj) if h in hosts}):
                why = f"already routes {host} (a VirtualService and an HTTPRoute for one host conflict)"
                out.append(_withheld(obj, hosts[host], why))
        elif kind == "Service" and (ns, name) in listed:
            value = labels.get(USE_WAYPOINT_LABEL)
            if value not in (None, listed[(ns, name)]) and not waypoints.owns_label(obj, field_manager):
                why = f"already has {USE_WAYPOINT_LABEL}={value}, set by another writer"
                out.append(_withheld(obj, (ns, name), why, "no baseline HTTPRoute, and keeps its waypoint"))
        elif kind == "Namespace" and labels.get(USE_WAYPOINT_LABEL) is not None:
            value = labels[USE_WAYPOINT_LABEL]
            for svc in sorted(k for k in listed if k[0] == name and listed[k] != value):
                why = f"already sends its Services to waypoint {value} ({USE_WAYPOINT_LABEL})"
                out.append(_withheld(obj, svc, why, "no baseline HTTPRoute, and keeps that waypoint"))
        elif kind == "Gateway" and gateways.get(ns) == name:
            klass = (obj.get("spec") or {}).get("gatewayClassName")
            if klass != WAYPOINT_CLASS:
                raise InvalidInput(
                    f"traffic_baseline_foreign: Gateway {ns}/{name} (class {klass}) is not managed by meshops.istio "
                    f"and is not a waypoint, but the baseline's waypoint in namespace {ns} has that name: set "
                    "traffic_baseline_waypoint_name to another name, or rename that Gateway. Nothing was applied."
                )
            why = (
                f"is a waypoint not managed by meshops.istio, which the listed Services of namespace {ns} use as it is"
            )
            out.append(_withheld(obj, (ns, ""), why))
    return out


def stale(managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Objects this role created earlier whose service is no longer listed: the ones to delete (kinds it creates
    only; a Service is never deleted, its label is released: released())."""
    return objects.stale([m for m in managed if m.get("kind") in CREATED_KINDS], desired, MANAGED_LABEL)


def _subject(obj: Mapping[str, Any]) -> Tuple[Any, Any]:
    """(namespace, service) a desired object is for; a waypoint Gateway is for its namespace (service None)."""
    meta = objects.meta(dict(obj))
    if obj.get("kind") == "Service":
        return meta.get("namespace"), meta.get("name")
    return meta.get("namespace"), (meta.get("labels") or {}).get(SERVICE_LABEL)


def unblocked(desired: Sequence[Mapping[str, Any]], left_alone: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The desired objects minus those whose service's routing of that kind is hand-made and left alone, and (ambient
    mode) minus a namespace's waypoint when none of its Services is left to use it."""
    blocked = {(f.get("kind"), f.get("service")) for f in left_alone if "withholds" not in f}
    scoped = {
        (kind, f.get("service_namespace"), f.get("service") or None)
        for f in left_alone
        if "withholds" in f
        for kind in f["withholds"]
    }
    kept = [
        d
        for d in desired
        if (d.get("kind"), objects.labels(dict(d)).get(SERVICE_LABEL)) not in blocked
        and (d.get("kind"), *_subject(d)) not in scoped
    ]
    using = {objects.meta(dict(d)).get("namespace") for d in kept if d.get("kind") == "Service"}
    return [d for d in kept if d.get("kind") != "Gateway" or objects.meta(dict(d)).get("namespace") in using]


def released(
    existing: Sequence[Mapping[str, Any]], declared: Sequence[Mapping[str, Any]], field_manager: str
) -> List[Dict[str, Any]]:
    """The Services whose istio.io/use-waypoint label ``field_manager`` applied but no longer declares, each as the
    object that releases it (the Service with no fields: a server-side apply of it removes what the manager alone
    owned, and leaves the label if another writer owns it too)."""
    keep = {_subject(d) for d in declared if d.get("kind") == "Service"}
    out = []
    for obj in existing:
        meta = objects.meta(dict(obj))
        key = (meta.get("namespace"), meta.get("name"))
        if obj.get("kind") == "Service" and key not in keep and waypoints.owns_label(obj, field_manager):
            out.append(waypoints.service_label(key[0], key[1], None))
    return out
