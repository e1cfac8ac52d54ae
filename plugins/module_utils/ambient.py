# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Ambient enrollment per namespace: pure functions over API objects and istiod's ambient index.

A pod is enrolled in ambient mode when three things hold: its namespace (or the pod itself) is labeled
``istio.io/dataplane-mode=ambient`` and the pod does not opt out (``istio.io/dataplane-mode=none``); istio-cni's node
agent has redirected its traffic and says so with the annotation ``ambient.istio.io/redirection: enabled``; and istiod
serves it to ztunnel as a workload reached over HBONE (its ambient index, ``/debug/ambientz``). The reports have the
shape of module_utils/sidecars.py's namespace_report, so that the sidecar_status module, the coverage filters and
the namespace_injection role read both modes alike; ``in_mesh`` is what each mode counts as covered. Only
read_index does I/O (through the Kube, or at a URL the user gave).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ansible_collections.meshops.istio.plugins.module_utils import sidecars
from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import (
    DATAPLANE_MODE_LABEL,
    REDIRECTION_ANNOTATION,
)
from ansible_collections.meshops.istio.plugins.module_utils.objects import meta as _meta
from ansible_collections.meshops.istio.plugins.module_utils.objects import proxy_container
from ansible_collections.meshops.istio.plugins.module_utils.redact import first_line, redact

AMBIENTZ_PATH = "debug/ambientz"

# The modules' options for judging either data plane (doc fragment meshops.istio.dataplane).
DATAPLANE_ARG_SPEC = {
    "dataplane_mode": {"type": "str", "choices": ["sidecar", "ambient"], "default": "sidecar"},
    "istiod_url": {"type": "str", "default": ""},
    "istio_namespace": {"type": "str", "default": "istio-system"},
}


def read_index(kube, params: Dict[str, Any]) -> Tuple[Optional[Set[str]], Optional[str]]:
    """The pods istiod serves over HBONE (captured_pods of its ambient index), at ``params["istiod_url"]`` or
    through the API server's service proxy to Service istiod:15014; None and the reason when it cannot be read (a
    wait reads it again)."""
    url = params["istiod_url"].rstrip("/")
    where = f"istiod at {redact(url)}" if url else f"Service {params['istio_namespace']}/istiod:15014"
    try:
        if url:
            from ansible.module_utils.urls import open_url

            body = open_url(f"{url}/{AMBIENTZ_PATH}", timeout=10).read()
        else:
            body = kube.service_proxy_get(params["istio_namespace"], "istiod", 15014, AMBIENTZ_PATH, {})
        return captured_pods(body), None
    except Exception as exc:  # unreachable, refused, or not JSON: the caller cannot see istiod's view
        return None, (
            f"Cannot read istiod's ambient index ({where}, /{AMBIENTZ_PATH}): {first_line(exc)}. Check that "
            "istiod runs in ambient mode, or set istiod_url to its monitoring port as the controller reaches it."
        )


def index_for(kube, contents: List[Dict[str, Any]], params: Dict[str, Any]) -> Tuple[Optional[Set[str]], Optional[str]]:
    """read_index, only when it matters to what Kube.namespace_contents read (needs_index); else nothing captured."""
    return read_index(kube, params) if needs_index(contents) else (set(), None)


def enrollment(kube, contents: List[Dict[str, Any]], params: Dict[str, Any], require_labeled: bool) -> Dict[str, Any]:
    """coverage of what Kube.namespace_contents read, with istiod's index read only when it matters."""
    captured, problem = index_for(kube, contents, params)
    return coverage(contents, captured, require_labeled, problem)


def captured_pods(ambientz: Any) -> Set[str]:
    """``namespace/name`` of every pod istiod's ambient index serves as reached over HBONE through ztunnel (JSON of
    /debug/ambientz). A sidecar injected in an ambient-enabled mesh is HBONE too, but terminates the tunnel itself
    (``nativeTunnel``): that is not ambient enrollment."""
    if isinstance(ambientz, (bytes, str)):
        ambientz = json.loads(ambientz)
    out = set()
    for workload in (ambientz or {}).get("workloads") or []:
        if workload.get("nativeTunnel"):
            continue
        if workload.get("tunnelProtocol") == "HBONE" and workload.get("workloadType", "POD") == "POD":
            out.add(f"{workload.get('namespace')}/{workload.get('name')}")
    return out


def mode_state(namespace: Dict[str, Any]) -> Dict[str, Any]:
    """The namespace's data plane labels: its ambient label, and whether it is in sidecar mode (it injects)."""
    labels = _meta(namespace).get("labels") or {}
    mode = labels.get(DATAPLANE_MODE_LABEL)
    sidecar = sidecars.label_state(namespace)
    return {
        "mode": "ambient" if mode == "ambient" else ("sidecar" if sidecar["injects"] else "none"),
        "enabled": mode == "ambient",
        "dataplane_mode": mode,
        "injects": sidecar["injects"],
    }


def labeled_names(namespaces: Iterable[Dict[str, Any]]) -> List[str]:
    """Sorted names of the namespaces labeled for ambient mode."""
    return sorted(_meta(ns).get("name") for ns in namespaces if mode_state(ns)["enabled"])


def pod_opted_out(pod: Dict[str, Any]) -> bool:
    return (_meta(pod).get("labels") or {}).get(DATAPLANE_MODE_LABEL) == "none"


def namespace_report(
    namespace: Dict[str, Any],
    pods: Iterable[Dict[str, Any]],
    replicasets: Iterable[Dict[str, Any]],
    captured: Optional[Set[str]],
) -> Dict[str, Any]:
    """Ambient enrollment of one namespace. ``captured`` is captured_pods of istiod's index, or None when it was
    not read (then istiod's view is not part of the answer, and the namespace is never complete)."""
    name = _meta(namespace).get("name")
    state = mode_state(namespace)
    rs_by_name = {_meta(rs).get("name"): rs for rs in replicasets}
    counts = {"total": 0, "enrolled": 0, "with_proxy": 0, "opted_out": 0, "not_ready": 0, "host_network": 0}
    not_redirected: List[str] = []
    not_seen: List[str] = []
    not_ready: List[str] = []
    with_sidecar: List[Dict[str, Any]] = []
    workloads: Dict[Any, Dict[str, Any]] = {}
    for pod in sidecars.live_pods(pods):
        meta = _meta(pod)
        counts["total"] += 1
        pod_name = meta.get("name")
        if pod_opted_out(pod):
            counts["opted_out"] += 1
            continue
        if (pod.get("spec") or {}).get("hostNetwork"):
            # istio-cni never redirects a pod on the host's network: it is outside the mesh either way.
            counts["host_network"] += 1
            continue
        if not sidecars.pod_ready(pod):
            counts["not_ready"] += 1
            why = sidecars.not_ready_reason(pod)
            not_ready.append(f"{pod_name} ({why})" if why else pod_name)
        if proxy_container(pod) is not None:
            # A pod with its own sidecar is not redirected to ztunnel: it leaves its sidecar only by a restart
            # without injection.
            counts["with_proxy"] += 1
            owner = sidecars.owner_workload(pod, rs_by_name)
            with_sidecar.append({"pod": pod_name, "reason": "runs an istio-proxy sidecar", "owner": owner})
            if owner and owner[0] in sidecars.RESTARTABLE_KINDS:
                workloads[owner] = {"kind": owner[0], "namespace": name, "name": owner[1]}
            continue
        redirected = (meta.get("annotations") or {}).get(REDIRECTION_ANNOTATION) == "enabled"
        seen = captured is not None and f"{name}/{pod_name}" in captured
        if redirected and seen:
            counts["enrolled"] += 1
        elif not redirected:
            not_redirected.append(pod_name)
        else:
            not_seen.append(pod_name)
    eligible = counts["total"] - counts["opted_out"] - counts["host_network"]
    problems = []
    if state["enabled"] and state["injects"]:
        problems.append(
            f"Namespace {name} is labeled both for ambient mode and for sidecar injection: a namespace has one data "
            "plane; remove the injection label (istio-injection or istio.io/rev) or the ambient label."
        )
    if state["enabled"]:
        problems.extend(pending_problems(name, eligible, not_redirected, not_seen, with_sidecar, captured))
        if not_ready:
            problems.append(
                f"Namespace {name}: pods not Ready: {some_names(not_ready)}. Check `kubectl -n {name} describe pod` "
                "for their events."
            )
    return {
        "namespace": name,
        "dataplane_mode": "ambient",
        "labels": dict(_meta(namespace).get("labels") or {}),
        "annotations": dict(_meta(namespace).get("annotations") or {}),
        "applied": sidecars.applied_fields(namespace),
        "label": state,
        **counts,
        "in_mesh": counts["enrolled"],
        "eligible": eligible,
        "coverage_percent": 100.0 if eligible == 0 else round(100.0 * counts["enrolled"] / eligible, 1),
        "not_redirected": sorted(not_redirected),
        "not_seen_by_istiod": sorted(not_seen),
        "proxy_images": {},
        "pods_needing_restart": sorted(with_sidecar, key=lambda p: p["pod"]),
        "workloads_to_restart": sorted(workloads.values(), key=lambda w: (w["kind"], w["name"])),
        "complete": state["enabled"] and not problems and counts["enrolled"] == eligible,
        "problems": problems,
    }


def some_names(names: List[str]) -> str:
    return ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")


def pending_problems(name, eligible, not_redirected, not_seen, with_sidecar, captured) -> List[str]:
    out = []
    if not_redirected:
        out.append(
            f"Namespace {name}: {len(not_redirected)} of {eligible} eligible pods are not redirected to ztunnel yet "
            f"(no {REDIRECTION_ANNOTATION}: enabled from istio-cni: {some_names(not_redirected)}): check that the "
            "istio-cni-node pod of their node is Ready and read its log."
        )
    if captured is not None and not_seen:
        out.append(
            f"Namespace {name}: istiod does not serve {len(not_seen)} redirected pods over HBONE yet "
            f"({some_names(not_seen)}): check istiod's log and /debug/ambientz."
        )
    if with_sidecar:
        out.append(
            f"Namespace {name}: pods still run an istio-proxy sidecar "
            f"({some_names([p['pod'] for p in with_sidecar])}), which ambient mode does not redirect: remove the "
            "injection label and restart their workloads."
        )
    return out


def coverage(
    contents: List[Dict[str, Any]],
    captured: Optional[Set[str]],
    require_labeled: bool,
    index_problem: Optional[str] = None,
) -> Dict[str, Any]:
    """Ambient enrollment of namespaces, from what Kube.namespace_contents read and istiod's captured pods (None, and
    why in ``index_problem``, when istiod's index could not be read)."""
    reports = [
        namespace_report(read["namespace"], read["pods"], read["replicasets"], captured)
        for read in contents
        if read["namespace"] is not None
    ]
    report = sidecars.coverage_of(reports, [read["name"] for read in contents], require_labeled)
    if index_problem:
        report["problems"].insert(0, index_problem)
        report["complete"] = False
    return report


def needs_index(contents: List[Dict[str, Any]]) -> bool:
    """Whether istiod's index matters to the answer: some labeled namespace has a pod it could serve."""
    return any(
        read["namespace"] is not None and mode_state(read["namespace"])["enabled"] and read["pods"] for read in contents
    )
