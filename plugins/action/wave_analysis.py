# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The wave analysis's bake, driven from the controller so that each analysis is printed as it is taken.

A module shows nothing until it returns, and a bake lasts minutes: a person at the console (or an AWX job's live
output) could not tell a healthy bake from a hung one. Here the bake loop (module_utils/analysis.bake, the one home
of its timing and failure limit) runs in the action plugin, the module takes one analysis per run, and a progress line
goes out after each. Every other stage is one module run, passed through.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible.utils.display import Display
from ansible_collections.meshops.istio.plugins.module_utils import analysis
from ansible_collections.meshops.istio.plugins.plugin_utils.module_action import ModuleAction

display = Display()


class ModuleFailed(Exception):
    """A module run failed (not an analysis that failed): its result is the task's."""

    def __init__(self, result: Dict[str, Any]):
        super().__init__(result.get("msg", ""))
        self.result = result


def baked_result(baked: Dict[str, Any], last: Dict[str, Any], namespaces: list) -> Dict[str, Any]:
    """The task's result from the bake and the last module run: the module's keys, the bake's verdict."""
    final = baked["last"]
    out = {
        **last,
        "passed": baked["passed"],
        "failures": baked["failures"],
        "analyses": baked["analyses"],
        "problems": final.get("problems", []),
        "inconclusive": final.get("inconclusive", []),
    }
    out["record"] = analysis.record(out, "bake", namespaces)
    out.pop("failed", None)
    out.pop("msg", None)
    return out


class ActionModule(ModuleAction):
    MODULE = "meshops.istio.wave_analysis"

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            settings = analysis.resolve(args.get("settings") or {}, "settings")
        except analysis.AnalysisError:
            settings = None  # the module refuses them, with the message
        if (
            args.get("stage", "bake") != "bake"
            or not settings
            or not settings["enabled"]
            or settings["bake_time_s"] <= 0
        ):
            return self.pass_through(result, task_vars)

        namespaces = list(args.get("namespaces") or [])
        label = ", ".join(namespaces)
        last: Dict[str, Any] = {}

        def analyze() -> Dict[str, Any]:
            one = self.run_module(args, task_vars)
            if one.get("failed"):  # a check Prometheus refuses, no connection: the bake ends here, failed
                raise ModuleFailed(one)
            last.update(one)
            return dict(one["analyses"][0])

        def taken(number: int, one: Dict[str, Any], failures: int) -> None:
            display.display(analysis.progress_line(label, number, one, settings, failures))

        try:
            baked = analysis.bake(analyze, settings, taken=taken)
        except ModuleFailed as exc:
            result.update(exc.result)
            return result
        result.update(baked_result(baked, last, namespaces))
        return result
