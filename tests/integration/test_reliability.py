"""Issue 16 against the real local cluster: a run refuses what cannot work before its first change.

Each refused case runs the rollout playbook with a new pilot namespace (unlabeled, with plain Deployments) and one
bad declaration for a later step, then compares the cluster with a snapshot taken before: nothing may be written,
not even the pilot's label. Runs after the step 1 tests (Istio installed with istioctl).
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time

import pytest
from conftest import deployment, playbook_command, playbook_env, run_playbook, service

ISTIO_KINDS = (
    "peerauthentications.security.istio.io,destinationrules.networking.istio.io,"
    "virtualservices.networking.istio.io,telemetries.telemetry.istio.io"
)


@pytest.fixture(scope="module")
def pilot(kubectl, tmp_path_factory):
    name = f"rel-pilot-{str(int(time.time()))[-6:]}"
    kubectl.run("create", "namespace", name)
    for workload in ("web", "api"):
        kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(name, workload, sidecar=False)))
        kubectl.run("apply", "-f", "-", stdin=json.dumps(service(name, workload)))
    kubectl.run("-n", name, "rollout", "status", "deployment/web", "deployment/api", "--timeout=120s")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def state(kubectl, namespace: str) -> dict:
    """The cluster as a refused run must leave it: Istio's objects, every Istio-kind object, the pilot namespace's
    labels and annotations, its pods (a restart replaces them) and the run lock."""
    # The reads at once: each is a kubectl process and an API round trip, and every case takes two of these.
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        snapshot = pool.submit(kubectl.snapshot)
        meta, istio_objects, namespaces, pods, leases = pool.map(
            lambda args: kubectl.json(*args),
            [
                ("get", "namespace", namespace),
                ("get", ISTIO_KINDS, "-A"),
                ("get", "namespaces"),
                ("-n", namespace, "get", "pods"),
                ("-n", "istio-system", "get", "leases"),
            ],
        )
        snapshot = snapshot.result()
    meta = meta["metadata"]
    # Namespaces that earlier tests delete without waiting finish terminating while a case runs: only Active ones
    # are compared.
    active = sorted(n["metadata"]["name"] for n in namespaces["items"] if n.get("status", {}).get("phase") == "Active")
    return {
        **snapshot,
        "namespaces": active,
        "pilot_labels": meta.get("labels", {}),
        "pilot_annotations": meta.get("annotations", {}),
        "pilot_pods": sorted(p["metadata"]["name"] for p in pods["items"]),
        "istio_objects": sorted(
            (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"], o["metadata"].get("generation"))
            for o in istio_objects["items"]
        ),
        "leases": sorted(lease["metadata"]["name"] for lease in leases["items"]),
    }


def rollout_options(pilot: str, **extra) -> dict:
    return {
        "istio_install_minimal_method": "istioctl",
        "istio_install_minimal_timeout": 60,
        "rollout_pilot_namespaces": [pilot],
        "rollout_waves": [],
        "rollout_timeout": 60,
        "namespace_injection_timeout": 60,
        "telemetry_addons_tracing_provider": "",
        "telemetry_addons_grafana_mode": "none",
        "telemetry_addons_jaeger_mode": "none",
        "telemetry_addons_kiali_mode": "none",
        "telemetry_addons_metrics_gate": False,
        "traffic_baseline_services": [{"name": "api", "namespace": pilot, "port": 80}],
        "mtls_permissive_scope": "namespaces",
        "mtls_permissive_namespaces": [pilot],
        "mtls_permissive_report_readiness": False,
        "meshops_target": "local-cluster",
        **extra,
    }


# (id, options for the pilot namespace P, text the refusal must contain: the variable to fix, and the cause)
CASES = [
    ("step 5 typo", {"mtls_permissive_mode": "permissive"}, ["mtls_permissive_mode", "PERMISSIVE"]),
    (
        "step 4 retries out of range",
        {"traffic_baseline_services": [{"name": "api", "namespace": "{P}", "port": 80, "retries": {"attempts": 99}}]},
        ["retries.attempts"],
    ),
    (
        "protected namespace in a later wave",
        {"rollout_waves": [{"name": "late", "namespaces": ["kube-system"]}]},
        ["Namespaces kube-system are", "kube-system is listed in rollout_waves wave 'late'"],
    ),
    (
        "pilot also in a survey wave",
        {"rollout_waves_json": '[{"name": "w1", "namespaces": ["{P}"]}]'},
        ["{P} is in rollout_waves_json wave 'w1' and already in rollout_pilot_namespaces"],
    ),
    (
        "wave without a name",
        {"rollout_waves_json": '[{"namespaces": ["x"]}]'},
        ["rollout_waves_json wave 1 has no name"],
    ),
    ("malformed survey answer", {"rollout_waves_json": "[{name: w1}]"}, ["rollout_waves_json (the survey answer)"]),
    (
        "wave with no namespaces",
        {"rollout_waves": [{"name": "empty", "namespaces": []}]},
        ["wave 'empty' has no namespaces"],
    ),
    (
        "routing for a Service that does not exist",
        {"traffic_baseline_services": [{"name": "ghost", "namespace": "{P}", "port": 80}]},
        ["traffic_baseline_services: Service {P}/ghost does not exist"],
    ),
    (
        "traffic service in a missing namespace",
        {"traffic_baseline_services": [{"name": "api", "namespace": "no-such-ns", "port": 80}]},
        ["traffic_baseline_services: namespace no-such-ns does not exist"],
    ),
    (
        "PeerAuthentication for a missing namespace",
        {"mtls_permissive_namespaces": ["{P}", "no-such-ns"]},
        ["mtls_permissive_namespaces: namespace no-such-ns does not exist"],
    ),
    (
        "telemetry override for a missing namespace",
        {"telemetry_addons_namespace_overrides": [{"namespace": "no-such-ns", "access_logging": True}]},
        ["telemetry_addons_namespace_overrides: namespace no-such-ns does not exist"],
    ),
    (
        "missing pilot namespace",
        {"rollout_pilot_namespaces": ["no-such-pilot"]},
        ["no-such-pilot is listed in rollout_pilot_namespaces"],
    ),
    ("batch size zero", {"namespace_injection_batch_size": 0}, ["namespace_injection_batch_size"]),
    (
        "wave analysis threshold out of range",
        {"rollout_success_rate": 120, "rollout_waves": [{"name": "w", "namespaces": ["no-such-ns"]}]},
        ["rollout_success_rate is 120: give a percentage from 0 to 100"],
    ),
    (
        "custom analysis query Prometheus refuses",
        {
            "rollout_waves": [
                {
                    "name": "w",
                    "namespaces": ["default"],
                    "analysis": {"checks": [{"name": "broken", "query": "sum(rate(x[1m])", "max": 1}]},
                }
            ]
        },
        ["custom check 'w/broken'", "refused the query", "parse error"],
    ),
    ("version latest", {"istio_install_minimal_version": "latest"}, ['istio_install_minimal_version is "latest"']),
    ("version without patch", {"istio_install_minimal_version": "1.30"}, ['istio_install_minimal_version is "1.30"']),
    (
        "version unknown",
        {"istio_install_minimal_version": "9.9.9"},
        ["istio_install_minimal_version is 9.9.9", "compatibility table"],
    ),
]


def substitute(value, pilot: str):
    """The case's options with {P} standing for the pilot namespace."""
    return json.loads(json.dumps(value).replace("{P}", pilot))


@pytest.mark.parametrize("case, bad, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_declaration_is_refused_before_any_change(kubectl, pilot, tmp_path, case, bad, expected):
    before = state(kubectl, pilot)
    result = run_playbook("playbooks/rollout.yml", rollout_options(pilot, **substitute(bad, pilot)), tmp_path)
    assert result.rc != 0, result.out[-3000:]
    for text in expected:
        assert text.replace("{P}", pilot) in result.out, (text, result.out[-3000:])
    assert "Take the run lock" not in result.out, "the preflight let it through"
    assert state(kubectl, pilot) == before


def test_mtls_role_alone_writes_no_policy_when_one_namespace_is_missing(kubectl, pilot, tmp_path):
    before = state(kubectl, pilot)
    result = run_playbook(
        "mtls_permissive.yml",
        {"mtls_permissive_scope": "namespaces", "mtls_permissive_namespaces": [pilot, "no-such-ns"]},
        tmp_path,
    )
    assert result.rc != 0
    assert "mtls_permissive_namespaces: namespace no-such-ns does not exist" in result.out, result.out[-3000:]
    assert state(kubectl, pilot) == before


@pytest.mark.parametrize("spelling", ["n", "f", "off", "No", "FALSE", "0", "maybe"])
def test_every_false_spelling_of_verify_ssl_is_refused(cluster, tmp_path, spelling):
    from conftest import playbook_env

    env = dict(playbook_env(), K8S_AUTH_VERIFY_SSL=spelling)
    result = run_playbook("playbooks/verify.yml", {"meshops_target": "local-cluster"}, tmp_path, env=env)
    assert result.rc != 0
    assert "K8S_AUTH_VERIFY_SSL is off" in result.out, result.out[-2000:]


def lease(kubectl) -> dict | None:
    proc = kubectl.run("-n", "istio-system", "get", "lease", "meshops-istio-run", "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def hold_lock(tmp_path, seconds: int, duration: int):
    """Start a real run that holds the lock; return it once the Lease names it."""
    import subprocess

    from conftest import playbook_command, playbook_env

    cmd = playbook_command("run_lock.yml", {"hold_seconds": seconds, "rollout_lock_duration": duration}, tmp_path)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(), start_new_session=True
    )
    return proc


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_lock_keeps_two_real_runs_apart(kubectl, pilot, tmp_path):
    import os
    import signal

    assert lease(kubectl) is None, "a lock is left over from an earlier test"
    options = rollout_options(pilot, rollout_stage="install", rollout_lock_duration=6)

    # A holds the lock for 25 s with a 6 s lease: only its background renewal keeps it.
    holder = hold_lock(tmp_path, 25, 6)
    try:
        held = wait_for(lambda: lease(kubectl), 60, "the holder's Lease")
        identity = held["spec"]["holderIdentity"]
        assert identity.startswith("lock-test by "), identity
        first_renewal = held["spec"]["renewTime"]
        time.sleep(8)  # longer than the lease: without renewal it would have expired

        before = state(kubectl, pilot)
        refused = run_playbook("playbooks/rollout.yml", dict(options, rollout_lock_wait=3), tmp_path)
        assert refused.rc != 0, refused.out[-3000:]
        assert identity in refused.out, refused.out[-3000:]
        assert "rollout_lock_break" in refused.out
        after = state(kubectl, pilot)
        assert after == before, "the refused run changed the cluster"
        renewed = lease(kubectl)
        assert renewed["spec"]["holderIdentity"] == identity
        assert renewed["spec"]["renewTime"] > first_renewal, "the holder's lease was not renewed while it ran"

        # B waits for A (which releases at the end of its sleep), then runs.
        waited = run_playbook("playbooks/rollout.yml", dict(options, rollout_lock_wait=90), tmp_path)
        assert waited.rc == 0, waited.out[-3000:]
        assert holder.wait(timeout=60) == 0, holder.stdout.read()[-3000:]
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert lease(kubectl) is None, "the lock was not released at the end of the runs"

    # A holder killed outright (no release) does not block the next run.
    killed = hold_lock(tmp_path, 120, 60)
    try:
        wait_for(lambda: lease(kubectl), 60, "the second holder's Lease")
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    after_kill = run_playbook("playbooks/rollout.yml", dict(options, rollout_lock_wait=20), tmp_path)
    assert after_kill.rc == 0, after_kill.out[-3000:]
    assert lease(kubectl) is None


def test_a_target_matching_no_host_fails_the_job(cluster, tmp_path):
    result = run_playbook("playbooks/verify.yml", {"meshops_target": "no-such-cluster"}, tmp_path)
    assert result.rc != 0
    assert 'The target "no-such-cluster" (meshops_target' in result.out, result.out[-2000:]
    assert "Nothing was changed." in result.out

    # A limit (AWX's "Limit" field) that leaves none of the target's hosts: still refused, naming the limit.
    inventory = tmp_path / "two-hosts.yml"
    inventory.write_text(json.dumps({"meshops_clusters": {"hosts": {"local-cluster": {}, "other-cluster": {}}}}))
    cmd = playbook_command("playbooks/verify.yml", {"meshops_target": "local-cluster"}, tmp_path)
    cmd[cmd.index("-i") + 1] = str(inventory)
    proc = subprocess.run(
        [*cmd, "--limit", "other-cluster"], capture_output=True, text=True, env=playbook_env(), check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert 'matches no host of the inventory that the limit "other-cluster" leaves' in out, out[-2000:]
    assert "Control plane" not in out
