# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Upgrade-by-revision decisions: which version jumps are allowed, whether an upgrade may start, tag webhooks.

Pure logic over plain data, behind the upgrade filters (plugins/filter/upgrade.py). Refusals of the input itself
raise InvalidInput with the message the user reads (the filters hand it on as AnsibleFilterError); refusals of the
upgrade are sentences in the result.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import REVISION_LABEL, TAG_LABEL

# Istio supports a canary (revision) upgrade across at most two minor versions (1.29 -> 1.31), and the collection
# changes a control plane in place only within a minor (patch releases).
CANARY_MAX_MINORS = 2
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _parse(value: Any, what: str) -> Tuple[int, int, int]:
    match = _VERSION.match(str(value or "").strip())
    if not match:
        raise InvalidInput(f"istio_upgrade_problems: {what} {value!r} is not a full Istio release like '1.31.1'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def version_problems(
    running: Any, target: Any, method: str = "canary", allow_downgrade: bool = False, variable: str = "upgrade_version"
) -> List[str]:
    """Sentences saying why going from the running Istio release to the target is refused (empty: allowed)."""
    if method not in ("canary", "in-place"):
        raise InvalidInput(f"istio_upgrade_problems: method must be 'canary' or 'in-place', got {method!r}")
    old, new = _parse(running, "the running version"), _parse(target, "the target version")
    problems = []
    if new < old and not allow_downgrade:
        problems.append(
            f"{variable} is {target}, older than the running Istio {running}: a downgrade needs its own explicit "
            "switch (upgrade_allow_downgrade: true), and Istio's notes of both releases read first."
        )
    minors = abs(new[1] - old[1]) if new[0] == old[0] else None
    if method == "canary" and (minors is None or minors > CANARY_MAX_MINORS):
        step = f"{old[0]}.{old[1] + CANARY_MAX_MINORS if new > old else old[1] - CANARY_MAX_MINORS}"
        problems.append(
            f"{variable} is {target} and the running Istio is {running}: Istio supports a revision (canary) upgrade "
            f"across at most {CANARY_MAX_MINORS} minor versions. Take the newest {step} patch first, then {target}."
        )
    if method == "in-place" and (minors is None or minors > 0):
        problems.append(
            f"{variable} is {target} and the running Istio is {running}: an in-place change stays within a minor "
            f"version (patch releases of {old[0]}.{old[1]}). Move to {new[0]}.{new[1]} by revision with the upgrade "
            "playbook (meshops.istio.upgrade), which installs it beside the running one and moves the namespaces "
            "wave by wave."
        )
    return problems


def _retag(selector: Optional[Mapping[str, Any]], revision: str, tag: str) -> Tuple[Optional[Dict[str, Any]], bool]:
    """The selector with istio.io/rev's value `revision` replaced by `tag`; whether it selected on istio.io/rev."""
    if not selector:
        return (dict(selector) if selector is not None else None), False
    out = copy.deepcopy(dict(selector))
    found = False
    for expr in out.get("matchExpressions") or []:
        selects = expr.get("key") == REVISION_LABEL and expr.get("operator") == "In"
        if selects and revision in (expr.get("values") or []):
            expr["values"] = [tag if v == revision else v for v in expr["values"]]
            found = True
    labels = out.get("matchLabels") or {}
    if labels.get(REVISION_LABEL) == revision:
        labels[REVISION_LABEL] = tag
        found = True
    return out, found


def tag_webhook(injector: Mapping[str, Any], tag: str, revision: str) -> Dict[str, Any]:
    """The MutatingWebhookConfiguration of revision tag `tag`, pointing at `revision`'s injector.

    Built from the revision's own injector configuration (its webhooks that select on istio.io/rev), with the
    selectors asking for the tag instead of the revision: pods of namespaces labeled istio.io/rev=<tag> are then
    injected by that revision. Pointing the tag at another revision is one apply of this object."""
    name = "revision_tag_webhook"
    if not isinstance(injector, Mapping) or injector.get("kind") != "MutatingWebhookConfiguration":
        raise InvalidInput(f"{name}: expected the revision's injector MutatingWebhookConfiguration, got {injector!r}")
    if not isinstance(tag, str) or not _DNS_LABEL.match(tag):
        raise InvalidInput(f"{name}: the tag {tag!r} is not a DNS label (lower-case letters, digits and '-')")
    hooks = []
    for hook in injector.get("webhooks") or []:
        namespace_selector, by_namespace = _retag(hook.get("namespaceSelector"), revision, tag)
        object_selector, by_object = _retag(hook.get("objectSelector"), revision, tag)
        if not (by_namespace or by_object):
            continue  # istio-injection=enabled and the like: the default revision's, not a tag's
        out = copy.deepcopy(dict(hook))
        out["namespaceSelector"], out["objectSelector"] = namespace_selector, object_selector
        hooks.append({k: v for k, v in out.items() if v is not None})
    if not hooks:
        raise InvalidInput(
            f"{name}: {((injector.get('metadata') or {}).get('name'))} has no webhook selecting on {REVISION_LABEL}; "
            f"it cannot carry tag {tag!r}"
        )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": f"istio-revision-tag-{tag}",
            "labels": {
                TAG_LABEL: tag,
                REVISION_LABEL: revision,
                "app": "sidecar-injector",
                "meshops.istio/tag": "true",
            },
        },
        "webhooks": hooks,
    }


def plan(
    istiod: List[Mapping[str, Any]],
    tag_hooks: List[Mapping[str, Any]],
    namespaces: List[Mapping[str, Any]],
    options: Mapping[str, Any],
) -> Dict[str, Any]:
    """What the upgrade (or its rollback) finds and whether it may start: every refusal as a sentence.

    istiod: istio_readiness's istiod list; tag_hooks: the tag webhooks (MutatingWebhookConfigurations labeled
    istio.io/tag); namespaces: sidecar_status's namespaces report for the namespaces to move; options: action,
    version, from_revision, to_revision, stable_tag, canary_tag, allow_downgrade."""
    action = options.get("action", "upgrade")
    version, old, new = str(options.get("version") or ""), options["from_revision"], options["to_revision"]
    stable, canary = options["stable_tag"], options["canary_tag"]
    revisions = {i.get("revision") or "default": i.get("version") for i in istiod}
    tags = {}
    for hook in tag_hooks:
        labels = (hook.get("metadata") or {}).get("labels") or {}
        tags[labels.get(TAG_LABEL)] = labels.get(REVISION_LABEL) or "default"
    problems = []
    for variable, value in (("upgrade_revision", new), ("upgrade_stable_tag", stable), ("upgrade_canary_tag", canary)):
        if not _DNS_LABEL.match(str(value)):
            problems.append(
                f"{variable} is {value!r}, not a DNS label: use lower-case letters, digits and '-' (Istio's revision "
                "names become object names and label values), for example '1-31-1'."
            )
    if len({old, new, stable, canary}) < 4:
        problems.append(
            f"The running revision ({old}, istio_install_minimal_revision), upgrade_revision ({new}), "
            f"upgrade_stable_tag ({stable}) and upgrade_canary_tag ({canary}) must all differ: a revision name "
            "cannot double as a tag, and a canary upgrade installs a new revision beside the running one."
        )
    for tag, revision in sorted(tags.items()):
        if revision not in revisions:
            problems.append(
                f"Tag {tag} points at revision {revision}, which is not installed (installed: "
                f"{', '.join(sorted(revisions)) or 'none'}): point it at an installed revision (istioctl tag set {tag} "
                f"--revision REVISION --overwrite) or remove it (istioctl tag remove {tag})."
            )
    if action == "rollback":
        if old not in revisions:
            problems.append(
                f"Revision {old} (istio_install_minimal_revision) is not installed any more: it was removed when the "
                f"upgrade completed, so there is nothing to roll back to. Upgrade to its version again instead."
            )
    elif old not in revisions and new not in revisions:
        problems.append(
            f"Revision {old} (istio_install_minimal_revision) is not installed (installed: "
            f"{', '.join(sorted(revisions)) or 'none'}): set istio_install_minimal_revision to the running revision."
        )
    elif old in revisions:
        problems += version_problems(
            revisions[old] or version, version, "canary", bool(options.get("allow_downgrade")), "upgrade_version"
        )
    if action != "rollback" and new in revisions and revisions[new] != version:
        problems.append(
            f"upgrade_revision {new} is already installed and runs Istio {revisions[new]}, not upgrade_version "
            f"{version}: pick another revision name (the version with dashes, {version.replace('.', '-')}, is usual)."
        )
    outside = [n["namespace"] for n in namespaces if not (n.get("label") or {}).get("enabled")]
    if outside:
        problems.append(
            f"Namespaces {', '.join(outside)} are not labeled for injection: the upgrade moves the namespaces the "
            "rollout injected. Run the rollout for them first, or remove them from rollout_pilot_namespaces and "
            "rollout_waves."
        )
    promoted = tags.get(stable) == new
    return {
        "revisions": revisions,
        "tags": tags,
        "problems": problems,
        # Where the stable tag points while namespaces move: where it points now, else the running revision.
        "stable_revision": tags.get(stable, old),
        "promoted": promoted,
        # The label a moved namespace carries: the canary tag until the stable tag points at the new revision.
        "label": stable if promoted else canary,
    }


def tag_objects(webhooks: List[Mapping[str, Any]], tags: Mapping[str, str]) -> List[Dict[str, Any]]:
    """The tag webhook of each tag -> revision in `tags`, built from that revision's injector among `webhooks` (the
    cluster's MutatingWebhookConfigurations)."""
    name = "revision_tag_objects"
    injectors = {}
    for hook in webhooks:
        meta = hook.get("metadata") or {}
        labels = meta.get("labels") or {}
        if str(meta.get("name", "")).startswith("istio-sidecar-injector") and TAG_LABEL not in labels:
            injectors[labels.get(REVISION_LABEL) or "default"] = hook
    out = []
    for tag, revision in tags.items():
        if revision not in injectors:
            raise InvalidInput(
                f"{name}: no injector (MutatingWebhookConfiguration istio-sidecar-injector*) of revision {revision!r} "
                f"to point tag {tag!r} at; revisions with an injector: {', '.join(sorted(injectors)) or 'none'}"
            )
        out.append(tag_webhook(injectors[revision], tag, revision))
    return out
