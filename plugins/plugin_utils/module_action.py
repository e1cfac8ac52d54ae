# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The base of the action plugins that drive their own module from the controller (one run, or one per analysis,
batch or slice of a wait), so that a long task can print as it goes."""

from __future__ import annotations

from typing import Any, Dict

from ansible.plugins.action import ActionBase


class ModuleAction(ActionBase):
    """Runs ``MODULE`` (the module of the same name) with the task's own arguments or others."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    MODULE = ""

    def run_module(self, args: Dict[str, Any], task_vars: Any) -> Dict[str, Any]:
        """One run of the module with ``args``; its result."""
        return self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars)

    def pass_through(self, result: Dict[str, Any], task_vars: Any) -> Dict[str, Any]:
        """The task as if there were no action plugin: one module run with the task's arguments."""
        result.update(self.run_module(dict(self._task.args), task_vars))
        return result
