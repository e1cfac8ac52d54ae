# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""meshops.istio.waypoint_status's wait, in slices that print their progress (plugins/plugin_utils/waiting.py)."""

from __future__ import annotations

from ansible_collections.meshops.istio.plugins.plugin_utils.waiting import WaitingAction


class ActionModule(WaitingAction):
    MODULE = "meshops.istio.waypoint_status"
    DONE = "ready"
