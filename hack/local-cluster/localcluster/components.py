"""The control plane's own processes as a kubelet would keep them: started again when they exit, and restarted on
request (the API server, for fault tests).

kwokctl's binary runtime starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok-controller
once, each with a pidfile under ``<kwok>/clusters/<name>/pids`` and a log under ``.../logs``, and nothing starts them
again. kube-controller-manager and kube-scheduler exit when they lose their leader election (an API server that
stalls for about 15 s or more), so a test that restarts the API server would leave a cluster with no controllers.
The istiod supervisor (``istiod.cmd_istiod_supervise``) calls :meth:`Keeper.tick` every second; the keeper
records each component's command line from ``/proc`` while it runs (in ``<state>/components.json``, so a new
supervisor knows it too) and starts an exited one again with exactly that command, working directory and log.

:func:`restart` is the fault: stop one component (SIGKILL by default, as a crash), keep it down for some seconds,
start it again the same way. Only the Python standard library is used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .common import CLUSTER_NAME, cache_dir, log, state_dir

# What a kubelet would restart. etcd and the API server are left alone: a test stops those on purpose.
KEPT = ("kube-controller-manager", "kube-scheduler", "kwok-controller")


def kwok_cluster_dir() -> Path:
    return cache_dir() / "kwok" / "clusters" / CLUSTER_NAME


def pidfile(component: str) -> Path:
    return kwok_cluster_dir() / "pids" / f"{component}.pid"


def running_pid(component: str) -> int | None:
    try:
        pid = int(pidfile(component).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A pid reused by another program is not the component.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if cmdline and Path(cmdline[0].decode()).name == component else None


def command_of(pid: int) -> dict:
    """The command line and working directory of a running process, to start it again the same way."""
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    return {"argv": argv, "cwd": os.readlink(f"/proc/{pid}/cwd")}


def commands_file() -> Path:
    return state_dir() / "components.json"


def start(component: str, command: dict) -> subprocess.Popen:
    """Start a component with its recorded command, appending to its kwokctl log, and write its pidfile."""
    logs = kwok_cluster_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{component}.log", "ab") as out:
        proc = subprocess.Popen(  # the component's own recorded command line
            command["argv"],
            cwd=command["cwd"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile(component).write_text(str(proc.pid))
    exec_done(proc.pid)
    return proc


def exec_done(pid: int, timeout: float = 2.0) -> None:
    """Wait until a process just started shows its command line: Popen can return while the kernel is still
    setting up the new program, and /proc/PID/cmdline reads empty meanwhile (running_pid would say "not running")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes():
                return
        except OSError:
            return
        time.sleep(0.01)


class Keeper:
    """Keeps KEPT running: one instance per supervisor; :meth:`tick` once a second."""

    def __init__(self) -> None:
        try:
            self.commands: dict[str, dict] = json.loads(commands_file().read_text())
        except (OSError, ValueError):
            self.commands = {}
        self.children: dict[str, subprocess.Popen] = {}  # the ones this keeper started
        self.starts: dict[str, float] = {}

    def tick(self) -> None:
        changed = False
        for component in KEPT:
            pid = running_pid(component)
            if pid is not None:
                if component not in self.commands:
                    self.commands[component] = command_of(pid)
                    changed = True
                continue
            command = self.commands.get(component)
            if command is None:
                continue  # never seen running: not this cluster's, or not started yet
            # At most one start every 5 s: a component that cannot start (the API server still down) retries.
            if time.monotonic() - self.starts.get(component, -10.0) < 5:
                continue
            self.starts[component] = time.monotonic()
            old = self.children.pop(component, None)
            if old is not None:
                old.poll()  # collected, so it leaves no zombie
            self.children[component] = start(component, command)
            log(
                f"supervisor: {component} had exited (it does when it loses its leader election); "
                f"started it again (pid {self.children[component].pid})"
            )
        if changed:
            commands_file().parent.mkdir(parents=True, exist_ok=True)
            commands_file().write_text(json.dumps(self.commands, indent=2))


def restart(component: str, down_seconds: float, signum: int = signal.SIGKILL) -> None:
    """The fault: stop ``component`` (SIGKILL: a crash), keep it down ``down_seconds``, start it again as it ran."""
    pid = running_pid(component)
    if pid is None:
        raise SystemExit(f"{component} of cluster {CLUSTER_NAME} is not running")
    command = command_of(pid)
    os.kill(pid, signum)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break  # a zombie: gone, only its parent has not collected it
        except OSError:
            break
        time.sleep(0.05)
    log(f"{component} of cluster {CLUSTER_NAME} stopped (pid {pid}); down for {down_seconds:g} s")
    time.sleep(down_seconds)
    log(f"{component} of cluster {CLUSTER_NAME} started again (pid {start(component, command).pid})")


def cmd_restart(args: list[str]) -> None:
    """``restart COMPONENT [DOWN_SECONDS]``: the fault of :func:`restart`, from the command line."""
    if not args:
        raise SystemExit("usage: cluster.py restart COMPONENT [DOWN_SECONDS]  (e.g. restart kube-apiserver 20)")
    restart(args[0], float(args[1]) if len(args) > 1 else 0.0)
