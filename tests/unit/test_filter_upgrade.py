"""Filters in plugins/filter/upgrade.py: allowed version jumps and revision tag webhooks."""

import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.upgrade import (
    FilterModule,
    istio_upgrade_problems,
    revision_tag_objects,
    revision_tag_webhook,
    upgrade_plan,
)

INJECTOR = json.loads((Path(__file__).parent / "fixtures" / "mwc_istio_sidecar_injector.json").read_text())


@pytest.mark.parametrize(("running", "target"), [("1.30.4", "1.31.1"), ("1.29.2", "1.31.1"), ("1.31.0", "1.31.1")])
def test_canary_upgrades_of_up_to_two_minors_are_allowed(running, target):
    assert istio_upgrade_problems(running, target) == []


def test_canary_jump_of_three_minors_names_the_intermediate_release():
    (problem,) = istio_upgrade_problems("1.28.6", "1.31.1")
    assert "upgrade_version is 1.31.1 and the running Istio is 1.28.6" in problem
    assert "at most 2 minor versions" in problem
    assert "Take the newest 1.30 patch first, then 1.31.1." in problem


def test_downgrade_needs_its_switch():
    (problem,) = istio_upgrade_problems("1.31.1", "1.30.4")
    assert "older than the running Istio 1.31.1" in problem
    assert "upgrade_allow_downgrade: true" in problem
    assert istio_upgrade_problems("1.31.1", "1.30.4", allow_downgrade=True) == []


def test_in_place_stays_within_a_minor():
    assert istio_upgrade_problems("1.31.0", "1.31.1", "in-place") == []
    (problem,) = istio_upgrade_problems("1.30.4", "1.31.1", "in-place", variable="istio_install_minimal_version")
    assert problem.startswith("istio_install_minimal_version is 1.31.1 and the running Istio is 1.30.4")
    assert "upgrade playbook" in problem


@pytest.mark.parametrize("bad", ["1.31", "latest", "", None, "v1.31.1"])
def test_bad_versions_name_the_filter(bad):
    with pytest.raises(AnsibleFilterError, match="istio_upgrade_problems"):
        istio_upgrade_problems("1.30.4", bad)
    with pytest.raises(AnsibleFilterError, match="method"):
        istio_upgrade_problems("1.30.4", "1.31.1", "sideways")


def test_tag_webhook_copies_the_revision_injector_with_the_tag_in_its_selectors():
    hook = revision_tag_webhook(INJECTOR, "stable", "default")
    assert hook["metadata"]["name"] == "istio-revision-tag-stable"
    assert hook["metadata"]["labels"]["istio.io/tag"] == "stable"
    assert hook["metadata"]["labels"]["istio.io/rev"] == "default"
    names = [h["name"] for h in hook["webhooks"]]
    # Only the webhooks that select on istio.io/rev: istio-injection=enabled stays the default revision's.
    assert names == ["rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io"]
    by_namespace = hook["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert {"key": "istio.io/rev", "operator": "In", "values": ["stable"]} in by_namespace
    by_object = hook["webhooks"][1]["objectSelector"]["matchExpressions"]
    assert {"key": "istio.io/rev", "operator": "In", "values": ["stable"]} in by_object
    # Same endpoint and CA as the revision's own injector; the source is untouched.
    assert hook["webhooks"][0]["clientConfig"] == INJECTOR["webhooks"][0]["clientConfig"]
    assert INJECTOR["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["default"]


def test_tag_webhook_refuses_bad_input():
    with pytest.raises(AnsibleFilterError, match="DNS label"):
        revision_tag_webhook(INJECTOR, "Stable_1", "default")
    with pytest.raises(AnsibleFilterError, match="injector"):
        revision_tag_webhook({"kind": "ConfigMap"}, "stable", "default")
    with pytest.raises(AnsibleFilterError, match="no webhook selecting"):
        revision_tag_webhook(INJECTOR, "stable", "1-31-1")


def test_tag_objects_find_each_revision_injector_and_skip_existing_tags():
    tagged = revision_tag_webhook(INJECTOR, "stable", "default")
    out = revision_tag_objects([tagged, INJECTOR], {"stable": "default", "canary": "default"})
    assert [o["metadata"]["name"] for o in out] == ["istio-revision-tag-stable", "istio-revision-tag-canary"]
    with pytest.raises(AnsibleFilterError, match=r"no injector .* of revision .1-31-1. to point tag .canary."):
        revision_tag_objects([tagged, INJECTOR], {"canary": "1-31-1"})


OPTIONS = {
    "action": "upgrade",
    "version": "1.31.1",
    "from_revision": "1-30-4",
    "to_revision": "1-31-1",
    "stable_tag": "stable",
    "canary_tag": "canary",
    "allow_downgrade": False,
}
A = {"name": "istiod-1-30-4", "revision": "1-30-4", "version": "1.30.4"}
B = {"name": "istiod-1-31-1", "revision": "1-31-1", "version": "1.31.1"}
LABELED = [{"namespace": "shop", "label": {"enabled": True}}]


def tag(name, revision):
    return {
        "metadata": {"name": f"istio-revision-tag-{name}", "labels": {"istio.io/tag": name, "istio.io/rev": revision}}
    }


def test_plan_for_a_fresh_upgrade_keeps_stable_on_the_running_revision_and_moves_to_canary():
    plan = upgrade_plan([A], [], LABELED, OPTIONS)
    assert plan["problems"] == []
    assert plan["stable_revision"] == "1-30-4"
    assert plan["label"] == "canary" and not plan["promoted"]


def test_plan_after_promotion_labels_stable_and_accepts_the_old_revision_gone():
    plan = upgrade_plan([B], [tag("stable", "1-31-1"), tag("canary", "1-31-1")], LABELED, OPTIONS)
    assert plan["problems"] == []
    assert plan["promoted"] and plan["label"] == "stable"


@pytest.mark.parametrize(
    ("istiod", "tags", "namespaces", "changes", "expected"),
    [
        ([A], [], LABELED, {"to_revision": "1.31.1"}, "upgrade_revision is '1.31.1', not a DNS label"),
        ([A], [], LABELED, {"canary_tag": "1-31-1"}, "must all differ"),
        ([A], [tag("stable", "1-29-0")], LABELED, {}, "Tag stable points at revision 1-29-0, which is not installed"),
        ([], [], LABELED, {"from_revision": "default"}, "Revision default (istio_install_minimal_revision) is not"),
        ([A], [], LABELED, {"version": "1.30.1"}, "older than the running Istio 1.30.4"),
        ([dict(A, version="1.28.6")], [], LABELED, {}, "Take the newest 1.30 patch first"),
        ([A, dict(B, version="1.31.0")], [], LABELED, {}, "upgrade_revision 1-31-1 is already installed and runs"),
        ([A], [], [{"namespace": "shop", "label": {"enabled": False}}], {}, "Namespaces shop are not labeled"),
        ([B], [], LABELED, {"action": "rollback"}, "Revision 1-30-4 (istio_install_minimal_revision) is not installed"),
    ],
)
def test_plan_refusals_name_the_variable_and_the_remedy(istiod, tags, namespaces, changes, expected):
    problems = upgrade_plan(istiod, tags, namespaces, {**OPTIONS, **changes})["problems"]
    assert any(expected in p for p in problems), problems


def test_registered():
    assert set(FilterModule().filters()) == {
        "istio_upgrade_problems",
        "revision_tag_webhook",
        "revision_tag_objects",
        "upgrade_plan",
    }
