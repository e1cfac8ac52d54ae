# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The run lock's background renewer: a daemon, one per run, cluster and Lease, forked by the module run_lock.

It renews the Lease every duration/3 seconds while the run's controller process lives and the
Lease names the run; when the controller is gone it deletes the Lease (if it still names the run)
and exits. A pid file in the temporary directory (held with flock) names the renewer.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

from ansible_collections.meshops.istio.plugins.module_utils import lease
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, forget_cached_clients
from ansible_collections.meshops.istio.plugins.module_utils.lease_lock import utcnow
from ansible_collections.meshops.istio.plugins.module_utils.processes import proc_stat, process_alive, read_bytes

# Kept referenced in the renewer so that the inherited client, whose sockets it closed, is never
# garbage-collected (its finalizers would close file descriptors reused by then).
_KEEP: List[Any] = []


def pid_file(kube: Any, p: Dict[str, Any], me: Dict[str, Any]) -> str:
    """One renewer per run, cluster and Lease."""
    key = json.dumps([kube.host, p["namespace"], p["name"], list(lease.run_key(me))])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"meshops-istio-run-lock-{digest}.pid")


def renewer_pid(path: str) -> int:
    """The pid of the renewer named in the pid file, when that very process still runs; else 0."""
    try:
        pid, start = read_bytes(path).decode("ascii").split()
        pid = int(pid)
    except ValueError:
        return 0
    return pid if process_alive(pid, start) else 0


def stop_renewer(path: str, clock: Callable[[], float] = time.monotonic) -> None:
    pid = renewer_pid(path)
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = clock() + 5
    while renewer_pid(path) == pid and clock() < deadline:
        time.sleep(0.05)


def start_renewer(module: Any, kube: Any, p: Dict[str, Any], me: Dict[str, Any], path: str) -> int:
    """Fork the renewer unless one runs for this run, cluster and Lease; its pid (0 when it did not start)."""
    running = renewer_pid(path)
    if running:
        return running
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process
        try:
            gc.freeze()  # no collection of inherited objects whose descriptors _detach closes
            _detach()
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            _KEEP.append(kube)
            renew_loop(module, p, me, path)
        except BaseException:  # nothing may escape into the module's own output
            pass
        os._exit(0)
    os.waitpid(child, 0)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        running = renewer_pid(path)
        if running:
            return running
        time.sleep(0.02)
    return 0


def _detach() -> None:  # pragma: no cover - runs in the forked process
    """stdin/stdout/stderr to /dev/null, every other inherited descriptor closed: Ansible reads the module's
    pipes until every holder closes them."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        limit = 65536
    os.closerange(3, limit if limit > 0 else 65536)
    os.chdir("/")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _exit_on_signal(signum, frame):  # pragma: no cover - runs in the forked process
    raise SystemExit(0)


def renew_loop(module: Any, p: Dict[str, Any], me: Dict[str, Any], path: str) -> None:  # pragma: no cover - forked
    """Renew while the controller lives and the Lease names the run; delete it when the controller is gone.

    Errors are swallowed: the next tick (a second later) tries again.
    """
    signal.signal(signal.SIGTERM, _exit_on_signal)  # state=absent stops the renewer: clean up on the way out
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another renewer for this run, cluster and Lease
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {(proc_stat(os.getpid()) or {}).get('start', '')}\n".encode("ascii"))
    ns, name = p["namespace"], p["name"]
    interval = max(1.0, p["duration"] / 3.0)
    last = time.monotonic()
    kube = None
    gone_since = None
    try:
        while True:
            if kube is None:  # a client of its own, made at once: the module's files vanish when it exits
                try:
                    forget_cached_clients()
                    kube = Kube(module)
                except Exception:  # retried on the next tick
                    kube = None
            time.sleep(1)
            try:
                if not process_alive(me["pid"], me["start"]):
                    gone_since = gone_since or time.monotonic()
                    if time.monotonic() - gone_since > p["duration"]:
                        return  # expired by now anyway
                    if kube is None:
                        continue
                    current = kube.get(lease.API_VERSION, lease.KIND, name, ns)
                    if current is not None and lease.is_ours(current, me):
                        kube.delete(
                            lease.API_VERSION,
                            lease.KIND,
                            name,
                            ns,
                            resource_version=current["metadata"]["resourceVersion"],
                        )
                    return
                if kube is None or time.monotonic() - last < interval:
                    continue
                current = kube.get(lease.API_VERSION, lease.KIND, name, ns)
                if current is None or not lease.is_ours(current, me):
                    return
                kube.replace(lease.API_VERSION, lease.KIND, lease.renewed(current, utcnow()), ns)
                last = time.monotonic()
                duration = (current.get("spec") or {}).get("leaseDurationSeconds")
                if isinstance(duration, int) and duration > 0:
                    interval = max(1.0, duration / 3.0)
            except Exception:  # retried on the next tick
                continue
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
