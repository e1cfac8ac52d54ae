# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The run lock's rules, as plain functions over plain values.

A writing run of meshops.istio (rollout, uninstall, drift correction) holds a
``coordination.k8s.io/v1`` Lease naming it. This module decides what a run does with
the Lease it finds (acquire, renew, take over, wait) and builds the Lease it writes.

Pure logic: no I/O at all. Nothing here reads files, /proc, the clock or the network;
callers pass what they observed (the Lease as a dict, ``now``, whether the holder's
process lives, the text of ``/proc/<pid>/stat``) and get plain values back.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"
HOLDER_ANNOTATION = "meshops.istio/holder"
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshops.istio"}

# decide() actions
ACQUIRE = "acquire"  # no Lease exists: create it
RENEW = "renew"  # the Lease names this run: renew it
TAKE_OVER = "take_over"  # the Lease names another run that is provably over (or break_lock): replace it
WAIT = "wait"  # the Lease names another run that may be alive: wait for it

_PLAYBOOK = re.compile(r"^(ansible-playbook(-[0-9.]+)?|ansible\.cli\.playbook)$")
_FRACTION = re.compile(r"^([^.]*)\.([0-9]+)(.*)$")
_IDENTITY_KEYS = ("run", "note", "user", "host", "pid", "start", "boot_id", "pid_ns")
# What identifies one run of a controller; run and note may differ between two calls of the same run.
_RUN_KEYS = ("host", "pid", "start", "boot_id", "pid_ns")


# ---------------------------------------------------------------------- time


def format_microtime(when: datetime.datetime) -> str:
    """A datetime as Kubernetes MicroTime, always UTC: ``2026-11-26T17:41:54.123456Z``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(text: Optional[str]) -> Optional[datetime.datetime]:
    """Kubernetes MicroTime (or RFC 3339 Time) as an aware UTC datetime; None when empty or malformed.

    Accepts ``Z`` or a numeric offset and a fraction of any length (nanoseconds are truncated).
    """
    if not text or not isinstance(text, str):
        return None
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    if "." in value:
        fraction = _FRACTION.match(value)
        if fraction is None:
            return None
        value = f"{fraction.group(1)}.{fraction.group(2)[:6].ljust(6, '0')}{fraction.group(3)}"
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(datetime.timezone.utc)


def expiry(lease: Optional[Dict[str, Any]]) -> Optional[datetime.datetime]:
    """When the Lease expires unless renewed: (renewTime or acquireTime) + leaseDurationSeconds.

    None when it cannot be told (no time or no duration): such a Lease proves no holder alive.
    """
    spec = (lease or {}).get("spec") or {}
    start = parse_microtime(spec.get("renewTime")) or parse_microtime(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if start is None or not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
        return None
    return start + datetime.timedelta(seconds=duration)


# ---------------------------------------------------------------------- identity


def identity(
    run: str,
    note: str,
    user: str,
    host: str,
    pid: int,
    start: str,
    boot_id: str = "",
    pid_ns: str = "",
) -> Dict[str, Any]:
    """Who runs: the run's name and note, the user and host, and the controller process.

    ``pid`` and ``start`` (field 22 of /proc/<pid>/stat, clock ticks since boot) name the
    controller process so that a reused pid is not taken for it; ``boot_id`` and ``pid_ns``
    (when known) tell whether another run's pid can be checked from here at all.
    """
    return {
        "run": str(run),
        "note": str(note or ""),
        "user": str(user),
        "host": str(host),
        "pid": int(pid),
        "start": str(start or ""),
        "boot_id": str(boot_id or ""),
        "pid_ns": str(pid_ns or ""),
    }


def holder_identity(me: Dict[str, Any]) -> str:
    """The readable, unique holderIdentity: ``rollout by root@host pid 1234 (AWX job 42) [1234/987654]``."""
    text = f"{me['run']} by {me['user']}@{me['host']} pid {me['pid']}"
    if me.get("note"):
        text += f" ({me['note']})"
    return f"{text} [{me['pid']}/{me.get('start') or '?'}]"


def holder_of(lease: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The structured identity in the Lease's annotation, or None when absent or unreadable."""
    annotations = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    try:
        data = json.loads(annotations.get(HOLDER_ANNOTATION) or "")
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not data.get("host"):
        return None
    return {key: data.get(key, "") for key in _IDENTITY_KEYS}


def holder_name(lease: Optional[Dict[str, Any]]) -> str:
    """The Lease's spec.holderIdentity ("" when free or absent)."""
    return str((((lease or {}).get("spec") or {}).get("holderIdentity")) or "")


def run_key(me: Dict[str, Any]) -> Tuple[str, ...]:
    """What two calls of the same controller run have in common (their run and note may differ)."""
    return tuple(str(me.get(key, "")) for key in _RUN_KEYS)


def is_ours(lease: Optional[Dict[str, Any]], me: Dict[str, Any]) -> bool:
    """Whether the Lease names this controller run (re-entrant: the run name and note do not matter)."""
    if not holder_name(lease):
        return False
    holder = holder_of(lease)
    if holder is not None:
        return run_key(holder) == run_key(me)
    return holder_name(lease) == holder_identity(me)


def same_process_space(holder: Optional[Dict[str, Any]], me: Dict[str, Any]) -> bool:
    """Whether the holder's controller pid can be checked from here: same host, and same boot and pid
    namespace when both sides recorded them (two containers may share a hostname, not a pid namespace)."""
    if not holder or holder.get("host") != me.get("host"):
        return False
    # A side that did not record boot_id or pid_ns (not Linux) agrees on it by default.
    return all(not holder.get(key) or not me.get(key) or holder[key] == me[key] for key in ("boot_id", "pid_ns"))


# ---------------------------------------------------------------------- the Lease


def lease_body(
    name: str,
    namespace: str,
    me: Dict[str, Any],
    duration: int,
    now: datetime.datetime,
    previous: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The Lease naming this run, renewed at ``now``.

    Built on ``previous`` when given (its resourceVersion, other labels and annotations kept, so
    a replace is conditional on what was read). The acquire time and transition count are kept
    when ``previous`` already names this run; otherwise the lock changes hands: acquired now, count + 1.
    """
    body: Dict[str, Any] = copy.deepcopy(previous) if previous else {}
    body["apiVersion"] = API_VERSION
    body["kind"] = KIND
    meta = body.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = namespace
    meta["labels"] = dict(meta.get("labels") or {}, **MANAGED_BY)
    meta["annotations"] = dict(meta.get("annotations") or {}, **{HOLDER_ANNOTATION: json.dumps(me, sort_keys=True)})
    old = (previous or {}).get("spec") or {}
    stamp = format_microtime(now)
    spec = {
        "holderIdentity": holder_identity(me),
        "leaseDurationSeconds": int(duration),
        "renewTime": stamp,
    }
    transitions = int(old.get("leaseTransitions") or 0)
    if previous is None:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = 0
    elif is_ours(previous, me) and old.get("acquireTime"):
        spec["acquireTime"] = old["acquireTime"]
        spec["leaseTransitions"] = transitions
    else:
        spec["acquireTime"] = stamp
        spec["leaseTransitions"] = transitions + 1
    body["spec"] = spec
    return body


def renewed(lease: Dict[str, Any], now: datetime.datetime) -> Dict[str, Any]:
    """The same Lease with renewTime set to ``now`` (the background renewer's only write)."""
    body = copy.deepcopy(lease)
    body.setdefault("spec", {})["renewTime"] = format_microtime(now)
    return body


def decide(
    lease: Optional[Dict[str, Any]],
    me: Dict[str, Any],
    now: datetime.datetime,
    holder_alive: bool,
    break_lock: bool,
) -> Dict[str, str]:
    """What this run does with the Lease it read.

    ``holder_alive`` is False only when the holder's controller process is provably gone (same
    host, and its pid absent or started at another time); a holder elsewhere counts as alive
    until its Lease expires. Returns ``action`` (acquire, renew, take_over, wait), ``reason``
    and ``holder`` (the Lease's holderIdentity, "" when none).
    """
    if lease is None:
        return {"action": ACQUIRE, "reason": "no run holds the lock", "holder": ""}
    holder = holder_name(lease)
    if not holder:
        return {"action": TAKE_OVER, "reason": "the lock was released (no holder)", "holder": ""}
    if is_ours(lease, me):
        return {"action": RENEW, "reason": "this run already holds the lock", "holder": holder}
    expires = expiry(lease)
    if expires is None:
        return {"action": TAKE_OVER, "reason": "the lock has no valid renew time or duration", "holder": holder}
    if now >= expires:
        return {
            "action": TAKE_OVER,
            "reason": f"the lock expired at {format_microtime(expires)} (its holder stopped renewing it)",
            "holder": holder,
        }
    if not holder_alive:
        info = holder_of(lease) or {}
        return {
            "action": TAKE_OVER,
            "reason": f"the holder's controller process (pid {info.get('pid', '?')} on {info.get('host', '?')}) "
            "is gone",
            "holder": holder,
        }
    if break_lock:
        return {"action": TAKE_OVER, "reason": "break_lock was requested", "holder": holder}
    return {"action": WAIT, "reason": f"held by {holder}", "holder": holder}


# ---------------------------------------------------------------------- /proc text


def parse_proc_stat(text: str) -> Optional[Dict[str, Any]]:
    """The state, ppid and start time (field 22, clock ticks since boot) from /proc/<pid>/stat's text.

    The command name (field 2) may contain spaces and parentheses, so fields are counted
    from its last closing parenthesis. None when the text is not a stat line.
    """
    head, sep, rest = (text or "").rpartition(")")
    fields = rest.split()
    if not sep or "(" not in head or len(fields) < 20:
        return None
    try:
        return {"state": fields[0], "ppid": int(fields[1]), "start": fields[19]}
    except ValueError:
        return None


def is_playbook(argv: Sequence[str]) -> bool:
    """Whether a command line (/proc/<pid>/cmdline split at NUL) runs ansible-playbook.

    Looks at the program and its first two arguments (``python3 -u /usr/bin/ansible-playbook ...``)
    for a file named ansible-playbook (or ansible-playbook-3.11), not at every argument, so a shell
    or an editor merely naming it does not count.
    """
    return any(_PLAYBOOK.match(str(arg).rsplit("/", 1)[-1]) for arg in list(argv)[:3])


def controller_pid(ancestors: List[Tuple[int, Sequence[str]]]) -> Optional[int]:
    """The topmost ansible-playbook process among ``ancestors`` ((pid, argv), nearest first).

    Ansible forks a worker per task whose command line is the controller's, so the topmost
    one is the controller itself. None when no ancestor runs ansible-playbook.
    """
    found = None
    for pid, argv in ancestors:
        if is_playbook(argv):
            found = pid
    return found
