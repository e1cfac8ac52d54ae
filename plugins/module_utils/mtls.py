# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""mTLS readiness decisions: is a namespace safe to switch to STRICT? Pure logic, unit-tested."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ansible_collections.meshops.istio.plugins.module_utils import objects

PLAINTEXT_METRICS = ("istio_requests_total", "istio_tcp_connections_opened_total")
# AuthorizationPolicy source fields that only an mTLS peer identity can satisfy.
MTLS_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces")
MTLS_CONDITION_KEYS = ("source.principal", "source.namespace", "request.auth.principal_from_peer")


# How the readiness sentences name being in the mesh, per data plane mode.
PLANE_WORDS = {
    "sidecar": {
        "in_mesh": "runs a Ready sidecar of the right revision",
        "finish": "finish injection",
        "clients": "Give those clients a sidecar (or move them into the mesh)",
        "unknown": "unknown (a client without a sidecar)",
    },
    "ambient": {
        "in_mesh": "is enrolled in ambient mode",
        "finish": "finish the enrollment",
        "clients": "Enroll those clients' namespaces (istio.io/dataplane-mode=ambient) or give them a sidecar",
        "unknown": "unknown (a client outside the mesh)",
    },
}


def plaintext_query(window: str) -> str:
    """Requests and TCP connections received by sidecars without mutual TLS, per source and destination."""
    selector = (
        '{__name__=~"' + "|".join(PLAINTEXT_METRICS) + '",reporter="destination",'
        'connection_security_policy!="mutual_tls"}'
    )
    labels = "destination_workload_namespace, destination_workload, source_workload_namespace, source_workload"
    return f"sum by ({labels}) (increase({selector}[{window}])) > 0"


def plaintext_sources(
    samples: Iterable[Mapping[str, Any]], namespace: str, top: int, dataplane_mode: str = "sidecar"
) -> List[Dict[str, Any]]:
    """The top plaintext sources into a namespace: source, destination workload, count in the window."""
    rows = []
    for sample in samples:
        labels = sample.get("labels") or {}
        if labels.get("destination_workload_namespace") != namespace:
            continue
        src_ns = labels.get("source_workload_namespace") or "unknown"
        src = labels.get("source_workload") or "unknown"
        rows.append(
            {
                "source": PLANE_WORDS[dataplane_mode]["unknown"] if src == "unknown" else f"{src_ns}/{src}",
                "destination": f"{namespace}/{labels.get('destination_workload') or 'unknown'}",
                "count": round(float(sample.get("value") or 0.0), 1),
            }
        )
    rows.sort(key=lambda r: (-r["count"], r["source"], r["destination"]))
    return rows[:top]


def _host_namespace(host: str, rule_namespace: str) -> Optional[str]:
    """The namespace a DestinationRule host points into; '*' for every namespace; None for outside the mesh."""
    if host in ("*", "*.local", "*.cluster.local", "*.svc.cluster.local"):
        return "*"
    parts = host.split(".")
    if len(parts) == 1:
        return rule_namespace
    if len(parts) >= 2 and (len(parts) == 2 or parts[2] == "svc"):
        return parts[1]
    return None


def _tls_disabled_at(spec: Mapping[str, Any]) -> List[str]:
    """Where a DestinationRule spec turns TLS off: 'trafficPolicy', 'port 8080', 'subset v1', ..."""
    found = []

    def check(policy: Optional[Mapping[str, Any]], where: str) -> None:
        if not policy:
            return
        if ((policy.get("tls") or {}).get("mode") or "").upper() == "DISABLE":
            found.append(where)
        for port in policy.get("portLevelSettings") or []:
            if ((port.get("tls") or {}).get("mode") or "").upper() == "DISABLE":
                found.append(f"{where} port {(port.get('port') or {}).get('number', '?')}")

    check(spec.get("trafficPolicy"), "trafficPolicy")
    for subset in spec.get("subsets") or []:
        check(subset.get("trafficPolicy"), f"subset {subset.get('name', '?')}")
    return found


def tls_disabling_rules(rules: Iterable[Mapping[str, Any]], namespace: str) -> List[str]:
    """Sentences for DestinationRules that send plaintext to the namespace's services."""
    out = []
    for rule in rules:
        meta = objects.meta(rule)
        spec = rule.get("spec") or {}
        target = _host_namespace(str(spec.get("host") or ""), meta.get("namespace") or "")
        if target not in (namespace, "*"):
            continue
        where = _tls_disabled_at(spec)
        if where:
            out.append(
                f"DestinationRule {meta.get('namespace')}/{meta.get('name')} sets tls.mode DISABLE "
                f"({', '.join(where)}) for host {spec.get('host')}: clients send plaintext, which STRICT would "
                "refuse. Remove that tls setting (or use ISTIO_MUTUAL)."
            )
    return out


def mtls_only_authorization(policies: Iterable[Mapping[str, Any]]) -> List[Tuple[str, List[str]]]:
    """(policy reference, fields) for AuthorizationPolicies that match only mTLS peers."""
    out = []
    for policy in policies:
        meta = objects.meta(policy)
        fields = set()
        for rule in (policy.get("spec") or {}).get("rules") or []:
            for source in rule.get("from") or []:
                for field in MTLS_SOURCE_FIELDS:
                    if (source.get("source") or {}).get(field):
                        fields.add(f"source.{field}")
            for cond in rule.get("when") or []:
                if cond.get("key") in MTLS_CONDITION_KEYS:
                    fields.add(f"when {cond['key']}")
        if fields:
            out.append((f"AuthorizationPolicy {meta.get('namespace')}/{meta.get('name')}", sorted(fields)))
    return out


def effective_mode(peer_authentications: Iterable[Mapping[str, Any]], namespace: str, root_namespace: str) -> str:
    """The namespace-wide mTLS mode in force: the namespace's policy, else the mesh-wide one, else PERMISSIVE.

    Workload-specific policies (with a selector) are not considered; Istio picks the oldest of several.
    """

    def namespace_wide(ns: str) -> Optional[str]:
        candidates = [
            p
            for p in peer_authentications
            if objects.meta(p).get("namespace") == ns and not (p.get("spec") or {}).get("selector")
        ]
        candidates.sort(key=lambda p: objects.meta(p).get("creationTimestamp") or "")
        for policy in candidates:
            mode = ((policy.get("spec") or {}).get("mtls") or {}).get("mode") or "UNSET"
            if mode != "UNSET":
                return mode
        return None

    return namespace_wide(namespace) or namespace_wide(root_namespace) or "PERMISSIVE"


def namespace_readiness(
    namespace: str,
    sidecar_report: Optional[Mapping[str, Any]],
    sidecar_problems: List[str],
    plaintext: Optional[List[Dict[str, Any]]],
    evidence_problem: Optional[str],
    tls_rules: List[str],
    authz: List[Tuple[str, List[str]]],
    mode: str,
    window: str,
    dataplane_mode: str = "sidecar",
) -> Dict[str, Any]:
    """Decide ready_for_strict for one namespace and say why not, in sentences naming objects and remedies. The
    sidecar report is sidecar_status's, of either data plane mode (``dataplane_mode``)."""
    words = PLANE_WORDS[dataplane_mode]
    problems = list(sidecar_problems)
    if sidecar_report is not None and not sidecar_report.get("complete") and not sidecar_problems:
        problems.append(
            f"Namespace {namespace}: not every eligible pod {words['in_mesh']}: {words['finish']} "
            "(role meshops.istio.namespace_injection) first."
        )
    if evidence_problem:
        problems.append(
            f"Namespace {namespace}: the traffic evidence is missing ({evidence_problem}); without it nobody knows "
            "whether plaintext clients would break under STRICT."
        )
    elif plaintext:
        top = ", ".join(f"{p['source']} -> {p['destination']} ({p['count']:g})" for p in plaintext)
        problems.append(
            f"Namespace {namespace} received plaintext (non-mTLS) traffic in the last {window}: {top}. "
            f"{words['clients']} before STRICT, or they will be refused."
        )
    problems.extend(tls_rules)
    advisories = []
    if mode != "STRICT":
        for ref, fields in authz:
            advisories.append(
                f"{ref} matches on {', '.join(fields)}, which only mTLS peers carry: while namespace {namespace} is "
                f"{mode}, plaintext requests never match it (ALLOW rules do not let them in, DENY rules do not stop "
                "them). STRICT makes it effective."
            )
    return {
        "namespace": namespace,
        "mode": mode,
        "ready_for_strict": not problems,
        "sidecars_complete": bool(sidecar_report and sidecar_report.get("complete")) and not sidecar_problems,
        "plaintext_sources": plaintext or [],
        "traffic_evidence": evidence_problem is None,
        "tls_disabled_by": tls_rules,
        "problems": problems,
        "advisories": advisories,
    }
