#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: workload_restart
short_description: Restart workloads in batches and wait for each rollout
version_added: 0.2.0
description:
  - Restarts Deployments, StatefulSets and DaemonSets the way C(kubectl rollout restart) does, by setting the
    pod-template annotation C(kubectl.kubernetes.io/restartedAt), a batch at a time, and waits for each batch's
    rollouts to finish (observed generation, updated and available replicas, no old replicas, and a Deployment
    Available) before starting the next, polling with backoff.
  - Stops at the first batch that does not finish within O(timeout) and reports which workloads did not, and why.
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description: Reports what would be restarted; the patch runs as a server-side dry run and nothing changes.
  diff_mode:
    support: none
    description: The only change is the restart annotation.
  idempotent:
    support: none
    description: Every run restarts the workloads it is given; callers pass only those that need it.
options:
  workloads:
    description: Workloads to restart.
    type: list
    elements: dict
    required: true
    suboptions:
      kind:
        description: Workload kind.
        type: str
        choices: [Deployment, StatefulSet, DaemonSet]
        required: true
      namespace:
        description: Namespace of the workload.
        type: str
        required: true
      name:
        description: Name of the workload.
        type: str
        required: true
  batch_size:
    description: How many workloads restart at once.
    type: int
    default: 2
  timeout:
    description: Seconds to wait for each batch's rollouts.
    type: int
    default: 300
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Restart the workloads that lack a sidecar, two at a time
  meshops.istio.workload_restart:
    workloads: "{{ coverage.workloads_to_restart }}"
    batch_size: 2
    timeout: 300
"""

RETURN = r"""
restarted:
  description: Workloads restarted (or, in check mode, that would be), each with C(kind), C(namespace), C(name),
    C(seconds) (time until its rollout finished) and C(message).
  returned: always
  type: list
  elements: dict
failed:
  description: Workloads whose rollout did not finish within the timeout, with C(message).
  returned: always
  type: list
  elements: dict
"""

import datetime
import time

from ansible_collections.meshops.istio.plugins.module_utils import sidecars
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import wait_until


def restart_batch(kube, batch, timeout, check_mode):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.monotonic()
    for w in batch:
        kube.patch(
            sidecars.API_VERSION[w["kind"]],
            w["kind"],
            w["name"],
            w["namespace"],
            sidecars.restart_patch(stamp),
            dry_run=check_mode,
        )
    if check_mode:
        return [dict(w, seconds=0.0, message="would be restarted (check mode)") for w in batch], []
    done = {}
    last = {}

    def probe():
        for w in batch:
            key = (w["kind"], w["namespace"], w["name"])
            if key in done:
                continue
            obj = kube.get(sidecars.API_VERSION[w["kind"]], w["kind"], w["name"], w["namespace"])
            status = sidecars.rollout_status(obj) if obj else {"done": False, "message": "the workload disappeared"}
            if status["done"]:
                done[key] = dict(w, seconds=round(time.monotonic() - started, 2), message=status["message"])
            else:
                last[key] = status["message"]
        return len(done) == len(batch)

    wait_until(probe, bool, timeout)
    ok = [done[k] for k in ((w["kind"], w["namespace"], w["name"]) for w in batch) if k in done]
    failed = [
        {
            "kind": w["kind"],
            "namespace": w["namespace"],
            "name": w["name"],
            "message": f"rollout did not finish within {timeout}s: "
            f"{last.get((w['kind'], w['namespace'], w['name']), 'no status')}",
        }
        for w in batch
        if (w["kind"], w["namespace"], w["name"]) not in done
    ]
    return ok, failed


def main():
    spec = argument_spec(
        workloads={
            "type": "list",
            "elements": "dict",
            "required": True,
            "options": {
                "kind": {"type": "str", "required": True, "choices": list(sidecars.RESTARTABLE_KINDS)},
                "namespace": {"type": "str", "required": True},
                "name": {"type": "str", "required": True},
            },
        },
        batch_size={"type": "int", "default": 2},
        timeout={"type": "int", "default": 300},
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    params = module.params
    if params["batch_size"] < 1:
        module.fail_json(msg=f"batch_size must be at least 1, got {params['batch_size']}.")
    workloads = [dict(w) for w in params["workloads"]]
    restarted, failed = [], []
    try:
        kube = Kube(module)
        for batch in sidecars.batches(workloads, params["batch_size"]):
            ok, bad = restart_batch(kube, batch, params["timeout"], module.check_mode)
            restarted.extend(ok)
            failed.extend(bad)
            if bad:
                break
    except KubeError as exc:
        module.fail_json(msg=str(exc), changed=bool(restarted), restarted=restarted, failed=failed)
    changed = bool(restarted or failed)
    if failed:
        names = ", ".join(f"{f['kind']} {f['namespace']}/{f['name']} ({f['message']})" for f in failed)
        module.fail_json(
            msg=f"rollout did not finish for {names}. Check `kubectl -n <namespace> rollout status` and the pods' "
            "events; later batches were not started.",
            changed=changed,
            restarted=restarted,
            failed=failed,
        )
    module.exit_json(changed=changed, restarted=restarted, failed=failed)


if __name__ == "__main__":
    main()
