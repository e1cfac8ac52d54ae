# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Upgrade-by-revision filters, thin over plugins/module_utils/upgrade.py (the decisions)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.errors import raised_as
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

upgrade = module_utils("upgrade")


def istio_upgrade_problems(
    running: Any, target: Any, method: str = "canary", allow_downgrade: bool = False, variable: str = "upgrade_version"
) -> List[str]:
    """Sentences saying why going from the running Istio release to the target is refused (empty: allowed)."""
    with raised_as(AnsibleFilterError):
        return upgrade.version_problems(running, target, method, allow_downgrade, variable)


def revision_tag_webhook(injector: Mapping[str, Any], tag: str, revision: str) -> Dict[str, Any]:
    """The MutatingWebhookConfiguration of revision tag `tag`, pointing at `revision`'s injector."""
    with raised_as(AnsibleFilterError):
        return upgrade.tag_webhook(injector, tag, revision)


def upgrade_plan(istiod: Any, tag_hooks: Any, namespaces: Any, options: Mapping[str, Any]) -> Dict[str, Any]:
    """What the upgrade (or its rollback) finds and whether it may start: every refusal as a sentence."""
    if not isinstance(istiod, list) or not isinstance(tag_hooks, list) or not isinstance(namespaces, list):
        raise AnsibleFilterError("upgrade_plan: expected the istiod list, the tag webhooks and the namespaces report")
    with raised_as(AnsibleFilterError):
        return upgrade.plan(istiod, tag_hooks, namespaces, options)


def revision_tag_objects(webhooks: Any, tags: Mapping[str, str]) -> List[Dict[str, Any]]:
    """The tag webhook of each tag -> revision in `tags`, built from that revision's injector among `webhooks`."""
    if not isinstance(webhooks, list) or not isinstance(tags, Mapping):
        raise AnsibleFilterError(
            "revision_tag_objects: expected the MutatingWebhookConfigurations and a mapping of tag to revision"
        )
    with raised_as(AnsibleFilterError):
        return upgrade.tag_objects(webhooks, tags)


class FilterModule:
    def filters(self):
        return {
            "istio_upgrade_problems": istio_upgrade_problems,
            "revision_tag_webhook": revision_tag_webhook,
            "revision_tag_objects": revision_tag_objects,
            "upgrade_plan": upgrade_plan,
        }
