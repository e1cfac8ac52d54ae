# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Telemetry addon filters, thin over plugins/module_utils/telemetry_addons.py (the validation and rendering)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.errors import raised_as
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

telemetry_addons = module_utils("telemetry_addons")


def telemetry_addons_plan(addons: Mapping[str, Any]) -> Dict[str, Dict[str, str]]:
    """Validate {addon: {mode, url}}: every problem at once, naming the addon and the option."""
    if not isinstance(addons, Mapping):
        raise AnsibleFilterError("telemetry_addons_plan: expects a mapping of addon name to {mode, url}")
    with raised_as(AnsibleFilterError):
        return telemetry_addons.addons_plan(addons)


def telemetry_addon_objects(
    docs: Sequence[Any], addon: str, plan: Mapping[str, Mapping[str, str]], namespace: str = "istio-system"
) -> List[Dict[str, Any]]:
    """The objects of one addon manifest, labeled as ours; Kiali wired to the other addons."""
    with raised_as(AnsibleFilterError):
        return telemetry_addons.addon_objects(docs, addon, plan, namespace)


def telemetry_addon_manifest_objects(
    texts: Mapping[str, str], plan: Mapping[str, Mapping[str, str]], namespace: str = "istio-system"
) -> List[Dict[str, Any]]:
    """The objects of several addon manifests given as YAML text by addon, in one pass."""
    if not isinstance(texts, Mapping):
        raise AnsibleFilterError("telemetry_addon_manifest_objects: expects a mapping of addon name to manifest text")
    with raised_as(AnsibleFilterError):
        return telemetry_addons.manifest_objects(texts, plan, namespace)


def telemetry_resources(settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The mesh-wide Telemetry in the root namespace plus per-namespace overrides."""
    with raised_as(AnsibleFilterError):
        return telemetry_addons.telemetry_resources(settings)


def mesh_extension_providers(mesh_configmap: Optional[Mapping[str, Any]]) -> List[str]:
    """Names of the extension providers in the istio ConfigMap's mesh config, plus Istio's built-in ones."""
    with raised_as(AnsibleFilterError):
        return telemetry_addons.extension_providers(mesh_configmap)


def tracing_providers_missing(
    telemetry: Sequence[Mapping[str, Any]], mesh_configmap: Optional[Mapping[str, Any]]
) -> List[str]:
    """The tracing providers the Telemetry resources name that the mesh config does not define, in order."""
    with raised_as(AnsibleFilterError):
        return telemetry_addons.tracing_providers_missing(telemetry, mesh_configmap)


# Filters with nothing to check before the decision.
def telemetry_addon_conflicts(desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> List[str]:
    """module_utils telemetry_addons.conflicts."""
    return telemetry_addons.conflicts(desired, live)


def telemetry_addon_stale(
    managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]
) -> List[Dict[str, Any]]:
    """module_utils telemetry_addons.stale."""
    return telemetry_addons.stale(managed, desired)


class FilterModule:
    def filters(self):
        return {
            "telemetry_addons_plan": telemetry_addons_plan,
            "telemetry_addon_objects": telemetry_addon_objects,
            "telemetry_addon_manifest_objects": telemetry_addon_manifest_objects,
            "telemetry_addon_conflicts": telemetry_addon_conflicts,
            "telemetry_addon_stale": telemetry_addon_stale,
            "telemetry_resources": telemetry_resources,
            "mesh_extension_providers": mesh_extension_providers,
            "tracing_providers_missing": tracing_providers_missing,
        }
