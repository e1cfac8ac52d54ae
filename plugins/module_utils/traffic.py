# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Traffic baseline decisions: a compact service list in, validated DestinationRules and VirtualServices out.

Pure logic over plain data, behind the traffic_baseline_* filters (plugins/filter/traffic.py). A refused service
list raises InvalidInput naming every service and field at once; the filter hands it on as AnsibleFilterError.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.meshops.istio.plugins.module_utils import durations, objects
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput

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


def _validate(where: str, policy: Mapping[str, Any], errors: _Errors) -> None:
    timeout = _seconds(policy["timeout"], where, "timeout", errors)
    retries = policy["retries"]
    if not isinstance(retries, Mapping):
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


def _render(svc: Mapping[str, Any], policy: Mapping[str, Any], advanced: Mapping[str, Any]) -> List[Dict[str, Any]]:
    name, namespace, port = svc["name"], svc["namespace"], svc["port"]
    host = f"{name}.{namespace}.svc.cluster.local"
    labels = {MANAGED_LABEL: "true", SERVICE_LABEL: name, "app.kubernetes.io/managed-by": "meshops.istio"}
    meta = {"name": NAME_PREFIX + name, "namespace": namespace, "labels": labels}
    pool, outlier, retries = policy["connection_pool"], policy["outlier_detection"], policy["retries"]
    destination_rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": copy.deepcopy(meta),
        "spec": {
            "host": host,
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
    route: Dict[str, Any] = {
        "route": [{"destination": {"host": host, "port": {"number": port}}}],
        "timeout": policy["timeout"],
        "retries": {
            "attempts": retries["attempts"],
            "perTryTimeout": retries["per_try_timeout"],
            "retryOn": retries["retry_on"],
        },
    }
    route.update(copy.deepcopy(dict(advanced)))
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": copy.deepcopy(meta),
        "spec": {"hosts": [host], "http": [route]},
    }
    return [destination_rule, virtual_service]


def resources(
    services: Sequence[Any], defaults: Optional[Mapping[str, Any]] = None, advanced_routing: bool = False
) -> List[Dict[str, Any]]:
    """Validate the compact service list and render one DestinationRule and one VirtualService per service.

    All problems are collected and raised together (InvalidInput), each naming the service and the field.
    """
    merged_defaults = _merge(DEFAULTS, defaults or {})
    errors = _Errors()
    seen = set()
    out: List[Dict[str, Any]] = []
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
        if advanced and not advanced_routing:
            errors.add(
                where,
                ", ".join(sorted(advanced)),
                "is complex routing, which the staged path avoids early: remove it, or set "
                "traffic_baseline_advanced_routing: true deliberately",
            )
        policy = _policy(svc, merged_defaults)
        _validate(where, policy, errors)
        if not errors.items:
            out.extend(_render(svc, policy, {_ISTIO_FIELDS[k]: v for k, v in advanced.items()}))
    if errors.items:
        raise InvalidInput("traffic_baseline_resources: " + "; ".join(errors.items) + ". Nothing was applied.")
    return out


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


def foreign(existing: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Hand-made VirtualServices/DestinationRules (not managed by this collection) for the hosts we would manage."""
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
    return out


def stale(managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Objects this role created earlier whose service is no longer listed: the ones to delete."""
    return objects.stale(managed, desired, MANAGED_LABEL)


def unblocked(desired: Sequence[Mapping[str, Any]], left_alone: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The desired objects minus those whose service's routing of that kind is hand-made and left alone."""
    blocked = {(f.get("kind"), f.get("service")) for f in left_alone}
    return [d for d in desired if (d.get("kind"), objects.labels(d).get(SERVICE_LABEL)) not in blocked]
