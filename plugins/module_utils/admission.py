# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Would a namespace's workloads still be admitted once injected? The pure half of the admission dry run.

Before a namespace is labeled, every workload's pod template is sent as a Pod to a server-side dry-run create, with
the label that makes Istio's injector select it (``sidecar.istio.io/inject=true``, or ``istio.io/rev`` for a
revision) although the namespace is not labeled yet. The API server runs the injector and then every admission
check on the injected pod (Pod Security, ResourceQuota, LimitRange, other webhooks), and persists nothing. A refusal
found here is one that would otherwise leave the namespace labeled with workloads that cannot restart. No I/O.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import REVISION_LABEL
from ansible_collections.meshops.istio.plugins.module_utils.objects import meta, proxy_container
from ansible_collections.meshops.istio.plugins.module_utils.sidecars import opted_out

# (api_version, kind) of the workloads whose pods the injector would change, in report order.
WORKLOAD_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "CronJob"),
    ("batch/v1", "Job"),
)


def pod_template(workload: Dict[str, Any]) -> Dict[str, Any]:
    spec = workload.get("spec") or {}
    if workload.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return spec.get("template") or {}


def owned_by_cronjob(workload: Dict[str, Any]) -> bool:
    return any(ref.get("kind") == "CronJob" for ref in meta(workload).get("ownerReferences") or [])


def admission_pod(workload: Dict[str, Any], revision: Optional[str] = None) -> Dict[str, Any]:
    """The workload's pod as a Pod for a dry-run create that the injector selects."""
    template = copy.deepcopy(pod_template(workload))
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    if opted_out({"metadata": tmeta}):
        pass  # sent as it is: the injector leaves it alone, admission still judges it
    elif revision and revision != "default":
        labels[REVISION_LABEL] = revision
    else:
        labels["sidecar.istio.io/inject"] = "true"
    spec = template.get("spec") or {}
    # A StatefulSet's pods mount volumes from its volumeClaimTemplates, which a bare Pod lacks: stand in empty ones.
    claimed = [meta(c).get("name") for c in (workload.get("spec") or {}).get("volumeClaimTemplates") or []]
    present = {v.get("name") for v in spec.get("volumes") or []}
    missing = [name for name in claimed if name and name not in present]
    if missing:
        spec["volumes"] = list(spec.get("volumes") or []) + [{"name": n, "emptyDir": {}} for n in missing]
    wmeta = meta(workload)
    pod_meta = {
        "generateName": f"meshops-admission-{wmeta.get('name', 'workload')}"[:57] + "-",
        "namespace": wmeta.get("namespace"),
        "labels": labels,
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}


def admission_result(
    workload: Dict[str, Any], dry_run_pod: Optional[Dict[str, Any]], error: Optional[str], checked: bool = True
) -> Dict[str, Any]:
    """One workload's answer: admitted or not (with the API server's reason), injected or not, and notes.

    ``checked`` false: the dry run failed for a reason that says nothing about the pod (the injector's webhook
    unreachable, RBAC); ``admitted`` is then None and the error is a note, not a refusal. The injector probe of the
    same module run reports such causes.
    """
    wmeta = meta(workload)
    kind = workload.get("kind", "")
    template = pod_template(workload)
    notes: List[str] = []
    out_of_mesh = opted_out({"metadata": template.get("metadata") or {}})
    if (template.get("spec") or {}).get("hostNetwork"):
        notes.append("uses hostNetwork: Istio does not inject it, so it stays outside the mesh")
        out_of_mesh = True
    elif out_of_mesh:
        notes.append('opts out (sidecar.istio.io/inject: "false"): it stays outside the mesh')
    if kind in ("Job", "CronJob") and not out_of_mesh:
        notes.append(
            "is a " + kind + ": with a classic sidecar its pods keep running after the job's container ends, unless "
            "Istio runs native sidecars (Kubernetes 1.29+, ENABLE_NATIVE_SIDECARS) or the job calls the proxy's "
            "quitquitquit endpoint"
        )
    if not checked:
        notes.append(f"could not be checked: {error}")
    return {
        "namespace": wmeta.get("namespace"),
        "kind": kind,
        "name": wmeta.get("name"),
        "admitted": (error is None) if checked else None,
        "injected": error is None and proxy_container(dry_run_pod or {}) is not None,
        "message": error or "",
        "notes": notes,
    }


def admission_problems(results: List[Dict[str, Any]]) -> List[str]:
    """Sentences for the workloads admission would refuse once injected, naming workload and reason."""
    return [
        f"{r['kind']} {r['namespace']}/{r['name']} would not be admitted once injected: {r['message']}"
        for r in results
        if r["admitted"] is False
    ]


def admission_advisories(results: List[Dict[str, Any]]) -> List[str]:
    return [f"{r['kind']} {r['namespace']}/{r['name']} {note}." for r in results for note in r["notes"]]
