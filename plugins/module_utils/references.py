# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Whether a step's declared objects point at namespaces and Services that exist. No I/O: the caller reads.

A step's declared set (``<role>_declared``) names the variable its objects come from (``source``) and, for the
traffic baseline, the Services its routing is for (``services``). Applying an object into a namespace that does not
exist fails half-way through a list, and routing for a Service that does not exist is accepted by the API server
but can never be right; both are refused before the first change.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Sequence, Set, Tuple


def _service(ref: str) -> Tuple[str, str]:
    namespace, name = [*str(ref).split("/", 1), ""][:2]
    return namespace, name


def needed(declared: Sequence[Mapping[str, Any]]) -> Tuple[Set[str], Set[Tuple[str, str]]]:
    """The namespaces and the (namespace, name) Services the declared sets need."""
    namespaces: Set[str] = set()
    services: Set[Tuple[str, str]] = set()
    for step in declared:
        for obj in step.get("objects") or []:
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns:
                namespaces.add(ns)
        for ref in step.get("services") or []:
            services.add(_service(ref))
            namespaces.add(_service(ref)[0])
    return namespaces, services


def problems(
    declared: Sequence[Mapping[str, Any]],
    namespaces: Iterable[str],
    services: Iterable[Tuple[str, str]],
    creating: Iterable[str] = (),
) -> List[str]:
    """One sentence per missing namespace or Service, naming the variable to fix (the step's ``source``).

    ``creating`` are namespaces the run creates before these objects are applied (step 2 with
    namespace_injection_create_namespaces, the Istio namespace with step 1): they count as existing, and a Service
    in them cannot exist yet.
    """
    live_ns = set(namespaces)
    will_exist = live_ns | set(creating)
    live_svc = set(services)
    out: List[str] = []
    for step in declared:
        source = step.get("source") or step.get("step") or "the declared state"
        missing_ns: Dict[str, List[str]] = {}
        for obj in step.get("objects") or []:
            meta = obj.get("metadata") or {}
            ns = meta.get("namespace")
            if ns and ns not in will_exist:
                missing_ns.setdefault(ns, []).append(f"{obj.get('kind')} {meta.get('name')}")
        for ns, objs in sorted(missing_ns.items()):
            out.append(
                f"{source}: namespace {ns} does not exist (needed for {', '.join(objs)}): create it, fix the name, "
                "or remove it from the list."
            )
        for ref in step.get("services") or []:
            key = _service(ref)
            if key in live_svc or key[0] in missing_ns:
                continue
            out.append(
                f"{source}: Service {key[0]}/{key[1]} does not exist, so its routing could never apply: fix the "
                "name or namespace, deploy the Service first, or remove the entry."
            )
    return out


def problems_in(
    declared: Sequence[Mapping[str, Any]],
    namespace_objects: Iterable[Mapping[str, Any]],
    service_objects: Iterable[Mapping[str, Any]],
    creating: Iterable[str] = (),
) -> List[str]:
    """``problems`` against listed Namespace and Service objects (as the API server lists them, or metadata only)."""
    metas = [(obj.get("metadata") or {}) for obj in namespace_objects]
    service_metas = [(obj.get("metadata") or {}) for obj in service_objects]
    return problems(
        declared,
        [m.get("name") for m in metas],
        [(m.get("namespace"), m.get("name")) for m in service_metas],
        creating,
    )
