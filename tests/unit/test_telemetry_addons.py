"""Telemetry addon decisions (plugins/module_utils/telemetry_addons.py): addon settings, objects, Telemetry."""

import json

import pytest
import yaml
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.telemetry_addons import (
    ADDON_LABEL,
    MANAGED_LABEL,
    addon_objects,
    addons_plan,
    conflicts,
    extension_providers,
    manifest_objects,
    stale,
    telemetry_resources,
    tracing_providers_missing,
)

ALL_INSTALL = {name: {"mode": "install"} for name in ("prometheus", "grafana", "kiali", "jaeger")}

KIALI_MANIFEST = [
    None,  # a comment-only document, as in Istio's files
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kiali", "namespace": "istio-system"}},
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kiali", "namespace": "istio-system", "labels": {"app": "kiali"}},
        "data": {
            "config.yaml": "external_services:\n  prometheus:\n    enabled: true\n  tracing:\n    enabled: false\n"
        },
    },
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kiali", "namespace": "istio-system"}},
]


def test_plan_defaults_missing_addons_to_none_and_strips_urls():
    plan = addons_plan({"prometheus": {"mode": "external", "url": "https://prom.example.com/"}})
    assert plan["prometheus"] == {"mode": "external", "url": "https://prom.example.com"}
    assert plan["grafana"] == {"mode": "none", "url": ""}


def test_plan_reports_every_problem_at_once():
    with pytest.raises(InvalidInput) as err:
        addons_plan(
            {
                "prometheus": {"mode": "external"},
                "grafana": {"mode": "sometimes"},
                "kiali": {"mode": "external", "url": "ftp://kiali"},
                "loki": {"mode": "install"},
            }
        )
    text = str(err.value)
    assert "telemetry_addons_prometheus_mode is external but telemetry_addons_prometheus_url is empty" in text
    assert "telemetry_addons_grafana_mode is 'sometimes'" in text
    assert "telemetry_addons_kiali_url 'ftp://kiali' is not an http(s) URL" in text
    assert "unknown addons loki" in text
    assert "nothing was changed" in text


def test_addon_objects_are_labeled_and_skip_empty_documents():
    objs = addon_objects(KIALI_MANIFEST, "kiali", addons_plan(ALL_INSTALL))
    assert [o["kind"] for o in objs] == ["ServiceAccount", "ConfigMap", "Deployment"]
    for obj in objs:
        assert obj["metadata"]["labels"][MANAGED_LABEL] == "true"
        assert obj["metadata"]["labels"][ADDON_LABEL] == "kiali"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshops-istio"
    assert objs[1]["metadata"]["labels"]["app"] == "kiali", "the manifest's own labels are kept"
    assert KIALI_MANIFEST[1]["metadata"].get("labels") is None, "the input is not modified"


def test_manifest_text_of_several_addons_renders_like_each_addon_alone():
    plan = addons_plan(ALL_INSTALL)
    text = "# comment only\n---\n" + yaml.safe_dump_all([d for d in KIALI_MANIFEST if d])
    jaeger = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "jaeger", "namespace": "istio-system"}}
    ]
    both = manifest_objects({"kiali": text, "jaeger": yaml.safe_dump_all(jaeger)}, plan)
    assert both == addon_objects(KIALI_MANIFEST, "kiali", plan) + addon_objects(jaeger, "jaeger", plan)
    assert manifest_objects({}, plan) == []
    with pytest.raises(InvalidInput, match="the kiali addon manifest is not valid YAML"):
        manifest_objects({"kiali": "a: [unclosed"}, plan)


def test_kiali_is_wired_to_external_prometheus_and_installed_tracing_and_grafana():
    plan = addons_plan({**ALL_INSTALL, "prometheus": {"mode": "external", "url": "https://prom.example"}})
    config = yaml.safe_load(addon_objects(KIALI_MANIFEST, "kiali", plan)[1]["data"]["config.yaml"])
    services = config["external_services"]
    assert services["prometheus"] == {"enabled": True, "url": "https://prom.example"}
    assert services["tracing"]["enabled"] is True
    assert services["tracing"]["internal_url"] == "http://tracing.istio-system:16685/jaeger"
    assert services["grafana"]["internal_url"] == "http://grafana.istio-system:3000"


def test_kiali_without_tracing_or_grafana_has_them_disabled():
    plan = addons_plan({"prometheus": {"mode": "install"}, "kiali": {"mode": "install"}})
    config = yaml.safe_load(addon_objects(KIALI_MANIFEST, "kiali", plan)[1]["data"]["config.yaml"])
    assert config["external_services"]["tracing"] == {"enabled": False}
    assert config["external_services"]["grafana"] == {"enabled": False}
    assert config["external_services"]["prometheus"]["url"] == "http://prometheus.istio-system:9090"


def test_dashboard_emoji_become_json_escapes_that_parse_to_the_same_dashboard():
    dashboard = json.dumps({"title": "in (\U0001f510mTLS)"}, ensure_ascii=False)
    manifest = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dash"}, "data": {"a.json": dashboard}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "grafana"}},
    ]
    data = addon_objects(manifest, "grafana", {})[0]["data"]["a.json"]
    assert data.isascii()
    assert json.loads(data) == json.loads(dashboard)


def test_a_manifest_without_deployment_is_not_an_addon():
    with pytest.raises(InvalidInput, match="the jaeger manifest has no Deployment"):
        addon_objects([KIALI_MANIFEST[1]], "jaeger", {})


def test_conflicts_name_unlabeled_objects_only():
    desired = addon_objects(KIALI_MANIFEST, "kiali", addons_plan(ALL_INSTALL))
    live = [
        {"kind": "ServiceAccount", "metadata": {"name": "kiali", "namespace": "istio-system"}},
        {
            "kind": "Deployment",
            "metadata": {"name": "kiali", "namespace": "istio-system", "labels": {MANAGED_LABEL: "true"}},
        },
        {"kind": "ConfigMap", "metadata": {"name": "kiali", "namespace": "other"}},
    ]
    problems = conflicts(desired, live)
    assert len(problems) == 1
    assert problems[0].startswith(
        "ServiceAccount istio-system/kiali already exists and was not created by meshops.istio"
    )
    assert "telemetry_addons_kiali_mode to external" in problems[0]


def test_stale_returns_only_our_objects_that_are_no_longer_wanted():
    desired = addon_objects(KIALI_MANIFEST, "kiali", {})
    live = [
        *desired,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "grafana", "namespace": "istio-system", "labels": {MANAGED_LABEL: "true"}},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "grafana", "labels": {MANAGED_LABEL: "true"}},
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "site", "namespace": "istio-system"}},
    ]
    assert stale(live, desired) == [
        {"apiVersion": "v1", "kind": "Service", "namespace": "istio-system", "name": "grafana"},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "namespace": None, "name": "grafana"},
    ]
    assert len(stale(live, [])) == 5


def test_telemetry_resources_mesh_wide_and_overrides():
    mesh, shop = telemetry_resources(
        {
            "root_namespace": "istio-system",
            "tracing_provider": "zipkin",
            "sampling_percentage": "2.5",
            "access_logging": False,
            "namespace_overrides": [{"namespace": "shop", "sampling_percentage": 100, "access_logging": True}],
        }
    )
    assert mesh["metadata"]["name"] == "mesh-default" and mesh["metadata"]["namespace"] == "istio-system"
    assert mesh["spec"]["tracing"] == [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 2.5}]
    assert mesh["spec"]["accessLogging"] == [{"providers": [{"name": "envoy"}], "disabled": True}]
    assert "metrics" not in mesh["spec"]
    assert shop["metadata"] == {
        "name": "meshops-telemetry",
        "namespace": "shop",
        "labels": mesh["metadata"]["labels"],
    }
    assert shop["spec"]["tracing"][0]["randomSamplingPercentage"] == 100.0
    assert shop["spec"]["accessLogging"][0]["disabled"] is False


def test_no_tracing_provider_disables_span_reporting():
    (mesh,) = telemetry_resources({"tracing_provider": ""})
    assert mesh["spec"]["tracing"] == [{"disableSpanReporting": True}]


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"sampling_percentage": 150}, "telemetry_addons_sampling_percentage is 150: it is a percentage"),
        ({"sampling_percentage": -1}, "telemetry_addons_sampling_percentage is -1"),
        ({"sampling_percentage": "lots"}, "telemetry_addons_sampling_percentage is 'lots'"),
        ({"sampling_percentage": True}, "telemetry_addons_sampling_percentage is True"),
        (
            {"namespace_overrides": [{"namespace": "shop", "sampling_percentage": 101}]},
            "sampling_percentage of namespace shop",
        ),
        ({"namespace_overrides": [{"sampling_percentage": 1}]}, "has no namespace"),
        ({"namespace_overrides": [{"namespace": "shop", "colour": "red"}]}, "unknown keys colour"),
        ({"namespace_overrides": [{"namespace": "shop"}, {"namespace": "shop"}]}, "namespace shop is listed twice"),
        ({"namespace_overrides": [{"namespace": "istio-system"}]}, "is the root namespace"),
    ],
)
def test_invalid_telemetry_settings_rejected(settings, fragment):
    with pytest.raises(InvalidInput) as err:
        telemetry_resources({"root_namespace": "istio-system", "tracing_provider": "zipkin", **settings})
    assert fragment in str(err.value)
    assert "nothing was changed" in str(err.value)


def test_extension_providers_from_mesh_config_plus_builtins():
    cm = {"data": {"mesh": "extensionProviders:\n- name: zipkin\n  zipkin: {service: z, port: 9411}\n"}}
    assert extension_providers(cm) == ["envoy", "prometheus", "stackdriver", "zipkin"]
    assert extension_providers(None) == ["envoy", "prometheus", "stackdriver"]


def test_tracing_providers_missing_from_the_mesh_config_are_named_once_in_order():
    cm = {"data": {"mesh": "extensionProviders:\n- name: zipkin\n  zipkin: {service: z, port: 9411}\n"}}
    root = telemetry_resources({"root_namespace": "istio-system", "tracing_provider": "zipkin"})
    assert tracing_providers_missing(root, cm) == []
    assert tracing_providers_missing(root, None) == ["zipkin"]
    other = [{"spec": {"tracing": [{"providers": [{"name": "otel"}, {"name": "zipkin"}]}]}}, {"spec": {}}]
    assert tracing_providers_missing(root + other + other, cm) == ["otel"]
    assert tracing_providers_missing([{"spec": {"accessLogging": [{}]}}], None) == []
