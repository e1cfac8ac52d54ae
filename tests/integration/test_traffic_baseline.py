"""Step 4 against the real local cluster (istiod validates every object): traffic_baseline."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import run_playbook, service


@pytest.fixture
def namespace(kubectl):
    """A namespace with the Services the tests route (a baseline for a Service that does not exist is refused)."""
    name = f"tb-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", name)
    for svc in ("web", "api"):
        kubectl.run("apply", "-f", "-", stdin=json.dumps(service(name, svc)))
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def routing(kubectl, namespace):
    """(kind, name) of every VirtualService and DestinationRule in the namespace."""
    items = kubectl.json(
        "-n", namespace, "get", "virtualservices.networking.istio.io,destinationrules.networking.istio.io"
    )
    return sorted((i["kind"], i["metadata"]["name"]) for i in items["items"])


def services(namespace, *names, **extra):
    return [{"name": n, "namespace": namespace, "port": 80, **extra} for n in names]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"timeout": "ten seconds"}, "timeout must be a duration"),
        ({"timeout": "2s", "retries": {"per_try_timeout": "5s"}}, "retries.per_try_timeout (5s) must not be longer"),
        ({"retries": {"attempts": 50}}, "retries.attempts must be from 0 to 10"),
        ({"port": 0}, "port must be from 1 to 65535"),
        ({"name": "Bad_Name"}, "name must be a DNS label"),
        ({"fault": {"delay": {"fixedDelay": "5s"}}}, "fault is complex routing"),
    ],
)
def test_bad_input_rejected_before_any_change(cluster, kubectl, tmp_path, namespace, override, fragment):
    good = services(namespace, "web")[0]
    result = run_playbook(
        "traffic_baseline.yml", {"traffic_baseline_services": [good, {**good, "name": "api", **override}]}, tmp_path
    )
    assert result.rc != 0
    assert fragment in result.out
    assert f"service {namespace}/" in result.out
    assert routing(kubectl, namespace) == [], "a rejected list must not apply even its valid entries"


def test_duplicate_service_rejected(cluster, kubectl, tmp_path, namespace):
    result = run_playbook(
        "traffic_baseline.yml", {"traffic_baseline_services": services(namespace, "web", "web")}, tmp_path
    )
    assert result.rc != 0
    assert f"service {namespace}/web: name is listed twice" in result.out
    assert routing(kubectl, namespace) == []


def test_hand_made_virtual_service_reported_and_untouched(cluster, kubectl, tmp_path, namespace):
    hand = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "hand-made", "namespace": namespace},
        "spec": {
            "hosts": ["web"],
            "http": [{"route": [{"destination": {"host": "web"}}], "timeout": "42s"}],
        },
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(hand))
    before = kubectl.json("-n", namespace, "get", "virtualservices.networking.istio.io", "hand-made")
    result = run_playbook("traffic_baseline.yml", {"traffic_baseline_services": services(namespace, "web")}, tmp_path)
    assert result.rc == 0, result.out[-3000:]
    assert f"VirtualService {namespace}/hand-made already routes web.{namespace}.svc.cluster.local" in result.out
    assert "left untouched" in result.out
    after = kubectl.json("-n", namespace, "get", "virtualservices.networking.istio.io", "hand-made")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert routing(kubectl, namespace) == [
        ("DestinationRule", "baseline-web"),
        ("VirtualService", "hand-made"),
    ]


def test_hand_edited_timeout_reported_with_diff_then_restored(cluster, kubectl, tmp_path, namespace):
    options = {"traffic_baseline_services": services(namespace, "web")}
    assert run_playbook("traffic_baseline.yml", options, tmp_path).rc == 0
    kubectl.run(
        "-n",
        namespace,
        "patch",
        "virtualservices.networking.istio.io",
        "baseline-web",
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/http/0/timeout", "value": "99s"}]',
    )
    check = run_playbook("traffic_baseline.yml", options, tmp_path, check=True, diff=True)
    assert check.rc == 0, check.out[-3000:]
    assert check.recap()["changed"] == 1
    # The diff shows the live (hand-made) value and the declared one.
    assert '"timeout": "99s"' in check.out
    assert '"timeout": "10s"' in check.out
    vs = kubectl.json("-n", namespace, "get", "virtualservices.networking.istio.io", "baseline-web")
    assert vs["spec"]["http"][0]["timeout"] == "99s", "check mode must not restore anything"
    fix = run_playbook("traffic_baseline.yml", options, tmp_path)
    assert fix.rc == 0 and fix.recap()["changed"] == 1, fix.out[-3000:]
    vs = kubectl.json("-n", namespace, "get", "virtualservices.networking.istio.io", "baseline-web")
    assert vs["spec"]["http"][0]["timeout"] == "10s"
    again = run_playbook("traffic_baseline.yml", options, tmp_path)
    assert again.recap()["changed"] == 0
    # Both objects are in place under the role's field manager: the rerun sends neither (filter objects_to_apply).
    apply_task = again.out.split("Apply the DestinationRules and VirtualServices not in place yet", 1)[1]
    apply_task = apply_task.split("TASK [", 1)[0]
    assert "skipping:" in apply_task and "ok:" not in apply_task, apply_task


def test_removing_a_service_deletes_exactly_its_two_resources(cluster, kubectl, tmp_path, namespace):
    hand = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "hand-made", "namespace": namespace},
        "spec": {"host": "other"},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(hand))
    both = {"traffic_baseline_services": services(namespace, "web", "api")}
    assert run_playbook("traffic_baseline.yml", both, tmp_path).rc == 0
    assert len(routing(kubectl, namespace)) == 5
    result = run_playbook("traffic_baseline.yml", {"traffic_baseline_services": services(namespace, "web")}, tmp_path)
    assert result.rc == 0, result.out[-3000:]
    assert routing(kubectl, namespace) == [
        ("DestinationRule", "baseline-web"),
        ("DestinationRule", "hand-made"),
        ("VirtualService", "baseline-web"),
    ]
