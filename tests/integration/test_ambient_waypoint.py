"""Ambient mode, step 4 (issue 32): the traffic baseline's timeouts on waypoints, against the real istiod of the
ambient cluster (cluster.py --name ambient-a, step 1 done by the session fixture ambient_installed).

istiod is real: its waypoint controller deploys each waypoint Gateway (ServiceAccount, Deployment and Service of the
Gateway's name; kwok makes the pod Ready), programs it, writes each HTTPRoute's status and binds each labeled
Service (istio.io/WaypointBound). No waypoint proxy runs (docs/local-cluster.md, "Ambient mode on the local
cluster"), so what is proved here is the objects and istiod's reactions, not a timeout enforced on a request.
"""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import ambient_run, deployment, local_cluster_vars, run_playbook, service

USE_WAYPOINT = "istio.io/use-waypoint"


@pytest.fixture
def namespace(ambient_installed):
    """A namespace of the ambient cluster, enrolled, with three applications (Deployment and Service): web, api and
    legacy."""
    kubectl = ambient_installed["kubectl"]
    name = f"wp-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", name)
    kubectl.run("label", "namespace", name, "istio.io/dataplane-mode=ambient")
    for app in ("web", "api", "legacy"):
        kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(name, app, sidecar=False)))
        kubectl.run("apply", "-f", "-", stdin=json.dumps(service(name, app)))
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def baseline(ambient, tmp_path, services, mode="ambient", **flags):
    """Step 4's role alone over the ambient cluster (tests/integration/playbooks/traffic_baseline.yml)."""
    options = {
        **local_cluster_vars(ambient["paths"]),
        "meshops_dataplane_mode": mode,
        "traffic_baseline_services": services,
        "traffic_baseline_timeout": 60,
    }
    return run_playbook("traffic_baseline.yml", options, tmp_path, **flags)


def entries(namespace, *names, **extra):
    return [{"name": n, "namespace": namespace, "port": 80, **extra} for n in names]


def get(kubectl, namespace, kinds):
    """{(kind, name): object} of these kinds in the namespace."""
    items = kubectl.json("-n", namespace, "get", kinds)["items"]
    return {(i["kind"], i["metadata"]["name"]): i for i in items}


ROUTING = "gateways.gateway.networking.k8s.io,httproutes.gateway.networking.k8s.io,destinationrules,virtualservices"


def conditions(obj):
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_a_baseline_setting_with_no_httproute_equivalent_is_refused_before_any_change(
    ambient_installed, namespace, tmp_path
):
    kubectl = ambient_installed["kubectl"]
    result = baseline(
        ambient_installed,
        tmp_path,
        [*entries(namespace, "web", retries={"attempts": 2}), *entries(namespace, "api", timeout="1.5s")],
    )
    assert result.rc != 0
    out = " ".join(result.out.split())
    assert f"service {namespace}/web: retries has no HTTPRoute equivalent in ambient mode" in out, out[-3000:]
    assert "the waypoint then applies Istio's default retry policy" in out
    assert f"service {namespace}/api: timeout must be a Gateway API duration in ambient mode" in out
    assert "Nothing was applied." in out
    assert get(kubectl, namespace, ROUTING) == {}
    assert all(
        USE_WAYPOINT not in s["metadata"].get("labels", {}) for s in get(kubectl, namespace, "services").values()
    )


def test_the_baseline_goes_to_a_waypoint_that_istiod_deploys_programs_and_binds(ambient_installed, namespace, tmp_path):
    """One waypoint for the namespace, an HTTPRoute per service with its timeout, the Services labeled once the
    waypoint runs; a hand-made HTTPRoute keeps its Service. Then: idempotence, check mode, drift of a hand-edited
    route and of a removed label, and the way back to sidecar mode with fewer services (prune, labels released)."""
    ambient, kubectl = ambient_installed, ambient_installed["kubectl"]
    hand = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "hand-made", "namespace": namespace},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "legacy", "port": 80}],
            "rules": [{"backendRefs": [{"name": "legacy", "port": 80}], "timeouts": {"request": "42s"}}],
        },
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(hand))
    hand_version = kubectl.json("-n", namespace, "get", "httproute", "hand-made")["metadata"]["resourceVersion"]
    services = [*entries(namespace, "web"), *entries(namespace, "api", timeout="3s"), *entries(namespace, "legacy")]

    result = baseline(ambient, tmp_path, services)
    assert result.rc == 0, result.out[-4000:]
    out = " ".join(result.out.split())
    # The waypoint ran before any Service was sent to it (Istio's order), and the hand-made route was left alone.
    assert out.index("Wait for each waypoint to be Programmed") < out.index(
        "Send the listed Services to their waypoint"
    )
    assert (
        f"HTTPRoute {namespace}/hand-made already routes Service {namespace}/legacy: left untouched, and service "
        f"legacy gets no baseline HTTPRoute and no {USE_WAYPOINT} label"
    ) in out
    routing = get(kubectl, namespace, ROUTING)
    assert sorted(routing) == [
        ("DestinationRule", "baseline-api"),
        ("DestinationRule", "baseline-legacy"),
        ("DestinationRule", "baseline-web"),
        ("Gateway", "waypoint"),
        ("HTTPRoute", "baseline-api"),
        ("HTTPRoute", "baseline-web"),
        ("HTTPRoute", "hand-made"),
    ]
    assert routing[("HTTPRoute", "hand-made")]["metadata"]["resourceVersion"] == hand_version
    # istiod's answers: the waypoint Programmed, and its ServiceAccount, Deployment and Service, owned by the Gateway.
    gateway = routing[("Gateway", "waypoint")]
    assert gateway["spec"]["gatewayClassName"] == "istio-waypoint"
    assert conditions(gateway)["Programmed"]["status"] == "True", gateway["status"]
    made = get(kubectl, namespace, "serviceaccounts,deployments,services")
    for kind in ("ServiceAccount", "Deployment", "Service"):
        owners = made[(kind, "waypoint")]["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"]) for o in owners] == [("Gateway", "waypoint")], (kind, owners)
    assert made[("Deployment", "waypoint")]["status"]["readyReplicas"] == 1
    # Each route on its Service's port with its timeout, Accepted by istiod; each Service bound to the waypoint.
    for app, timeout in (("web", "10s"), ("api", "3s")):
        route = routing[("HTTPRoute", f"baseline-{app}")]
        assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": app, "port": 80}]
        assert route["spec"]["rules"][0]["timeouts"] == {"request": timeout}
        (parent,) = route["status"]["parents"]
        assert parent["controllerName"] == "istio.io/gateway-controller"
        assert {c["type"]: c["status"] for c in parent["conditions"]}["Accepted"] == "True", parent
        labels, bound = made[("Service", app)]["metadata"]["labels"], conditions(made[("Service", app)])
        assert labels[USE_WAYPOINT] == "waypoint"
        assert bound["istio.io/WaypointBound"]["status"] == "True", bound
        assert bound["istio.io/WaypointBound"]["message"] == f"Successfully attached to waypoint {namespace}/waypoint"
    assert USE_WAYPOINT not in made[("Service", "legacy")]["metadata"].get("labels", {})

    again = baseline(ambient, tmp_path, services)
    assert again.rc == 0 and again.recap()["changed"] == 0, again.out[-3000:]
    # Everything is in place under the role's field manager (the Gateway's keyed listeners included): nothing is sent.
    for task in ("Apply the DestinationRules and VirtualServices not in place yet", "Send the listed Services"):
        assert again.out.split(task, 1)[1].split("TASK [", 1)[0].strip().endswith("skipping: [localhost]"), task
    check = baseline(ambient, tmp_path, services, check=True)
    assert check.rc == 0 and check.recap()["changed"] == 0, check.out[-3000:]

    # Drift, through the drift playbook (the rollout's one read of every step's live objects): a hand-edited timeout
    # and a hand-removed label, each reported as the field it is, and nothing else of step 4.
    kubectl.run(
        "-n",
        namespace,
        "patch",
        "httproute",
        "baseline-api",
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/rules/0/timeouts/request", "value": "99s"}]',
    )
    kubectl.run("-n", namespace, "label", "service", "web", f"{USE_WAYPOINT}-")
    extra = {"rollout_stage": "traffic", "traffic_baseline_services": services}
    drift = ambient_run(ambient, "drift-waypoint", playbook="drift.yml", extra=extra)
    assert drift.rc == 0, drift.out[-4000:]
    report = json.loads((ambient["tmp"] / "drift-waypoint" / f"{ambient['name']}.json").read_text())
    found = {
        (d["kind"], d["name"], d["field"]): (d["declared"], d["live"])
        for d in report["drift"]
        if d["step"] == "traffic"
    }
    assert found == {
        ("HTTPRoute", "baseline-api", "spec.rules[0].timeouts.request"): ("3s", "99s"),
        ("Service", "web", f"metadata.labels.{USE_WAYPOINT}"): ("waypoint", "(absent)"),
    }, report["drift"]

    # Back to sidecar mode, with api and legacy off the list: web's VirtualService again; the waypoint, the baseline's
    # routes and the DestinationRules of api and legacy deleted; api's label released (by the role's field manager:
    # the Service stays), and the hand-made route left as it was.
    sidecar = baseline(ambient, tmp_path, entries(namespace, "web"), mode="sidecar")
    assert sidecar.rc == 0, sidecar.out[-4000:]
    routing = get(kubectl, namespace, ROUTING)
    assert sorted(routing) == [
        ("DestinationRule", "baseline-web"),
        ("HTTPRoute", "hand-made"),
        ("VirtualService", "baseline-web"),
    ]
    assert routing[("HTTPRoute", "hand-made")]["metadata"]["resourceVersion"] == hand_version
    api = kubectl.json("-n", namespace, "get", "service", "api", "--show-managed-fields")
    assert USE_WAYPOINT not in api["metadata"].get("labels", {})
    assert [f["manager"] for f in api["metadata"]["managedFields"] if f["manager"] == "meshops-istio-traffic"] == []


def test_uninstall_in_ambient_mode_takes_every_namespace_out_then_removes_the_node_agents(ambient_installed, tmp_path):
    """The last test on the ambient cluster: the uninstall, with every namespace in the mesh as its pilot, removes
    the ambient and injection labels (no pod left enrolled or with a sidecar), the waypoints and the baseline, then
    ztunnel, istio-cni, istiod and base."""
    ambient, kubectl = ambient_installed, ambient_installed["kubectl"]
    # One namespace of its own in the mesh, besides whatever the earlier tests left there.
    kubectl.run("create", "namespace", "amb-out")
    kubectl.run("label", "namespace", "amb-out", "istio.io/dataplane-mode=ambient")
    kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment("amb-out", "web", sidecar=False)))
    kubectl.run("-n", "amb-out", "rollout", "status", "deployment/web", "--timeout=60s")
    meshed = [
        n["metadata"]["name"]
        for n in kubectl.json("get", "namespaces")["items"]
        if not n["metadata"].get("deletionTimestamp")
        and (
            n["metadata"].get("labels", {}).get("istio.io/dataplane-mode") == "ambient"
            or n["metadata"].get("labels", {}).get("istio-injection") == "enabled"
        )
    ]
    extra = {"rollout_pilot_namespaces": meshed, "rollout_waves": []}
    result = ambient_run(ambient, "uninstall", playbook="uninstall.yml", extra=extra)
    assert result.rc == 0, result.out[-5000:]
    releases = kubectl.json("-n", "istio-system", "get", "secrets", "-l", "owner=helm")["items"]
    assert releases == [], [r["metadata"]["name"] for r in releases]
    assert kubectl.json("get", "gateways.gateway.networking.k8s.io", "-A")["items"] == []
    left = {n["metadata"]["name"]: n for n in kubectl.json("get", "namespaces")["items"]}
    for name in meshed:
        labels = left[name]["metadata"].get("labels", {})
        assert "istio.io/dataplane-mode" not in labels and "istio-injection" not in labels, (name, labels)
        for pod in kubectl.json("-n", name, "get", "pods")["items"]:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            assert "ambient.istio.io/redirection" not in pod["metadata"].get("annotations", {}), pod["metadata"]
            assert all(c["name"] != "istio-proxy" for c in pod["spec"]["containers"]), pod["metadata"]["name"]
