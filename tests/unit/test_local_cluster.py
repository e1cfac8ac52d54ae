"""The local cluster's build description, checked without building anything."""

import re

import pytest
from conftest import REPO, load_script

cluster = load_script("hack/local-cluster/cluster.py", "meshops_local_cluster")


def test_versions_file_pins_every_component():
    v = cluster.read_versions()
    for key in ("KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION", "ISTIO_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", v[key]), f"{key}={v[key]!r} is not an exact x.y.z pin"
    assert re.fullmatch(r"v0\.0\.0-\d{14}-[0-9a-f]{12}", v["ISTIO_GO_MODULE_VERSION"])


def test_versions_file_rejects_garbage(tmp_path):
    bad = tmp_path / "versions.env"
    bad.write_text("KUBERNETES_VERSION 1.36.3\n")
    with pytest.raises(SystemExit, match="expected KEY=value"):
        cluster.read_versions(bad)


def test_kubernetes_staging_modules_pinned_to_matching_minor():
    comps = {c["name"]: c for c in cluster.components(cluster.read_versions())}
    k8s = comps["kubernetes"]
    minor_patch = cluster.read_versions()["KUBERNETES_VERSION"].split(".", 1)[1]
    assert k8s["staging_replace"] == f"v0.{minor_patch}"
    assert f"gitVersion=v1.{minor_patch}" in k8s["ldflags"], "kubectl version would report v0.0.0"
    assert set(k8s["binaries"]) == {"kube-apiserver", "kube-controller-manager", "kube-scheduler"}


def test_every_binary_the_cluster_needs_is_built():
    built = {b for c in cluster.components(cluster.read_versions()) for b in c["binaries"]}
    assert {"etcd", "kube-apiserver", "kwok", "kwokctl", "helm", "istioctl", "pilot-discovery"} <= built


def test_cache_keys_change_with_versions():
    v = cluster.read_versions()
    keys = {c["name"]: c["key"] for c in cluster.components(v)}
    v2 = dict(v, KUBERNETES_VERSION="1.36.99", ETCD_VERSION="3.6.99")
    keys2 = {c["name"]: c["key"] for c in cluster.components(v2)}
    assert keys["kubernetes"] != keys2["kubernetes"]
    assert keys["etcd"] != keys2["etcd"]
    assert keys["helm"] == keys2["helm"]


def test_cache_dir_outside_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("MESHOPS_CACHE_DIR", raising=False)
    assert REPO not in cluster.cache_dir().parents
    monkeypatch.setenv("MESHOPS_CACHE_DIR", str(tmp_path))
    assert cluster.cache_dir() == tmp_path


@pytest.mark.parametrize("role", ["istio_install_minimal", "telemetry_addons"])
def test_role_istio_version_defaults_follow_the_versions_file(role):
    import yaml

    istio = cluster.read_versions()["ISTIO_VERSION"]
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    option = f"{role}_version"
    assert defaults[option] == istio, f"roles/{role}/defaults/main.yml: {option} is not {istio}"
    assert specs["argument_specs"]["main"]["options"][option]["default"] == istio


def test_the_usage_text_lists_exactly_the_commands():
    import re

    from conftest import load_script

    cluster = load_script("hack/local-cluster/cluster.py", "meshops_cluster_usage")
    usage = re.search(r"Usage: cluster\.py (.*)", cluster.__doc__).group(1)
    assert [c.strip() for c in usage.split("|")] == list(cluster.COMMANDS)
