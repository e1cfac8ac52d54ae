# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Traffic baseline filters, thin over plugins/module_utils/traffic.py (the validation and rendering)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.errors import raised_as
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

traffic = module_utils("traffic")


def traffic_baseline_resources(
    services: Any,
    defaults: Optional[Mapping[str, Any]] = None,
    advanced_routing: bool = False,
    dataplane_mode: str = "sidecar",
    waypoint: str = "waypoint",
) -> List[Dict[str, Any]]:
    """Validate the compact service list and render its objects: a DestinationRule and a VirtualService per service
    (sidecar mode), or a DestinationRule, an HTTPRoute and the use-waypoint label per service and a waypoint per
    namespace (ambient mode)."""
    if not isinstance(services, (list, tuple)):
        raise AnsibleFilterError(
            f"traffic_baseline_resources: the service list must be a list, got {type(services).__name__}"
        )
    with raised_as(AnsibleFilterError):
        return traffic.resources(services, defaults, advanced_routing, dataplane_mode, waypoint)


def traffic_baseline_foreign(
    existing: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]], field_manager: str = ""
) -> List[Dict[str, Any]]:
    """Hand-made routing (not managed by this collection) for the hosts and Services we would manage."""
    if not isinstance(existing, (list, tuple)) or not isinstance(desired, (list, tuple)):
        raise AnsibleFilterError("traffic_baseline_foreign: expects two lists of objects")
    with raised_as(AnsibleFilterError):
        return traffic.foreign(existing, desired, field_manager)


def traffic_baseline_released(
    existing: Sequence[Mapping[str, Any]], declared: Sequence[Mapping[str, Any]], field_manager: str
) -> List[Dict[str, Any]]:
    """The Services whose use-waypoint label the field manager applied and no longer declares, as the objects that
    release it."""
    if not isinstance(existing, (list, tuple)) or not isinstance(declared, (list, tuple)) or not field_manager:
        raise AnsibleFilterError("traffic_baseline_released: expects two lists of objects and a field manager")
    return traffic.released(existing, declared, field_manager)


# Filters with nothing to check before the decision.
def traffic_baseline_stale(
    managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]
) -> List[Dict[str, Any]]:
    """module_utils traffic.stale."""
    return traffic.stale(managed, desired)


def traffic_baseline_unblocked(
    desired: Sequence[Mapping[str, Any]], left_alone: Sequence[Mapping[str, Any]]
) -> List[Mapping[str, Any]]:
    """module_utils traffic.unblocked."""
    return traffic.unblocked(desired, left_alone)


class FilterModule:
    def filters(self):
        return {
            "traffic_baseline_resources": traffic_baseline_resources,
            "traffic_baseline_foreign": traffic_baseline_foreign,
            "traffic_baseline_stale": traffic_baseline_stale,
            "traffic_baseline_unblocked": traffic_baseline_unblocked,
            "traffic_baseline_released": traffic_baseline_released,
        }
