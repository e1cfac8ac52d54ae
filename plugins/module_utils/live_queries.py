# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What each step's declare reads from the cluster to compare its declared objects with (what it created that is no
longer declared, and routing it must not override): one home for those queries, so that a role run on its own and
the rollout's preflight and drift, which read every step's live objects in one meshops.istio.object_lists run, ask
for the same objects. Pure data; no I/O.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

# Istio's addon manifests (samples/addons) put every object in this namespace.
ADDON_NAMESPACE = "istio-system"
# Stands for the Istio namespace given to live_queries (the install's, which need not be istio-system).
ISTIO_NAMESPACE = "<istio namespace>"

QUERIES: Dict[str, List[Dict[str, Any]]] = {
    # Both modes' kinds in either mode, so that a cluster moved from one mode to the other loses the objects of the
    # old one. Ambient mode's: the waypoints and HTTPRoutes (none listed without the Gateway API CRDs), and the
    # Services and Namespaces labeled with a waypoint (whole Services: their managedFields say whose label it is).
    "traffic": [
        {"api_version": "networking.istio.io/v1", "kind": "DestinationRule"},
        {"api_version": "networking.istio.io/v1", "kind": "VirtualService"},
        {"api_version": "gateway.networking.k8s.io/v1", "kind": "Gateway"},
        {"api_version": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"},
        {"api_version": "v1", "kind": "Service", "label_selectors": ["istio.io/use-waypoint"]},
        {"api_version": "v1", "kind": "Namespace", "label_selectors": ["istio.io/use-waypoint"], "metadata_only": True},
    ],
    # Metadata only: the addons' ConfigMaps hold whole dashboards, and only names and labels are compared.
    "telemetry": [
        {"api_version": "v1", "kind": "ServiceAccount", "namespace": ADDON_NAMESPACE, "metadata_only": True},
        {"api_version": "v1", "kind": "ConfigMap", "namespace": ADDON_NAMESPACE, "metadata_only": True},
        {"api_version": "v1", "kind": "Service", "namespace": ADDON_NAMESPACE, "metadata_only": True},
        {"api_version": "apps/v1", "kind": "Deployment", "namespace": ADDON_NAMESPACE, "metadata_only": True},
        {"api_version": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata_only": True},
        {"api_version": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata_only": True},
        {
            "api_version": "telemetry.istio.io/v1",
            "kind": "Telemetry",
            "label_selectors": ["meshops.istio/telemetry=true"],
            "metadata_only": True,
        },
    ],
    # Not a step's: the rollout's preflight checks that every declared object's namespace exists and, when the traffic
    # baseline names Services, that they exist (module_utils/references.py).
    "namespaces": [{"api_version": "v1", "kind": "Namespace", "metadata_only": True}],
    "services": [{"api_version": "v1", "kind": "Service", "metadata_only": True}],
    # Not a step's either: the mesh config (ConfigMap istio in the Istio namespace step 3 names), whose tracing
    # providers step 3 checks; the rollout reads it in its preflight and hands it over when step 1 changed nothing.
    "mesh_config": [
        {
            "api_version": "v1",
            "kind": "ConfigMap",
            "namespace": ISTIO_NAMESPACE,
            "field_selectors": ["metadata.name=istio"],
        }
    ],
}


def live_queries(steps: Iterable[str], istio_namespace: str = ADDON_NAMESPACE) -> List[Dict[str, Any]]:
    """The object_lists queries of these steps, each keyed by its step (object_lists returns them by key)."""
    return [
        dict(query, key=step, **({"namespace": istio_namespace} if query.get("namespace") == ISTIO_NAMESPACE else {}))
        for step in steps
        for query in QUERIES.get(step, [])
    ]
