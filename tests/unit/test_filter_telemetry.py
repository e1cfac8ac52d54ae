"""Filters in plugins/filter/telemetry_addons.py: input checks, and refusals handed on as AnsibleFilterError.

The decisions are tested in test_telemetry_addons.py (plugins/module_utils/telemetry_addons.py).
"""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter import telemetry_addons as telemetry_addons_filters
from ansible_collections.meshops.istio.plugins.filter.telemetry_addons import (
    mesh_extension_providers,
    telemetry_addon_manifest_objects,
    telemetry_addon_objects,
    telemetry_addons_plan,
    telemetry_resources,
    tracing_providers_missing,
)
from ansible_collections.meshops.istio.plugins.module_utils import telemetry_addons
from conftest import assert_registered, filter_error

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "jaeger"}}
BAD_MESH = {"data": {"mesh": "extensionProviders: [unclosed"}}


def test_filters_return_what_the_decisions_return():
    plan = telemetry_addons_plan({"jaeger": {"mode": "install"}})
    assert plan == telemetry_addons.addons_plan({"jaeger": {"mode": "install"}})
    assert telemetry_addon_objects([DEPLOYMENT], "jaeger", plan) == telemetry_addons.addon_objects(
        [DEPLOYMENT], "jaeger", plan
    )
    assert telemetry_addon_manifest_objects({}, plan) == []
    assert telemetry_resources({}) == telemetry_addons.telemetry_resources({})
    assert mesh_extension_providers(None) == ["envoy", "prometheus", "stackdriver"]
    assert tracing_providers_missing([], None) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: telemetry_addons_plan({"grafana": {"mode": "sometimes"}}), "invalid telemetry addon settings"),
        (lambda: telemetry_addon_objects([], "loki", {}), "telemetry_addon_objects: unknown addon 'loki'"),
        (lambda: telemetry_addon_objects([], "jaeger", {}), "the jaeger manifest has no Deployment"),
        (lambda: telemetry_addon_manifest_objects({"kiali": "a: [unclosed"}, {}), "the kiali addon manifest is not"),
        (lambda: telemetry_resources({"sampling_percentage": 150}), "invalid telemetry settings (nothing was changed)"),
        (lambda: mesh_extension_providers(BAD_MESH), "the mesh config in ConfigMap istio is not YAML"),
        (lambda: tracing_providers_missing([], BAD_MESH), "the mesh config in ConfigMap istio is not YAML"),
    ],
)
def test_refusals_are_filter_errors_with_the_message_of_the_decision(call, message):
    assert filter_error(call).startswith(message)


def test_inputs_that_are_not_mappings_are_refused():
    with pytest.raises(AnsibleFilterError, match="telemetry_addons_plan: expects a mapping of addon name"):
        telemetry_addons_plan(["prometheus"])
    with pytest.raises(AnsibleFilterError, match="telemetry_addon_manifest_objects: expects a mapping of addon name"):
        telemetry_addon_manifest_objects(["kiali"], {})


def test_registered():
    assert_registered(telemetry_addons_filters, 8)
