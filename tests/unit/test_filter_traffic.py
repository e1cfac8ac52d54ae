"""Filters in plugins/filter/traffic.py: input checks, and refusals handed on as AnsibleFilterError.

The validation and rendering are tested in test_traffic.py (plugins/module_utils/traffic.py).
"""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter import traffic as traffic_filters
from ansible_collections.meshops.istio.plugins.filter.traffic import (
    traffic_baseline_foreign,
    traffic_baseline_released,
    traffic_baseline_resources,
)
from ansible_collections.meshops.istio.plugins.module_utils import traffic
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from conftest import assert_registered

API = {"name": "api", "namespace": "shop", "port": 8080}


def test_renders_what_the_decision_renders():
    assert traffic_baseline_resources([API], {}, False) == traffic.resources([API])
    assert traffic_baseline_resources([API]) == traffic.resources([API])


def test_a_refused_service_list_is_a_filter_error_with_the_same_message():
    services = [dict(API, timeout="x"), dict(API, name="web", port=0)]
    with pytest.raises(InvalidInput) as refused:
        traffic.resources(services)
    with pytest.raises(AnsibleFilterError) as err:
        traffic_baseline_resources(services)
    assert str(err.value) == str(refused.value)
    assert str(err.value).startswith("traffic_baseline_resources: service shop/api: timeout must be a duration")
    assert str(err.value).endswith("Nothing was applied.")


def test_inputs_that_are_not_lists_are_refused():
    with pytest.raises(
        AnsibleFilterError, match="traffic_baseline_resources: the service list must be a list, got dict"
    ):
        traffic_baseline_resources({"name": "api"})
    with pytest.raises(AnsibleFilterError, match="traffic_baseline_foreign: expects two lists of objects"):
        traffic_baseline_foreign({}, [])


def test_ambient_mode_and_its_refusals_go_through_the_filters():
    assert traffic_baseline_resources([API], {}, False, "ambient", "edge") == traffic.resources(
        [API], {}, False, "ambient", "edge"
    )
    with pytest.raises(AnsibleFilterError, match="retries has no HTTPRoute equivalent in ambient mode"):
        traffic_baseline_resources([dict(API, retries={"attempts": 1})], {}, False, "ambient")
    ingress = {
        "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": "shop"},
        "spec": {"gatewayClassName": "nginx"},
    }
    with pytest.raises(AnsibleFilterError, match="traffic_baseline_foreign: Gateway shop/waypoint"):
        traffic_baseline_foreign([ingress], traffic.resources([API], {}, False, "ambient"), "meshops-istio-traffic")


def test_released_checks_its_arguments():
    assert traffic_baseline_released([], [], "meshops-istio-traffic") == []
    with pytest.raises(AnsibleFilterError, match="traffic_baseline_released: expects two lists"):
        traffic_baseline_released({}, [], "meshops-istio-traffic")
    with pytest.raises(AnsibleFilterError, match="and a field manager"):
        traffic_baseline_released([], [], "")


def test_registered():
    assert_registered(traffic_filters, 5)
