"""Filters in plugins/filter/upgrade.py: input checks, and refusals handed on as AnsibleFilterError.

The decisions are tested in test_upgrade.py (plugins/module_utils/upgrade.py).
"""

import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter import upgrade as upgrade_filters
from ansible_collections.meshops.istio.plugins.filter.upgrade import (
    istio_upgrade_problems,
    revision_tag_objects,
    revision_tag_webhook,
    upgrade_plan,
)
from ansible_collections.meshops.istio.plugins.module_utils import upgrade
from conftest import assert_registered, filter_error

INJECTOR = json.loads((Path(__file__).parent / "fixtures" / "mwc_istio_sidecar_injector.json").read_text())
OPTIONS = {"version": "1.31.1", "from_revision": "a", "to_revision": "b", "stable_tag": "s", "canary_tag": "c"}


def test_filters_return_what_the_decisions_return():
    assert istio_upgrade_problems("1.28.6", "1.31.1") == upgrade.version_problems("1.28.6", "1.31.1")
    assert revision_tag_webhook(INJECTOR, "stable", "default") == upgrade.tag_webhook(INJECTOR, "stable", "default")
    assert revision_tag_objects([INJECTOR], {"stable": "default"}) == [
        upgrade.tag_webhook(INJECTOR, "stable", "default")
    ]
    assert upgrade_plan([], [], [], OPTIONS) == upgrade.plan([], [], [], OPTIONS)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: istio_upgrade_problems("1.30.4", "1.31"), "istio_upgrade_problems: the target version '1.31' is not"),
        (lambda: istio_upgrade_problems("1.30.4", "1.31.1", "sideways"), "istio_upgrade_problems: method must be"),
        (lambda: revision_tag_webhook(INJECTOR, "Stable_1", "default"), "revision_tag_webhook: the tag 'Stable_1'"),
        (lambda: revision_tag_webhook(INJECTOR, "stable", "1-31-1"), "revision_tag_webhook: istio-sidecar-injector"),
        (lambda: revision_tag_objects([INJECTOR], {"canary": "1-31-1"}), "revision_tag_objects: no injector"),
        (
            lambda: upgrade_plan([{"revision": "a", "version": "1.30.4"}], [], [], {**OPTIONS, "version": "x"}),
            "istio_upgrade_problems: the target version 'x' is not a full Istio release like '1.31.1'",
        ),
    ],
)
def test_refusals_are_filter_errors_with_the_message_of_the_decision(call, message):
    assert filter_error(call).startswith(message)


def test_inputs_of_the_wrong_type_are_refused():
    with pytest.raises(AnsibleFilterError, match="upgrade_plan: expected the istiod list, the tag webhooks and the"):
        upgrade_plan({}, [], [], OPTIONS)
    with pytest.raises(AnsibleFilterError, match="revision_tag_objects: expected the MutatingWebhookConfigurations"):
        revision_tag_objects({}, {})


def test_registered():
    assert_registered(upgrade_filters, 4)
