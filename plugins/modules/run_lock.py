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

from ansible_collections.meshops.istio.plugins.module_utils import lease
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError
from ansible_collections.meshops.istio.plugins.module_utils.lease_lock import (
    LockHeld,
    acquire,
    held_message,
    preview,
    release,
)
from ansible_collections.meshops.istio.plugins.module_utils.lease_renewer import pid_file, start_renewer, stop_renewer
from ansible_collections.meshops.istio.plugins.module_utils.processes import whoami


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
            module.exit_json(changed=False, holder=holder, **preview(kube, p, me))
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
