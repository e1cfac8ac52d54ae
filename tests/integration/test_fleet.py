"""A fleet in one job: three local clusters, each with its own API server, istiod and Prometheus, run the way AWX runs
them (one inventory host per cluster, forks, cluster waves, ansible-runner).

Order matters (pytest runs a file top to bottom): the first test installs step 1 on all three clusters at once from
one shared download directory; the others start from that install. The clusters are this module's own
(cluster.py --name), so the default cluster the other modules use is not touched.
"""

from __future__ import annotations

import datetime
import http.server
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import ansible_runner
import pytest
import yaml
from conftest import (
    CLUSTER,
    LOCAL_GROUP_VARS,
    REPO,
    Kubectl,
    fleet_inventory,
    free_port,
    local_cluster_vars,
    named_clusters,
    playbook_env,
    run_fleet_playbook,
)

sys.path.insert(0, str(REPO / "tests"))
import awx_injection  # what AWX does with the shipped credential type

FLEET = ("fleet-a", "fleet-b", "fleet-c")
# The fleet's declared state: step 1 only (the steps after it are the other modules' subject).
STAGE = {"rollout_stage": "install"}
PLAY = "PLAY [Staged Istio rollout]"


class ChartServer:
    """The packaged charts over HTTP on loopback, counting the requests for each file."""

    def __init__(self, directory: str) -> None:
        self.hits: Counter = Counter()
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=directory, **kw)

            def do_GET(self):  # http.server's name
                hits[self.path.rsplit("/", 1)[-1]] += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    paths = named_clusters(FLEET)
    server = ChartServer(paths[FLEET[0]]["charts_dir"])
    yield {
        "tmp": tmp,
        "paths": paths,
        "kubectl": {name: Kubectl(p["kubeconfig"]) for name, p in paths.items()},
        "server": server,
        "hosts": {name: local_cluster_vars(paths[name]) for name in FLEET},
    }
    server.server.shutdown()
    named_clusters(FLEET, "down")


def report(directory: Path, kind: str) -> dict:
    return json.loads((directory / f"fleet-{kind}.json").read_text())


def statuses(summary: dict) -> dict:
    return {c["cluster"]: c["status"] for c in summary["clusters"]}


def helm_istiod(fleet, name: str, *args: str) -> None:
    """A hand-run `helm upgrade` of one cluster's istiod release (what drift must find)."""
    paths = fleet["paths"][name]
    chart = Path(paths["charts_dir"]) / f"istiod-{paths['istio_version']}.tgz"
    cmd = [f"{paths['bin_dir']}/helm", "--kubeconfig", paths["kubeconfig"], "-n", "istio-system", "upgrade"]
    subprocess.run([*cmd, "istiod", str(chart), "--reuse-values", *args], check=True, capture_output=True)


def test_three_clusters_install_at_once_from_one_download_directory(fleet):
    """One cluster wave of three (meshops_cluster_waves=3): step 1 on every cluster at the same moment, the charts
    fetched into one shared download directory. Each chart is downloaded once and verified; every cluster gets its
    own istiod, served by its own pilot-discovery on its own ports."""
    tmp = fleet["tmp"]
    inventory = fleet_inventory(tmp / "inventory", fleet["hosts"])
    extra = {
        **STAGE,
        "meshops_cluster_waves": 3,
        "istio_install_minimal_chart_source": "repository",
        "istio_install_minimal_chart_repository": fleet["server"].url,
        "istio_install_minimal_download_dir": str(tmp / "downloads"),
        "rollout_report_dir": str(tmp / "install-report"),
    }
    result = run_fleet_playbook("playbooks/rollout.yml", inventory, extra, tmp)
    assert result.rc == 0, result.out[-4000:]
    assert result.out.count(PLAY) == 1, "three clusters in one wave run as one batch"
    version = fleet["paths"][FLEET[0]]["istio_version"]
    for chart in ("base", "istiod"):
        assert fleet["server"].hits[f"{chart}-{version}.tgz"] == 1, fleet["server"].hits
    assert sorted(p.name for p in (tmp / "downloads" / f"istio-{version}").iterdir() if p.suffix == ".tgz") == [
        f"base-{version}.tgz",
        f"istiod-{version}.tgz",
    ]
    for name in FLEET:
        status = json.loads(
            subprocess.run(
                [sys.executable, str(REPO / "hack/local-cluster/cluster.py"), "--name", name, "status"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        )
        assert "default" in status["istiod_revisions"], status
        hooks = fleet["kubectl"][name].json("get", "mutatingwebhookconfiguration", "istio-sidecar-injector")
        assert {h["clientConfig"]["url"] for h in hooks["webhooks"]} == {fleet["paths"][name]["istiod_injection_url"]}
    assert len({fleet["paths"][n]["istiod_injection_url"] for n in FLEET}) == 3
    summary = report(tmp / "install-report", "rollout")
    assert statuses(summary) == dict.fromkeys(FLEET, "ok") and summary["ok"]
    assert all(c["steps_done"] == ["install"] for c in summary["clusters"])


def awx_private_dir(fleet, directory: Path, extravars: dict) -> Path:
    """A private data directory as AWX writes it for a job: the inventory (the local settings as its variables, one
    host per cluster naming its context, and one cluster whose API server is not there), the extra variables, and
    the environment its credential injects - the shipped kubeconfig credential type, one context per cluster."""
    paths = fleet["paths"]
    contexts, clusters, users = [], [], []
    for name in (*FLEET, "fleet-gone"):
        config = yaml.safe_load(Path(paths[name if name != "fleet-gone" else FLEET[0]]["kubeconfig"]).read_text())
        cluster = dict(config["clusters"][0]["cluster"])
        if name == "fleet-gone":
            cluster["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens there
        clusters.append({"name": name, "cluster": cluster})
        users.append({"name": name, "user": config["users"][0]["user"]})
        contexts.append({"name": name, "context": {"cluster": name, "user": name}})
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "clusters": clusters, "users": users, "contexts": contexts}
    (directory / "env").mkdir(parents=True, exist_ok=True)
    (directory / "inventory").mkdir(exist_ok=True)
    credential_type = json.loads((REPO / "docs/awx/credential_type.json").read_text())
    injected = awx_injection.inject(credential_type, {"kubeconfig": json.dumps(kubeconfig)}, directory / "env")
    local = yaml.safe_load(LOCAL_GROUP_VARS.read_text())
    local.pop("meshops_kubeconfig")  # the credential's kubeconfig and each host's context instead
    hosts = {name: {**fleet["hosts"][name], "meshops_context": name} for name in FLEET}
    hosts["fleet-gone"] = {**fleet["hosts"][FLEET[0]], "meshops_context": "fleet-gone"}
    inventory = {"all": {"vars": local, "children": {"meshops_clusters": {"hosts": hosts}}}}
    (directory / "inventory" / "hosts.json").write_text(json.dumps(inventory))
    (directory / "env" / "extravars").write_text(json.dumps({"awx_job_id": 42, **extravars}))
    env = {k: v for k, v in playbook_env().items() if k in ("PATH", "HOME", "MESHOPS_REPO", "ANSIBLE_COLLECTIONS_PATH")}
    (directory / "env" / "envvars").write_text(json.dumps({**env, **injected}))
    (directory / "project").mkdir(exist_ok=True)
    link = directory / "project" / "playbooks"
    if not link.exists():
        link.symlink_to(REPO / "playbooks")
    return directory


def run_job(directory: Path, playbook: str) -> tuple:
    """The job as AWX's engine runs it: ansible-runner, forks 3; its status, stats and set_stats artifacts."""
    runner = ansible_runner.run(private_data_dir=str(directory), playbook=playbook, forks=3, quiet=True)
    stats = [e for e in runner.events if e.get("event") == "playbook_on_stats"][-1]["event_data"]
    return runner, stats, runner.stdout.read()


def test_nightly_drift_over_the_fleet_through_ansible_runner_names_the_drifted_and_the_unreachable(fleet):
    """Drift over three clusters and one that cannot be reached, as an AWX job (ansible-runner, a private data
    directory with the injected credential): exactly the hand-edited cluster is reported with its drifted field,
    the unreachable one is failed by name, the other two finish clean; the fleet summary reaches the job's
    artifacts (set_stats). A correcting run restores the edited cluster; the next drift finds nothing."""
    tmp = fleet["tmp"]
    helm_istiod(fleet, "fleet-b", "--set", "pilot.env.MESHOPS_HAND_EDIT=yes")
    private = awx_private_dir(
        fleet,
        tmp / "awx-drift",
        {**STAGE, "meshops_target": "meshops_clusters", "drift_report_dir": str(tmp / "drift")},
    )
    runner, stats, out = run_job(private, "playbooks/drift.yml")
    assert runner.status == "failed", out[-4000:]
    assert set(stats["failures"]) == {"fleet-gone"}, stats
    fleet_stats = stats["artifact_data"]["meshops_fleet"]
    assert statuses(fleet_stats) == {"fleet-a": "ok", "fleet-b": "drift", "fleet-c": "ok", "fleet-gone": "failed"}
    assert fleet_stats["drifted"] == ["fleet-b"] and fleet_stats["failed"] == ["fleet-gone"]
    drifted = next(c for c in fleet_stats["clusters"] if c["cluster"] == "fleet-b")
    assert {
        "kind": "HelmRelease",
        "namespace": "istio-system",
        "name": "istiod",
        "field": "values.pilot.env.MESHOPS_HAND_EDIT",
    } in drifted["drift"]
    gone = next(c for c in fleet_stats["clusters"] if c["cluster"] == "fleet-gone")
    assert "cannot reach the Kubernetes API server" in gone["failure"]["message"]
    assert "Cluster fleet-gone failed" in out and "The other clusters finished" in out
    assert report(tmp / "drift", "drift") == fleet_stats
    assert "| fleet-b | drift |" in (tmp / "drift" / "fleet-drift.md").read_text()
    for name in FLEET:  # each cluster's own report beside the fleet's
        assert json.loads((tmp / "drift" / f"{name}.json").read_text())["cluster"] == name
    # The credential's kubeconfig is a secret, and so are the keys it names: neither shows in the job's output.
    user = yaml.safe_load(Path(fleet["paths"]["fleet-a"]["kubeconfig"]).read_text())["users"][0]["user"]
    key = Path(user["client-key"]).read_text().splitlines()[1]
    assert key not in out and "client-key" not in out

    inventory = fleet_inventory(tmp / "inventory", fleet["hosts"])
    extra = {**STAGE, "drift_correct": True, "drift_report_dir": str(tmp / "drift")}
    result = run_fleet_playbook("playbooks/drift.yml", inventory, extra, tmp)
    assert result.rc == 0, result.out[-4000:]
    assert statuses(report(tmp / "drift", "drift")) == {"fleet-a": "ok", "fleet-b": "corrected", "fleet-c": "ok"}
    result = run_fleet_playbook(
        "playbooks/drift.yml", inventory, {**STAGE, "drift_report_dir": str(tmp / "drift")}, tmp
    )
    assert result.rc == 0, result.out[-4000:]
    summary = report(tmp / "drift", "drift")
    assert summary["ok"] and statuses(summary) == dict.fromkeys(FLEET, "ok")


def test_a_rollout_in_cluster_waves_stops_at_the_failed_canary_and_leaves_the_rest_untouched(fleet):
    """Cluster waves [1, 2], the canary group first: the canary's step 1 gate fails (its injection webhook is sent to
    a port nothing serves), the fleet stops there with a message naming the canary and the clusters not touched, and
    those two are exactly as they were. With the canary fixed, the rerun takes the canary, then the other two."""
    tmp = fleet["tmp"]
    local = yaml.safe_load(LOCAL_GROUP_VARS.read_text())
    broken = local["istio_install_minimal_values"]
    broken["istiodRemote"]["injectionURL"] = f"https://localhost:{free_port()}/inject"
    hosts = dict(fleet["hosts"])
    hosts["fleet-c"] = {**hosts["fleet-c"], "istio_install_minimal_values": broken, "istio_install_minimal_timeout": 8}
    inventory = fleet_inventory(tmp / "waves", hosts, groups={"canary": ["fleet-c"]})
    extra = {
        **STAGE,
        "meshops_target": "canary:meshops_clusters",
        "meshops_cluster_waves": [1, 2],
        "rollout_report_dir": str(tmp / "waves-report"),
    }
    before = {name: fleet["kubectl"][name].snapshot() for name in ("fleet-a", "fleet-b")}
    result = run_fleet_playbook("playbooks/rollout.yml", inventory, extra, tmp)
    assert result.rc != 0
    assert "Cluster fleet-c failed" in result.out, result.out[-4000:]
    assert "The fleet stops here: 2 cluster(s) not touched: fleet-a, fleet-b." in result.out
    assert result.out.count(PLAY) == 1, "the second cluster wave never started"
    summary = report(tmp / "waves-report", "rollout")
    assert statuses(summary) == {"fleet-c": "failed", "fleet-a": "not touched", "fleet-b": "not touched"}
    assert summary["not_touched"] == ["fleet-a", "fleet-b"]
    assert {name: fleet["kubectl"][name].snapshot() for name in ("fleet-a", "fleet-b")} == before

    hosts["fleet-c"] = fleet["hosts"]["fleet-c"]
    inventory = fleet_inventory(tmp / "waves", hosts, groups={"canary": ["fleet-c"]})
    result = run_fleet_playbook("playbooks/rollout.yml", inventory, extra, tmp)
    assert result.rc == 0, result.out[-4000:]
    assert result.out.count(PLAY) == 2, "the canary's wave, then the other two"
    assert statuses(report(tmp / "waves-report", "rollout")) == dict.fromkeys(("fleet-c", "fleet-a", "fleet-b"), "ok")
    hooks = fleet["kubectl"]["fleet-c"].json("get", "mutatingwebhookconfiguration", "istio-sidecar-injector")
    assert {h["clientConfig"]["url"] for h in hooks["webhooks"]} == {fleet["paths"]["fleet-c"]["istiod_injection_url"]}
    for name in ("fleet-a", "fleet-b"):
        assert fleet["kubectl"][name].snapshot() == before[name], "the other clusters had nothing to change"


def test_a_lock_left_by_a_dead_controller_fails_only_its_cluster_and_breaking_it_converges(fleet):
    """One cluster of the wave still holds the run lock of a controller that died (another machine's run, its lease
    not expired): that cluster fails naming the holder and the remedy, changing nothing; the other two of the same
    wave finish. A rerun with rollout_lock_break takes the lock over and converges."""
    tmp = fleet["tmp"]
    kubectl = fleet["kubectl"]["fleet-a"]
    holder = "rollout by runner@controller-gone pid 4242 (AWX job 7)"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    left = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "meshops-istio-run", "namespace": "istio-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 600, "acquireTime": now, "renewTime": now},
    }
    kubectl.run("apply", "-f", "-", stdin=json.dumps(left))
    inventory = fleet_inventory(tmp / "inventory", fleet["hosts"])
    extra = {**STAGE, "meshops_cluster_waves": 3, "rollout_lock_wait": 2, "rollout_report_dir": str(tmp / "lock")}
    before = kubectl.snapshot()
    result = run_fleet_playbook("playbooks/rollout.yml", inventory, extra, tmp)
    assert result.rc != 0
    assert "Cluster fleet-a failed" in result.out and holder in result.out, result.out[-4000:]
    assert "rollout_lock_break" in result.out
    summary = report(tmp / "lock", "rollout")
    assert statuses(summary) == {"fleet-a": "failed", "fleet-b": "ok", "fleet-c": "ok"}
    assert holder in next(c for c in summary["clusters"] if c["cluster"] == "fleet-a")["failure"]["message"]
    assert kubectl.snapshot() == before

    result = run_fleet_playbook("playbooks/rollout.yml", inventory, {**extra, "rollout_lock_break": True}, tmp)
    assert result.rc == 0, result.out[-4000:]
    assert statuses(report(tmp / "lock", "rollout")) == dict.fromkeys(FLEET, "ok")
    assert kubectl.run("-n", "istio-system", "get", "lease", "meshops-istio-run", check=False).returncode != 0


def run_with_api_restart(fleet, inventory: Path, extra: dict, cluster: str, at_task: str, down: int) -> tuple:
    """Run the rollout over the fleet as a user does, and when `at_task` starts, crash `cluster`'s API server
    (SIGKILL) and start it again `down` seconds later (cluster.py restart, in the background). Returns the run's
    (rc, output) once both are over."""
    tmp = fleet["tmp"]
    vars_file = tmp / f"vars-{cluster}-restart.json"
    vars_file.write_text(json.dumps(extra))
    cmd = ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks/rollout.yml"), "-e", f"@{vars_file}"]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env())
    restart = None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if restart is None and line.startswith(f"TASK [{at_task}]"):
            restart = subprocess.Popen(
                [*CLUSTER, "--name", cluster, "restart", "kube-apiserver", str(down)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
    run.wait()
    assert restart is not None, f"the run never reached {at_task}:\n{''.join(lines)[-4000:]}"
    restarted = restart.communicate()[0].decode()
    assert restart.returncode == 0 and "started again" in restarted, restarted
    return run.returncode, "".join(lines)


def test_an_api_server_restarting_mid_run_stops_the_fleet_at_its_cluster_and_a_rerun_converges(fleet):
    """The canary's API server crashes the moment its istiod upgrade starts and is back 16 s later (long enough
    for its controller manager and scheduler to lose their leader election; the harness starts them again as a
    kubelet would). The canary fails, named, with the reason; the fleet stops there and the other clusters stay
    untouched; nothing on the canary is half-applied (its Helm release is not left pending). The rerun, with the
    API server back, upgrades the canary, then the other two."""
    tmp = fleet["tmp"]
    local = yaml.safe_load(LOCAL_GROUP_VARS.read_text())
    values = local["istio_install_minimal_values"]
    values.setdefault("pilot", {}).setdefault("env", {})["MESHOPS_FAULT_TEST"] = "api-restart"
    hosts = {name: {**fleet["hosts"][name], "istio_install_minimal_values": values} for name in FLEET}
    inventory = fleet_inventory(tmp / "restart", hosts, groups={"canary": ["fleet-b"]})
    extra = {
        **STAGE,
        "meshops_target": "canary:meshops_clusters",
        "meshops_cluster_waves": [1, 2],
        "rollout_report_dir": str(tmp / "restart-report"),
    }
    before = {name: fleet["kubectl"][name].snapshot() for name in ("fleet-a", "fleet-c")}
    rc, out = run_with_api_restart(
        fleet, inventory, extra, "fleet-b", "meshops.istio.istio_install_minimal : Install istiod", 16
    )
    assert rc != 0
    assert "Cluster fleet-b failed (Stop - failed step install)" in out, out[-4000:]
    assert "The fleet stops here: 2 cluster(s) not touched: fleet-a, fleet-c." in out
    assert out.count(PLAY) == 1, "the second cluster wave never started"
    summary = report(tmp / "restart-report", "rollout")
    assert statuses(summary) == {"fleet-b": "failed", "fleet-a": "not touched", "fleet-c": "not touched"}
    # What stopped it first (Helm could not reach the API server), then the lock it could not release.
    failure = next(c for c in summary["clusters"] if c["cluster"] == "fleet-b")["failure"]
    assert failure["task"] == "Stop - failed step install", failure
    message = " ".join(failure["message"].split())
    assert message.startswith("The rollout stopped at the install step"), message
    # Helm words the same fault by where the API server went: before it connected ("Kubernetes cluster
    # unreachable"), or during the upgrade's discovery ("could not get apiVersions from Kubernetes"). Both seen here.
    unreachable = ("Kubernetes cluster unreachable", "could not get apiVersions from Kubernetes")
    assert any(words in message for words in unreachable) and "connection refused" in message, message
    assert "Then: The run lock (Lease istio-system/meshops-istio-run) could not be released" in message, message
    assert {name: fleet["kubectl"][name].snapshot() for name in ("fleet-a", "fleet-c")} == before
    kubectl = fleet["kubectl"]["fleet-b"]
    kubectl.run("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
    paths = fleet["paths"]["fleet-b"]
    helm = [f"{paths['bin_dir']}/helm", "--kubeconfig", paths["kubeconfig"], "-n", "istio-system"]
    history = json.loads(
        subprocess.run([*helm, "history", "istiod", "-o", "json"], capture_output=True, text=True, check=True).stdout
    )
    assert history[-1]["status"] == "deployed", history[-1]

    result = run_fleet_playbook("playbooks/rollout.yml", inventory, extra, tmp)
    assert result.rc == 0, result.out[-4000:]
    assert result.out.count(PLAY) == 2, "the canary's wave, then the other two"
    assert statuses(report(tmp / "restart-report", "rollout")) == dict.fromkeys(("fleet-b", "fleet-a", "fleet-c"), "ok")
    for name in FLEET:
        istiod = fleet["kubectl"][name].json("-n", "istio-system", "get", "deployment", "istiod")
        env = {e["name"]: e.get("value") for e in istiod["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env.get("MESHOPS_FAULT_TEST") == "api-restart", name
    assert kubectl.run("-n", "istio-system", "get", "lease", "meshops-istio-run", check=False).returncode != 0
