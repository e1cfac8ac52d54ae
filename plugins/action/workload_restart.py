# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Restarts in batches, driven from the controller so that each batch's outcome is printed as it finishes.

The module restarts a batch and waits for its rollouts; a namespace of many workloads takes minutes, and a module
shows nothing until it returns. With more than one batch this runs the module once per batch and prints how many
workloads are rolled out and ready out of how many after each, stopping at the first batch that fails (as the module
does). One batch, check mode or options the module must refuse: one module run, passed through.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from ansible.utils.display import Display
from ansible_collections.meshops.istio.plugins.module_utils import sidecars
from ansible_collections.meshops.istio.plugins.plugin_utils.module_action import ModuleAction

display = Display()


def progress_line(number: int, total: int, done: int, of: int, batch: List[Dict[str, Any]], seconds: float) -> str:
    names = ", ".join(f"{w.get('kind')} {w.get('namespace')}/{w.get('name')}" for w in batch)
    return f"Restart: {done}/{of} workloads rolled out and ready (batch {number}/{total} in {seconds:.0f}s: {names})"


class ActionModule(ModuleAction):
    MODULE = "meshops.istio.workload_restart"

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        workloads = args.get("workloads")
        try:
            size = int(args.get("batch_size", 2))
            parts = sidecars.batches(list(workloads), size) if isinstance(workloads, list) else []
        except (TypeError, ValueError):
            parts = []
        if len(parts) < 2 or self._play_context.check_mode:
            return self.pass_through(result, task_vars)

        restarted: List[Dict[str, Any]] = []
        for number, batch in enumerate(parts, 1):
            start = time.monotonic()
            one = self.run_module(dict(args, workloads=batch, batch_size=len(batch)), task_vars)
            restarted.extend(one.get("restarted") or [])
            if one.get("failed"):
                later = len(parts) - number
                # As the module says it: changed when anything was restarted, in this batch or before.
                result.update(one, restarted=restarted, changed=bool(restarted) or bool(one.get("changed")))
                if later:
                    result["msg"] = f"{one.get('msg', '')} ({later} later batch(es) not started.)"
                return result
            display.display(
                progress_line(number, len(parts), len(restarted), len(workloads), batch, time.monotonic() - start)
            )
        result.update(changed=bool(restarted), restarted=restarted, failed=False)
        return result
