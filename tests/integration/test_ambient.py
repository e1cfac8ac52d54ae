"""Ambient mode, step 1 (issue 32): Istio's sidecar-less data plane installed and gated on a cluster of its own.

The cluster is this module's own (cluster.py --name ambient-a), so the default cluster the other modules share stays
in sidecar mode. What is real here and what is not (no ztunnel binary runs: kwok only simulates the DaemonSets' pods)
is in docs/local-cluster.md, "Ambient mode on the local cluster".

Order matters (pytest runs a file top to bottom): the refusals run on the empty cluster, then the install.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import CLUSTER, Kubectl, fleet_inventory, local_cluster_vars, named_clusters, run_fleet_playbook

NAME = "ambient-a"
PLAY = "PLAY [Staged Istio rollout]"


@pytest.fixture(scope="module")
def ambient(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ambient")
    paths = named_clusters([NAME])[NAME]
    host = {
        **local_cluster_vars(paths),
        "meshops_dataplane_mode": "ambient",
        "istio_install_minimal_gateway_api_url": paths["gateway_api_crds"],
    }
    yield {
        "tmp": tmp,
        "paths": paths,
        "kubectl": Kubectl(paths["kubeconfig"]),
        "host": host,
        "inventory": fleet_inventory(tmp / "inventory", {NAME: host}),
    }
    named_clusters([NAME], "down")


def rollout(ambient, directory: str, host: dict | None = None, check: bool = False):
    """Step 1 over the ambient cluster, as a user runs it; `host` replaces its inventory variables."""
    options = {"rollout_stage": "install", "rollout_report_dir": str(ambient["tmp"] / directory)}
    inventory = ambient["inventory"] if host is None else fleet_inventory(ambient["tmp"] / directory, {NAME: host})
    flags = {"check": True} if check else {}
    return run_fleet_playbook("playbooks/rollout.yml", inventory, options, ambient["tmp"], **flags)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            {"istio_install_minimal_method": "istioctl"},
            "istio_install_minimal_dataplane_mode is ambient, which this collection installs with Helm only",
        ),
        (
            {"istio_install_minimal_gateway_api_url": "https://gateway-api.invalid/standard-install.yaml"},
            "set istio_install_minimal_gateway_api_sha256 to the sha256 of https://gateway-api.invalid/",
        ),
    ],
)
def test_ambient_mode_is_refused_before_any_change_when_it_cannot_be_installed_safely(ambient, host, message):
    before = ambient["kubectl"].snapshot()
    result = rollout(ambient, "refused", host={**ambient["host"], **host})
    assert result.rc != 0
    assert message in " ".join(result.out.split()), result.out[-3000:]
    assert ambient["kubectl"].snapshot() == before


def test_gateway_api_crds_of_another_version_are_not_replaced(ambient):
    """Another tool's Gateway API CRDs (v1.5.1 here) stay as they are: the preflight names them and stops."""
    kubectl = ambient["kubectl"]
    crds = Path(ambient["paths"]["gateway_api_crds"]).read_text()
    older = crds.replace("bundle-version: v1.6.0", "bundle-version: v1.5.1")
    kubectl.run("apply", "--server-side", "--field-manager=another-tool", "-f", "-", stdin=older)
    try:
        before = kubectl.snapshot()
        result = rollout(ambient, "refused")
        assert result.rc != 0
        out = " ".join(result.out.split())
        assert "Preflight: Gateway API CRDs v1.5.1 (standard channel) are installed" in out, out[-3000:]
        assert "not v1.6.0 (standard channel)" in out
        assert kubectl.snapshot() == before
        gateway = kubectl.json("get", "crd", "gateways.gateway.networking.k8s.io")
        assert gateway["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == "v1.5.1"
    finally:
        kubectl.run("delete", "-f", "-", "--wait=true", stdin=older)


def host_istiod_env(paths: dict) -> dict:
    status = json.loads(subprocess.run([*CLUSTER, "--name", NAME, "status"], capture_output=True, check=True).stdout)
    pid = status["istiod_revisions"]["default"]["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in environ if b"=" in e)


def test_step_1_in_ambient_mode_installs_the_node_agents_and_gates_on_them_and_on_istiods_waypoint_class(ambient):
    """The Gateway API CRDs at the pinned version, base and istiod with profile=ambient, then istio-cni and ztunnel:
    the gate waits for every node agent pod and for istiod to accept GatewayClass istio-waypoint, which only an
    istiod in ambient mode creates. A second run changes nothing, and so does check mode; drift finds nothing."""
    kubectl, paths = ambient["kubectl"], ambient["paths"]
    result = rollout(ambient, "install")
    assert result.rc == 0, result.out[-4000:]
    releases = kubectl.json("-n", "istio-system", "get", "secrets", "-l", "owner=helm,status=deployed")["items"]
    assert sorted(r["metadata"]["labels"]["name"] for r in releases) == ["istio-base", "istio-cni", "istiod", "ztunnel"]
    nodes = len(kubectl.json("get", "nodes")["items"])
    for name in ("istio-cni-node", "ztunnel"):
        status = kubectl.json("-n", "istio-system", "get", "daemonset", name)["status"]
        assert status["desiredNumberScheduled"] == status["numberReady"] == nodes, (name, status)
    gateway = kubectl.json("get", "crd", "gateways.gateway.networking.k8s.io")
    assert gateway["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == "v1.6.0"
    klass = kubectl.json("get", "gatewayclass", "istio-waypoint")
    assert klass["spec"]["controllerName"] == "istio.io/mesh-controller"
    assert {c["type"]: c["status"] for c in klass["status"]["conditions"]}["Accepted"] == "True"
    # The real istiod runs in ambient mode: the chart's PILOT_ENABLE_AMBIENT reached the host process, and its
    # ambient index lists the cluster's pods (the node agents' among them).
    assert host_istiod_env(paths).get("PILOT_ENABLE_AMBIENT") == "true"
    monitoring = json.loads(
        subprocess.run([*CLUSTER, "--name", NAME, "status"], capture_output=True, check=True).stdout
    )["istiod_revisions"]["default"]["ports"]["monitoring"]
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring}/debug/ambientz", timeout=10) as answer:
        workloads = json.loads(answer.read())["workloads"]
    assert any(w.get("namespace") == "istio-system" and w.get("name", "").startswith("ztunnel") for w in workloads)

    again = rollout(ambient, "install")
    assert again.rc == 0 and again.recap(NAME)["changed"] == 0, again.out[-3000:]
    check = rollout(ambient, "install", check=True)
    assert check.rc == 0 and check.recap(NAME)["changed"] == 0, check.out[-3000:]
    drift = run_fleet_playbook(
        "playbooks/drift.yml",
        ambient["inventory"],
        {"rollout_stage": "install", "drift_report_dir": str(ambient["tmp"] / "drift")},
        ambient["tmp"],
    )
    assert drift.rc == 0, drift.out[-3000:]
    assert json.loads((ambient["tmp"] / "drift" / "fleet-drift.json").read_text())["clusters"][0]["status"] == "ok"
