# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Traffic baseline filters, thin over plugins/module_utils/traffic.py (the validation and rendering)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils import traffic
from ansible_collections.meshops.istio.plugins.module_utils.errors import raised_as


def traffic_baseline_resources(
    services: Any, defaults: Optional[Mapping[str, Any]] = None, advanced_routing: bool = False
) -> List[Dict[str, Any]]:
    """Validate the compact service list and render one DestinationRule and one VirtualService per service."""
    if not isinstance(services, (list, tuple)):
        raise AnsibleFilterError(
            f"traffic_baseline_resources: the service list must be a list, got {type(services).__name__}"
        )
    with raised_as(AnsibleFilterError):
        return traffic.resources(services, defaults, advanced_routing)


def traffic_baseline_foreign(
    existing: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]
) -> List[Dict[str, Any]]:
    """Hand-made VirtualServices/DestinationRules (not managed by this collection) for the hosts we would manage."""
    if not isinstance(existing, (list, tuple)) or not isinstance(desired, (list, tuple)):
        raise AnsibleFilterError("traffic_baseline_foreign: expects two lists of objects")
    return traffic.foreign(existing, desired)


# Filters with nothing to check before the decision.
traffic_baseline_stale = traffic.stale
traffic_baseline_unblocked = traffic.unblocked


class FilterModule:
    def filters(self):
        return {
            "traffic_baseline_resources": traffic_baseline_resources,
            "traffic_baseline_foreign": traffic_baseline_foreign,
            "traffic_baseline_stale": traffic_baseline_stale,
            "traffic_baseline_unblocked": traffic_baseline_unblocked,
        }
