"""What each step's declare reads (plugins/module_utils/live_queries.py, filter declare_live_queries)."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.declare import declare_live_queries
from ansible_collections.meshops.istio.plugins.module_utils.live_queries import ADDON_NAMESPACE


def test_each_query_is_keyed_by_its_step_in_the_order_asked():
    queries = declare_live_queries(["injection", "telemetry", "traffic", "mtls"])
    assert [q["key"] for q in queries] == ["telemetry"] * 7 + ["traffic"] * 6
    assert [q["kind"] for q in queries if q["key"] == "traffic"] == [
        "DestinationRule",
        "VirtualService",
        "Gateway",
        "HTTPRoute",
        "Service",
        "Namespace",
    ]


def test_traffic_reads_both_modes_objects_and_only_the_labeled_services_and_namespaces_whole_or_not():
    queries = {q["kind"]: q for q in declare_live_queries(["traffic"])}
    assert queries["Service"]["label_selectors"] == ["istio.io/use-waypoint"]
    assert "metadata_only" not in queries["Service"]  # managedFields say whose label it is
    assert queries["Namespace"] == {
        "api_version": "v1",
        "kind": "Namespace",
        "label_selectors": ["istio.io/use-waypoint"],
        "metadata_only": True,
        "key": "traffic",
    }


def test_telemetry_reads_metadata_only_in_the_addons_namespace():
    queries = declare_live_queries(["telemetry"])
    assert all(q["metadata_only"] for q in queries)
    assert {q.get("namespace") for q in queries} == {ADDON_NAMESPACE, None}
    assert {"ClusterRole", "ClusterRoleBinding", "Telemetry"} <= {q["kind"] for q in queries}


def test_the_table_is_not_changed_by_a_caller():
    declare_live_queries(["traffic"])[0]["namespace"] = "elsewhere"
    assert "namespace" not in declare_live_queries(["traffic"])[0]


def test_a_single_string_is_refused():
    with pytest.raises(AnsibleFilterError, match="list of step names"):
        declare_live_queries("traffic")


def test_reference_problems_from_the_live_lists_read():
    from ansible_collections.meshops.istio.plugins.filter.declare import declared_reference_problems

    declared = [
        {
            "step": "traffic",
            "source": "traffic_baseline_services",
            "objects": [{"kind": "VirtualService", "metadata": {"name": "api", "namespace": "shop"}}],
            "services": ["shop/api", "shop/gone"],
        },
        {"step": "mtls", "objects": [{"kind": "PeerAuthentication", "metadata": {"name": "d", "namespace": "new"}}]},
    ]
    live = [
        {"kind": "Namespace", "metadata": {"name": "shop"}},
        {"kind": "Service", "metadata": {"name": "api", "namespace": "shop"}},
        {"kind": "Service", "metadata": {"name": "gone", "namespace": "other"}},
    ]
    assert declared_reference_problems(declared, live, ["new"]) == [
        "traffic_baseline_services: Service shop/gone does not exist, so its routing could never apply: fix the name "
        "or namespace, deploy the Service first, or remove the entry."
    ]
    assert "namespace new does not exist" in declared_reference_problems(declared, live)[1]
    with pytest.raises(AnsibleFilterError):
        declared_reference_problems(declared, {"items": []})


def test_the_mesh_config_is_read_by_name_in_the_istio_namespace_given():
    (query,) = declare_live_queries(["mesh_config"], "mesh-root")
    assert query == {
        "api_version": "v1",
        "kind": "ConfigMap",
        "namespace": "mesh-root",
        "field_selectors": ["metadata.name=istio"],
        "key": "mesh_config",
    }
    assert declare_live_queries(["mesh_config"])[0]["namespace"] == ADDON_NAMESPACE
