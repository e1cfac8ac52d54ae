# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Waiting: one poll loop with an injectable clock, and the read-only modules' gather-and-wait."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError

# The options gather_report reads, for the modules that wait (added with client.argument_spec()).
WAIT_ARG_SPEC: Dict[str, Any] = {
    "wait": {"type": "bool", "default": False},
    "wait_timeout": {"type": "int", "default": 300},
    "waited": {"type": "int", "default": 0},
}


def wait_until(
    probe: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float,
    initial_delay: float = 0.5,
    max_delay: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call probe() until done(result) or the timeout; short polling with backoff.

    Returns the last result either way; the caller decides what a timeout means.
    """
    deadline = clock() + timeout
    delay = initial_delay
    result = probe()
    while not done(result) and clock() < deadline:
        sleep(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 2, max_delay)
        result = probe()
    return result


def gather_report(module: Any, gather: Callable[[Kube], Dict[str, Any]], done_key: str) -> Dict[str, Any]:
    """Run a read-only module's gather(kube) once, or until report[done_key] when wait is true.

    Connection and permission errors fail the module with the layer's explanation.
    """
    params = module.params
    try:
        kube = Kube(module)
        if params.get("wait"):
            return wait_until(lambda: gather(kube), lambda r: r[done_key], params["wait_timeout"])
        return gather(kube)
    except KubeError as exc:
        module.fail_json(msg=str(exc), problems=[str(exc)], **{done_key: False})
        raise  # unreachable: fail_json exits


def exit_gate(module: Any, report: Dict[str, Any], unmet: str, done_key: str = "ready") -> None:
    """End a gate module: with wait on and the gate unmet, fail with ``unmet`` (what did not pass, as a phrase),
    how long it waited and every problem; else return the report. Neither changes anything."""
    params = module.params
    if params.get("wait") and not report[done_key]:
        waited = params["waited"] + params["wait_timeout"]
        module.fail_json(
            msg=f"{unmet} after {waited}s: " + " ".join(report["problems"]), changed=False, waited_s=waited, **report
        )
    module.exit_json(changed=False, **report)
