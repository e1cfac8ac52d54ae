"""Issue 14's revision (canary) upgrade against the real local cluster: two control plane revisions at once.

Revision A (1-30-4) runs the previous Istio build (ISTIO_PREVIOUS_VERSION) and revision B (1-31-1) the default one,
each served by its own host pilot-discovery (docs/local-cluster.md). A pilot namespace and one wave are injected
by A, as a rollout on A leaves them. Then the upgrade playbook:

1. with the wave's applications failing (40 % 503s), moves the pilot to B, fails the wave's bake and moves the wave
   back alone: the pilot on B, the wave on A, tag `stable` still on A, and a message that says how to go on;
2. rolls back: every namespace on A again;
3. with the cause fixed, upgrades, killed (SIGKILL) once the wave's move has begun, then rerun: every namespace on B
   labeled `stable`, `stable` on B, revision A removed;
4. reruns with nothing to change.

The default revision the suite installed stays untouched throughout (the namespaces here select by revision).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import CLUSTER, LOCAL_GROUP_VARS, LOCAL_INVENTORY, REPO, Result, deployment, playbook_env, run_playbook

sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
from localcluster.istiod import revision_install_values  # the one place for a revision's host ports
from localcluster.ports import cluster_block

A, B = "1-30-4", "1-31-1"
# Host istiod slots (0 is the default revision's): A and B each get their own webhook port.
SLOT = {A: 1, B: 2}


def revision_values(revision: str) -> dict:
    """revision_install_values for the revision's slot on the session's cluster, in that cluster's port block (make
    test runs test_zzz_upgrade_helm.py on a cluster of its own); asked once the cluster is up."""
    return revision_install_values(revision, SLOT[revision], cluster_block())


def install_values(revision: str) -> dict:
    """The local install values with the revision's own webhook URLs over them (a deep merge of two levels)."""
    values = yaml.safe_load(LOCAL_GROUP_VARS.read_text())["istio_install_minimal_values"]
    for key, value in revision_values(revision).items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return values


def injected_revisions(kubectl, namespace: str) -> list:
    """The revision that injected each live pod of the namespace (None for a pod without sidecar)."""
    out = []
    for pod in kubectl.json("-n", namespace, "get", "pods")["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        status = pod["metadata"].get("annotations", {}).get("sidecar.istio.io/status")
        out.append(json.loads(status).get("revision") if status else None)
    return sorted(out, key=str)


def rev_label(kubectl, namespace: str) -> str | None:
    return kubectl.json("get", "namespace", namespace)["metadata"].get("labels", {}).get("istio.io/rev")


def tag_revision(kubectl, tag: str) -> str | None:
    found = kubectl.run("get", "mutatingwebhookconfiguration", f"istio-revision-tag-{tag}", "-o", "json", check=False)
    return json.loads(found.stdout)["metadata"]["labels"]["istio.io/rev"] if found.returncode == 0 else None


def istiod_revisions(kubectl) -> list:
    deployments = kubectl.json("-n", "istio-system", "get", "deployments", "-l", "app=istiod")["items"]
    return sorted(d["metadata"]["labels"].get("istio.io/rev", "default") for d in deployments)


def upgrade_inventory(tmp, host_vars: dict):
    """The local inventory with step 1's settings of the running revision as host vars, as on a real one: extra vars
    (-e) would win over the new revision's own (the upgrade's preflight refuses them). The local group_vars load
    beside it."""
    inventory = tmp / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(LOCAL_INVENTORY.read_text())
    (inventory / "group_vars").symlink_to(LOCAL_GROUP_VARS.parent)
    (inventory / "host_vars" / "local-cluster.yml").write_text(json.dumps(host_vars))
    return inventory


@pytest.fixture(scope="module")
def start(cluster, kubectl, tmp_path_factory):
    """Revision A installed beside the suite's default revision, a pilot and a wave injected by it."""
    from conftest import LoopbackPrometheus

    subprocess.run([*CLUSTER, "build", "--previous"], check=True)
    from conftest import cluster_paths

    paths = cluster_paths()
    tmp = tmp_path_factory.mktemp("upgrade")
    suffix = str(int(time.time()))[-6:]
    pilot, wave = f"up-pilot-{suffix}", f"up-wave-{suffix}"
    for ns in (pilot, wave):
        kubectl.run("create", "namespace", ns)
        for name in ("web", "api"):
            kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(ns, name, sidecar=False)))
    for ns in (pilot, wave):
        kubectl.run("-n", ns, "rollout", "status", "deployment/web", "deployment/api", "--timeout=120s")
    if "default" not in istiod_revisions(kubectl):
        # The suite's step 1 tests leave a default revision (its validator answers for every revision); alone,
        # this file installs it as they do.
        default = {"istio_install_minimal_method": "istioctl", "istio_install_minimal_allow_upgrade": True}
        default = run_playbook("install_minimal.yml", default, tmp)
        assert default.rc == 0, default.out[-4000:]
    prom = LoopbackPrometheus(tmp / "prometheus")
    common = {
        "istio_install_minimal_method": "istioctl",
        "istio_install_minimal_timeout": 120,
        "istio_install_minimal_revision": A,
        "istio_install_minimal_version": paths["previous_istio_version"],
    }
    installed = run_playbook(
        "install_minimal.yml",
        {
            **common,
            "istio_install_minimal_istioctl_binary": f"{paths['previous_bin_dir']}/istioctl",
            "istio_install_minimal_values": install_values(A),
            # The suite's default revision runs beside it.
            "istio_install_minimal_allow_upgrade": True,
        },
        tmp,
    )
    assert installed.rc == 0, installed.out[-4000:]
    injected = run_playbook(
        "namespace_injection.yml",
        {"namespace_injection_namespaces": [pilot, wave], "namespace_injection_revision": A},
        tmp,
    )
    assert injected.rc == 0, injected.out[-4000:]
    for ns in (pilot, wave):
        assert injected_revisions(kubectl, ns) == [A, A], ns
    inventory = upgrade_inventory(tmp, common)
    options = {
        "rollout_pilot_namespaces": [pilot],
        "rollout_waves": [{"name": "first", "namespaces": [wave]}],
        "rollout_timeout": 120,
        "meshops_prometheus_url": prom.url,
        "meshops_target": "local-cluster",
        "upgrade_version": paths["istio_version"],
        "upgrade_values": revision_values(B),
        "rollout_report_dir": str(tmp / "rollout-report"),
    }
    yield {"pilot": pilot, "wave": wave, "prom": prom, "tmp": tmp, "options": options, "inventory": inventory}
    prom.stop()
    for ns in (pilot, wave):
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
    for tag in ("stable", "canary"):
        kubectl.run("delete", "mutatingwebhookconfiguration", f"istio-revision-tag-{tag}", check=False)
    for revision in (A, B):
        # Both revisions were applied from istioctl's rendered manifests, not by `istioctl install`: their objects
        # are found by the istio.io/rev label (as the role's remove_revision finds them), tag webhooks already gone.
        namespaced = "deployments,services,configmaps,serviceaccounts,roles,rolebindings,hpa,pdb"
        cluster_scoped = (
            "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations"
        )
        kubectl.run("-n", "istio-system", "delete", namespaced, "-l", f"istio.io/rev={revision}", check=False)
        kubectl.run("delete", cluster_scoped, "-l", f"istio.io/rev={revision},!istio.io/tag", check=False)


def upgrade_command(start, playbook: str = "upgrade.yml", **extra) -> list:
    """A collection playbook (the upgrade's by default) with the test's inventory (step 1's settings as host vars)
    and the options as extra vars."""
    options = start["tmp"] / f"upgrade-{time.monotonic_ns()}.json"
    options.write_text(json.dumps({**start["options"], **extra}))
    inventory = str(start["inventory"] / "hosts.yml")
    return ["ansible-playbook", "-i", inventory, str(REPO / "playbooks" / playbook), "-e", f"@{options}"]


def upgrade(start, playbook: str = "upgrade.yml", **extra) -> Result:
    begin = time.monotonic()
    cmd = upgrade_command(start, playbook, **extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=playbook_env(), check=False)
    return Result(proc, time.monotonic() - begin)


def upgrade_killed_when(start, moment, what: str, **extra) -> str:
    """Start the upgrade, SIGKILL it (controller and every module process) as soon as moment() holds; its output."""
    out = start["tmp"] / f"killed-{time.monotonic_ns()}.log"
    with out.open("w") as log:
        proc = subprocess.Popen(
            upgrade_command(start, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=playbook_env(),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 600
            while not moment():
                assert proc.poll() is None, f"the upgrade ended before {what}: {out.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return out.read_text()


def traffic(start, errors: float) -> None:
    """The pilot's web calls the wave's api; `errors` is the share of 503s."""
    prom = start["prom"]
    prom.set_series(prom.series_for((start["pilot"], "web"), (start["wave"], "api"), 4.0, errors=errors))
    prom.wait_for(f'istio_requests_total{{reporter="source",destination_workload_namespace="{start["wave"]}"}}')


def test_a_failed_wave_moves_back_alone_and_rollback_returns_every_namespace(kubectl, start):
    pilot, wave = start["pilot"], start["wave"]
    traffic(start, errors=0.4)
    first = upgrade(start)
    assert first.rc != 0, first.out[-4000:]
    out = " ".join(first.out.split())
    assert f"Moving first ({wave}) to revision {B} failed" in out, out[-4000:]
    assert "success rate" in out, out[-4000:]
    assert f"It was moved back to tag stable (revision {A}), and every pod there runs that revision again" in out
    assert f"Already moved and left on {B}: pilot." in out, out[-4000:]
    assert "rerun the same command to resume at first, or roll every namespace back with upgrade_action=rollback" in out
    # The pilot on B (canary tag), the wave back on A (stable tag, still pointing at A), both revisions running.
    assert (rev_label(kubectl, pilot), injected_revisions(kubectl, pilot)) == ("canary", [B, B])
    assert (rev_label(kubectl, wave), injected_revisions(kubectl, wave)) == ("stable", [A, A])
    assert (tag_revision(kubectl, "stable"), tag_revision(kubectl, "canary")) == (A, B)
    assert {A, B} <= set(istiod_revisions(kubectl))
    # The upgrade's report: the pilot moved (no bake), the wave's failed bake and its move back.
    report = json.loads((start["tmp"] / "rollout-report" / "local-cluster-upgrade.json").read_text())
    assert report["outcome"] == "stopped" and f"Moving first ({wave})" in report["message"], report["message"]
    assert [(w["name"], w["decision"]) for w in report["waves"]] == [
        ("pilot", "done, no bake"),
        ("first", "failed, rolled back"),
    ]
    assert report["waves"][1]["analyses"] and not any(a["passed"] for a in report["waves"][1]["analyses"])
    assert re.search(r"Bake of [\w-]+: analysis 1/\d+ .* - FAILED", out), out[-4000:]

    back = upgrade(start, upgrade_action="rollback")
    assert back.rc == 0, back.out[-4000:]
    for ns in (pilot, wave):
        assert (rev_label(kubectl, ns), injected_revisions(kubectl, ns)) == ("stable", [A, A]), ns
    assert tag_revision(kubectl, "stable") == A


def test_the_upgrade_killed_mid_way_resumes_moves_every_namespace_and_removes_the_old_revision(kubectl, start):
    pilot, wave = start["pilot"], start["wave"]
    traffic(start, errors=0.0)
    # The wave's bake is the first test's subject; here one analysis (bake time 0) gates the healthy wave.
    quick = {"rollout_bake_time": "0"}
    # Killed once the wave's move has begun (its label changed; its restart under way or not yet started): the
    # pilot on B, the wave labeled for B with pods on A still, tag stable on A, the run lock left behind.
    killed = upgrade_killed_when(start, lambda: rev_label(kubectl, wave) == "canary", "the wave's move", **quick)
    assert (rev_label(kubectl, pilot), injected_revisions(kubectl, pilot)) == ("canary", [B, B]), killed[-4000:]
    assert tag_revision(kubectl, "stable") == A, killed[-4000:]

    result = upgrade(start, **quick)
    assert result.rc == 0, result.out[-4000:]
    for ns in (pilot, wave):
        assert (rev_label(kubectl, ns), injected_revisions(kubectl, ns)) == ("stable", [B, B]), ns
    assert (tag_revision(kubectl, "stable"), tag_revision(kubectl, "canary")) == (B, B)
    revisions = istiod_revisions(kubectl)
    assert B in revisions and A not in revisions, revisions
    assert f"Upgraded to Istio {start['options']['upgrade_version']}, revision {B}" in " ".join(result.out.split())

    again = upgrade(start, **quick)
    assert again.rc == 0, again.out[-4000:]
    assert again.recap("local-cluster")["changed"] == 0, again.out[-4000:]
