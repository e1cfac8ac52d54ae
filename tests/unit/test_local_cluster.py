"""The local cluster's build description, checked without building anything."""

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, load_script
from localcluster.build import components
from localcluster.common import LOCAL_CLUSTER_DIR, cache_dir, read_versions
from localcluster.prometheus import istio_request_series, sidecar_series


def test_versions_file_pins_every_component():
    v = read_versions()
    for key in ("KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION", "ISTIO_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", v[key]), f"{key}={v[key]!r} is not an exact x.y.z pin"
    assert re.fullmatch(r"v0\.0\.0-\d{14}-[0-9a-f]{12}", v["ISTIO_GO_MODULE_VERSION"])


def test_versions_file_rejects_garbage(tmp_path):
    bad = tmp_path / "versions.env"
    bad.write_text("KUBERNETES_VERSION 1.36.3\n")
    with pytest.raises(SystemExit, match="expected KEY=value"):
        read_versions(bad)


def test_kubernetes_staging_modules_pinned_to_matching_minor():
    comps = {c["name"]: c for c in components(read_versions())}
    k8s = comps["kubernetes"]
    minor_patch = read_versions()["KUBERNETES_VERSION"].split(".", 1)[1]
    assert k8s["staging_replace"] == f"v0.{minor_patch}"
    assert f"gitVersion=v1.{minor_patch}" in k8s["ldflags"], "kubectl version would report v0.0.0"
    assert set(k8s["binaries"]) == {"kube-apiserver", "kube-controller-manager", "kube-scheduler"}


def test_every_binary_the_cluster_needs_is_built():
    built = {b for c in components(read_versions()) for b in c["binaries"]}
    assert {"etcd", "kube-apiserver", "kwok", "kwokctl", "helm", "istioctl", "pilot-discovery", "pilot-agent"} <= built


def test_cache_keys_change_with_versions():
    v = read_versions()
    keys = {c["name"]: c["key"] for c in components(v)}
    v2 = dict(v, KUBERNETES_VERSION="1.36.99", ETCD_VERSION="3.6.99")
    keys2 = {c["name"]: c["key"] for c in components(v2)}
    assert keys["kubernetes"] != keys2["kubernetes"]
    assert keys["etcd"] != keys2["etcd"]
    assert keys["helm"] == keys2["helm"]


def test_cache_dir_outside_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("MESHOPS_CACHE_DIR", raising=False)
    assert REPO not in cache_dir().parents
    monkeypatch.setenv("MESHOPS_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path


@pytest.mark.parametrize("role", ["istio_install_minimal", "telemetry_addons"])
def test_role_istio_version_defaults_follow_the_versions_file(role):
    import yaml

    istio = read_versions()["ISTIO_VERSION"]
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    option = f"{role}_version"
    assert defaults[option] == istio, f"roles/{role}/defaults/main.yml: {option} is not {istio}"
    assert specs["argument_specs"]["main"]["options"][option]["default"] == istio


def test_the_usage_text_lists_exactly_the_commands():
    cluster = load_script("hack/local-cluster/cluster.py", "meshops_cluster_usage")
    usage = re.search(r"Usage: cluster\.py (.*)", cluster.__doc__).group(1)
    assert [c.strip() for c in usage.split("|")] == list(cluster.COMMANDS)


def test_the_command_line_runs_by_path_from_any_directory(tmp_path):
    """Make, Molecule and the supervisor `up` starts run cluster.py by path; it finds its package beside it."""
    script = str(REPO / "hack" / "local-cluster" / "cluster.py")
    proc = subprocess.run([sys.executable, script, "paths"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["istio_version"] == read_versions()["ISTIO_VERSION"]
    usage = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert usage.returncode == 2
    assert "Usage: cluster.py " in usage.stderr
    # The files the package starts by path: the supervisor's command line and the loopback Prometheus.
    assert (REPO / "hack" / "local-cluster").resolve() == LOCAL_CLUSTER_DIR
    assert (LOCAL_CLUSTER_DIR / "loopback_prometheus.py").is_file()


def test_loopback_source_serves_histograms_gauges_and_label_conditions(tmp_path):
    loopback = load_script("hack/local-cluster/loopback_prometheus.py", "loopback_prometheus")
    series = istio_request_series(("a", "web"), ("b", "api"), 10.0, errors=0.25, latency_ms=120)
    series += sidecar_series("b", "api-1", 0.5, 64 * 2**20, when_labeled="b")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"series": series}))
    source = loopback.CounterSource(spec)
    source.injection.get = lambda: {"b"}
    source.render()
    source.last -= 2.0  # two seconds of traffic
    text = source.render()
    source_side = 'reporter="source",request_protocol="http",response_code="503"'
    assert re.search(r"istio_requests_total\{[^}]*" + source_side + r"[^}]*\} 5\.\d+", text)
    # 120 ms falls in the (100, 250] bucket: le=100 stays empty, le=250 and +Inf hold every request.
    assert re.search(r'le="100",[^}]*reporter="source"[^}]*\} 0\.000', text)
    assert re.search(r'le="250",[^}]*reporter="source"[^}]*\} 20\.\d+', text)
    assert 'container_memory_working_set_bytes{container="istio-proxy",namespace="b",pod="api-1"} 67108864.000' in text
    # One TYPE line per family, each family in one group.
    assert text.count("# TYPE istio_requests_total counter") == 1
    source.injection.get = set  # nothing labeled
    assert "container_memory_working_set_bytes" not in source.render()
