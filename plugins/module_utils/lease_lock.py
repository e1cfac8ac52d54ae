# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Taking, releasing and reading the run lock's Lease through the Kube client (the module run_lock).

What to do with the Lease found is decided in module_utils/lease.py; this file reads and writes
it, retrying when another run wrote in between (writes are conditional on the resourceVersion read).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.meshops.istio.plugins.module_utils import lease
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeConflict, KubeError, KubeNotFound
from ansible_collections.meshops.istio.plugins.module_utils.k8s.waiter import wait_until
from ansible_collections.meshops.istio.plugins.module_utils.processes import holder_alive


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class LockHeld(Exception):
    """wait_timeout passed while another run held the lock."""

    def __init__(self, current: Optional[Dict[str, Any]], waited: float) -> None:
        super().__init__("lock held")
        self.current = current
        self.waited = waited


def _create_namespace(kube: Any, namespace: str) -> None:
    with contextlib.suppress(KubeConflict):  # created meanwhile by someone else
        kube.create("v1", "Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def acquire(
    kube: Any,
    p: Dict[str, Any],
    me: Dict[str, Any],
    alive: Callable[[Optional[Dict[str, Any]], Dict[str, Any]], bool] = holder_alive,
    now: Callable[[], datetime.datetime] = utcnow,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Dict[str, Any]:
    """Take (or renew) the lock; LockHeld when another live run holds it past wait_timeout."""
    ns, name = p["namespace"], p["name"]
    seen: Dict[str, Any] = {"namespace_created": False, "current": None, "waited_for": ""}
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


def held_message(p: Dict[str, Any], current: Optional[Dict[str, Any]], waited: float) -> str:
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


def live_holder(
    current: Optional[Dict[str, Any]], me: Dict[str, Any], now: Callable[[], datetime.datetime] = utcnow
) -> str:
    """holderIdentity of the run that holds the lock, "" when it is free (none, released, expired, holder gone)."""
    decision = lease.decide(current, me, now(), holder_alive(current, me), False)
    return decision["holder"] if decision["action"] in (lease.RENEW, lease.WAIT) else ""


def release(
    kube: Any, p: Dict[str, Any], me: Dict[str, Any], now: Callable[[], datetime.datetime] = utcnow
) -> Tuple[bool, str]:
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


def preview(kube: Any, p: Dict[str, Any], me: Dict[str, Any]) -> Dict[str, Any]:
    """Check mode: what state=present or absent finds, read only (the result but for changed and holder)."""
    current = kube.get(lease.API_VERSION, lease.KIND, p["name"], p["namespace"])
    expires = lease.expiry(current)
    if p["state"] == "absent":
        return {"held_by": live_holder(current, me), "acquired": False, "released": False}
    decision = lease.decide(current, me, utcnow(), holder_alive(current, me), p["break_lock"])
    return {
        "held_by": live_holder(current, me),
        "acquired": False,
        "taken_over_from": "",
        "reason": f"check mode, nothing written: would {decision['action'].replace('_', ' ')} ({decision['reason']})",
        "waited": 0.0,
        "expires": lease.format_microtime(expires) if expires else "",
        "namespace_created": False,
        "renewer_pid": 0,
    }
