"""Install decisions (plugins/module_utils/install.py): conflicts, drift, chart downloads, manifests."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput
from ansible_collections.meshops.istio.plugins.module_utils.install import (
    METHOD_LABEL,
    chart_downloads,
    conflicts,
    control_plane_drift,
    manifests,
    retired_sources,
)

INDEX = {
    "apiVersion": "v1",
    "entries": {
        "base": [
            {"version": "1.30.4", "digest": "AB" * 32, "urls": ["base-1.30.4.tgz"]},
            {"version": "1.30.3", "digest": "cd" * 32, "urls": ["https://mirror.example/base-1.30.3.tgz"]},
        ],
        "istiod": [{"version": "1.30.4", "digest": "ef" * 32, "urls": ["charts/istiod-1.30.4.tgz"]}],
    },
}


def test_downloads_resolve_relative_urls_and_digests():
    out = chart_downloads(INDEX, ["base", "istiod"], "1.30.4", "http://127.0.0.1:8000/charts/", {})
    assert out[0] == {
        "name": "base",
        "url": "http://127.0.0.1:8000/charts/base-1.30.4.tgz",
        "sha256": "ab" * 32,
        "file": "base-1.30.4.tgz",
    }
    assert out[1]["url"] == "http://127.0.0.1:8000/charts/charts/istiod-1.30.4.tgz"


def test_downloads_keep_absolute_urls_and_take_overrides():
    out = chart_downloads(INDEX, ["base"], "1.30.3", "http://repo", {"base": "11" * 32})
    assert out[0]["url"] == "https://mirror.example/base-1.30.3.tgz"
    assert out[0]["sha256"] == "11" * 32


def test_missing_version_names_chart_and_remedy():
    with pytest.raises(InvalidInput, match=r"chart 'istiod' version 1.30.3 is not in the repository index"):
        chart_downloads(INDEX, ["istiod"], "1.30.3", "http://repo", {})


def test_index_without_entries_rejected():
    with pytest.raises(InvalidInput, match="has no 'entries'"):
        chart_downloads({"apiVersion": "v1"}, ["base"], "1.30.4", "http://repo", {})


def test_missing_digest_rejected():
    index = {"entries": {"base": [{"version": "1.30.4", "urls": ["b.tgz"]}]}}
    with pytest.raises(InvalidInput, match=r"istio_install_minimal_chart_sha256\.base"):
        chart_downloads(index, ["base"], "1.30.4", "http://repo", {})


ISTIOD = {"name": "istiod", "namespace": "istio-system", "revision": "default", "version": "1.30.4"}


def test_no_conflict_for_same_install():
    assert conflicts([dict(ISTIOD, install_method="helm")], "1.30.4", "default", "helm") == []
    assert conflicts([], "1.30.4", "default", "helm") == []


def test_conflicts_name_the_deployment_and_difference():
    found = [dict(ISTIOD, version="1.29.2", revision="canary", install_method="istioctl")]
    out = conflicts(found, "1.30.4", "default", "helm")
    assert out == [
        "Deployment istio-system/istiod runs Istio 1.29.2, not 1.30.4.",
        "Deployment istio-system/istiod belongs to revision 'canary', not 'default'.",
        "Deployment istio-system/istiod was installed with istioctl, not helm.",
    ]


def test_control_plane_drift_entries_name_field_declared_and_live():
    found = [dict(ISTIOD, version="1.30.4", revision="1-30-4", install_method="helm")]
    assert control_plane_drift(found, "1.31.1", "1-31-1", "helm") == [
        {
            "step": "install",
            "kind": "Deployment",
            "namespace": "istio-system",
            "name": "istiod",
            "field": "Istio version",
            "declared": "1.31.1",
            "live": "1.30.4",
        },
        {
            "step": "install",
            "kind": "Deployment",
            "namespace": "istio-system",
            "name": "istiod",
            "field": "revision",
            "declared": "1-31-1",
            "live": "1-30-4",
        },
    ]
    assert control_plane_drift([dict(ISTIOD, install_method="helm")], "1.30.4", "", "helm") == []


def test_unknown_method_is_not_a_conflict():
    assert conflicts([dict(ISTIOD, install_method="unknown")], "1.30.4", "", "helm") == []


RENDERED = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: istio-validator-istio-system
webhooks:
  - name: rev.validation.istio.io
    failurePolicy: Ignore
    clientConfig:
      caBundle: Zm9v
      url: https://localhost:15017/validate
---
# a comment-only document
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istiod
  namespace: istio-system
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: virtualservices.networking.istio.io
"""


def test_manifests_ordered_labelled_and_stripped_of_istiod_fields():
    docs = manifests(RENDERED, "istioctl")
    assert [d["kind"] for d in docs] == [
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "Deployment",
    ]
    assert all(d["metadata"]["labels"][METHOD_LABEL] == "istioctl" for d in docs)
    hook = docs[1]["webhooks"][0]
    assert "failurePolicy" not in hook
    assert "caBundle" not in hook["clientConfig"]
    assert hook["clientConfig"]["url"] == "https://localhost:15017/validate"


def test_manifests_reject_bad_yaml():
    with pytest.raises(InvalidInput, match="istio_manifests: the rendered manifests are not valid YAML"):
        manifests("a: [b", "istioctl")


def test_manifests_given_as_objects_are_copied():
    given = [{"kind": "Namespace", "metadata": {"name": "istio-system"}}, {"no": "kind"}]
    (doc,) = manifests(given, "helm")
    assert doc["metadata"]["labels"] == {METHOD_LABEL: "helm"}
    assert "labels" not in given[0]["metadata"]


DEFAULT_SOURCES = {
    "chart_source": "repository",
    "chart_repository": "https://blob.istio.io/istio-release/charts",
    "chart_oci": "oci://ghcr.io/istio/release/charts",
    "hub": "docker.io/istio",
}


def test_current_defaults_are_not_retired():
    assert retired_sources(DEFAULT_SOURCES) == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"chart_repository": "https://istio-release.storage.googleapis.com/charts"}, "chart_repository is https://"),
        ({"chart_source": "oci", "chart_oci": "oci://gcr.io/istio-release/charts"}, "chart_oci is oci://gcr.io"),
        ({"hub": "gcr.io/istio-release"}, "hub is gcr.io/istio-release"),
        ({"hub": "registry.istio.io/release"}, "hub is registry.istio.io/release"),
    ],
)
def test_retired_sources_named(changes, named):
    found = retired_sources({**DEFAULT_SOURCES, **changes})
    assert len(found) == 1
    assert named in found[0]


def test_retired_repository_ignored_when_charts_come_from_elsewhere():
    options = {
        **DEFAULT_SOURCES,
        "chart_source": "local",
        "chart_repository": "https://istio-release.storage.googleapis.com/charts",
    }
    assert retired_sources(options) == []
    assert retired_sources({**DEFAULT_SOURCES, "hub": "registry.istio.io.example.com/istio"}) == []
