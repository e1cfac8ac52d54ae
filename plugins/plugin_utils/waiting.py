# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Long waits shown as they go: the read-only modules' ``wait`` run in slices from their action plugins.

A module prints nothing until it returns, so a five-minute wait for sidecars or for the control plane looked hung.
The action plugins of the modules that wait (sidecar_status, istio_readiness, telemetry_status) run the module with
``wait_timeout`` of one slice at a time and print what is still missing after each slice that ended unmet, until the
condition holds, the module fails for another reason, or the whole ``wait_timeout`` is spent; the last slice's result
is the task's. The common case, a condition already met, is one module run, as before.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ansible.utils.display import Display
from ansible_collections.meshops.istio.plugins.plugin_utils.module_action import ModuleAction

display = Display()
# Seconds of one slice: often enough for a person watching, rarely enough that the extra module runs cost nothing.
SLICE_S = 15


def slices(total: int, slice_s: int = SLICE_S):
    """(already waited, this slice's timeout, last?) for each slice of a wait of ``total`` seconds."""
    waited = 0
    while True:
        step = max(1, min(slice_s, total - waited))
        last = waited + step >= total
        yield waited, step, last
        if last:
            return
        waited += step


class WaitingAction(ModuleAction):
    """Base of the action plugins of the modules that take ``wait`` (plugins/doc_fragments/wait.py)."""

    DONE = "ready"

    def describe(self, report: Mapping[str, Any]) -> str:
        """What is still missing, in a few words (the first problems by default)."""
        return " ".join(list(report.get("problems") or [])[:2]) or "not yet"

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            total = int(args.get("wait_timeout", 300))
        except (TypeError, ValueError):
            total = 0  # the module refuses it, with its message
        if not args.get("wait") or total <= SLICE_S:
            return self.pass_through(result, task_vars)
        start = time.monotonic()
        for waited, step, last in slices(total):
            one = self.run_module(dict(args, wait_timeout=step, waited=waited), task_vars)
            unmet = not one.get(self.DONE) and (not one.get("failed") or "waited_s" in one)
            if last or not unmet:
                result.update(one)
                return result
            display.display(
                f"{self._task.get_name()}: still waiting after {time.monotonic() - start:.0f}s of {total}s - "
                f"{self.describe(one)}"
            )
        return result  # unreachable: the last slice returns


def describe_sidecars(report: Mapping[str, Any]) -> str:
    """How many eligible pods are in the mesh (a sidecar, or enrolled in ambient mode) and Ready, over the
    namespaces; the namespaces not there."""
    rows = report.get("namespaces") or []
    eligible = sum(int(ns.get("eligible") or 0) for ns in rows)
    ready = sum(max(0, int(ns.get("in_mesh") or 0) - int(ns.get("not_ready") or 0)) for ns in rows)
    missing = [ns.get("namespace", "?") for ns in rows if not ns.get("complete")]
    what = "enrolled in ambient mode" if any(ns.get("dataplane_mode") == "ambient" for ns in rows) else "with a sidecar"
    return f"{ready}/{eligible} pods {what} and Ready; not complete yet: {', '.join(missing) or 'none'}"
