"""Issue 14's revision upgrade by Helm, last in the session on a local cluster started afresh.

The suite installed its Istio with istioctl, whose base objects (CRDs, the default validator) Helm will not take
over; a Helm-installed mesh starts from an empty cluster, so this file restarts the local cluster first when it holds
Istio's CRDs. make test runs it on a cluster of its own instead (MESHOPS_CLUSTER_NAME=helm-upgrade), empty from the
start.

Revision A (1-30-4) is installed by step 1's role with Helm from the previous Istio's charts: the istio-base release
(CRDs and the default validator, which calls A) and istiod-1-30-4. A pilot namespace is injected by A. The upgrade
playbook then upgrades istio-base to B's chart with B's values (the default validator now calls B), installs
istiod-1-31-1 beside A's release, moves the pilot, points tag stable at B and uninstalls A's release. A rerun changes
nothing. The chart directory holds both versions' charts, as an air-gapped mirror does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import CLUSTER, LoopbackPrometheus, cluster_paths, deployment, run_playbook
from test_upgrade import (
    A,
    B,
    injected_revisions,
    install_values,
    istiod_revisions,
    rev_label,
    revision_values,
    tag_revision,
    upgrade,
    upgrade_inventory,
)


def helm_releases(paths: dict) -> dict:
    """Release name -> chart (name-version) of the Istio namespace's Helm releases."""
    cmd = [f"{paths['bin_dir']}/helm", "--kubeconfig", paths["kubeconfig"], "-n", "istio-system", "list", "-o", "json"]
    listed = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {release["name"]: release["chart"] for release in listed}


def default_validator_url(kubectl) -> str:
    found = kubectl.json("get", "validatingwebhookconfiguration", "istiod-default-validator")
    return found["webhooks"][0]["clientConfig"]["url"]


@pytest.fixture(scope="module")
def helm_start(cluster, kubectl, tmp_path_factory, request):
    """A fresh local cluster with revision A installed by Helm and a pilot namespace injected by it."""
    # After the suite's other modules on the default cluster, its istioctl-installed Istio goes with a restart; make
    # test runs this module on a cluster of its own (MESHOPS_CLUSTER_NAME), which holds no Istio yet.
    if any(name.endswith(".istio.io") for name in kubectl.run("get", "crd", "-o", "name").stdout.split()):
        subprocess.run([*CLUSTER, "down"], check=True)
        subprocess.run([*CLUSTER, "up"], check=True)
    subprocess.run([*CLUSTER, "build", "--previous"], check=True)
    paths = cluster_paths()
    tmp = tmp_path_factory.mktemp("upgrade-helm")
    charts = tmp / "charts"
    charts.mkdir()
    for version, folder in (
        (paths["previous_istio_version"], "previous_charts_dir"),
        (paths["istio_version"], "charts_dir"),
    ):
        for chart in ("base", "istiod"):
            (charts / f"{chart}-{version}.tgz").symlink_to(f"{paths[folder]}/{chart}-{version}.tgz")
    pilot = f"up-helm-{str(int(time.time()))[-6:]}"
    kubectl.run("create", "namespace", pilot)
    for name in ("web", "api"):
        kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(pilot, name, sidecar=False)))
    kubectl.run("-n", pilot, "rollout", "status", "deployment/web", "deployment/api", "--timeout=120s")
    common = {
        "istio_install_minimal_method": "helm",
        "istio_install_minimal_chart_dir": str(charts),
        "istio_install_minimal_timeout": 120,
        "istio_install_minimal_revision": A,
        "istio_install_minimal_version": paths["previous_istio_version"],
    }
    installed = run_playbook(
        "install_minimal.yml",
        {**common, "istio_install_minimal_values": install_values(A)},
        tmp,
    )
    assert installed.rc == 0, installed.out[-4000:]
    injected = run_playbook(
        "namespace_injection.yml", {"namespace_injection_namespaces": [pilot], "namespace_injection_revision": A}, tmp
    )
    assert injected.rc == 0, injected.out[-4000:]
    assert injected_revisions(kubectl, pilot) == [A, A]
    prom = LoopbackPrometheus(tmp / "prometheus")
    options = {
        "rollout_pilot_namespaces": [pilot],
        "rollout_waves": [],
        "rollout_timeout": 120,
        "meshops_prometheus_url": prom.url,
        "meshops_target": "local-cluster",
        "upgrade_version": paths["istio_version"],
        "upgrade_values": revision_values(B),
    }
    # install_values(A) on top of the local group_vars, as the inventory of a cluster running A declares them.
    inventory = upgrade_inventory(tmp, {**common, "istio_install_minimal_values": install_values(A)})
    yield {"pilot": pilot, "paths": paths, "prom": prom, "tmp": tmp, "options": options, "inventory": inventory}
    prom.stop()
    # What the suite's other tests expect (no Helm-owned Istio) comes back with a fresh cluster, when a test runs after
    # this module or the cluster outlives the session; last in a session that ends with `down`, that does it.
    items = request.session.items
    last = max(i for i, item in enumerate(items) if item.module is request.module)
    if items[last + 1 :] or os.environ.get("MESHOPS_KEEP_CLUSTER") == "1":
        subprocess.run([*CLUSTER, "down"], check=True)
        subprocess.run([*CLUSTER, "up"], check=True)


def test_a_helm_installed_mesh_upgrades_by_revision_and_the_base_chart_follows(kubectl, helm_start):
    paths, pilot = helm_start["paths"], helm_start["pilot"]
    previous, current = paths["previous_istio_version"], paths["istio_version"]
    assert helm_releases(paths) == {"istio-base": f"base-{previous}", f"istiod-{A}": f"istiod-{previous}"}
    assert default_validator_url(kubectl) == revision_values(A)["base"]["validationURL"]

    # Drift reads the releases from Helm's own Secrets: one value declared differently is named, in both releases,
    # and nothing else of step 1 is (so the chart versions and every other value matched).
    changed = {**install_values(A), "pilot": {"env": {"MESHOPS_DRIFT_PROBE": "1"}}}
    report = helm_start["tmp"] / "drift"
    drift = upgrade(helm_start, "drift.yml", istio_install_minimal_values=changed, drift_report_dir=str(report))
    assert drift.rc == 0, drift.out[-4000:]
    found = json.loads((report / "local-cluster.json").read_text())["drift"]
    install = sorted(
        (e["kind"], e["name"], e["field"], e["declared"], e["live"]) for e in found if e["step"] == "install"
    )
    assert install == [
        ("HelmRelease", "istio-base", "values.pilot.env.MESHOPS_DRIFT_PROBE", "1", "(absent)"),
        ("HelmRelease", f"istiod-{A}", "values.pilot.env.MESHOPS_DRIFT_PROBE", "1", "(absent)"),
    ], found

    result = upgrade(helm_start)
    assert result.rc == 0, result.out[-4000:]
    assert (rev_label(kubectl, pilot), injected_revisions(kubectl, pilot)) == ("stable", [B, B])
    assert (tag_revision(kubectl, "stable"), tag_revision(kubectl, "canary")) == (B, B)
    assert istiod_revisions(kubectl) == [B]
    # The base chart went with the new revision: its chart version, and its default validator calls B now.
    assert helm_releases(paths) == {"istio-base": f"base-{current}", f"istiod-{B}": f"istiod-{current}"}
    assert default_validator_url(kubectl) == revision_values(B)["base"]["validationURL"]

    again = upgrade(helm_start)
    assert again.rc == 0, again.out[-4000:]
    assert again.recap("local-cluster")["changed"] == 0, again.out[-4000:]
