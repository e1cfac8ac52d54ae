"""The traffic baseline in ambient mode (module_utils/traffic.py with module_utils/waypoints.py): rendering on
waypoints, the refusals, hand-made routing, labels released, and the gate's reading of istiod's status. The live
objects copy what the local cluster's istiod writes (docs/ambient.md, "Step 4 in ambient mode")."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import traffic, waypoints
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.traffic import MANAGED_LABEL

USE = waypoints.USE_WAYPOINT_LABEL
MANAGER = "meshops-istio-traffic"
WEB = {"name": "web", "namespace": "shop", "port": 80}
API = {"name": "api", "namespace": "shop", "port": 8080, "timeout": "3s"}
LEDGER = {"name": "ledger", "namespace": "bank", "port": 80}


def ambient(services, defaults=None, waypoint="waypoint"):
    return traffic.resources(services, defaults or {}, False, "ambient", waypoint)


def by_kind(objects):
    return [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]


def test_ambient_mode_renders_a_waypoint_per_namespace_then_routes_then_labels():
    objects = ambient([WEB, API, LEDGER])
    assert by_kind(objects) == [
        ("Gateway", "shop", "waypoint"),
        ("Gateway", "bank", "waypoint"),
        ("DestinationRule", "shop", "baseline-web"),
        ("HTTPRoute", "shop", "baseline-web"),
        ("DestinationRule", "shop", "baseline-api"),
        ("HTTPRoute", "shop", "baseline-api"),
        ("DestinationRule", "bank", "baseline-ledger"),
        ("HTTPRoute", "bank", "baseline-ledger"),
        ("Service", "shop", "web"),
        ("Service", "shop", "api"),
        ("Service", "bank", "ledger"),
    ]
    gateway = objects[0]
    assert gateway["spec"] == {
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    }
    assert gateway["metadata"]["labels"][MANAGED_LABEL] == "true"
    assert gateway["metadata"]["labels"]["istio.io/waypoint-for"] == "service"
    route = objects[5]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["labels"]["meshops.istio/service"] == "api"
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "api", "port": 8080}]
    (rule,) = route["spec"]["rules"]
    assert rule["timeouts"] == {"request": "3s"}
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "api", "port": 8080, "weight": 1}]
    # The Service carries the label alone: nothing else of it is this role's.
    assert objects[-2] == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "shop", "labels": {USE: "waypoint"}},
    }
    # The DestinationRule is the sidecar mode's, unchanged.
    assert objects[4] == traffic.resources([API])[0]


def test_the_waypoint_name_is_the_gateways_and_the_labels():
    objects = ambient([WEB], waypoint="edge")
    assert objects[0]["metadata"]["name"] == "edge"
    assert objects[-1]["metadata"]["labels"] == {USE: "edge"}


@pytest.mark.parametrize(
    ("services", "defaults", "fragment"),
    [
        ([dict(WEB, retries={"attempts": 2})], None, "service shop/web: retries has no HTTPRoute equivalent"),
        ([WEB], {"retries": {"attempts": 1}}, "traffic_baseline_defaults: retries has no HTTPRoute equivalent"),
        ([dict(WEB, timeout="1.5s")], None, "service shop/web: timeout must be a Gateway API duration"),
        ([dict(WEB, timeout="123456s")], None, "timeout must be a Gateway API duration in ambient mode"),
        ([dict(WEB, fault={"abort": {}})], None, "service shop/web: fault is Istio VirtualService routing"),
        ([WEB], {"timeout": "ten"}, "service shop/web: timeout must be a duration"),
    ],
)
def test_what_an_httproute_cannot_carry_is_refused_naming_the_variable(services, defaults, fragment):
    with pytest.raises(InvalidInput) as err:
        ambient(services, defaults)
    assert fragment in str(err.value)
    assert str(err.value).endswith("Nothing was applied.")


def test_the_retry_refusal_says_what_the_waypoint_does_instead_and_the_way_out():
    with pytest.raises(InvalidInput) as err:
        ambient([dict(WEB, retries={"per_try_timeout": "1s"})])
    assert "Istio's default retry policy (2 retries" in str(err.value)
    assert "traffic_baseline_dataplane_mode: sidecar" in str(err.value)


def test_ambient_mode_does_not_judge_retries_it_does_not_render():
    # The role's default per-try timeout (3s) would be longer than this timeout; in ambient mode it is not rendered.
    (route,) = [o for o in ambient([dict(WEB, timeout="2s")]) if o["kind"] == "HTTPRoute"]
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "2s"}


def test_an_unknown_mode_and_a_bad_waypoint_name_are_refused():
    with pytest.raises(InvalidInput, match="traffic_baseline_dataplane_mode must be one of sidecar, ambient"):
        traffic.resources([WEB], {}, False, "sidecarless")
    with pytest.raises(InvalidInput, match="traffic_baseline_waypoint_name must be a DNS label"):
        ambient([WEB], waypoint="Way_Point")


def test_gateway_durations():
    assert all(waypoints.gateway_duration(d) for d in ("10s", "1500ms", "1h30m", "99999ms"))
    assert not any(waypoints.gateway_duration(d) for d in ("1.5s", "100000s", "10", 10, "", "1d"))


def http_route(name, service, namespace="shop", labels=None, group=""):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"parentRefs": [{"group": group, "kind": "Service", "name": service}]},
    }


def live_service(name, namespace="shop", label=None, manager="kubectl-label"):
    labels = {USE: label} if label else {}
    fields = {"f:metadata": {"f:labels": {f"f:{USE}": {}}}} if label else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": fields}],
        },
    }


def test_hand_made_l7_routing_of_a_listed_service_is_found():
    desired = ambient([WEB, API, LEDGER])
    existing = [
        http_route("hand", "web"),
        http_route("ours", "web", labels={MANAGED_LABEL: "true"}),
        http_route("ingress", "web", group="gateway.networking.k8s.io"),  # a Gateway parent, not the Service
        {"kind": "VirtualService", "metadata": {"name": "vs", "namespace": "bank"}, "spec": {"hosts": ["ledger"]}},
        live_service("api", label="elsewhere"),
        live_service("web", label="waypoint"),  # the same waypoint: not in the way
        {"kind": "Namespace", "metadata": {"name": "bank", "labels": {USE: "bank-waypoint"}}},
    ]
    found = traffic.foreign(existing, desired, MANAGER)
    assert [(f["kind"], f["name"], f["service_namespace"], f["service"]) for f in found] == [
        ("HTTPRoute", "hand", "shop", "web"),
        ("VirtualService", "vs", "bank", "ledger"),
        ("Service", "api", "shop", "api"),
        ("Namespace", "bank", "bank", "ledger"),
    ]
    assert found[0]["message"] == (
        "HTTPRoute shop/hand already routes Service shop/web: left untouched, and service web gets no baseline "
        "HTTPRoute and no istio.io/use-waypoint label. Set take_over: true on that service to manage it anyway."
    )
    assert found[2]["message"].startswith("Service shop/api already has istio.io/use-waypoint=elsewhere")
    assert found[3]["message"].startswith("Namespace bank already sends its Services to waypoint bank-waypoint")
    # Withheld: the route and the label of exactly those services; the namespaces keep their waypoint while a
    # Service is left to use it (shop: none of web and api; bank: none either).
    kept = traffic.unblocked(desired, found)
    assert by_kind(kept) == [
        ("DestinationRule", "shop", "baseline-web"),
        ("DestinationRule", "shop", "baseline-api"),
        ("DestinationRule", "bank", "baseline-ledger"),
    ]
    assert by_kind(traffic.unblocked(desired, found[:1])) == [
        o for o in by_kind(desired) if o not in (("HTTPRoute", "shop", "baseline-web"), ("Service", "shop", "web"))
    ]


def test_a_label_this_role_applied_before_is_not_hand_made():
    desired = ambient([API])
    assert traffic.foreign([live_service("api", label="old-name", manager=MANAGER)], desired, MANAGER) == []


def test_an_unmanaged_waypoint_of_the_name_is_used_and_a_gateway_that_is_not_one_is_refused():
    desired = ambient([WEB])
    theirs = waypoints.waypoint_gateway("shop", "waypoint", {})
    (found,) = traffic.foreign([theirs], desired, MANAGER)
    assert found["message"] == (
        "Gateway shop/waypoint is a waypoint not managed by meshops.istio, which the listed Services of namespace "
        "shop use as it is: left untouched."
    )
    kept = traffic.unblocked(desired, [found])
    assert [o["kind"] for o in kept] == ["DestinationRule", "HTTPRoute", "Service"]
    ingress = dict(theirs, spec={"gatewayClassName": "nginx", "listeners": []})
    with pytest.raises(InvalidInput, match=r"Gateway shop/waypoint \(class nginx\) is not managed by meshops.istio"):
        traffic.foreign([ingress], desired, MANAGER)


def test_sidecar_mode_finds_no_ambient_routing_and_ambient_mode_keeps_the_destination_rule_check():
    assert traffic.foreign([http_route("hand", "api")], traffic.resources([API]), MANAGER) == []
    hand_dr = {"kind": "DestinationRule", "metadata": {"name": "dr", "namespace": "shop"}, "spec": {"host": "api"}}
    (found,) = traffic.foreign([hand_dr], ambient([API]), MANAGER)
    assert (found["kind"], found["service"], found["host"]) == ("DestinationRule", "api", "api.shop.svc.cluster.local")


def test_stale_waypoint_objects_are_deleted_and_a_service_never_is():
    gone = [{**o, "apiVersion": o.get("apiVersion")} for o in ambient([WEB, LEDGER])]
    labeled = live_service("web", label="waypoint", manager=MANAGER)
    labeled["metadata"]["labels"][MANAGED_LABEL] = "true"  # even a Service that carries the label by mistake
    stale = traffic.stale([*gone, labeled], ambient([WEB]))
    assert sorted((s["kind"], s["namespace"], s["name"]) for s in stale) == [
        ("DestinationRule", "bank", "baseline-ledger"),
        ("Gateway", "bank", "waypoint"),
        ("HTTPRoute", "bank", "baseline-ledger"),
    ]
    # Back in sidecar mode every waypoint object goes, and the VirtualServices come back.
    stale = traffic.stale(gone, traffic.resources([WEB]))
    assert sorted(s["kind"] for s in stale) == ["DestinationRule", "Gateway", "Gateway", "HTTPRoute", "HTTPRoute"]


def test_labels_this_role_applied_and_no_longer_declares_are_released():
    live = [
        live_service("web", label="waypoint", manager=MANAGER),
        live_service("api", label="waypoint", manager=MANAGER),
        live_service("other", label="waypoint"),  # another writer's
    ]
    assert traffic.released(live, ambient([WEB]), MANAGER) == [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"}}
    ]
    assert [r["metadata"]["name"] for r in traffic.released(live, traffic.resources([WEB]), MANAGER)] == ["web", "api"]


# ------------------------------------------------------------------ the gate (what istiod writes)


def cond(ctype, status="True", generation=1, **extra):
    return {"type": ctype, "status": status, "observedGeneration": generation, "reason": ctype, **extra}


def live_objects(**changes):
    """The objects of ambient([WEB]) as istiod leaves them once all is well (status copied from the local
    cluster), with ``changes`` (kind: object or None) instead."""
    gateway = {**waypoints.waypoint_gateway("shop", "waypoint", {}), "status": {"conditions": [cond("Programmed")]}}
    gateway["metadata"]["generation"] = 1
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "waypoint", "namespace": "shop", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    }
    route = {
        "kind": "HTTPRoute",
        "metadata": {"name": "baseline-web", "namespace": "shop", "generation": 2},
        "status": {
            "parents": [
                {
                    "controllerName": "istio.io/gateway-controller",
                    "parentRef": {"group": "", "kind": "Service", "name": "web", "port": 80},
                    "conditions": [cond("Accepted", generation=2), cond("ResolvedRefs", generation=2)],
                }
            ]
        },
    }
    service = {
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "labels": {USE: "waypoint"}},
        "status": {
            "conditions": [
                {"type": "istio.io/WaypointBound", "status": "True", "reason": "WaypointAccepted", "message": "ok"}
            ]
        },
    }
    objects = {"Gateway": gateway, "Deployment": deployment, "HTTPRoute": route, "Service": service, **changes}
    return {kind: [obj] if obj else [] for kind, obj in objects.items()}


def test_the_gate_passes_on_what_istiod_writes_when_all_is_well():
    report = waypoints.gate_report(ambient([WEB]), live_objects())
    assert report["ready"] is True and report["problems"] == []
    assert [(r["namespace"], r["name"]) for r in report["waypoints"]] == [("shop", "waypoint")]
    assert [(r["name"], r["service"]) for r in report["routes"]] == [("baseline-web", "web")]
    assert [(r["name"], r["waypoint"]) for r in report["services"]] == [("web", "waypoint")]


def problem(**changes):
    report = waypoints.gate_report(ambient([WEB]), live_objects(**changes))
    assert report["ready"] is False
    (one,) = report["problems"]
    return one


def test_each_thing_the_gate_waits_for_is_named_with_its_remedy():
    base = live_objects()
    gateway, deployment = base["Gateway"][0], base["Deployment"][0]
    route, service = base["HTTPRoute"][0], base["Service"][0]
    assert problem(Gateway=None) == "waypoint Gateway shop/waypoint does not exist."
    not_programmed = {**gateway, "status": {"conditions": [cond("Programmed", "False", message="no class")]}}
    assert problem(Gateway=not_programmed).startswith(
        "waypoint Gateway shop/waypoint is not Programmed (Programmed: no class): istiod's waypoint controller"
    )
    old = {**gateway, "metadata": {**gateway["metadata"], "generation": 2}}
    assert "has not seen generation 2 yet" in problem(Gateway=old)
    assert "istiod has not created its Deployment shop/waypoint yet" in problem(Deployment=None)
    starting = {**deployment, "status": {**deployment["status"], "availableReplicas": 0}}
    assert "runs no ready proxy yet: Deployment shop/waypoint is 0/1 updated replicas available" in problem(
        Deployment=starting
    )
    assert "has no status from istiod for its parent Service shop/web yet" in problem(HTTPRoute={**route, "status": {}})
    refused = {
        **route,
        "status": {
            "parents": [dict(route["status"]["parents"][0], conditions=[cond("Accepted", "False", 2, message="bad")])]
        },
    }
    assert problem(HTTPRoute=refused).startswith(
        "HTTPRoute shop/baseline-web is not Accepted by istiod for Service shop/web (Accepted: bad)"
    )
    unbound = {**service, "status": {}}
    assert problem(Service=unbound).startswith(
        "Service shop/web is not bound to waypoint shop/waypoint (no status from istiod yet)"
    )
    relabeled = {**service, "metadata": {**service["metadata"], "labels": {}}}
    assert problem(Service=relabeled).startswith("Service shop/web has istio.io/use-waypoint=(none), not waypoint")


def test_the_gate_checks_only_what_it_is_asked_and_a_foreign_waypoint_too():
    report = waypoints.gate_report(ambient([WEB]), live_objects(HTTPRoute=None, Service=None), ["waypoints"])
    assert report["ready"] is True and report["routes"] == [] and report["services"] == []
    # The labeled Service alone names its waypoint: an unmanaged one is checked as well.
    only_label = [o for o in ambient([WEB]) if o["kind"] == "Service"]
    targets = waypoints.gate_targets(only_label)
    assert targets["waypoints"] == [{"namespace": "shop", "name": "waypoint"}]
