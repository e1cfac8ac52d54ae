#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: run_lock
short_description: Take or release the cluster-wide lock of a meshops.istio run
version_added: 0.2.0
description:
  - Writing playbooks (rollout, uninstall, drift with correction) take this lock before their first change and
    release it at the end, so that two runs (a nightly correction and a manual rollout) never change one cluster at
    the same time.
  - The lock is a C(coordination.k8s.io/v1) Lease, O(namespace)/O(name), labeled
    C(app.kubernetes.io/managed-by=meshops.istio). Its C(spec.holderIdentity) names the run readably and uniquely
    (see RV(holder)); the annotation C(meshops.istio/holder) carries the same identity as JSON (run, note, user,
    host, controller pid and its start time, boot id and pid namespace).
  - The run is the C(ansible-playbook) process (the controller) the module runs under, found by walking the module's
    ancestor processes through C(/proc) and taking the topmost one whose program is C(ansible-playbook) (Ansible
    forks a worker per task with the controller's command line). Where there is none (not Linux, or not run by
    C(ansible-playbook)), the run is the module's session (its leader, from C(os.getsid)), which lives only as long
    as that session. Run the module on the controller with a local connection, as the collection's playbooks do.
  - With O(state=present) the module takes the lock when no Lease exists (creating the namespace first when
    O(create_namespace=true)), renews it when this run already holds it (whatever O(run) and O(note) were), and takes
    it over when its holder is provably over, that is when the Lease expired (not renewed for
    C(leaseDurationSeconds)), or its controller process is gone on this same host (same hostname, boot and pid
    namespace; pid absent, or reused by a process started at another time), or O(break_lock=true). A Lease held by a
    live other run is polled until it is free or O(wait_timeout) seconds passed, then the module fails naming the
    holder, since when it holds the lock and when the lock expires, with the remedies. Concurrent takers are
    serialized by the API server (writes are conditional on the resourceVersion read); a loser reads again.
  - While this run holds the lock, a background process (started once per run, cluster and Lease) renews it every
    O(duration)/3 seconds (at least 1). It checks every second whether the controller process still lives; when it is
    gone (the run ended without releasing the lock, or was killed) it deletes the Lease if the Lease still names the
    run, so a killed run frees the lock at once, then exits. It also exits when the Lease no longer names the run.
    When that process cannot run (the controller's machine stopped), the lock expires after O(duration) seconds.
  - With O(state=absent) the module stops the background renewer and deletes the Lease if it names this run.
  - The module never reports C(changed). The lock is bookkeeping of the run, not a change to the cluster's declared
    state, so a converged rerun of a playbook still reports C(changed=0). That includes creating a missing
    namespace (reported in RV(namespace_created)).
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description: Writes nothing and waits for nothing; reports who holds the lock in RV(held_by).
  diff_mode:
    support: none
    description: The Lease is bookkeeping; there is no diff to show.
  idempotent:
    support: full
    description: Taking a lock this run holds renews it; releasing a lock this run does not hold does nothing.
      C(changed) is always false.
options:
  state:
    description:
      - V(present) takes (or renews) the lock and keeps it renewed while the run lives; V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  namespace:
    description:
      - Namespace of the Lease; the Istio namespace, so that the lock lives and dies with the installation.
    type: str
    default: istio-system
  name:
    description: Name of the Lease.
    type: str
    default: meshops-istio-run
  run:
    description: What is running, for example V(rollout), V(uninstall) or V(drift); part of the holder's name.
    type: str
    required: true
  note:
    description: A note for whoever finds the lock held, for example V(AWX job 42). Part of the holder's name.
    type: str
    default: ""
  duration:
    description:
      - C(leaseDurationSeconds) of the Lease, at least 1. A lock not renewed for this long is expired, and another run
        takes it over.
    type: int
    default: 120
  wait_timeout:
    description:
      - Seconds to wait for a lock held by another live run before failing. V(0) tries once.
    type: int
    default: 60
  break_lock:
    description:
      - Take the lock over even when its holder may still be running. Only when you are sure that run is not running
        any more (for example its machine is gone and you cannot wait for the lock to expire); two runs changing a
        cluster at once can leave it half-converged. The playbooks expose this as C(rollout_lock_break=true).
    type: bool
    default: false
  create_namespace:
    description:
      - Create O(namespace) when it does not exist, so that the lock can be taken before Istio is installed. With
        V(false) a missing namespace fails the module.
    type: bool
    default: true
  renew:
    description:
      - Keep the lock renewed in the background while the run lives, and delete it when the run's controller
        process is gone. With V(false) the lock expires O(duration) seconds after the last call of this module
        unless the playbook calls it again.
    type: bool
    default: true
notes:
  - The expiry is judged from the Lease's C(renewTime), written with the clock of the holder's machine; clocks of
    the machines running playbooks must agree to well within O(duration) (NTP).
  - The renewer keeps a pid file in the temporary directory (C(meshops-istio-run-lock-<hash>.pid)).
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Take the cluster-wide run lock
  meshops.istio.run_lock:
    run: rollout
    note: "{{ ('AWX job ' ~ awx_job_id) if awx_job_id is defined else '' }}"
    wait_timeout: 60

- name: Change the cluster under the lock, and release it whatever happens
  block:
    - name: Step 1
      ansible.builtin.include_role:
        name: meshops.istio.istio_install_minimal
  always:
    - name: Release the cluster-wide run lock
      meshops.istio.run_lock:
        state: absent
        run: rollout

- name: Who holds the lock (check mode reads only)
  meshops.istio.run_lock:
    run: report
  check_mode: true
  register: lock

- name: Show it
  ansible.builtin.debug:
    msg: "{{ lock.held_by or 'the lock is free' }}"
"""

RETURN = r"""
holder:
  description: This run's holder identity (what C(spec.holderIdentity) holds while this run has the lock).
  returned: always
  type: str
  sample: "rollout by root@awx-ee-7f pid 21 (AWX job 42) [21/987654]"
held_by:
  description:
    - Who holds the lock after the module ran. With O(state=present), this run when it acquired it; in check mode,
      the live holder found, or V("") when the lock is free (no Lease, no holder, expired, or its holder is gone).
    - With O(state=absent), V("") when this run released it or the lock was free, else the other run that holds it.
  returned: always
  type: str
acquired:
  description: Whether this run holds the lock now (false in check mode and with O(state=absent)).
  returned: always
  type: bool
taken_over_from:
  description: The previous holder when this run took an expired, orphaned or broken lock over; V("") otherwise.
  returned: state=present
  type: str
reason:
  description: Why the lock was acquired, renewed or taken over (or, in check mode, what it would be).
  returned: state=present
  type: str
  sample: the lock expired at 2026-11-26T17:41:54.123456Z (its holder stopped renewing it)
waited:
  description: Seconds spent taking the lock (waiting for another run's included).
  returned: state=present
  type: float
waited_for:
  description: >-
    The other run this one waited for (it held the lock when this run asked), or V("") when the lock was free. What
    that run changed meanwhile was not seen by anything read before.
  returned: state=present
  type: str
expires:
  description: When the lock expires unless renewed (MicroTime, UTC); V("") when no lock is held.
  returned: state=present
  type: str
  sample: "2026-11-26T17:43:54.123456Z"
namespace_created:
  description: Whether the module created O(namespace) (it did not exist and O(create_namespace=true)).
  returned: state=present
  type: bool
renewer_pid:
  description: Pid of the background renewer on the controller, V(0) when none runs (O(renew=false), check mode).
  returned: state=present
  type: int
released:
  description: Whether this run's lock was deleted (false when it was not held by this run, or in check mode).
  returned: state=absent
  type: bool
"""

import contextlib
import datetime
import fcntl
import gc
import hashlib
import json
import os
import pwd
import signal
import socket
import sys
import tempfile
import time

from ansible_collections.meshops.istio.plugins.module_utils import lease
from ansible_collections.meshops.istio.plugins.module_utils.k8s import (
    Kube,
    KubeConflict,
    KubeError,
    KubeNotFound,
    argument_spec,
    forget_cached_clients,
    new_module,
    wait_until,
)

# Kept referenced in the renewer so that the inherited client, whose sockets it closed, is never
# garbage-collected (its finalizers would close file descriptors reused by then).
_KEEP = []


# ---------------------------------------------------------------------- processes (/proc)


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def proc_stat(pid):
    """state, ppid and start time of a process, or None when it does not exist (or no /proc)."""
    return lease.parse_proc_stat(_read(f"/proc/{int(pid)}/stat").decode("utf-8", "replace"))


def proc_argv(pid):
    raw = _read(f"/proc/{int(pid)}/cmdline")
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0") if arg]


def process_alive(pid, start):
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


def find_controller():
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


def whoami(run, note):
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
        boot_id=_read("/proc/sys/kernel/random/boot_id").decode("ascii", "replace").strip(),
        pid_ns=pid_ns,
    )
    return me, how


def holder_alive(current, me):
    """False only when the holder's controller is provably gone: same host, and its process is not there."""
    holder = lease.holder_of(current)
    if not lease.same_process_space(holder, me):
        return True
    return process_alive(holder["pid"], holder["start"])


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


# ---------------------------------------------------------------------- taking and releasing


class LockHeld(Exception):
    """wait_timeout passed while another run held the lock."""

    def __init__(self, current, waited):
        super().__init__("lock held")
        self.current = current
        self.waited = waited


def _create_namespace(kube, namespace):
    with contextlib.suppress(KubeConflict):  # created meanwhile by someone else
        kube.create("v1", "Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def acquire(kube, p, me, alive=holder_alive, now=_utcnow, clock=time.monotonic, sleep=time.sleep):
    """Take (or renew) the lock; LockHeld when another live run holds it past wait_timeout."""
    ns, name = p["namespace"], p["name"]
    seen = {"namespace_created": False, "current": None, "waited_for": ""}
    started = clock()

    def attempt():
        current = kube.get(lease.API_VERSION, lease.KIND, name, ns)
        seen["current"] = current
        decision = lease.decide(current, me, now(), alive(current, me), p["break_lock"])
        if decision["action"] == lease.WAIT:
            seen["waited_for"] = lease.holder_name(current) or "another run"
            return None
        body = lease.lease_body(name, ns, me, p["duration"], now(), previous=current)
        try:
            if current is not None:
                written = kube.replace(lease.API_VERSION, lease.KIND, body, ns)
            else:
                try:
                    written = kube.create(lease.API_VERSION, lease.KIND, body, ns)
                except KubeNotFound:
                    if not p["create_namespace"]:
                        raise KubeError(
                            f"cannot take the run lock: the namespace {ns} does not exist. Create it, or set "
                            "create_namespace=true."
                        ) from None
                    _create_namespace(kube, ns)
                    seen["namespace_created"] = True
                    written = kube.create(lease.API_VERSION, lease.KIND, body, ns)
        except (KubeConflict, KubeNotFound):  # another run wrote (or deleted) it since we read it: read again
            return None
        return {"lease": written, "decision": decision}

    result = wait_until(
        attempt, lambda r: r is not None, max(0, p["wait_timeout"]), max_delay=2.0, clock=clock, sleep=sleep
    )
    waited = round(clock() - started, 1)
    if result is None:
        # Name whoever holds it now, not whoever held it at the last poll.
        raise LockHeld(kube.get(lease.API_VERSION, lease.KIND, name, ns) or seen["current"], waited)
    decision = result["decision"]
    expires = lease.expiry(result["lease"])
    return {
        "acquired": True,
        "held_by": lease.holder_identity(me),
        "taken_over_from": decision["holder"] if decision["action"] == lease.TAKE_OVER else "",
        "reason": decision["reason"],
        "action": decision["action"],
        "waited": waited,
        "waited_for": seen["waited_for"],
        "expires": lease.format_microtime(expires) if expires else "",
        "namespace_created": seen["namespace_created"],
    }


def held_message(p, current, waited):
    spec = (current or {}).get("spec") or {}
    holder = lease.holder_name(current) or "another run"
    expires = lease.expiry(current)
    until = lease.format_microtime(expires) if expires else "an unknown time"
    return (
        f"The cluster-wide run lock (Lease {p['namespace']}/{p['name']}) is held by {holder} since "
        f"{spec.get('acquireTime') or 'an unknown time'}: another meshops.istio run is changing this cluster. "
        f"Waited {waited}s (wait_timeout={p['wait_timeout']}). The lock expires at {until} unless its holder renews "
        "it. Wait for that run to finish, then rerun. If that run is dead (for example its machine is gone), rerun "
        "after the expiry time, or set break_lock=true (the playbooks expose it as rollout_lock_break: true) only "
        "when you are sure it is not running. Nothing was changed."
    )


def live_holder(current, me, now=_utcnow):
    """holderIdentity of the run that holds the lock, "" when it is free (none, released, expired, holder gone)."""
    decision = lease.decide(current, me, now(), holder_alive(current, me), False)
    return decision["holder"] if decision["action"] in (lease.RENEW, lease.WAIT) else ""


def release(kube, p, me, now=_utcnow):
    """Delete the Lease if it names this run: (released, held_by)."""
    ns, name = p["namespace"], p["name"]
    for _attempt in range(5):
        current = kube.get(lease.API_VERSION, lease.KIND, name, ns)
        if current is None or not lease.is_ours(current, me):
            return False, live_holder(current, me, now)
        try:
            deleted = kube.delete(
                lease.API_VERSION, lease.KIND, name, ns, resource_version=current["metadata"]["resourceVersion"]
            )
            return deleted, ""
        except KubeConflict:  # renewed meanwhile: read again
            continue
    raise KubeError(f"cannot release the run lock Lease {ns}/{name}: it kept changing while being deleted.")


# ---------------------------------------------------------------------- the background renewer


def pid_file(kube, p, me):
    """One renewer per run, cluster and Lease."""
    key = json.dumps([kube.host, p["namespace"], p["name"], list(lease.run_key(me))])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"meshops-istio-run-lock-{digest}.pid")


def renewer_pid(path):
    """The pid of the renewer named in the pid file, when that very process still runs; else 0."""
    try:
        pid, start = _read(path).decode("ascii").split()
        pid = int(pid)
    except ValueError:
        return 0
    return pid if process_alive(pid, start) else 0


def stop_renewer(path, clock=time.monotonic):
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


def start_renewer(module, kube, p, me, path):
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


def _detach():  # pragma: no cover - runs in the forked process
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


def renew_loop(module, p, me, path):  # pragma: no cover - runs in the forked process
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
                kube.replace(lease.API_VERSION, lease.KIND, lease.renewed(current, _utcnow()), ns)
                last = time.monotonic()
                duration = (current.get("spec") or {}).get("leaseDurationSeconds")
                if isinstance(duration, int) and duration > 0:
                    interval = max(1.0, duration / 3.0)
            except Exception:  # retried on the next tick
                continue
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------------- module


def main():
    spec = argument_spec(
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        namespace={"type": "str", "default": "istio-system"},
        name={"type": "str", "default": "meshops-istio-run"},
        run={"type": "str", "required": True},
        note={"type": "str", "default": ""},
        duration={"type": "int", "default": 120},
        wait_timeout={"type": "int", "default": 60},
        break_lock={"type": "bool", "default": False},
        create_namespace={"type": "bool", "default": True},
        renew={"type": "bool", "default": True},
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not p["run"].strip():
        module.fail_json(msg="run must name what is running, for example rollout. Nothing was changed.")
    if p["duration"] < 1:
        module.fail_json(msg=f"duration must be at least 1 second, got {p['duration']}. Nothing was changed.")
    me, how = whoami(p["run"].strip(), p["note"].strip())
    if how != "ansible-playbook":
        module.warn(
            "run_lock found no ansible-playbook controller among its parent processes; the lock belongs to the "
            f"module's session (pid {me['pid']}). Run it on the controller (connection: local)."
        )
    holder = lease.holder_identity(me)
    try:
        kube = Kube(module)
        if module.check_mode:
            current = kube.get(lease.API_VERSION, lease.KIND, p["name"], p["namespace"])
            expires = lease.expiry(current)
            if p["state"] == "absent":
                module.exit_json(
                    changed=False, holder=holder, held_by=live_holder(current, me), acquired=False, released=False
                )
            decision = lease.decide(current, me, _utcnow(), holder_alive(current, me), p["break_lock"])
            module.exit_json(
                changed=False,
                holder=holder,
                held_by=live_holder(current, me),
                acquired=False,
                taken_over_from="",
                reason=f"check mode, nothing written: would {decision['action'].replace('_', ' ')} "
                f"({decision['reason']})",
                waited=0.0,
                expires=lease.format_microtime(expires) if expires else "",
                namespace_created=False,
                renewer_pid=0,
            )
        path = pid_file(kube, p, me)
        if p["state"] == "absent":
            stop_renewer(path)
            released, held_by = release(kube, p, me)
            module.exit_json(changed=False, holder=holder, held_by=held_by, acquired=False, released=released)
        try:
            result = acquire(kube, p, me)
        except LockHeld as held:
            module.fail_json(
                msg=held_message(p, held.current, held.waited),
                holder=holder,
                held_by=lease.holder_name(held.current),
                acquired=False,
                waited=held.waited,
            )
    except KubeError as exc:
        module.fail_json(msg=str(exc), holder=holder, acquired=False)
    if result["action"] == lease.TAKE_OVER and result["taken_over_from"]:
        module.warn(f"took the run lock over from {result['taken_over_from']}: {result['reason']}")
    pid = 0
    if p["renew"]:
        try:
            pid = start_renewer(module, kube, p, me, path)
        except OSError as exc:
            module.warn(f"could not start the lock renewer ({exc}); the lock expires in {p['duration']}s.")
    result.pop("action")
    module.exit_json(changed=False, holder=holder, renewer_pid=pid, **result)


if __name__ == "__main__":
    main()
