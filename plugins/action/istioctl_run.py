# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Run istioctl on the Ansible controller with a time limit, without starting a module process (see the module's
docs)."""

from __future__ import annotations

import subprocess
import time
from typing import Any, Dict, List, Sequence, Tuple

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def run(argv: Sequence[str], timeout: int) -> Dict[str, Any]:
    """What the program printed and how it ended. Never raises for the program's own failure: a program that cannot
    start gives ``started: false`` with the reason in ``msg``, one that outlives ``timeout`` is killed and gives
    ``timed_out: true``."""
    out: Dict[str, Any] = {"rc": None, "stdout": "", "stderr": "", "started": True, "timed_out": False, "msg": ""}
    start = time.monotonic()
    try:
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        out.update(
            timed_out=True,
            stdout=exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or "",
            stderr=exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or "",
            msg=f"{argv[0]} did not finish within {timeout} seconds and was stopped",
        )
    except OSError as exc:
        out.update(started=False, msg=str(exc))
    else:
        out.update(
            rc=proc.returncode,
            stdout=proc.stdout.rstrip("\n"),
            stderr=proc.stderr.rstrip("\n"),
            msg="" if proc.returncode == 0 else "non-zero return code",
        )
    out["seconds"] = round(time.monotonic() - start, 3)
    return out


def checked(args: Dict[str, Any]) -> Tuple[List[str], int]:
    """The task's argv and timeout, or AnsibleActionFail naming what is wrong."""
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise AnsibleActionFail(
            f"istioctl_run: argv must be a list of strings, the istioctl program first, got {argv!r}."
        )
    timeout = args.get("timeout", 300)
    try:
        seconds = int(timeout)
    except (TypeError, ValueError):
        seconds = 0
    if seconds < 1:
        raise AnsibleActionFail(f"istioctl_run: timeout must be a number of seconds above 0, got {timeout!r}.")
    return argv, seconds


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("argv", "timeout"))
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        argv, timeout = checked(self._task.args)
        result.update(run(argv, timeout), changed=False, failed=False, cmd=argv)
        return result
