"""The declared-state cross-checks a run makes before its first change (issue 16): the rollout's namespace plan,
references from declared objects to namespaces and Services, and which injections a failed run may roll back."""

import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.batch import namespace_objects
from ansible_collections.meshops.istio.plugins.filter.injection import injection_unconfirmed
from ansible_collections.meshops.istio.plugins.filter.rollout import rollout_plan
from ansible_collections.meshops.istio.plugins.module_utils import references

WAVES = [{"name": "first", "namespaces": ["shop"]}, {"name": "second", "namespaces": ["cart", "pay"]}]


def refused(*args) -> str:
    with pytest.raises(AnsibleFilterError) as err:
        rollout_plan(*args)
    message = str(err.value)
    assert message.endswith("Nothing was changed."), message
    return message


def test_plan_orders_pilot_then_waves_and_records_origins():
    plan = rollout_plan(["pilot"], WAVES, "")
    assert plan["namespaces"] == ["pilot", "shop", "cart", "pay"]
    assert [{k: w[k] for k in ("name", "namespaces")} for w in plan["waves"]] == WAVES
    assert plan["origins"] == {
        "pilot": "rollout_pilot_namespaces",
        "shop": "rollout_waves wave 'first'",
        "cart": "rollout_waves wave 'second'",
        "pay": "rollout_waves wave 'second'",
    }


def test_each_wave_gets_the_analysis_defaults_with_its_own_settings_over_them():
    waves = [WAVES[0], {**WAVES[1], "analysis": {"allow_no_data": True, "bake_time": "10m"}}]
    plan = rollout_plan(["pilot"], waves, "", {"bake_time": "2m", "success_rate": 95})
    first, second = (w["analysis"] for w in plan["waves"])
    assert first == {"bake_time": "2m", "success_rate": 95}
    assert second == {"bake_time": "10m", "success_rate": 95, "allow_no_data": True}


@pytest.mark.parametrize(
    "defaults, waves, named",
    [
        ({"success_rate": 120}, WAVES, "rollout_success_rate is 120: give a percentage from 0 to 100."),
        ({"bake_time": "five minutes"}, WAVES, "rollout_bake_time is 'five minutes', not a duration"),
        ({"failure_limit": 0}, WAVES, "rollout_failure_limit is 0"),
        ({"p99_ms": -1}, WAVES, "rollout_p99_ms is -1"),
        ({}, [{**WAVES[0], "analysis": {"p99_ratio": 0.5}}], "rollout_waves wave 'first' analysis.p99_ratio is 0.5"),
        ({}, [{**WAVES[0], "analysis": "fast"}], "rollout_waves wave 'first' analysis must be a mapping"),
        (
            {"interval": "1m"},
            [{**WAVES[0], "analysis": {"bake_time": "30s"}}],
            "rollout_analysis_interval (1m) is longer than rollout_waves wave 'first' analysis.bake_time (30s)",
        ),
        (
            {},
            [{**WAVES[0], "analysis": {"checks": [{"name": "x", "query": "up"}]}}],
            "rollout_waves wave 'first' analysis.checks[1] needs exactly one of max",
        ),
    ],
)
def test_bad_analysis_settings_are_refused_naming_the_variable(defaults, waves, named):
    assert named in refused(["pilot"], waves, "", defaults)


def test_survey_json_replaces_the_waves_and_is_named_in_messages():
    plan = rollout_plan(["pilot"], WAVES, json.dumps([{"name": "only", "namespaces": ["x"]}]))
    assert plan["namespaces"] == ["pilot", "x"]
    assert plan["origins"]["x"] == "rollout_waves_json wave 'only'"
    # Blank JSON falls back to rollout_waves, as an unanswered survey field does.
    assert rollout_plan(["pilot"], WAVES, "  ")["namespaces"][-1] == "pay"


@pytest.mark.parametrize(
    "waves, waves_json, expected",
    [
        (None, "[{'name': 'x'}]", "rollout_waves_json (the survey answer) is not valid JSON"),
        (None, '{"name": "x", "namespaces": ["a"]}', "rollout_waves_json must be a list of waves"),
        (None, '[{"namespaces": ["a"]}]', "rollout_waves_json wave 1 has no name"),
        ([{"name": "w", "namespaces": []}], "", "rollout_waves wave 'w' has no namespaces"),
        ([{"name": "w"}], "", "rollout_waves wave 'w' has no namespaces"),
        (["shop"], "", "rollout_waves wave 1 must be a mapping"),
        ([{"name": "w", "namespaces": ["Shop_1"]}], "", "rollout_waves wave 'w' namespaces lists 'Shop_1'"),
        ([{"name": "w", "namespaces": ["a"], "nmespaces": ["b"]}], "", "unknown key(s) nmespaces"),
        (
            [{"name": "w", "namespaces": ["a"]}, {"name": "w", "namespaces": ["b"]}],
            "",
            "two waves named 'w' (waves 1 and 2)",
        ),
        (
            [{"name": "w1", "namespaces": ["a"]}, {"name": "w2", "namespaces": ["a"]}],
            "",
            "a is in rollout_waves wave 'w2' and already in rollout_waves wave 'w1'",
        ),
        (
            [{"name": "w1", "namespaces": ["pilot"]}],
            "",
            "pilot is in rollout_waves wave 'w1' and already in rollout_pilot_namespaces",
        ),
    ],
)
def test_bad_plans_are_refused_naming_the_variable(waves, waves_json, expected):
    assert expected in refused(["pilot"], waves, waves_json)


def test_every_problem_is_reported_at_once_and_the_pilot_is_checked():
    message = refused(["Pilot", "ok"], [{"namespaces": []}], "")
    assert "rollout_pilot_namespaces lists 'Pilot'" in message
    assert "rollout_waves wave 1 has no name" in message
    assert "rollout_waves wave 1 has no namespaces" in message
    assert "rollout_pilot_namespaces lists a twice" in refused(["a", "a"], [], "")
    assert rollout_plan([], [], "")["namespaces"] == []
    assert rollout_plan(None, None, "")["namespaces"] == []


DECLARED = [
    {
        "step": "mtls",
        "source": "mtls_permissive_namespaces",
        "objects": [
            {"kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "shop"}},
            {"kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "ghost"}},
        ],
    },
    {
        "step": "traffic",
        "source": "traffic_baseline_services",
        "services": ["shop/api", "shop/gone", "nowhere/web"],
        "objects": [
            {"kind": "DestinationRule", "metadata": {"name": "baseline-api", "namespace": "shop"}},
            {"kind": "DestinationRule", "metadata": {"name": "baseline-web", "namespace": "nowhere"}},
        ],
    },
]


def test_references_name_the_variable_for_missing_namespaces_and_services():
    assert references.needed(DECLARED) == (
        {"shop", "ghost", "nowhere"},
        {("shop", "api"), ("shop", "gone"), ("nowhere", "web")},
    )
    found = references.problems(DECLARED, ["shop", "default"], [("shop", "api")])
    assert found == [
        "mtls_permissive_namespaces: namespace ghost does not exist (needed for PeerAuthentication default): "
        "create it, fix the name, or remove it from the list.",
        "traffic_baseline_services: namespace nowhere does not exist (needed for DestinationRule baseline-web): "
        "create it, fix the name, or remove it from the list.",
        "traffic_baseline_services: Service shop/gone does not exist, so its routing could never apply: fix the "
        "name or namespace, deploy the Service first, or remove the entry.",
    ]


def test_namespaces_the_run_creates_count_but_their_services_cannot_exist_yet():
    found = references.problems(DECLARED, ["shop"], [("shop", "api"), ("shop", "gone")], creating=["ghost", "nowhere"])
    assert found == [
        "traffic_baseline_services: Service nowhere/web does not exist, so its routing could never apply: fix the "
        "name or namespace, deploy the Service first, or remove the entry."
    ]
    assert references.problems([], [], []) == []


def test_listed_objects_give_the_same_answer_as_their_names():
    namespaces = [{"metadata": {"name": n}} for n in ("shop", "default")]
    services = [{"metadata": {"namespace": "shop", "name": "api"}}]
    assert references.problems_in(DECLARED, namespaces, services) == references.problems(
        DECLARED, ["shop", "default"], [("shop", "api")]
    )


PENDING = "meshops.istio/injection-pending"


def report(name, enabled, pending=False):
    return {
        "namespace": name,
        "label": {"enabled": enabled},
        "annotations": {PENDING: "true"} if pending else {},
    }


def test_rollback_scope_is_what_no_gate_confirmed():
    reports = [
        report("gated-earlier", True),
        report("killed-before-gate", True, pending=True),
        report("new", False),
    ]
    names = ["gated-earlier", "killed-before-gate", "new", "created-this-run"]
    assert injection_unconfirmed(reports, names, PENDING) == ["killed-before-gate", "new", "created-this-run"]
    assert injection_unconfirmed(reports, ["gated-earlier"], PENDING) == []
    with pytest.raises(AnsibleFilterError):
        injection_unconfirmed("nope", names, PENDING)


def test_namespace_objects_carry_the_pending_annotation_only_when_asked():
    marked = namespace_objects(["a"], {"istio-injection": "enabled"}, {PENDING: "true"})
    assert marked[0]["metadata"] == {
        "name": "a",
        "labels": {"istio-injection": "enabled"},
        "annotations": {PENDING: "true"},
    }
    assert "annotations" not in namespace_objects(["a"], {"istio-injection": "enabled"})[0]["metadata"]


def test_the_plan_lists_every_enabled_wave_custom_checks_named_by_wave():
    check = {"name": "errors", "query": "up", "max": 1}
    waves = [
        {**WAVES[0], "analysis": {"checks": [check]}},
        {**WAVES[1], "analysis": {"enabled": False, "checks": [check]}},
    ]
    assert rollout_plan(["pilot"], waves, "")["checks"] == [{**check, "name": "first/errors"}]
