"""Whether a server-side apply would change nothing (module_utils/objects.py: in_place, objects_to_apply), so the
roles can leave out objects already in place. The live objects copy the shape the local cluster's API server gives
the roles' objects: the Apply entry lists labels without a "." key, an atomic list (spec.http) as one leaf, and
neither metadata.name nor metadata.namespace."""

import copy

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter import batch
from ansible_collections.meshops.istio.plugins.module_utils.objects import in_place, objects_to_apply

MANAGER = "meshops-istio-traffic"
LABELS = {
    "app.kubernetes.io/managed-by": "meshops.istio",
    "meshops.istio/service": "api",
    "meshops.istio/traffic-baseline": "true",
}


def virtual_service(name="baseline-api", namespace="shop", timeout="10s"):
    """A VirtualService as traffic_baseline_resources declares it."""
    host = f"{name.split('-', 1)[1]}.{namespace}.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
        "spec": {
            "hosts": [host],
            "http": [
                {
                    "retries": {"attempts": 3, "perTryTimeout": "3s", "retryOn": "connect-failure,unavailable"},
                    "route": [{"destination": {"host": host, "port": {"number": 80}}}],
                    "timeout": timeout,
                }
            ],
        },
    }


def applied_fields():
    return {
        "f:metadata": {"f:labels": {f"f:{key}": {} for key in LABELS}},
        "f:spec": {"f:hosts": {}, "f:http": {}},
    }


def live_of(declared, manager=MANAGER, fields=None, **entry):
    """The object as the API server returns it after that manager applied ``declared``."""
    live = copy.deepcopy(declared)
    live["metadata"].update(
        creationTimestamp="2026-11-27T21:24:54Z",
        generation=1,
        resourceVersion="2968",
        uid="745d88f6-5d3f-4c38-b831-61068c44ea4a",
        managedFields=[
            {
                "apiVersion": declared["apiVersion"],
                "fieldsType": "FieldsV1",
                "fieldsV1": applied_fields() if fields is None else fields,
                "manager": manager,
                "operation": "Apply",
                "time": "2026-11-27T21:24:54Z",
                **entry,
            }
        ],
    )
    return live


@pytest.fixture
def declared():
    return virtual_service()


@pytest.fixture
def live(declared):
    return live_of(declared)


def test_applied_object_is_in_place(declared, live):
    assert in_place(declared, live, MANAGER) is True


def test_dot_keys_and_fields_of_other_managers_do_not_matter(declared, live):
    # "." marks a node its manager owns (Update entries carry it); a label another manager set is no field of ours.
    live["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:labels"]["."] = {}
    live["metadata"]["labels"]["team"] = "shop"
    live["metadata"]["managedFields"].append(
        {
            "apiVersion": "networking.istio.io/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}},
            "manager": "kubectl-label",
            "operation": "Update",
        }
    )
    assert in_place(declared, live, MANAGER) is True


def test_a_value_that_differs_is_not_in_place(declared, live):
    live["spec"]["http"][0]["timeout"] = "5s"
    assert in_place(declared, live, MANAGER) is False
    live = live_of(declared)
    live["metadata"]["labels"]["meshops.istio/service"] = "web"
    assert in_place(declared, live, MANAGER) is False


def test_a_declared_field_the_manager_does_not_own_is_not_in_place(declared, live):
    # Added to the declaration: even with the value already there (another manager's), the apply claims it.
    declared["metadata"]["labels"]["team"] = "shop"
    live["metadata"]["labels"]["team"] = "shop"
    assert in_place(declared, live, MANAGER) is False
    declared = virtual_service()
    declared["spec"]["gateways"] = ["mesh"]
    assert in_place(declared, live_of(virtual_service()), MANAGER) is False


def test_an_owned_field_no_longer_declared_is_not_in_place(declared):
    # Removed from the declaration: the apply would remove it from the object.
    fields = applied_fields()
    fields["f:spec"]["f:exportTo"] = {}
    live = live_of(declared, fields=fields)
    live["spec"]["exportTo"] = ["."]
    assert in_place(declared, live, MANAGER) is False


def test_only_this_managers_apply_entry_counts(declared):
    assert in_place(declared, live_of(declared, manager="kubectl"), MANAGER) is False
    assert in_place(declared, live_of(declared, operation="Update"), MANAGER) is False
    assert in_place(declared, live_of(declared, subresource="status"), MANAGER) is False
    assert in_place(declared, live_of(declared, apiVersion="networking.istio.io/v1beta1"), MANAGER) is False
    assert in_place(declared, live_of(declared, fieldsType="FieldsV2"), MANAGER) is False
    assert in_place(declared, live_of(declared), "") is False


def test_another_api_version_is_not_in_place(declared, live):
    declared["apiVersion"] = "networking.istio.io/v1beta1"
    assert in_place(declared, live, MANAGER) is False


def test_no_live_object_or_another_identity_is_not_in_place(declared, live):
    assert in_place(declared, None, MANAGER) is False
    assert in_place(virtual_service(namespace="other"), live, MANAGER) is False
    assert in_place(virtual_service(name="baseline-web"), live, MANAGER) is False


def test_an_object_being_deleted_is_not_in_place(declared, live):
    live["metadata"]["deletionTimestamp"] = "2026-11-27T21:30:00Z"
    assert in_place(declared, live, MANAGER) is False


def test_set_lists_positions_and_keyed_items_declared_without_their_keys_are_not_judged(declared):
    for key in ('k:{"name":"default"}', 'v:"shop.svc"', "i:0"):
        fields = applied_fields()
        fields["f:spec"]["f:http"] = {".": {}, key: {".": {}}}
        assert in_place(declared, live_of(declared, fields=fields), MANAGER) is False


def test_an_int_is_not_the_same_string(declared, live):
    declared["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = "80"
    assert in_place(declared, live, MANAGER) is False
    declared = virtual_service()
    declared["spec"]["http"][0]["retries"]["attempts"] = True  # True == 1 in Python, not in JSON
    live["spec"]["http"][0]["retries"]["attempts"] = 1
    assert in_place(declared, live, MANAGER) is False


def test_cluster_scoped_object_with_a_map_of_labels():
    # A Namespace the injection step labeled: no namespace on either side, labels as a granular map.
    declared = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}},
    }
    live = live_of(declared, "meshops-istio-injection", {"f:metadata": {"f:labels": {"f:istio-injection": {}}}})
    live["metadata"]["labels"]["kubernetes.io/metadata.name"] = "shop"
    assert in_place(declared, live, "meshops-istio-injection") is True
    declared["metadata"]["labels"]["istio-injection"] = None  # a null asks for a removal
    assert in_place(declared, live, "meshops-istio-injection") is False


def test_objects_to_apply_keeps_the_order_of_those_not_in_place():
    api, web, cart = virtual_service("baseline-api"), virtual_service("baseline-web"), virtual_service("baseline-cart")
    live = [live_of(web), live_of(virtual_service("baseline-api", timeout="5s"))]
    # web is in place; api differs; cart does not exist yet.
    assert objects_to_apply([cart, api, web], live, MANAGER) == [cart, api]
    assert objects_to_apply([web], live, MANAGER) == []
    assert objects_to_apply([web], live, "someone-else") == [web]


def test_objects_to_apply_tells_apart_a_kind_two_groups_share():
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "shop"},
    }
    gateway["spec"] = {"selector": {"istio": "ingressgateway"}}
    fields = {"f:spec": {"f:selector": {"f:istio": {}}}}
    other = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "shop"},
    }
    other["spec"] = {"gatewayClassName": "istio"}
    other = live_of(other, fields={"f:spec": {"f:gatewayClassName": {}}})
    assert objects_to_apply([gateway], [live_of(gateway, fields=fields), other], MANAGER) == []
    assert objects_to_apply([gateway], [other, live_of(gateway, fields=fields)], MANAGER) == []


def test_the_filter_checks_its_arguments(declared, live):
    assert batch.FilterModule().filters()["objects_to_apply"]([declared], [live], MANAGER) == []
    with pytest.raises(AnsibleFilterError, match="list of declared objects"):
        batch.objects_to_apply(declared, [live], MANAGER)
    with pytest.raises(AnsibleFilterError, match="field manager"):
        batch.objects_to_apply([declared], [live], None)


def test_declared_to_apply_narrows_each_set_to_what_its_declare_found_not_in_place():
    traffic = {"step": "traffic", "objects": [{"kind": "A"}, {"kind": "B"}], "to_apply": [{"kind": "B"}]}
    mtls = {"step": "mtls", "objects": [{"kind": "C"}]}
    done = {"step": "telemetry", "objects": [{"kind": "D"}], "to_apply": []}
    empty = {"step": "injection", "objects": []}
    out = batch.declared_to_apply([traffic, mtls, done, empty])
    assert out == [dict(traffic, objects=[{"kind": "B"}]), mtls]
    assert traffic["objects"] == [{"kind": "A"}, {"kind": "B"}]  # the input is not changed
    with pytest.raises(AnsibleFilterError):
        batch.declared_to_apply({"step": "traffic"})


def waypoint():
    """A waypoint Gateway as the traffic baseline declares it in ambient mode: its listeners are a keyed list."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": "shop", "labels": {"meshops.istio/traffic-baseline": "true"}},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def waypoint_live(declared):
    """The Gateway as the local cluster's API server returns it (its fieldsV1 copied from there): the listener
    defaulted (allowedRoutes), owned under its key."""
    fields = {
        "f:metadata": {"f:labels": {"f:meshops.istio/traffic-baseline": {}}},
        "f:spec": {
            "f:gatewayClassName": {},
            "f:listeners": {'k:{"name":"mesh"}': {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}},
        },
    }
    live = live_of(declared, fields=fields)
    live["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "Same"}}
    return live


def test_the_items_of_a_keyed_list_are_compared_under_their_keys():
    declared = waypoint()
    live = waypoint_live(declared)
    assert in_place(declared, live, MANAGER) is True
    # Another listener of another writer's beside ours changes nothing either.
    live["spec"]["listeners"].insert(0, {"name": "other", "port": 80, "protocol": "HTTP"})
    assert in_place(declared, live, MANAGER) is True
    changed = copy.deepcopy(live)
    changed["spec"]["listeners"][1]["port"] = 15009
    assert in_place(declared, changed, MANAGER) is False
    gone = copy.deepcopy(live)
    del gone["spec"]["listeners"][1]
    assert in_place(declared, gone, MANAGER) is False


def test_a_keyed_item_not_owned_or_declared_without_its_key_is_not_in_place():
    declared, live = waypoint(), waypoint_live(waypoint())
    more = copy.deepcopy(declared)
    more["spec"]["listeners"].append({"name": "extra", "port": 15009, "protocol": "HBONE"})
    assert in_place(more, live, MANAGER) is False
    keyless = copy.deepcopy(declared)
    del keyless["spec"]["listeners"][0]["name"]
    assert in_place(keyless, live, MANAGER) is False
    for bad in ('k:{"name":{"a":1}}', "k:not json", "k:{}"):
        fields = copy.deepcopy(live["metadata"]["managedFields"][0]["fieldsV1"])
        fields["f:spec"]["f:listeners"] = {bad: {".": {}, "f:name": {}}}
        assert in_place(declared, live_of(declared, fields=fields), MANAGER) is False, bad
