"""Ambient mode, step 1 (issue 32): Istio's sidecar-less data plane installed and gated on a cluster of its own.

The cluster is this module's own (cluster.py --name ambient-a), so the default cluster the other modules share stays
in sidecar mode. What is real here and what is not (no ztunnel binary runs: kwok only simulates the DaemonSets' pods)
is in docs/local-cluster.md, "Ambient mode on the local cluster".

Order matters (pytest runs a file top to bottom): the refusals run on the empty cluster, then the install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import CLUSTER, REPO, ambient_run, deployment

sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
from localcluster.prometheus import istio_request_series, ztunnel_connection_series


def rollout(ambient, directory: str, host: dict | None = None, check: bool = False):
    """Step 1 over the ambient cluster, as a user runs it; `host` replaces its inventory variables."""
    return ambient_run(ambient, directory, host, **({"check": True} if check else {}))


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
        # The next test installs v1.6.0: the CRDs must be gone. On a cluster just brought up their deletion takes
        # minutes (about 5 here; on a cluster that has run a while, a second), so it is waited for in full.
        kubectl.run("delete", "-f", "-", "--wait=true", stdin=older)


def istiod_status(ambient: dict) -> dict:
    """The ambient cluster's host istiod (default revision): pid and ports, from cluster.py status."""
    status = subprocess.run([*CLUSTER, "--name", ambient["name"], "status"], capture_output=True, check=True).stdout
    return json.loads(status)["istiod_revisions"]["default"]


def host_istiod_env(ambient: dict) -> dict:
    pid = istiod_status(ambient)["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in environ if b"=" in e)


def test_step_1_in_ambient_mode_installs_the_node_agents_and_gates_on_them_and_on_istiods_waypoint_class(ambient):
    """The Gateway API CRDs at the pinned version, base and istiod with profile=ambient, then istio-cni and ztunnel:
    the gate waits for every node agent pod and for istiod to accept GatewayClass istio-waypoint, which only an
    istiod in ambient mode creates. A second run changes nothing, and so does check mode; drift finds nothing."""
    kubectl = ambient["kubectl"]
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
    assert host_istiod_env(ambient).get("PILOT_ENABLE_AMBIENT") == "true"
    monitoring = istiod_status(ambient)["ports"]["monitoring"]
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring}/debug/ambientz", timeout=10) as answer:
        workloads = json.loads(answer.read())["workloads"]
    assert any(w.get("namespace") == "istio-system" and w.get("name", "").startswith("ztunnel") for w in workloads)

    again = rollout(ambient, "install")
    assert again.rc == 0 and again.recap(ambient["name"])["changed"] == 0, again.out[-3000:]
    check = rollout(ambient, "install", check=True)
    assert check.rc == 0 and check.recap(ambient["name"])["changed"] == 0, check.out[-3000:]
    drift = ambient_run(ambient, "drift", playbook="drift.yml")
    assert drift.rc == 0, drift.out[-3000:]
    assert json.loads((ambient["tmp"] / "drift" / "fleet-drift.json").read_text())["clusters"][0]["status"] == "ok"


# ------------------------------------------------------------------ enrollment in waves (steps 2 and 6)

MODE = "istio.io/dataplane-mode"
PENDING = "meshops.istio/injection-pending"


def namespace_with(kubectl, name: str, *workloads: dict) -> None:
    kubectl.run("create", "namespace", name)
    for workload in workloads:
        kubectl.run("apply", "-f", "-", stdin=json.dumps(workload))


def app_pods(kubectl, namespace: str) -> dict:
    """name -> (uid, whether istio-cni marked it redirected) of the namespace's pods."""
    items = kubectl.json("-n", namespace, "get", "pods")["items"]
    return {
        p["metadata"]["name"]: (
            p["metadata"]["uid"],
            (p["metadata"].get("annotations") or {}).get("ambient.istio.io/redirection") == "enabled",
        )
        for p in items
        if not p["metadata"].get("deletionTimestamp")
    }


def hbone_pods(ambient, native: bool = False) -> set:
    """namespace/name of the pods istiod serves over HBONE (its real ambient index): through ztunnel, or (native) the
    sidecars that terminate HBONE themselves."""
    monitoring = istiod_status(ambient)["ports"]["monitoring"]
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring}/debug/ambientz", timeout=10) as answer:
        workloads = json.loads(answer.read())["workloads"]
    return {
        f"{w['namespace']}/{w['name']}"
        for w in workloads
        if w.get("tunnelProtocol") == "HBONE" and bool(w.get("nativeTunnel")) == native
    }


def waves_rollout(ambient, directory: str, waves: list, **kwargs):
    extra = {
        "rollout_stage": "waves",
        "rollout_pilot_namespaces": ["amb-pilot"],
        "rollout_waves": waves,
        "namespace_injection_timeout": 20,
        **kwargs.pop("extra", {}),
    }
    return ambient_run(ambient, directory, extra=extra, **kwargs)


WAVES = [{"name": "first", "namespaces": ["amb-one"]}, {"name": "second", "namespaces": ["amb-two"]}]
PLAN = {"rollout_stage": "waves", "rollout_pilot_namespaces": ["amb-pilot"], "rollout_waves": WAVES}
PODS = ("amb-pilot", "amb-one", "amb-two")


def test_namespaces_enroll_in_waves_without_a_restart_and_a_sidecar_namespace_is_refused(ambient_installed):
    """Steps 2 and 6 in ambient mode: the pilot, then each wave, labeled istio.io/dataplane-mode=ambient; no pod is
    restarted (the same pod UIDs before and after), and each gate waits until istiod serves every pod of the
    namespaces so far over HBONE. A namespace already in sidecar mode is refused before any change; a second run
    changes nothing; drift reports a hand-removed ambient label exactly, and a correcting drift puts it back."""
    ambient, kubectl = ambient_installed, ambient_installed["kubectl"]
    for name in PODS:
        namespace_with(kubectl, name, deployment(name, "web", sidecar=False), deployment(name, "api", sidecar=False))
    namespace_with(kubectl, "amb-side", deployment("amb-side", "web"))
    kubectl.run("label", "namespace", "amb-side", "istio-injection=enabled")
    for name in PODS:
        kubectl.run("-n", name, "rollout", "status", "deployment/web", "deployment/api", "--timeout=60s")

    before = kubectl.snapshot()
    refused = waves_rollout(ambient, "sidecar-ns", [*WAVES, {"name": "side", "namespaces": ["amb-side"]}])
    assert refused.rc != 0
    out = " ".join(refused.out.split())
    assert "Namespace amb-side is in sidecar mode (istio-injection=enabled)" in out, out[-3000:]
    assert kubectl.snapshot() == before
    kubectl.run("delete", "namespace", "amb-side", "--wait=true")
    # No ztunnel runs here to report the applications' traffic (docs/local-cluster.md): the cluster's Prometheus
    # gets Istio-shaped series for them, which steps 3 and 6 judge (the telemetry gate, each wave's analysis).
    series = [s for name in PODS for s in istio_request_series((name, "web"), (name, "api"), rate=5)]
    # And ztunnel's L4 evidence for step 5: a plaintext client (outside the mesh) connects to amb-one's web.
    series += ztunnel_connection_series(("unknown", "unknown"), ("amb-one", "web"), rate=1, mtls=False)
    series += ztunnel_connection_series(("amb-pilot", "web"), ("amb-two", "api"), rate=1, mtls=True)
    Path(ambient["paths"]["metrics_spec"]).write_text(json.dumps({"series": series}))

    pods_before = {name: app_pods(kubectl, name) for name in PODS}
    result = waves_rollout(ambient, "waves", WAVES)
    assert result.rc == 0, result.out[-5000:]
    served = hbone_pods(ambient)
    for name, pods in pods_before.items():
        namespace = kubectl.json("get", "namespace", name)["metadata"]
        assert namespace["labels"].get(MODE) == "ambient", name
        assert PENDING not in (namespace.get("annotations") or {}), name
        now = app_pods(kubectl, name)
        # No restart: the very same pods, each redirected (istio-cni's mark) and served over HBONE by istiod.
        assert {pod: seen[0] for pod, seen in now.items()} == {pod: seen[0] for pod, seen in pods.items()}, name
        assert all(seen[1] for seen in now.values()), (name, now)
        assert {f"{name}/{pod}" for pod in now} <= served, (name, served)

    again = waves_rollout(ambient, "waves-again", WAVES)
    assert again.rc == 0 and again.recap(ambient["name"])["changed"] == 0, again.out[-3000:]
    # Step 5 judged all three (enrolled by now) on ztunnel's evidence: amb-one had a plaintext client.
    said = " ".join(again.out.split())
    assert "Namespace amb-one received plaintext (non-mTLS) traffic" in said, said[-3000:]
    assert "unknown (a client outside the mesh) -> amb-one/web" in said
    assert "Enroll those clients' namespaces (istio.io/dataplane-mode=ambient)" in said

    kubectl.run("label", "namespace", "amb-one", f"{MODE}-")
    drift = ambient_run(
        ambient,
        "drift",
        playbook="drift.yml",
        extra=PLAN,
    )
    assert drift.rc == 0, drift.out[-3000:]
    cluster = json.loads((ambient["tmp"] / "drift" / "fleet-drift.json").read_text())["clusters"][0]
    assert cluster["status"] == "drift", cluster
    assert [(d["kind"], d["name"], d["field"]) for d in cluster["drift"]] == [
        ("Namespace", "amb-one", f"metadata.labels.{MODE}")
    ], cluster["drift"]
    corrected = ambient_run(
        ambient,
        "drift-correct",
        playbook="drift.yml",
        extra={**PLAN, "drift_correct": True},
    )
    assert corrected.rc == 0, corrected.out[-3000:]
    assert kubectl.json("get", "namespace", "amb-one")["metadata"]["labels"].get(MODE) == "ambient"

    # Step 5's evidence in ambient mode: enrolled namespaces are judged by enrollment (not by sidecars they never
    # get), and ztunnel's plaintext connections into amb-one keep it from STRICT.
    verify = ambient_run(ambient, "verify", playbook="verify.yml", extra=PLAN)
    out = " ".join(verify.out.split())
    assert verify.rc == 0, verify.out[-3000:]
    assert "ready for STRICT: amb-pilot, amb-two" in out, out[-3000:]


def test_a_wave_whose_pods_cannot_enroll_is_unlabeled_alone(ambient_installed):
    """A wave whose namespace keeps a sidecar pod nothing can restart (a bare pod) never passes its gate: the ambient
    label is removed from that namespace alone, no pod is restarted, istio-cni's mark goes from its other pods, and
    the earlier waves stay enrolled."""
    ambient, kubectl = ambient_installed, ambient_installed["kubectl"]
    bad = "amb-bad"
    namespace_with(kubectl, bad, deployment(bad, "web", sidecar=False))
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": bad}}
    bare["spec"] = deployment(bad, "bare")["spec"]["template"]["spec"]
    kubectl.run("apply", "-f", "-", stdin=json.dumps(bare))
    kubectl.run("-n", bad, "rollout", "status", "deployment/web", "--timeout=60s")
    spec = Path(ambient["paths"]["metrics_spec"])
    series = json.loads(spec.read_text())["series"] + istio_request_series((bad, "web"), (bad, "web"), rate=5)
    spec.write_text(json.dumps({"series": series}))
    web_before = {pod: seen[0] for pod, seen in app_pods(kubectl, bad).items() if pod != "bare"}

    result = waves_rollout(ambient, "bad-wave", [*WAVES, {"name": "bad", "namespaces": [bad]}])
    assert result.rc != 0
    out = " ".join(result.out.split())
    assert f"Enrolling {bad} failed" in out, out[-4000:]
    assert f"Namespace {bad}: pods still run an istio-proxy sidecar (bare)" in out
    assert (
        f"Rolled back: the ambient label (istio.io/dataplane-mode) was removed from {bad} (no pod was restarted: "
        "ambient mode needs none); no pod there is enrolled any more." in out
    ), out[-4000:]
    meta = kubectl.json("get", "namespace", bad)["metadata"]
    assert MODE not in meta["labels"] and PENDING not in (meta.get("annotations") or {}), meta
    after = app_pods(kubectl, bad)
    assert {pod: seen[0] for pod, seen in after.items() if pod != "bare"} == web_before
    assert not any(seen[1] for seen in after.values()), after
    for name in PODS:
        assert kubectl.json("get", "namespace", name)["metadata"]["labels"].get(MODE) == "ambient", name
    kubectl.run("delete", "namespace", bad, "--wait=false")


# ------------------------------------------------------------------ migration from sidecars, and back

MIGRATING = "amb-mig"


def has_sidecar(pod: dict) -> bool:
    return any(c["name"] == "istio-proxy" for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []))


def live_pods(kubectl, namespace: str) -> list:
    items = kubectl.json("-n", namespace, "get", "pods")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def migrate(ambient, directory: str, to: str, timeout: int = 60):
    plan = {**PLAN, "rollout_waves": [*WAVES, {"name": "sidecars", "namespaces": [MIGRATING]}]}
    extra = {**plan, "migrate_to": to, "migrate_namespaces": [MIGRATING], "rollout_timeout": timeout}
    return ambient_run(ambient, directory, playbook="migrate.yml", extra=extra)


def test_a_sidecar_namespace_migrates_to_ambient_in_istios_order_and_back(ambient_installed):
    """A namespace whose pods got their sidecars from the real injector moves to ambient mode: ambient label, the
    injection label removed, its workloads restarted without sidecars, every pod enrolled as istiod sees it; the
    other namespaces are not touched, and a rerun changes nothing. The way back gives every pod its sidecar again
    from the injector, and istiod no longer serves them over HBONE."""
    ambient, kubectl = ambient_installed, ambient_installed["kubectl"]
    kubectl.run("create", "namespace", MIGRATING)
    kubectl.run("label", "namespace", MIGRATING, "istio-injection=enabled")
    kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(MIGRATING, "web", sidecar=False)))
    kubectl.run("-n", MIGRATING, "rollout", "status", "deployment/web", "--timeout=60s")
    assert all(has_sidecar(p) for p in live_pods(kubectl, MIGRATING)), "the real injector did not inject"
    others = {name: app_pods(kubectl, name) for name in PODS}

    moved = migrate(ambient, "to-ambient", "ambient")
    assert moved.rc == 0, moved.out[-5000:]
    labels = kubectl.json("get", "namespace", MIGRATING)["metadata"]
    assert labels["labels"].get(MODE) == "ambient" and "istio-injection" not in labels["labels"], labels
    assert "meshops.istio/migration-pending" not in (labels.get("annotations") or {})
    pods = live_pods(kubectl, MIGRATING)
    assert pods and not any(has_sidecar(p) for p in pods), [p["metadata"]["name"] for p in pods]
    assert {f"{MIGRATING}/{p['metadata']['name']}" for p in pods} <= hbone_pods(ambient)
    assert {name: app_pods(kubectl, name) for name in PODS} == others
    again = migrate(ambient, "to-ambient-again", "ambient")
    assert again.rc == 0 and again.recap(ambient["name"])["changed"] == 0, again.out[-3000:]

    back = migrate(ambient, "to-sidecar", "sidecar")
    assert back.rc == 0, back.out[-5000:]
    labels = kubectl.json("get", "namespace", MIGRATING)["metadata"]["labels"]
    assert labels.get("istio-injection") == "enabled" and MODE not in labels, labels
    pods = live_pods(kubectl, MIGRATING)
    assert pods and all(has_sidecar(p) for p in pods)
    names = {f"{MIGRATING}/{p['metadata']['name']}" for p in pods}
    # istiod now serves them as sidecars (their own HBONE endpoint), not through ztunnel.
    assert not names & hbone_pods(ambient) and names <= hbone_pods(ambient, native=True)

    # A bare pod (no controller to restart it) keeps its sidecar, so the move's gate cannot pass: the namespace is
    # put back in sidecar mode, the Deployment's pods get their sidecars again, and the run says so.
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": MIGRATING}}
    bare["spec"] = {"containers": [{"name": "bare", "image": "example.com/bare:1"}]}
    kubectl.run("apply", "-f", "-", stdin=json.dumps(bare))
    kubectl.run("-n", MIGRATING, "wait", "pod/bare", "--for=condition=Ready", "--timeout=60s")
    failed = migrate(ambient, "to-ambient-fails", "ambient", timeout=10)
    assert failed.rc != 0
    out = " ".join(failed.out.split())
    assert f"Moving {MIGRATING} to ambient mode failed" in out, out[-4000:]
    assert f"Namespace {MIGRATING}: pods still run an istio-proxy sidecar (bare)" in out, out[-4000:]
    assert f"Put back in sidecar mode: {MIGRATING} (every pod is back and Ready)" in out, out[-4000:]
    meta = kubectl.json("get", "namespace", MIGRATING)["metadata"]
    assert meta["labels"].get("istio-injection") == "enabled" and MODE not in meta["labels"], meta
    assert "meshops.istio/migration-pending" not in (meta.get("annotations") or {})
    assert all(has_sidecar(p) for p in live_pods(kubectl, MIGRATING))
    kubectl.run("-n", MIGRATING, "delete", "pod", "bare", "--wait=true")


def test_a_revision_upgrade_is_refused_in_ambient_mode_before_any_change(ambient_installed):
    """ztunnel and istio-cni have no revisions: the upgrade playbook says to upgrade in place with step 1 instead."""
    ambient, kubectl = ambient_installed, ambient_installed["kubectl"]
    before = kubectl.snapshot()
    result = ambient_run(ambient, "upgrade", playbook="upgrade.yml", extra={"upgrade_version": "1.31.1"})
    assert result.rc != 0
    out = " ".join(result.out.split())
    assert "meshops_dataplane_mode is ambient, and a revision (canary) upgrade only moves sidecars" in out, out[-3000:]
    assert "rerun the rollout's step 1 (rollout_stage: install)" in out
    assert kubectl.snapshot() == before
