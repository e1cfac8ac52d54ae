# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Processes as the run lock sees them, read from /proc: who this run is, and whether a run's process lives.

The run is the ``ansible-playbook`` process (the controller) among this process's ancestors,
else this process's session. What the text read means is decided in module_utils/lease.py
(parse_proc_stat, controller_pid, identity, same_process_space); this file does the reading.
"""

from __future__ import annotations

import os
import pwd
import socket
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.meshops.istio.plugins.module_utils import lease


def read_bytes(path: str) -> bytes:
    """A file's content, b"" when it cannot be read (a process that is gone, no /proc)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def proc_stat(pid: int) -> Optional[Dict[str, Any]]:
    """state, ppid and start time of a process, or None when it does not exist (or no /proc)."""
    return lease.parse_proc_stat(read_bytes(f"/proc/{int(pid)}/stat").decode("utf-8", "replace"))


def proc_argv(pid: int) -> List[str]:
    raw = read_bytes(f"/proc/{int(pid)}/cmdline")
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0") if arg]


def process_alive(pid: int, start: str) -> bool:
    """Whether the process pid runs and, when start is known, is the one started then (no reused pid)."""
    stat = proc_stat(pid)
    if stat is None:
        if os.path.isdir("/proc/self"):
            return False
        try:  # no /proc: existence is all that can be told
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    if stat["state"] in ("Z", "X"):
        return False
    return not start or stat["start"] == start


def find_controller() -> Tuple[int, str]:
    """(pid, how): the topmost ansible-playbook ancestor, else the session (os.getsid)."""
    ancestors = []
    pid = os.getppid()
    while pid > 1 and len(ancestors) < 64:
        stat = proc_stat(pid)
        if stat is None:
            break
        ancestors.append((pid, proc_argv(pid)))
        pid = stat["ppid"]
    found = lease.controller_pid(ancestors)
    if found:
        return found, "ansible-playbook"
    return os.getsid(0), "session"


def whoami(run: str, note: str) -> Tuple[Dict[str, Any], str]:
    """This run's identity (lease.identity) and how its controller was found (find_controller)."""
    pid, how = find_controller()
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    me = lease.identity(
        run=run,
        note=note,
        user=user,
        host=socket.gethostname(),
        pid=pid,
        start=(proc_stat(pid) or {}).get("start", ""),
        boot_id=read_bytes("/proc/sys/kernel/random/boot_id").decode("ascii", "replace").strip(),
        pid_ns=pid_ns,
    )
    return me, how


def holder_alive(current: Optional[Dict[str, Any]], me: Dict[str, Any]) -> bool:
    """False only when the holder's controller is provably gone: same host, and its process is not there."""
    holder = lease.holder_of(current)
    if not lease.same_process_space(holder, me):
        return True
    return process_alive(holder["pid"], holder["start"])
