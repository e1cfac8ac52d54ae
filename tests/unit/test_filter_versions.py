"""Filter meshops.istio.istio_kubernetes_compatibility."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.versions import (
    ISTIO_KUBERNETES_SUPPORT,
    FilterModule,
    istio_kubernetes_compatibility,
)


@pytest.mark.parametrize("kube", ["1.32", "v1.33.0", "1.36.3", "v1.36.3-kwok+abc"])
def test_istio_130_supports_132_to_136(kube):
    result = istio_kubernetes_compatibility("1.30.4", kube)
    assert result["supported"], result["message"]
    assert result["istio_minor"] == "1.30"


@pytest.mark.parametrize("kube", ["1.31.9", "1.28"])
def test_older_kubernetes_refused_with_remedy(kube):
    result = istio_kubernetes_compatibility("1.30.4", kube)
    assert not result["supported"]
    assert "1.32 to 1.36" in result["message"]
    assert "older" in result["message"]
    assert "Upgrade the cluster first" in result["message"]


def test_istio_131_refuses_kubernetes_137_and_says_why():
    result = istio_kubernetes_compatibility("1.31.1", "v1.37.0")
    assert not result["supported"]
    assert result["known_istio"]
    assert "tested on 1.32 to 1.36" in result["message"]
    assert "newer than any of them" in result["message"]


@pytest.mark.parametrize(
    ("istio", "oldest", "newest"),
    [
        ("1.26.8", "1.29", "1.33"),
        ("1.27.5", "1.29", "1.33"),
        ("1.28.6", "1.30", "1.34"),
        ("1.29.4", "1.31", "1.35"),
        ("1.30.5", "1.32", "1.36"),
        ("1.31.1", "1.32", "1.36"),
    ],
)
def test_table_covers_istio_126_to_131(istio, oldest, newest):
    assert istio_kubernetes_compatibility(istio, oldest)["supported"]
    assert istio_kubernetes_compatibility(istio, newest)["supported"]
    below = f"1.{int(oldest.split('.')[1]) - 1}"
    above = f"1.{int(newest.split('.')[1]) + 1}"
    assert not istio_kubernetes_compatibility(istio, below)["supported"]
    assert not istio_kubernetes_compatibility(istio, above)["supported"]


def test_server_version_dict_accepted():
    answer = {"major": "1", "minor": "36+", "gitVersion": "v1.36.3"}
    assert istio_kubernetes_compatibility("1.30.0", answer)["kubernetes_minor"] == "1.36"
    answer_without_git = {"major": "1", "minor": "35+"}
    assert istio_kubernetes_compatibility("1.30.0", answer_without_git)["kubernetes_minor"] == "1.35"


def test_unknown_istio_minor_is_not_supported_and_says_so():
    result = istio_kubernetes_compatibility("1.99.0", "1.36.0")
    assert not result["supported"]
    assert not result["known_istio"]
    assert "compatibility table" in result["message"]


@pytest.mark.parametrize("bad", ["", "latest", "1", None, 130, ["1.30"]])
def test_bad_input_names_filter_and_value(bad):
    with pytest.raises(AnsibleFilterError, match="istio_kubernetes_compatibility"):
        istio_kubernetes_compatibility(bad, "1.36.0")


def test_table_rows_are_five_consecutive_minors():
    for istio, kubes in ISTIO_KUBERNETES_SUPPORT.items():
        minors = [int(k.split(".")[1]) for k in kubes]
        assert minors == list(range(minors[0], minors[0] + 5)), istio


def test_registered():
    assert "istio_kubernetes_compatibility" in FilterModule().filters()
