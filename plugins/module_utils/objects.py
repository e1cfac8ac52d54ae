# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Reading Kubernetes objects as plain dicts: the small accessors the decision modules share."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

PROXY_CONTAINER = "istio-proxy"


def meta(obj: Dict[str, Any]) -> Dict[str, Any]:
    return obj.get("metadata") or {}


def labels(obj: Dict[str, Any]) -> Dict[str, str]:
    return meta(obj).get("labels") or {}


def condition(obj: Dict[str, Any], ctype: str) -> Optional[Dict[str, Any]]:
    """The status condition of the given type, or None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def workload_status(obj: Dict[str, Any], kind: Optional[str] = None) -> Dict[str, Any]:
    """Whether a Deployment, StatefulSet or DaemonSet is ready: the one rule every gate uses.

    Ready means the controller observed the current generation and every replica runs the current spec, counted as
    `kubectl rollout status` counts them: a Deployment has no old replicas left and spec.replicas (default 1) updated
    and available, a StatefulSet that many updated and ready, a DaemonSet every scheduled pod updated and available.
    A Deployment that reports conditions must also be Available. ``kind`` names the kind of an object that does not
    say it (list items do not).

    Returns ``ready``, ``reasons`` (sentences saying what is missing, empty when ready), ``observed`` (the controller
    saw the current generation; the counts describe an older spec when it has not, so they are not judged) and
    ``replicas`` (how many the workload wants).
    """
    kind = kind or obj.get("kind")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = meta(obj).get("generation")
    observed = status.get("observedGeneration")
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled") or 0
        updated = status.get("updatedNumberScheduled") or 0
        available = status.get("numberAvailable") or 0
    else:
        want = 1 if spec.get("replicas") is None else spec["replicas"]
        updated = status.get("updatedReplicas") or 0
        available = status.get("readyReplicas" if kind == "StatefulSet" else "availableReplicas") or 0
    if generation is not None and (observed is None or observed < generation):
        seen = "none" if observed is None else observed
        reason = f"the controller has not observed generation {generation} yet (observed {seen})"
        return {"ready": False, "reasons": [reason], "observed": False, "replicas": want}
    reasons = []
    if kind == "Deployment" and status.get("conditions"):
        cond = condition(obj, "Available") or {}
        if cond.get("status") != "True":
            reasons.append(f"not Available ({cond.get('message') or 'no Available condition'})")
    # The first count still short, in the order a rollout fills them (kubectl rollout status's order).
    old = (status.get("replicas") or 0) - updated if kind == "Deployment" else 0
    if old > 0:
        reasons.append(
            f"{updated}/{want} replicas updated, {status.get('unavailableReplicas') or 0} unavailable, "
            f"{old} old replicas still running"
        )
    elif updated < want:
        reasons.append(f"{updated}/{want} replicas updated")
    elif available < want:
        counted = "replicas ready" if kind == "StatefulSet" else "updated replicas available"
        reasons.append(f"{available}/{want} {counted}")
    return {"ready": not reasons, "reasons": reasons, "observed": True, "replicas": want}


def proxy_container(pod: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The injected istio-proxy container (a regular or a native-sidecar init container), or None."""
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == PROXY_CONTAINER:
            return container
    return None


def stale(
    managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]], label: str
) -> List[Dict[str, Any]]:
    """Objects carrying label=true that are not in desired: what a role created earlier and no longer wants.

    Returned as references (apiVersion, kind, namespace, name) ready for a delete.
    """
    keep = {(d["kind"], (d.get("metadata") or {}).get("namespace"), d["metadata"]["name"]) for d in desired}
    out = []
    for obj in managed:
        if labels(obj).get(label) != "true":
            continue
        key = (obj.get("kind"), meta(obj).get("namespace"), meta(obj).get("name"))
        if key not in keep:
            out.append({"apiVersion": obj.get("apiVersion"), "kind": key[0], "namespace": key[1], "name": key[2]})
    return out


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """Leaf values by dotted path (list items as [i]): the fields drift names."""
    # Empty containers are skipped: in kubernetes.core's diffs they stand for "nothing differs inside".
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


# Top-level keys and metadata keys that are not fields a manager applies: identity, status, what the server sets.
_NOT_APPLIED = frozenset({"apiVersion", "kind", "status"})
_NOT_APPLIED_METADATA = frozenset(
    {
        "name",
        "namespace",
        "managedFields",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)

# A field path: field names, and for an item of a list keyed by some of its fields (listType map) the item's key as
# FieldsV1 writes it (``k:{"name":"mesh"}``), normalized: _Keyed(canonical JSON of the key fields).
FieldPath = Tuple[Any, ...]


class _Keyed(str):
    """A path element that names the item of a keyed list whose key fields hold these values (canonical JSON)."""


def _keyed(key: Mapping[str, Any]) -> _Keyed:
    return _Keyed(json.dumps(key, sort_keys=True, separators=(",", ":")))


class _Unjudged(Exception):
    """Something in_place does not judge: the answer is False."""


def _declared_leaves(declared: Mapping[str, Any], keyed: Mapping[FieldPath, Tuple[str, ...]]) -> Dict[FieldPath, Any]:
    """The declared object's leaf values by field path (key tuples: label keys hold dots). A list is one leaf, unless
    ``keyed`` names its path (the key fields of its items, as the manager's FieldsV1 holds them): then each item is
    walked under its key."""
    out: Dict[FieldPath, Any] = {}

    def walk(value: Any, path: FieldPath) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _Unjudged(f"non-string key {key!r}")
                walk(item, (*path, key))
        elif isinstance(value, (list, tuple)) and path in keyed:
            for item in value:
                if not isinstance(item, Mapping) or any(k not in item for k in keyed[path]):
                    raise _Unjudged(f"an item of the keyed list at {path} without its keys")
                walk(item, (*path, _keyed({k: item[k] for k in keyed[path]})))
        elif value is None:  # a null asks the server to drop the field: not "already in place"
            raise _Unjudged(f"null at {path}")
        else:
            out[path] = value

    for key, value in declared.items():
        if key in _NOT_APPLIED:
            continue
        if key == "metadata" and isinstance(value, Mapping):
            for mkey, mvalue in value.items():
                if mkey not in _NOT_APPLIED_METADATA:
                    walk(mvalue, ("metadata", mkey))
        else:
            walk(value, (key,))
    return out


def _owned_leaves(fields: Mapping[str, Any]) -> Tuple[Set[FieldPath], Dict[FieldPath, Tuple[str, ...]]]:
    """The leaf field paths of a FieldsV1 set, and the paths of its keyed lists with their items' key fields. Plain
    fields (``f:``) and items of keyed lists (``k:``, keyed by scalar fields) are read: set items (``v:``),
    positions (``i:``) and anything else are not judged."""
    out: Set[FieldPath] = set()
    keyed: Dict[FieldPath, Tuple[str, ...]] = {}

    def walk(node: Mapping[str, Any], path: FieldPath) -> None:
        children = [key for key in node if key != "."]  # "." marks ownership of the node itself
        if not children:
            if path:
                out.add(path)
            return
        for key in children:
            child = node[key]
            if not isinstance(key, str) or not isinstance(child, Mapping):
                raise _Unjudged(f"fieldsV1 key {key!r}")
            if key.startswith("f:"):
                walk(child, (*path, key[2:]))
            elif key.startswith("k:"):
                try:
                    item_key = json.loads(key[2:])
                except ValueError:
                    raise _Unjudged(f"fieldsV1 key {key!r}") from None
                names = tuple(sorted(item_key)) if isinstance(item_key, dict) else ()
                scalar = bool(names) and all(not isinstance(v, (dict, list)) for v in item_key.values())
                if not scalar or keyed.get(path, names) != names:  # scalar key fields, the same for every item
                    raise _Unjudged(f"fieldsV1 key {key!r}")
                keyed[path] = names
                walk(child, (*path, _keyed(item_key)))
            else:
                raise _Unjudged(f"fieldsV1 key {key!r}")

    walk(fields, ())
    return out, keyed


_MISSING = object()


def _value_at(obj: Mapping[str, Any], path: FieldPath) -> Any:
    node: Any = obj
    for key in path:
        if isinstance(key, _Keyed):
            want = json.loads(key)
            items = [i for i in (node if isinstance(node, list) else []) if isinstance(i, Mapping) and _key_of(i, want)]
            if len(items) != 1:
                return _MISSING
            node = items[0]
            continue
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _key_of(item: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    return all(k in item and _same(item[k], v) for k, v in want.items())


def _scalar_type(value: Any) -> Optional[str]:
    # By category rather than exact type: Ansible hands over str and dict subclasses. bool before int (a subclass).
    for name, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return name
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values, type included: 80 is not "80", 1 is not True, 1 is not 1.0."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and set(a) == set(b)
            and all(_same(a[key], b[key]) for key in a)
        )
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b))
        )
    kind = _scalar_type(a)
    return kind is not None and kind == _scalar_type(b) and a == b


def in_place(declared: Dict[str, Any], live: Optional[Dict[str, Any]], field_manager: str) -> bool:
    """Whether a server-side apply of ``declared`` by ``field_manager`` (force_conflicts on) would change nothing.

    An apply sets every field its configuration holds and removes the fields the manager applied before and no
    longer declares (unless another manager owns them too). So it changes nothing when:

    - the manager's Apply entry in ``live``'s managedFields (main resource, FieldsV1, the declared apiVersion, in
      which its field paths are recorded) owns exactly the declared leaf fields: nothing is released, so nothing is
      removed, and the manager's field set stays as it is;
    - every declared leaf value equals the live one (JSON types included): nothing is set. Equal values raise no
      conflict, so force_conflicts takes no field from another manager; other managers owning the same values, or
      fields beside ours, do not change the object either.

    Maps are compared field by field, as the server merges them; lists and empty maps as wholes (atomic, as the
    FieldsV1 set records them), except lists keyed by fields of their items (listType map, ``k:`` keys: a Gateway's
    listeners), whose items are compared field by field under their keys. Any doubt answers False, and False only
    means the object is applied as before: no such live object or manager entry, an object being deleted, set lists
    or positions (``v:``, ``i:`` keys), a keyed item declared without its key fields, a null declared value, a value
    of another type.
    """
    if not isinstance(declared, Mapping) or not isinstance(live, Mapping) or not field_manager:
        return False
    want, have = declared.get("metadata"), live.get("metadata")
    if not isinstance(want, Mapping) or not isinstance(have, Mapping):
        return False
    if not (
        declared.get("apiVersion")
        and declared.get("kind")
        and want.get("name")
        and declared.get("apiVersion") == live.get("apiVersion")
        and declared.get("kind") == live.get("kind")
        and want.get("name") == have.get("name")
        and (want.get("namespace") or None) == (have.get("namespace") or None)
        and not have.get("deletionTimestamp")
    ):
        return False
    entries = [
        entry
        for entry in have.get("managedFields") or []
        if isinstance(entry, Mapping)
        and entry.get("manager") == field_manager
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
    ]
    if len(entries) != 1:
        return False
    entry = entries[0]
    fields = entry.get("fieldsV1")
    if (
        entry.get("fieldsType") != "FieldsV1"
        or entry.get("apiVersion") != declared.get("apiVersion")
        or not isinstance(fields, Mapping)
    ):
        return False
    try:
        owned, keyed = _owned_leaves(fields)
        leaves = _declared_leaves(declared, keyed)
        if owned != set(leaves):
            return False
    except _Unjudged:
        return False
    return all(_same(value, _value_at(live, path)) for path, value in leaves.items())


def objects_to_apply(
    declared: Sequence[Dict[str, Any]], live: Sequence[Dict[str, Any]], field_manager: str
) -> List[Dict[str, Any]]:
    """The declared objects, in their order, that an apply by ``field_manager`` would change (not ``in_place``).

    Each is judged against the live object of the same kind, namespace and name (``in_place`` then requires the
    same apiVersion, so a kind two API groups share is told apart there); with none, it is kept.
    """
    index: Dict[Tuple[Any, Any, Any], List[Dict[str, Any]]] = {}
    for obj in live:
        if _identity(obj) is not None:
            index.setdefault(_identity(obj), []).append(obj)
    out = []
    for obj in declared:
        candidates = index.get(_identity(obj), []) if _identity(obj) is not None else []
        if not any(in_place(obj, candidate, field_manager) for candidate in candidates):
            out.append(obj)
    return out


def _identity(obj: Any) -> Optional[Tuple[Any, Any, Any]]:
    """(kind, namespace or "", name), or None for something that is not an object with metadata."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("metadata"), Mapping):
        return None
    return (obj.get("kind"), obj["metadata"].get("namespace") or "", obj["metadata"].get("name"))
