"""Traffic baseline decisions (plugins/module_utils/traffic.py): validation and rendering of the service list."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import traffic
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.traffic import MANAGED_LABEL

API = {"name": "api", "namespace": "shop", "port": 8080}


def render(services, defaults=None, advanced=False):
    return traffic.resources(services, defaults or {}, advanced)


def test_renders_destination_rule_and_virtual_service_with_defaults():
    dr, vs = render([API])
    assert (dr["kind"], vs["kind"]) == ("DestinationRule", "VirtualService")
    assert dr["metadata"] == vs["metadata"]
    assert dr["metadata"]["name"] == "baseline-api"
    assert dr["metadata"]["labels"][MANAGED_LABEL] == "true"
    host = "api.shop.svc.cluster.local"
    policy = dr["spec"]["trafficPolicy"]
    assert dr["spec"]["host"] == host
    assert policy["loadBalancer"] == {"simple": "LEAST_REQUEST"}
    assert policy["outlierDetection"]["consecutive5xxErrors"] == 5
    assert policy["connectionPool"]["tcp"]["maxConnections"] == 1024
    http = vs["spec"]["http"][0]
    assert vs["spec"]["hosts"] == [host]
    assert http["route"] == [{"destination": {"host": host, "port": {"number": 8080}}}]
    assert http["timeout"] == "10s"
    assert http["retries"] == {
        "attempts": 3,
        "perTryTimeout": "3s",
        "retryOn": "connect-failure,refused-stream,unavailable,503",
    }


def test_defaults_and_overrides_deep_merge():
    defaults = {"timeout": "20s", "retries": {"attempts": 2}}
    svc = dict(API, retries={"per_try_timeout": "500ms"}, load_balancer="ROUND_ROBIN")
    dr, vs = render([svc], defaults)
    http = vs["spec"]["http"][0]
    assert http["timeout"] == "20s"
    assert http["retries"]["attempts"] == 2
    assert http["retries"]["perTryTimeout"] == "500ms"
    assert http["retries"]["retryOn"] == "connect-failure,refused-stream,unavailable,503"
    assert dr["spec"]["trafficPolicy"]["loadBalancer"]["simple"] == "ROUND_ROBIN"


@pytest.mark.parametrize(
    ("svc", "fragment"),
    [
        (dict(API, timeout="10"), "service shop/api: timeout must be a duration like '500ms'"),
        (dict(API, timeout="0ms"), "timeout must be at least 1ms"),
        (dict(API, timeout="0"), "timeout must be at least 1ms, got '0'"),
        (dict(API, timeout=10), "timeout must be a duration like '500ms', '3s' or '1m' (Istio's format), got 10"),
        (dict(API, timeout="1m30"), "timeout must be a duration like '500ms'"),
        (dict(API, retries={"attempts": 11}), "retries.attempts must be from 0 to 10, got 11"),
        (dict(API, retries={"attempts": "3"}), "retries.attempts must be a whole number"),
        (dict(API, timeout="2s", retries={"per_try_timeout": "3s"}), "retries.per_try_timeout (3s) must not be longer"),
        (dict(API, retries={"retry_on": "5xx,teapot"}), "retries.retry_on has unknown conditions ['teapot']"),
        (dict(API, name="API_v1"), "service shop/API_v1: name must be a DNS label"),
        (dict(API, namespace="Shop"), "namespace must be a DNS label"),
        (dict(API, port=70000), "port must be from 1 to 65535"),
        (dict(API, load_balancer="FASTEST"), "load_balancer must be one of ROUND_ROBIN"),
        (dict(API, connection_pool={"max_connections": 0}), "connection_pool.max_connections must be from 1"),
        (dict(API, outlier_detection={"max_ejection_percent": 101}), "outlier_detection.max_ejection_percent"),
        (dict(API, outlier_detection={"interval": "soon"}), "outlier_detection.interval must be a duration"),
        (dict(API, colour="blue"), "colour is not a known field"),
        (dict(API, fault={"abort": {"httpStatus": 503}}), "fault is complex routing"),
        (dict(API, route_weights=[{"weight": 90}]), "route_weights is complex routing"),
        (dict(API, mirror={"host": "x"}), "mirror is complex routing"),
        (dict(API, http_match=[{"headers": {}}]), "http_match is complex routing"),
    ],
)
def test_bad_input_names_service_and_field(svc, fragment):
    with pytest.raises(InvalidInput) as err:
        render([svc])
    assert fragment in str(err.value)
    assert str(err.value).endswith("Nothing was applied.")


@pytest.mark.parametrize("timeout", ["1.5m", "1m30s", "1h", "2.5s", "1500ms", " 90s "])
def test_durations_are_read_by_the_one_parser_and_rendered_as_given(timeout):
    vs = render([dict(API, timeout=timeout, retries={"per_try_timeout": "1s"})])[1]
    assert vs["spec"]["http"][0]["timeout"] == timeout


def test_per_try_timeout_compares_across_units():
    render([dict(API, timeout="0.3s", retries={"per_try_timeout": "300ms"})])
    with pytest.raises(InvalidInput, match=r"retries.per_try_timeout \(1m1s\) must not be longer than timeout \(1m\)"):
        render([dict(API, timeout="1m", retries={"per_try_timeout": "1m1s"})])


def test_duplicates_and_non_mappings_rejected():
    with pytest.raises(InvalidInput, match="is listed twice"):
        render([API, dict(API)])
    with pytest.raises(InvalidInput, match="service #1: entry must be a mapping"):
        render(["api"])


def test_all_errors_reported_together():
    with pytest.raises(InvalidInput) as err:
        render([dict(API, timeout="x"), dict(API, name="web", port=0)])
    assert "service shop/api: timeout" in str(err.value)
    assert "service shop/web: port" in str(err.value)


def test_advanced_routing_allowed_when_asked():
    fault = {"abort": {"httpStatus": 503, "percentage": {"value": 1}}}
    vs = render([dict(API, fault=fault)], advanced=True)[1]
    assert vs["spec"]["http"][0]["fault"] == fault


def foreign_vs(name, host, labels=None):
    return {
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop", "labels": labels or {}},
        "spec": {"hosts": [host]},
    }


def test_foreign_routing_found_by_short_or_full_host():
    desired = render([API])
    found = traffic.foreign([foreign_vs("hand", "api"), foreign_vs("other", "web")], desired)
    assert found == [
        {
            "kind": "VirtualService",
            "namespace": "shop",
            "name": "hand",
            "host": "api.shop.svc.cluster.local",
            "service": "api",
        }
    ]
    assert traffic.foreign([foreign_vs("ours", "api", {MANAGED_LABEL: "true"})], desired) == []


def test_stale_only_returns_managed_objects_not_desired():
    desired = render([API])
    managed = [{"apiVersion": "networking.istio.io/v1", **d} for d in render([dict(API, name="gone")])] + desired
    managed.append(foreign_vs("hand", "gone"))
    stale = traffic.stale(managed, desired)
    assert sorted((s["kind"], s["name"]) for s in stale) == [
        ("DestinationRule", "baseline-gone"),
        ("VirtualService", "baseline-gone"),
    ]
