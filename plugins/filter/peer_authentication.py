# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""mTLS step: what the live PeerAuthentications mean for the policy the role would apply."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

objects = module_utils("objects")


def peer_authentication_conflicts(
    existing: Sequence[Mapping[str, Any]], name: str, namespaces: Optional[Sequence[str]] = None
) -> Dict[str, List[str]]:
    """Namespace-wide PeerAuthentications that stand in the way of ours (named `name`), in `namespaces` if given.

    Returns {'others': [...]} for namespace-wide policies with another name (Istio would apply the
    older of two) and {'strict': [...]} for namespace-wide policies in STRICT mode, as namespace/name.
    """
    if not isinstance(existing, (list, tuple)):
        raise AnsibleFilterError("peer_authentication_conflicts: expects a list of PeerAuthentication objects")
    others, strict = [], []
    for policy in existing:
        spec = policy.get("spec") or {}
        if spec.get("selector"):
            continue
        if namespaces is not None and objects.meta(policy).get("namespace") not in namespaces:
            continue
        ref = f"{objects.meta(policy).get('namespace')}/{objects.meta(policy).get('name')}"
        if objects.meta(policy).get("name") != name:
            others.append(ref)
        if ((spec.get("mtls") or {}).get("mode") or "").upper() == "STRICT":
            strict.append(ref)
    return {"others": sorted(others), "strict": sorted(strict)}


def peer_authentication_objects(namespaces: Sequence[str], name: str, mode: str) -> List[Dict[str, Any]]:
    """The namespace-wide PeerAuthentication the role manages, one per namespace, labeled as ours."""
    if isinstance(namespaces, str) or not isinstance(namespaces, (list, tuple)):
        raise AnsibleFilterError(f"peer_authentication_objects: expects a list of namespaces, got {namespaces!r}")
    return [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "meshops-istio", "meshops.istio/mtls": "true"},
            },
            "spec": {"mtls": {"mode": mode}},
        }
        for ns in namespaces
    ]


class FilterModule:
    def filters(self):
        return {
            "peer_authentication_conflicts": peer_authentication_conflicts,
            "peer_authentication_objects": peer_authentication_objects,
        }
