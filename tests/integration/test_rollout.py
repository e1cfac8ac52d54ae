"""Step 6 and day two against the real local cluster: the rollout, drift and verify playbooks.

One rollout is shared by the file (module fixture): a pilot namespace and one wave of plain
Deployments that the real istiod injects. The first run is killed right after the pilot is
labeled and before its workloads restart; rerunning must converge with no cleanup. Then each
kind of drift is made by hand, reported, corrected, and the next drift report is clean.
Istio was installed by the step 1 tests with istioctl, so the rollout uses that method.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, api_writes, deployment, playbook_command, playbook_env, run_playbook, service

sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
import awx_injection  # what AWX does with the shipped credential type
import browser  # Debian's headless Chromium over the DevTools protocol (the HTML report's check)
import dataplane  # real sidecars: pilot-agent and upstream Envoy on loopback (issue 18)

# The baseline of the data-plane Service (namespace ro-mesh-*): values apart from the role's defaults, small
# enough to observe (a 1 s request timeout cut into 400 ms tries; a host ejected after four 5xx for 2 s).
ECHO_BASELINE = {
    "name": "echo",
    "port": 80,
    "timeout": "1s",
    "retries": {"attempts": 2, "per_try_timeout": "400ms", "retry_on": "5xx"},
    "load_balancer": "RANDOM",
    "outlier_detection": {
        "consecutive_5xx_errors": 4,
        "interval": "1s",
        "base_ejection_time": "2s",
        "max_ejection_percent": 100,
    },
}


INSTALL = {"rollout_stage": "install"}


METRICS = ("error_rate", "p99_ms", "sidecar_memory")  # the report's charts per wave


def options_for(pilot: str, wave: str, mesh: str, prom) -> dict:
    """The rollout the file shares: pilot, one wave, the data plane's namespace, the Prometheus scraping it."""
    return {
        "istio_install_minimal_method": "istioctl",
        "istio_install_minimal_timeout": 120,
        "rollout_pilot_namespaces": [pilot],
        "rollout_waves": [{"name": "first", "namespaces": [wave]}],
        "rollout_timeout": 120,
        "telemetry_addons_tracing_provider": "",
        "telemetry_addons_grafana_mode": "none",
        "telemetry_addons_jaeger_mode": "none",
        "telemetry_addons_kiali_mode": "install",
        "telemetry_addons_prometheus_url": prom.url,
        "telemetry_addons_metrics_namespaces": [pilot, wave],
        "telemetry_addons_timeout": 60,
        "traffic_baseline_services": [
            {"name": "api", "namespace": pilot, "port": 80, "timeout": "5s"},
            {**ECHO_BASELINE, "namespace": mesh},
        ],
        "mtls_permissive_scope": "namespaces",
        "mtls_permissive_namespaces": [pilot, wave, mesh],
        "mtls_permissive_prometheus_url": prom.url,
        "mtls_permissive_window": 60,
        "namespace_injection_prometheus_url": prom.url,
        "meshops_target": "local-cluster",
    }


def istiod_serves(kubectl, namespace: str, seconds: float = 10) -> bool:
    """istiod runs and has published its root certificate in namespace (what a sidecar needs to start)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        args = ("-n", namespace, "get", "configmap", "istio-ca-root-cert", "--ignore-not-found", "-o", "name")
        if kubectl.run(*args).stdout.strip():
            return True
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def setup(kubectl, tmp_path_factory):
    from conftest import LoopbackPrometheus

    tmp = tmp_path_factory.mktemp("rollout")
    suffix = str(int(time.time()))[-6:]
    pilot, wave, mesh = f"ro-pilot-{suffix}", f"ro-wave-{suffix}", f"ro-mesh-{suffix}"
    # The data plane's namespace: a Service whose only endpoint is a real sidecar on loopback (see `mesh`).
    kubectl.run("create", "namespace", mesh)
    kubectl.run("apply", "-f", "-", stdin=json.dumps(dataplane.Mesh.service_object(mesh)))
    # Labeled like a finished wave (it has no pods to inject), so step 5's readiness can allow STRICT there.
    kubectl.run("label", "namespace", mesh, "istio-injection=enabled")
    for ns in (pilot, wave):
        kubectl.run("create", "namespace", ns)
        for name in ("web", "api"):
            kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(ns, name, sidecar=False)))
            kubectl.run("apply", "-f", "-", stdin=json.dumps(service(ns, name)))
    for ns in (pilot, wave):
        kubectl.run("-n", ns, "rollout", "status", "deployment/web", "deployment/api", "--timeout=120s")
    # The gates read real traffic: an application behind a real sidecar in the pilot and in the wave (workload
    # echo, a Service of its own, never a kwok pod), called by a client sidecar in the data plane's namespace.
    prom = LoopbackPrometheus(tmp / "prometheus")
    options = {**options_for(pilot, wave, mesh, prom), "rollout_report_dir": str(tmp / "rollout-report")}
    if not istiod_serves(kubectl, mesh):  # this file run alone: step 1 first, as the rollout would do it
        installed = run_playbook("playbooks/rollout.yml", {**options, **INSTALL}, tmp)
        assert installed.rc == 0, installed.out[-3000:]
    plane = dataplane.DataPlane()
    try:
        caller = plane.client(mesh, "loadgen")
        echoes = {ns: plane.server(ns) for ns in (pilot, wave)}
        plane.start()
        for echo in echoes.values():
            plane.load(caller, echo, rps=5)
        for ns in (pilot, wave):
            prom.wait_for(f'istio_requests_total{{reporter="source",destination_workload_namespace="{ns}"}}', 60)
        yield {
            "pilot": pilot,
            "wave": wave,
            "mesh": mesh,
            "options": options,
            "tmp": tmp,
            "prom": prom,
            "plane": plane,
            "caller": caller,
        }
    finally:
        plane.stop()
        prom.stop()
    telemetry_off = {**options, "telemetry_addons_state": "absent"}
    run_playbook("telemetry_addons.yml", telemetry_off, tmp)
    for ns in (pilot, wave, mesh):
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def mesh(setup):
    """Two real sidecars in the data-plane namespace, started once the first rollout has installed Istio: the
    application 'echo' behind a server sidecar, and a client sidecar whose outbound listener the test calls."""
    started = dataplane.Mesh(setup["mesh"])
    try:
        yield started.start()
    finally:
        started.stop()


def sidecars(kubectl, namespace) -> list:
    pods = kubectl.json("-n", namespace, "get", "pods")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return sorted(any(c["name"] == "istio-proxy" for c in p["spec"]["containers"]) for p in live)


def labeled(kubectl, namespace) -> bool:
    return kubectl.json("get", "namespace", namespace)["metadata"].get("labels", {}).get("istio-injection") == "enabled"


def test_rollout_killed_between_labeling_and_restart_resumes_and_converges(kubectl, setup):
    pilot, tmp = setup["pilot"], setup["tmp"]
    cmd = playbook_command("playbooks/rollout.yml", setup["options"], tmp)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(), start_new_session=True
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "namespace_injection : Restart only the workloads" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert any("Restart only the workloads" in line for line in seen), "".join(seen[-60:])
    # Interrupted exactly there: labeled, but the pods have not been restarted into sidecars.
    assert labeled(kubectl, pilot)
    assert sidecars(kubectl, pilot) == [False, False]

    resumed = run_playbook("playbooks/rollout.yml", setup["options"], tmp)
    assert resumed.rc == 0, resumed.out[-4000:]
    assert "Rollout complete" in resumed.out
    for ns in (pilot, setup["wave"]):
        assert labeled(kubectl, ns) and sidecars(kubectl, ns) == [True, True], ns
    # The wave (healthy traffic) passed its bake: two analyses, none failed (the pilot is not analysed).
    record = last_analysis(kubectl, setup["wave"])
    assert record["passed"] is True and record["analyses"] == 2 and record["failures"] == 0, record
    assert last_analysis(kubectl, pilot) == {}
    # That the resumed run left nothing for a further run to change is the next test's first drift report: exactly
    # the four hand changes and nothing else (Molecule's idempotence step reruns a whole rollout).


def test_the_sidecars_enforce_the_declared_baseline(mesh):
    """Step 4 in the data plane: the rollout's VirtualService and DestinationRule, as istiod sent them to a real
    Envoy, and what that Envoy does with them."""
    route, cluster = mesh.route()["route"], mesh.cluster()
    retry = route["retry_policy"]
    assert (route["timeout"], retry["retry_on"], retry["num_retries"], retry["per_try_timeout"]) == (
        "1s",
        "5xx",
        2,
        "0.400s",
    ), route
    assert cluster["lb_policy"] == "RANDOM", cluster
    outlier = cluster["outlier_detection"]
    assert (outlier["consecutive_5xx"], outlier["interval"], outlier["base_ejection_time"]) == (4, "1s", "2s")
    assert outlier["max_ejection_percent"] == 100, outlier

    # Timeouts: each try is cut at 400 ms and retried, the request at 1 s: a 504 after three tries.
    hits, cut = mesh.app.hits, mesh.cluster_stat("upstream_rq_per_try_timeout")
    reply = mesh.get("/delay/3000")
    assert reply.status == 504 and "upstream request timeout" in reply.body, reply
    assert 0.9 <= reply.seconds < 2.5, reply
    assert (mesh.app.hits - hits, mesh.cluster_stat("upstream_rq_per_try_timeout") - cut) == (3, 2)
    assert mesh.get("/").status == 200  # a success: the outlier count starts again

    # Retries on 5xx: two more attempts, counted by Envoy and by the application.
    hits, retried = mesh.app.hits, mesh.cluster_stat("upstream_rq_retry")
    assert mesh.get("/status/503").status == 503
    assert (mesh.app.hits - hits, mesh.cluster_stat("upstream_rq_retry") - retried) == (3, 2)

    # Outlier detection: the fourth consecutive 5xx ejects the only host, so the next request never reaches it;
    # after the base ejection time it is back.
    ejected = mesh.cluster_stat("outlier_detection.ejections_enforced_total")
    hits = mesh.app.hits
    reply = mesh.get("/status/503")
    assert mesh.cluster_stat("outlier_detection.ejections_enforced_total") == ejected + 1
    # Envoy's main thread ejects the host and then tells the workers: under load (make test runs the static checks
    # beside this) the first retry can still reach it before the worker hears, so one or two attempts reach it.
    assert mesh.app.hits - hits in (1, 2) and "no healthy upstream" in reply.body, (reply, mesh.app.hits - hits)
    assert "no healthy upstream" in mesh.get("/").body
    deadline = time.monotonic() + 15
    while mesh.get("/").status != 200:
        assert time.monotonic() < deadline, "the ejected host never came back"
        time.sleep(0.5)
    mesh.client.assert_nothing_rejected()


def test_permissive_sidecars_take_mtls_with_the_workload_identity_and_plaintext(setup, mesh):
    """Step 5 in the data plane: under the rollout's PERMISSIVE policy a sidecar caller arrives over mTLS with its
    SPIFFE identity, and a caller without a sidecar is still served in plaintext."""
    identity = f"spiffe://cluster.local/ns/{setup['mesh']}/sa/client"
    certs = json.loads(mesh.client.admin("/certs"))["certificates"]
    sans = [san.get("uri") for c in certs for chain in c.get("cert_chain", []) for san in chain["subject_alt_names"]]
    assert sans == [identity], certs  # issued by istiod's CA through pilot-agent's SDS
    reply = mesh.get("/")
    assert reply.status == 200, reply
    assert f"URI={identity}" in json.loads(reply.body)["x-forwarded-client-cert"], reply.body
    plain = mesh.plaintext("/")
    assert plain.status == 200 and "x-forwarded-client-cert" not in json.loads(plain.body), plain


def drift_report(setup, name, **extra) -> tuple:
    report_dir = setup["tmp"] / f"drift-{name}"
    result = run_playbook(
        "playbooks/drift.yml", {**setup["options"], "drift_report_dir": str(report_dir), **extra}, setup["tmp"]
    )
    data = (
        json.loads((report_dir / "local-cluster.json").read_text())
        if (report_dir / "local-cluster.json").exists()
        else None
    )
    return result, data, report_dir


def plaintext_refused(mesh) -> bool:
    try:
        mesh.plaintext("/")
    except (ConnectionError, http.client.HTTPException):
        return True
    return False


def plaintext_seen(setup, namespace: str, window: int) -> list:
    """What the destination sidecars reported without mutual TLS into namespace in the window (the evidence)."""
    return setup["prom"].query(
        f'increase(istio_requests_total{{reporter="destination",destination_workload_namespace="{namespace}",'
        f'connection_security_policy!="mutual_tls"}}[{window}s]) > 0'
    )


def strict_options(setup) -> dict:
    return {
        "mtls_permissive_scope": "namespaces",
        "mtls_permissive_namespaces": [setup["mesh"]],
        "mtls_permissive_prometheus_url": setup["prom"].url,
        "mtls_permissive_window": 60,  # the shortest the role reads (two scrapes of a real Prometheus)
    }


def test_strict_readiness_names_a_real_plaintext_caller_and_strict_is_refused(setup, mesh):
    """Step 5's evidence from real connections: a caller without a sidecar sends plaintext to the server sidecar,
    whose stats report connection_security_policy none from an unknown source, and STRICT is refused naming that
    caller. Then the caller is meshed: it calls through the client sidecar, over mTLS, from now on (the test
    after the drift tests finds the window clean and applies STRICT)."""
    caller = mesh.plane.plaintext_load(mesh.echo, rps=4)
    try:
        setup["prom"].wait_for(
            f'istio_requests_total{{reporter="destination",destination_workload_namespace="{setup["mesh"]}",'
            'connection_security_policy="none",source_workload="unknown"}'
        )
        options = {**strict_options(setup), "mtls_permissive_mode": "STRICT"}
        refused = run_playbook("mtls_permissive.yml", options, setup["tmp"])
        assert refused.rc != 0, refused.out[-3000:]
        out = " ".join(refused.out.split())
        said = f"Namespace {setup['mesh']} received plaintext (non-mTLS) traffic in the last 60s"
        assert said in out, out[-3000:]
        assert f"unknown (a client without a sidecar) -> {setup['mesh']}/echo" in out, out[-3000:]
        assert "Nothing was changed" in out
        assert caller.replies.get(200, 0) > 0, caller.replies  # PERMISSIVE served it
    finally:
        caller.stop()
    setup["meshed_caller"] = mesh.plane.load(mesh.client, mesh.echo, rps=2)


def test_drift_in_each_kind_of_object_is_reported_then_restored(kubectl, setup, mesh):
    """Four hand changes reported, corrected, and the next report clean. Nothing else is reported, so the resumed
    rollout of the first test left every step converged. The hand-edited timeout reaches the real sidecar, and so
    does the correction."""
    pilot = setup["pilot"]
    kubectl.run("label", "namespace", pilot, "istio-injection-")
    kubectl.run(
        "-n",
        setup["mesh"],
        "patch",
        "virtualservices.networking.istio.io",
        "baseline-echo",
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/http/0/timeout", "value": "30s"}]',
    )
    kubectl.run(
        "-n",
        pilot,
        "patch",
        "peerauthentications.security.istio.io",
        "default",
        "--type=merge",
        "-p",
        '{"spec": {"mtls": {"mode": "DISABLE"}}}',
    )
    kubectl.run("-n", "istio-system", "delete", "service", "kiali")
    # Not drift: the replicas of an addon Deployment that an autoscaler owns, scaled as the autoscaler would
    # (Istio's kiali manifest declares replicas: 1, so without the autoscaler this would be drift).
    scaled = "kiali"
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": scaled}
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{scaled}-by-hand", "namespace": "istio-system"},
        "spec": {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 3},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(hpa))
    kubectl.run("-n", "istio-system", "scale", "deployment", scaled, "--replicas=2")
    mesh.wait_for_route_timeout("30s")

    result, data, report_dir = drift_report(setup, "changed", drift_fail_on_drift=True)
    assert result.rc != 0, "drift_fail_on_drift must fail the job"
    found = {(d["kind"], d["name"], d["field"]): (d["declared"], d["live"]) for d in data["drift"]}
    assert found[("Namespace", pilot, "metadata.labels.istio-injection")] == ("enabled", "(absent)")
    assert found[("VirtualService", "baseline-echo", "spec.http[0].timeout")] == ("1s", "30s")
    assert found[("PeerAuthentication", "default", "spec.mtls.mode")] == ("PERMISSIVE", "DISABLE")
    assert found[("Service", "kiali", "(object)")] == ("present", "missing")
    assert len(found) == 4, data["drift"]
    markdown = (report_dir / "local-cluster.md").read_text()
    assert "| traffic | VirtualService " in markdown and "`spec.http[0].timeout` | 1s | 30s |" in markdown

    labeled_by_us = {
        "virtualservices": "meshops.istio/traffic-baseline=true",
        "destinationrules": "meshops.istio/traffic-baseline=true",
        "peerauthentications": "meshops.istio/mtls=true",
        "telemetries": "meshops.istio/telemetry=true",
    }
    before = api_writes(kubectl, tuple(labeled_by_us))
    result, data, _report_dir = drift_report(setup, "correct", drift_correct=True)
    assert result.rc == 0, result.out[-4000:]
    assert len(data["drift"]) == 4
    # The correction converges each declared object with one write, not one per declaring run (issue 17).
    writes = {r: n - before[r] for r, n in api_writes(kubectl, tuple(labeled_by_us)).items()}
    declared = {r: len(kubectl.json("get", r, "-A", "-l", sel)["items"]) for r, sel in labeled_by_us.items()}
    assert all(writes[r] <= declared[r] for r in labeled_by_us), (writes, declared)
    assert writes["virtualservices"] >= 1 and writes["peerauthentications"] >= 1, (writes, declared)
    assert "Restored 4 drifted field(s)" in result.out
    assert labeled(kubectl, pilot)
    vs = kubectl.json("-n", setup["mesh"], "get", "virtualservices.networking.istio.io", "baseline-echo")
    assert vs["spec"]["http"][0]["timeout"] == "1s"
    mesh.wait_for_route_timeout("1s")
    reply = mesh.get("/delay/3000")
    assert reply.status == 504 and reply.seconds < 2.5, reply

    # The correction applied the addon's declared replicas; without its autoscaler they are compared again.
    kubectl.run("-n", "istio-system", "delete", "horizontalpodautoscaler", f"{scaled}-by-hand")
    result, data, _report_dir = drift_report(setup, "after", drift_fail_on_drift=True)
    assert result.rc == 0, result.out[-4000:]
    assert data["drift"] == []
    # The report names the control plane it compared: the live istiod runs the declared version and revision.
    control_plane = data["control_plane"]
    assert control_plane["drift"] == []
    assert [(i["version"], i["revision"]) for i in control_plane["live"]] == [
        (control_plane["declared"]["version"], control_plane["declared"]["revision"])
    ]


def test_drift_reports_what_a_converge_would_delete_with_switches_from_the_inventory(kubectl, setup):
    """A service dropped from the declared baseline: its objects are live but no longer declared. drift_report_dir
    and drift_fail_on_drift set on the inventory host are honoured (play vars overrode them once)."""
    report_dir = setup["tmp"] / "drift-from-inventory"
    inventory = setup["tmp"] / "inventory.yml"
    host_vars = {"drift_report_dir": str(report_dir), "drift_fail_on_drift": True}
    inventory.write_text(json.dumps({"meshops_clusters": {"hosts": {"local-cluster": host_vars}}}))
    cmd = playbook_command("playbooks/drift.yml", {**setup["options"], "traffic_baseline_services": []}, setup["tmp"])
    cmd[cmd.index("-i") + 1] = str(inventory)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=playbook_env(), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Drift found on local-cluster" in out, out[-3000:]
    data = json.loads((report_dir / "local-cluster.json").read_text())
    found = {(d["step"], d["kind"], d["name"], d["field"]): (d["declared"], d["live"]) for d in data["drift"]}
    assert found == {
        ("traffic", kind, name, "(object)"): ("absent", "present")
        for kind in ("DestinationRule", "VirtualService")
        for name in ("baseline-api", "baseline-echo")
    }, data["drift"]
    # The wave's last analysis is in the report, read from the dry run.
    assert any(a.startswith(f"{setup['wave']}: passed at ") for a in data["analyses"]), data["analyses"]
    # Report only: nothing was deleted.
    kubectl.run("-n", setup["pilot"], "get", "virtualservices.networking.istio.io", "baseline-api")


def test_drift_reports_the_control_plane_version_and_revision_against_the_declared(kubectl, setup):
    """An install declared on another revision than the live one is drift to report (field, declared, live), not a
    preflight refusal; the report names the live control plane, and nothing is installed."""
    result, data, report_dir = drift_report(setup, "revision", istio_install_minimal_revision="canary")
    assert result.rc == 0, result.out[-3000:]
    found = {(d["step"], d["kind"], d["name"], d["field"]): (d["declared"], d["live"]) for d in data["drift"]}
    assert found[("install", "Deployment", "istiod", "revision")] == ("canary", "default"), data["drift"]
    assert ("install", "Deployment", "istiod", "Istio version") not in found
    live = data["control_plane"]["live"]
    assert [(i["name"], i["version"], i["revision"]) for i in live] == [
        ("istiod", data["control_plane"]["declared"]["version"], "default")
    ]
    markdown = (report_dir / "local-cluster.md").read_text()
    assert "## Control plane" in markdown
    assert "- declared: Istio " in markdown and ", revision canary" in markdown
    assert "| install | Deployment istio-system/istiod | `revision` | canary | default |" in markdown
    deployments = kubectl.json("-n", "istio-system", "get", "deployments", "-l", "app=istiod")["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["istiod"], "drift must not install the canary"


def test_verify_summarises_every_gate(setup):
    result = run_playbook("playbooks/verify.yml", setup["options"], setup["tmp"])
    assert result.rc == 0, result.out[-4000:]
    for line in (
        "1 control plane : OK",
        "2 sidecars      : OK",
        "3 telemetry     : OK",
        "5 mTLS          : PERMISSIVE",
        # The wave's bake in the first test passed; its record is on the namespace.
        f"6 waves analysis: {setup['wave']}: passed at ",
    ):
        assert line in result.out, result.out[-3000:]


def broken_virtual_service(namespace: str) -> dict:
    """A VirtualService bound to a gateway that does not exist: istiod's validation admits it (it checks the object,
    not what it refers to), and istioctl analyze reports IST0101 at level Error for it (as in
    tests/unit/fixtures/istioctl/analyze_live_errors.json)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "analyze-broken", "namespace": namespace},
        "spec": {
            "hosts": ["web"],
            "gateways": ["no-such-gateway"],
            "http": [{"route": [{"destination": {"host": "web"}}]}],
        },
    }


def test_an_istioctl_analyze_error_fails_verify_naming_its_code_and_verify_passes_once_it_is_gone(kubectl, setup):
    """Verify runs `istioctl analyze` over the rollout's namespaces (here required, so a missing istioctl cannot
    turn the test into a skip): a broken object in the wave fails verify with IST0101, the object and istioctl's
    message, while every other gate passes; without it verify passes and reports what analyze found."""
    options = {**setup["options"], "rollout_istio_analyze": True}
    wave = setup["wave"]
    kubectl.run("apply", "-f", "-", stdin=json.dumps(broken_virtual_service(wave)))
    try:
        broken = run_playbook("playbooks/verify.yml", options, setup["tmp"])
        assert broken.rc != 0, broken.out[-4000:]
        # Only the analysis failed.
        for line in ("1 control plane : OK", "2 sidecars      : OK", "3 telemetry     : OK"):
            assert line in broken.out, broken.out[-4000:]
        assert "7 istio analysis: istioctl analyze found 1 error (IST0101)" in broken.out, broken.out[-4000:]
        failure = next(line for line in broken.out.splitlines() if "Verification failed on local-cluster" in line)
        assert f"IST0101 (VirtualService {wave}/analyze-broken) Referenced gateway not found:" in failure, failure
        assert "no-such-gateway" in failure, failure
    finally:
        kubectl.run("-n", wave, "delete", "virtualservices.networking.istio.io", "analyze-broken", check=False)

    fixed = run_playbook("playbooks/verify.yml", options, setup["tmp"])
    assert fixed.rc == 0, fixed.out[-4000:]
    summary = re.search(r"7 istio analysis: (istioctl analyze found [^\n]*)", fixed.out)
    assert summary, fixed.out[-4000:]
    assert "error" not in summary.group(1) and setup["wave"] in summary.group(1), summary.group(1)


def test_strict_once_the_caller_is_meshed_refuses_plaintext_and_keeps_mtls(setup, mesh):
    """STRICT in the data plane, on the evidence: the plaintext caller of the readiness test now calls through its
    sidecar, the window holds no plaintext any more, so the role sets STRICT; the server sidecar then refuses a
    plaintext caller and still serves the sidecar caller, whose requests its stats report as mutual_tls with the
    caller's identity. PERMISSIVE is restored after."""
    options = strict_options(setup)
    meshed = setup.get("meshed_caller")
    try:
        deadline = time.monotonic() + 90
        while plaintext_seen(setup, setup["mesh"], 60):
            assert time.monotonic() < deadline, "plaintext still reported a window after the caller was meshed"
            time.sleep(2)
        result = run_playbook("mtls_permissive.yml", {**options, "mtls_permissive_mode": "STRICT"}, setup["tmp"])
        assert result.rc == 0, result.out[-3000:]
        deadline = time.monotonic() + 30
        while not plaintext_refused(mesh):
            assert time.monotonic() < deadline, "the STRICT server sidecar still serves plaintext"
            time.sleep(0.5)
        assert mesh.get("/").status == 200
        mtls = setup["prom"].query(
            f'sum(istio_requests_total{{reporter="destination",destination_workload_namespace="{setup["mesh"]}",'
            f'connection_security_policy="mutual_tls",source_workload="client",'
            f'source_principal="spiffe://cluster.local/ns/{setup["mesh"]}/sa/client"}})'
        )
        assert mtls and float(mtls[0]["value"][1]) > 0, mtls
    finally:
        if meshed:
            meshed.stop()
        lowered = {**options, "mtls_permissive_allow_lowering_strict": True}
        result = run_playbook("mtls_permissive.yml", lowered, setup["tmp"])
        assert result.rc == 0, result.out[-3000:]
    deadline = time.monotonic() + 30
    while plaintext_refused(mesh):
        assert time.monotonic() < deadline, "PERMISSIVE again, but the server sidecar still refuses plaintext"
        time.sleep(0.5)
    mesh.server.assert_nothing_rejected()


def last_analysis(kubectl, namespace) -> dict:
    annotations = kubectl.json("get", "namespace", namespace)["metadata"].get("annotations", {})
    return json.loads(annotations.get("meshops.istio/last-analysis", "{}"))


def test_a_wave_whose_success_rate_drops_is_rolled_back_alone_and_a_rerun_resumes_at_it(kubectl, setup):
    """Issue 12's acceptance, on real traffic (issue 30): the analysis gate reads what real sidecars counted.

    A healthy wave passing its bake is the fixture's wave 'first' (see the first test). Run 1: wave 'quiet' has no
    traffic and passes only because it allows no data; wave 'degrading' is called through real sidecars, and its
    application answers 40 % of those requests with 503 once the rollout has labeled it: its bake fails on that error
    rate and it is rolled back alone. Run 2, the fault fixed: the run resumes at 'degrading', which passes; the new
    wave 'silent' has no traffic and no allowance, so it is refused before any label.
    """
    prom, tmp, plane = setup["prom"], setup["tmp"], setup["plane"]
    suffix = str(int(time.time()))[-5:]
    quiet, degrading, silent = (f"wa-{x}-{suffix}" for x in ("quiet", "degrading", "silent"))
    for ns in (quiet, degrading, silent):
        kubectl.run("create", "namespace", ns)
        kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(ns, "api", sidecar=False)))
    for ns in (quiet, degrading, silent):
        kubectl.run("-n", ns, "rollout", "status", "deployment/api", "--timeout=120s")
    echo = plane.server(degrading)
    plane.start()
    load = plane.load(setup["caller"], echo, rps=8)
    plane.on_meshed(degrading, lambda: echo.app.set_fault(dataplane.Fault(share=0.4)))
    # Scraped enough for the baseline's rate (rollout_baseline_window, 20s here): a rate above 0 over that window.
    sent = f'istio_requests_total{{reporter="source",destination_workload_namespace="{degrading}"}}'
    prom.wait_for(f"rate({sent}[20s]) > 0")
    waves = setup["options"]["rollout_waves"] + [
        {"name": "quiet", "namespaces": [quiet], "analysis": {"allow_no_data": True}},
        {"name": "degrading", "namespaces": [degrading]},
    ]
    try:
        first = run_playbook("playbooks/rollout.yml", {**setup["options"], "rollout_waves": waves}, tmp)
        assert first.rc != 0, first.out[-4000:]
        out = " ".join(first.out.split())
        assert "The rollout stopped at the wave degrading step" in out, out[-4000:]
        # 40 % 503s through real Envoys (the fault spreads them evenly): about 60 % success.
        rule = rf"{degrading}/echo: success rate [56]\d\.\d\d % is below the threshold 99\.00 % \(baseline 100\.00 %\)"
        assert re.search(rule, out), out[-4000:]
        assert load.replies.get(503, 0) > 0, load.replies  # the caller really received them
        assert f"Rolled back: the injection label was removed from {degrading}" in out
        assert "no pod there runs a sidecar any more" in out
        # The failed wave alone was rolled back: no label, no sidecar, the failed analysis on the namespace.
        assert not labeled(kubectl, degrading) and sidecars(kubectl, degrading) == [False]
        record = last_analysis(kubectl, degrading)
        assert record["passed"] is False and record["failures"] == 2, record
        assert "success rate" in record["problems"][0], record
        # The earlier waves stay, each with its passed analysis.
        for ns in (setup["wave"], quiet):
            assert labeled(kubectl, ns) and all(sidecars(kubectl, ns)), ns
            assert last_analysis(kubectl, ns)["passed"] is True, ns
        # Issue 33: each analysis was printed as it was taken, every figure against its threshold ...
        taken = rf"Bake of {degrading}: analysis (\d)/2 at [\d.]+s of 6s - [\d.]+ requests/s; success rate [\d.]+ %"
        assert [int(n) for n in re.findall(taken, out)] == [1, 2], out[-4000:]
        assert re.search(rf"Bake of {degrading}: analysis 2/\d+ .* - FAILED \(2 of the failure limit 2\)", out)
        # ... and the run left its report: the record, and a page that a real browser shows with the bake's charts.
        reports = Path(setup["options"]["rollout_report_dir"])
        assert f"The rollout report: {reports}/local-cluster-rollout.html" in out
        report = json.loads((reports / "local-cluster-rollout.json").read_text())
        waves_seen = {w["name"]: w for w in report["waves"]}
        assert report["outcome"] == "stopped" and "wave degrading" in report["message"], report["message"]
        assert {n: w["decision"] for n, w in waves_seen.items()} == {
            "first": "done, no bake",
            "quiet": "passed",
            "degrading": "failed, rolled back",
        }
        bake = waves_seen["degrading"]["analyses"]
        assert [a["passed"] for a in bake] == [False, False] and all(a["error_rate"] > 1 for a in bake), bake
        assert all(a["request_rate"] > 0 and a["sidecar_memory_bytes"] > 2**20 for a in bake), bake
        with browser.open_page(str(reports / "local-cluster-rollout.html"), timeout=30) as page:
            assert page.errors == [] and len(page.requests) == 1, (page.errors, page.requests)
            charts = page.evaluate(
                "[...document.querySelectorAll('section.wave[data-wave=\"degrading\"] svg.chart')].map(s =>"
                " [s.dataset.metric, s.querySelectorAll('circle.point.fail, path.nodata').length,"
                " !!s.querySelector('line.threshold'), s.getBoundingClientRect().width > 0])"
            )
            # Both failed analyses in each chart, as a red point or, where Prometheus had no figure, a no-data mark
            # (Envoy updates its histograms at each stats flush, every 5 s, so a 3 s window may hold no p99); a
            # threshold line for error rate and p99 (no sidecar budget in this wave).
            assert charts == [[metric, 2, metric != "sidecar_memory", True] for metric in METRICS], charts
            decision = page.evaluate("document.querySelector('section.wave[data-wave=\"degrading\"]').dataset.decision")
            assert decision == "failed, rolled back"

        # The cause fixed (no more 503s); the rerun resumes at 'degrading'. 'silent' has no data and no allowance.
        echo.app.set_fault(None)
        waves.append({"name": "silent", "namespaces": [silent]})
        second = run_playbook("playbooks/rollout.yml", {**setup["options"], "rollout_waves": waves}, tmp)
        assert second.rc != 0, second.out[-4000:]
        out = " ".join(second.out.split())
        assert labeled(kubectl, degrading) and sidecars(kubectl, degrading) == [True]
        assert last_analysis(kubectl, degrading)["passed"] is True
        assert "The rollout stopped at the wave silent step" in out, out[-4000:]
        assert f"no requests to any workload of namespace {silent} in the last 20s" in out, out[-4000:]
        assert "Nothing was labeled or restarted" in out
        assert not labeled(kubectl, silent) and sidecars(kubectl, silent) == [False]
    finally:
        load.stop()
        for ns in (quiet, degrading, silent):
            kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def test_real_latency_and_real_sidecar_memory_fail_the_analysis(kubectl, setup):
    """The other two figures of a bake, from real proxies: an application that takes 300 ms fails a 200 ms p99
    threshold (Envoy's request-duration histogram), and a sidecar budget below what the real pilot-agent and Envoy
    hold fails on their resident memory; the same namespace with a budget above it passes."""
    prom, tmp, plane = setup["prom"], setup["tmp"], setup["plane"]
    slow = f"wa-slow-{str(int(time.time()))[-5:]}"
    kubectl.run("create", "namespace", slow)
    try:
        echo = plane.server(slow)
        plane.start()
        echo.app.set_fault(dataplane.Fault(delay_ms=300))
        load = plane.load(setup["caller"], echo, rps=4)
        prom.wait_for(f'istio_request_duration_milliseconds_bucket{{destination_workload_namespace="{slow}"}}')
        prom.wait_for(f'container_memory_working_set_bytes{{namespace="{slow}",container="istio-proxy"}}')
        time.sleep(4)
        quick = {"bake_time": "0", "window": "8s"}
        cases = [
            {"namespaces": [slow], "settings": {**quick, "p99_ms": 200}},
            {"namespaces": [slow], "settings": {**quick, "p99_ms": 2000, "sidecar_memory": "8Mi"}},
            {"namespaces": [slow], "settings": {**quick, "p99_ms": 2000, "sidecar_memory": "2Gi"}},
        ]
        report = tmp / "wave-analysis.json"
        result = run_playbook(
            "wave_analysis.yml",
            {"meshops_cases": cases, "meshops_prometheus_url": prom.url, "meshops_report_file": str(report)},
            tmp,
        )
        assert result.rc == 0, result.out[-3000:]
        latency, memory, roomy = json.loads(report.read_text())
        assert latency["passed"] is False, latency
        rule = rf"{slow}/echo: p99 latency [\d.]+ ms is above the threshold 200\.0 ms"
        assert re.search(rule, " ".join(latency["problems"])), latency
        (workload,) = latency["observed"]["workloads"]
        assert 250 <= workload["p99_ms"] <= 1000 and workload["request_rate"] > 1, workload
        assert memory["passed"] is False, memory
        (sidecar,) = memory["observed"]["sidecars"]
        assert sidecar["pod"] == "echo-loopback" and sidecar["memory"] > 8 * 2**20, sidecar
        assert any("echo-loopback: the sidecar uses" in p and "sidecar_memory 8Mi" in p for p in memory["problems"])
        assert roomy["passed"] is True, roomy
        assert load.replies.get(200, 0) > 0, load.replies
    finally:
        kubectl.run("delete", "namespace", slow, "--wait=false", check=False)


def env_without_connection() -> dict:
    """The playbooks' environment with no cluster connection in it (no K8S_AUTH_*, no KUBECONFIG)."""
    return {k: v for k, v in playbook_env().items() if not k.startswith("K8S_AUTH_") and k != "KUBECONFIG"}


def test_no_silent_fallback_to_in_cluster_credentials_or_unverified_tls(cluster, tmp_path):
    env = env_without_connection()
    result = run_playbook(
        "playbooks/verify.yml", {"meshops_kubeconfig": "", "meshops_target": "local-cluster"}, tmp_path, env=env
    )
    assert result.rc != 0
    assert "No cluster connection is configured for local-cluster" in result.out
    assert "refuses to fall back to in-cluster credentials" in result.out

    insecure = dict(env, K8S_AUTH_VERIFY_SSL="false")
    result = run_playbook("playbooks/verify.yml", {"meshops_target": "local-cluster"}, tmp_path, env=insecure)
    assert result.rc != 0
    assert "K8S_AUTH_VERIFY_SSL is off" in result.out


def two_cluster_kubeconfig(kubectl, setup) -> tuple:
    """A kubeconfig as the AWX credential type injects it: one context per cluster host. 'cluster-a' is the local
    cluster's admin; 'cluster-b' is a service account with no rights, so each host's requests show whose they are."""
    namespace = f"conn-{setup['pilot'].rsplit('-', 1)[1]}"
    kubectl.run("create", "namespace", namespace)
    kubectl.run("-n", namespace, "create", "serviceaccount", "cluster-b")
    token = kubectl.run("-n", namespace, "create", "token", "cluster-b", "--duration=10m").stdout.strip()
    local = json.loads(kubectl.run("config", "view", "--raw", "--minify", "-o", "json").stdout)
    ca_file = local["clusters"][0]["cluster"]["certificate-authority"]
    server = local["clusters"][0]["cluster"]["server"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": local["clusters"][0]["cluster"]} for name in ("a", "b")],
        "users": [{"name": "a", "user": local["users"][0]["user"]}, {"name": "b", "user": {"token": token}}],
        "contexts": [{"name": f"cluster-{n}", "context": {"cluster": n, "user": n}} for n in ("a", "b")],
        "current-context": "cluster-a",
    }
    return namespace, json.dumps(config), {"server": server, "ca_file": ca_file, "token": token}


def test_each_cluster_host_reaches_its_own_cluster_through_one_kubeconfig_credential(kubectl, setup):
    """Multi-cluster as AWX supports it: the shipped credential type injects one kubeconfig (K8S_AUTH_KUBECONFIG)
    and each host names its context. Host cluster-a passes verify as the admin; cluster-b is refused as its own
    service account. A job-wide token beside per-host contexts is refused before any request."""
    namespace, config, parts = two_cluster_kubeconfig(kubectl, setup)
    credential_type = json.loads((REPO / "docs/awx/credential_type.json").read_text())
    private = setup["tmp"] / "awx-private"
    private.mkdir(exist_ok=True)
    injected = awx_injection.inject(credential_type, {"kubeconfig": config}, private)
    inventory = setup["tmp"] / "two-clusters.yml"
    hosts = {"cluster-a": {"meshops_context": "cluster-a"}, "cluster-b": {"meshops_context": "cluster-b"}}
    inventory.write_text(json.dumps({"meshops_clusters": {"hosts": hosts}}))
    options = {**setup["options"], "meshops_kubeconfig": "", "meshops_target": "meshops_clusters"}
    base_env = env_without_connection()

    def verify(env: dict) -> str:
        cmd = playbook_command("playbooks/verify.yml", options, setup["tmp"])
        cmd[cmd.index("-i") + 1] = str(inventory)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        out = proc.stdout + proc.stderr
        assert parts["token"] not in out
        return proc.returncode, out

    try:
        rc, out = verify({**base_env, **injected})
        assert rc != 0, out[-3000:]
        assert "cluster cluster-a" in out and "1 control plane : OK" in out, out[-4000:]
        assert f"system:serviceaccount:{namespace}:cluster-b" in out, out[-4000:]
        assert "cluster cluster-b" not in out, out[-4000:]

        job_token = {**base_env, **injected, "K8S_AUTH_HOST": parts["server"], "K8S_AUTH_API_KEY": parts["token"]}
        rc, out = verify(job_token)
        assert rc != 0
        assert "cluster-a sets meshops_context, but the job also has a token for" in out, out[-3000:]
        assert "1 control plane" not in out
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false")


def test_validate_certs_on_the_host_checks_the_certificate_where_the_credential_turns_it_off(kubectl, setup):
    """AWX's bearer token credential without a CA certificate injects K8S_AUTH_VERIFY_SSL=False. With
    meshops_validate_certs: true the guard accepts the job and every module checks the API server's certificate:
    against the system's CAs it fails (the local cluster's CA is private), with the cluster's CA file it passes."""
    namespace = f"tok-{setup['pilot'].rsplit('-', 1)[1]}"
    kubectl.run("create", "namespace", namespace)
    try:
        kubectl.run("-n", namespace, "create", "serviceaccount", "admin")
        kubectl.run(
            "create",
            "clusterrolebinding",
            namespace,
            "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:admin",
        )
        token = kubectl.run("-n", namespace, "create", "token", "admin", "--duration=10m").stdout.strip()
        local = json.loads(kubectl.run("config", "view", "--raw", "--minify", "-o", "json").stdout)["clusters"][0]
        env = env_without_connection()
        env.update(K8S_AUTH_HOST=local["cluster"]["server"], K8S_AUTH_API_KEY=token, K8S_AUTH_VERIFY_SSL="False")
        options = {**setup["options"], "meshops_kubeconfig": ""}

        result = run_playbook("playbooks/verify.yml", options, setup["tmp"], env=env)
        assert result.rc != 0 and "K8S_AUTH_VERIFY_SSL is off ('False'" in result.out, result.out[-3000:]

        checked = {**options, "meshops_validate_certs": True}
        result = run_playbook("playbooks/verify.yml", checked, setup["tmp"], env=env)
        assert result.rc != 0, result.out[-3000:]
        assert "CERTIFICATE_VERIFY_FAILED" in result.out or "certificate verify failed" in result.out, result.out[
            -3000:
        ]
        assert token not in result.out

        with_ca = dict(env, K8S_AUTH_SSL_CA_CERT=local["cluster"]["certificate-authority"])
        result = run_playbook("playbooks/verify.yml", checked, setup["tmp"], env=with_ca)
        assert result.rc == 0, result.out[-3000:]
        assert "1 control plane : OK" in result.out
    finally:
        kubectl.run("delete", "clusterrolebinding", namespace, check=False)
        kubectl.run("delete", "namespace", namespace, "--wait=false")


def readme_install_steps() -> list:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- install-steps:begin -->", 1)[1].split("<!-- install-steps:end -->", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("```")]


README_TEST = "test_an_installed_user_follows_the_readme_from_a_fresh_venv"


def readme_install(work: Path) -> dict:
    """The README's install steps, run word for word in an empty HOME (work/home) with the tarball built from this
    checkout, up to the first that fails: the environment they ran in, the tarballs and each step's outcome."""
    home = work / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "K8S_AUTH_", "VIRTUAL_ENV"))}
    clean.pop("KUBECONFIG", None)
    clean.update(HOME=str(home), PATH=":".join(p for p in clean["PATH"].split(":") if "/.venv/" not in p + "/"))
    # The same ansible release as the pinned tooling, so the test does not change with PyPI.
    pinned = next(
        line for line in (REPO / "requirements-dev.txt").read_text().splitlines() if line.startswith("ansible==")
    )
    (work / "constraints.txt").write_text(pinned + "\n")
    clean["PIP_CONSTRAINT"] = str(work / "constraints.txt")
    clean.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    # Not part of the README's words, only of the test's time: Python compiles what it imports when it imports it.
    clean["PIP_COMPILE"] = "false"
    subprocess.run(
        ["ansible-galaxy", "collection", "build", str(REPO), "--output-path", str(work)],
        check=True,
        capture_output=True,
        env=playbook_env(),
    )
    steps = readme_install_steps()
    tarballs = [p.name for p in work.glob("meshops-istio-*.tar.gz")]
    done = []
    if any(tarballs[0] in step for step in steps):
        for step in steps:
            # At the lowest CPU priority (not part of the README's words either): the steps run beside this module's
            # other tests, in the CPU time those leave idle.
            command = ["nice", "-n", "19", "bash", "-c", step]
            proc = subprocess.run(command, cwd=work, env=clean, capture_output=True, text=True, check=False)
            done.append((step, proc))
            if proc.returncode != 0:
                break
    return {"home": home, "clean": clean, "steps": steps, "tarballs": tarballs, "done": done}


@pytest.fixture(scope="module", autouse=True)
def readme_installed(request, tmp_path_factory):
    """The README's install steps need no cluster: when the installed-user test is to run, they start with the module,
    in a thread, while the tests before it use the cluster; that test waits for them (readme_install's result)."""
    if not any(item.module is request.module and item.name == README_TEST for item in request.session.items):
        yield None
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        work = tmp_path_factory.mktemp("installed-user")
        yield work, pool.submit(readme_install, work)


def test_an_installed_user_follows_the_readme_from_a_fresh_venv(kubectl, setup, readme_installed):
    """The README's install steps, run word for word in an empty HOME with the tarball built from this checkout,
    then meshops.istio.verify from the installed collection (not the checkout) against the local cluster."""
    work, started = readme_installed
    install = started.result()
    home, clean, steps, tarballs = install["home"], install["clean"], install["steps"], install["tarballs"]
    assert any(tarballs[0] in step for step in steps), f"the README installs another version than {tarballs}"
    for step, proc in install["done"]:
        assert proc.returncode == 0, f"README step failed: {step}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert len(install["done"]) == len(steps)

    venv_bin = work / "meshops-venv" / "bin"

    def installed(tool: str, *args: str) -> subprocess.CompletedProcess:
        """A tool of the fresh venv, run as the installed user runs it."""
        return subprocess.run(
            [str(venv_bin / tool), *args], cwd=work, env=clean, capture_output=True, text=True, check=False
        )

    listed = installed("ansible-galaxy", "collection", "list", "meshops.istio")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert str(home / ".ansible" / "collections") in listed.stdout and str(REPO) not in listed.stdout, listed.stdout

    # The declared state the README's inventory example describes, as the rollout above declared it.
    host = {k: v for k, v in setup["options"].items() if k != "meshops_target"}
    host.update(
        telemetry_addons_prometheus_mode="external",
        meshops_kubeconfig=kubectl.kubeconfig,
        ansible_connection="local",
        ansible_python_interpreter="{{ ansible_playbook_python }}",
    )
    (work / "inventory.yml").write_text(json.dumps({"meshops_clusters": {"hosts": {"local-cluster": host}}}))
    proc = installed("ansible-playbook", "-i", "inventory.yml", "meshops.istio.verify")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "1 control plane : OK" in out and "2 sidecars      : OK" in out, out[-4000:]
