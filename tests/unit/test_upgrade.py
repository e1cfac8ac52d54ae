"""Upgrade decisions (plugins/module_utils/upgrade.py): allowed version jumps, the plan, revision tag webhooks."""

import json
from pathlib import Path

import pytest
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.upgrade import (
    plan,
    tag_objects,
    tag_webhook,
    version_problems,
)

INJECTOR = json.loads((Path(__file__).parent / "fixtures" / "mwc_istio_sidecar_injector.json").read_text())


@pytest.mark.parametrize(("running", "target"), [("1.30.4", "1.31.1"), ("1.29.2", "1.31.1"), ("1.31.0", "1.31.1")])
def test_canary_upgrades_of_up_to_two_minors_are_allowed(running, target):
    assert version_problems(running, target) == []


def test_canary_jump_of_three_minors_names_the_intermediate_release():
    (problem,) = version_problems("1.28.6", "1.31.1")
    assert "upgrade_version is 1.31.1 and the running Istio is 1.28.6" in problem
    assert "at most 2 minor versions" in problem
    assert "Take the newest 1.30 patch first, then 1.31.1." in problem


def test_downgrade_needs_its_switch():
    (problem,) = version_problems("1.31.1", "1.30.4")
    assert "older than the running Istio 1.31.1" in problem
    assert "upgrade_allow_downgrade: true" in problem
    assert version_problems("1.31.1", "1.30.4", allow_downgrade=True) == []


def test_in_place_stays_within_a_minor():
    assert version_problems("1.31.0", "1.31.1", "in-place") == []
    (problem,) = version_problems("1.30.4", "1.31.1", "in-place", variable="istio_install_minimal_version")
    assert problem.startswith("istio_install_minimal_version is 1.31.1 and the running Istio is 1.30.4")
    assert "upgrade playbook" in problem


@pytest.mark.parametrize("bad", ["1.31", "latest", "", None, "v1.31.1"])
def test_bad_versions_name_the_filter(bad):
    with pytest.raises(InvalidInput, match="istio_upgrade_problems: the target version"):
        version_problems("1.30.4", bad)
    with pytest.raises(InvalidInput, match="method"):
        version_problems("1.30.4", "1.31.1", "sideways")


def test_tag_webhook_copies_the_revision_injector_with_the_tag_in_its_selectors():
    hook = tag_webhook(INJECTOR, "stable", "default")
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
    with pytest.raises(InvalidInput, match="DNS label"):
        tag_webhook(INJECTOR, "Stable_1", "default")
    with pytest.raises(InvalidInput, match="injector"):
        tag_webhook({"kind": "ConfigMap"}, "stable", "default")
    with pytest.raises(InvalidInput, match="no webhook selecting"):
        tag_webhook(INJECTOR, "stable", "1-31-1")


def test_tag_objects_find_each_revision_injector_and_skip_existing_tags():
    tagged = tag_webhook(INJECTOR, "stable", "default")
    out = tag_objects([tagged, INJECTOR], {"stable": "default", "canary": "default"})
    assert [o["metadata"]["name"] for o in out] == ["istio-revision-tag-stable", "istio-revision-tag-canary"]
    with pytest.raises(InvalidInput, match=r"no injector .* of revision .1-31-1. to point tag .canary."):
        tag_objects([tagged, INJECTOR], {"canary": "1-31-1"})


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
    found = plan([A], [], LABELED, OPTIONS)
    assert found["problems"] == []
    assert found["stable_revision"] == "1-30-4"
    assert found["label"] == "canary" and not found["promoted"]


def test_plan_after_promotion_labels_stable_and_accepts_the_old_revision_gone():
    found = plan([B], [tag("stable", "1-31-1"), tag("canary", "1-31-1")], LABELED, OPTIONS)
    assert found["problems"] == []
    assert found["promoted"] and found["label"] == "stable"


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
    problems = plan(istiod, tags, namespaces, {**OPTIONS, **changes})["problems"]
    assert any(expected in p for p in problems), problems


def test_a_malformed_target_version_refuses_the_plan_as_the_version_check_does():
    with pytest.raises(InvalidInput, match="istio_upgrade_problems: the target version 'latest' is not a full"):
        plan([A], [], LABELED, {**OPTIONS, "version": "latest"})
