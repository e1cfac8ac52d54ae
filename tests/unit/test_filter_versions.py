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


@pytest.mark.parametrize("kube", ["1.31.9", "v1.37.0", "1.28"])
def test_istio_130_rejects_others_with_remedy(kube):
    result = istio_kubernetes_compatibility("1.30.4", kube)
    assert not result["supported"]
    assert "1.32 to 1.36" in result["message"]
    assert "upgrade" in result["message"]


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
