"""Filters in plugins/filter/install.py: input checks, and refusals handed on as AnsibleFilterError.

The decisions are tested in test_install.py (plugins/module_utils/install.py) and test_helm_release.py.
"""

import pytest
from ansible_collections.meshops.istio.plugins.filter import install as install_filters
from ansible_collections.meshops.istio.plugins.filter.install import (
    control_plane_drift,
    helm_chart_downloads,
    helm_release_drift,
    istio_install_conflicts,
    istio_manifests,
    retired_istio_sources,
)
from ansible_collections.meshops.istio.plugins.module_utils import install, readiness
from conftest import assert_registered, filter_error

ISTIOD = [{"name": "istiod", "namespace": "istio-system", "revision": "canary", "version": "1.30.4"}]
INDEX = {"entries": {"base": [{"version": "1.30.4", "digest": "ab" * 32, "urls": ["base-1.30.4.tgz"]}]}}


def test_gateway_api_problems_filter_hands_on_the_decision_and_checks_its_input():
    report = {"installed": True, "bundle_version": "v1.5.1", "channel": "standard", "crds": ["gateways.x"]}
    assert install_filters.gateway_api_problems(report, "1.6.0") == readiness.gateway_api_problems(report, "1.6.0")
    assert install_filters.gateway_api_problems({"installed": False}, "1.6.0") == []
    with pytest.raises(Exception, match="gateway_api_problems: expected istio_readiness's gateway_api"):
        install_filters.gateway_api_problems([], "1.6.0")


def test_chart_downloads_into_a_directory_are_verified_download_files():
    """With a directory, each chart is an entry of verified_download's files option, in the order given."""
    index = {"entries": {**INDEX["entries"], "cni": [{"version": "1.30.4", "digest": "CD" * 32, "urls": ["c.tgz"]}]}}
    assert helm_chart_downloads(index, ["cni", "base"], "1.30.4", "http://repo/", {}, "/cache/istio/") == [
        {"url": "http://repo/c.tgz", "dest": "/cache/istio/cni-1.30.4.tgz", "sha256": "cd" * 32},
        {"url": "http://repo/base-1.30.4.tgz", "dest": "/cache/istio/base-1.30.4.tgz", "sha256": "ab" * 32},
    ]


def test_filters_return_what_the_decisions_return():
    assert istio_install_conflicts(ISTIOD, "1.30.4", "", "helm") == install.conflicts(ISTIOD, "1.30.4", "", "helm")
    assert control_plane_drift(ISTIOD, "1.30.4", "", "helm") == install.control_plane_drift(
        ISTIOD, "1.30.4", "", "helm"
    )
    assert helm_chart_downloads(INDEX, ["base"], "1.30.4", "http://repo") == install.chart_downloads(
        INDEX, ["base"], "1.30.4", "http://repo", {}
    )
    assert istio_manifests("kind: Namespace\nmetadata: {name: x}\n") == install.manifests(
        "kind: Namespace\nmetadata: {name: x}\n"
    )
    assert retired_istio_sources({"hub": "gcr.io/istio-release"}) == ["The image hub is gcr.io/istio-release."]
    assert helm_release_drift([], [], "istio-system") == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: helm_chart_downloads({"apiVersion": "v1"}, ["base"], "1.30.4", "http://repo"),
            "helm_chart_downloads: the chart repository index at http://repo has no 'entries': check the repository",
        ),
        (
            lambda: helm_chart_downloads(INDEX, ["istiod"], "1.30.4", "http://repo"),
            "helm_chart_downloads: chart 'istiod' version 1.30.4 is not in the repository index at http://repo",
        ),
        (lambda: istio_manifests("a: [b", "istioctl"), "istio_manifests: the rendered manifests are not valid YAML"),
    ],
)
def test_refusals_are_filter_errors_with_the_message_of_the_decision(call, message):
    assert filter_error(call).startswith(message)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: istio_install_conflicts({"istiod": []}, "1.30.4", "", "helm"), "istio_install_conflicts: expected"),
        (lambda: control_plane_drift({"istiod": []}, "1.30.4", "", "helm"), "control_plane_drift: expected the istiod"),
        (
            lambda: helm_release_drift({"istiod": {}}, [], "istio-system"),
            "helm_release_drift: expected the helm_releases",
        ),
        (lambda: istio_manifests(42, "istioctl"), "istio_manifests: expected YAML text or a list of objects, got int"),
        (lambda: retired_istio_sources(["docker.io/istio"]), "retired_istio_sources: expected a dict"),
    ],
)
def test_inputs_of_the_wrong_type_are_refused(call, message):
    assert filter_error(call).startswith(message)


def test_registered():
    assert_registered(install_filters, 7)
