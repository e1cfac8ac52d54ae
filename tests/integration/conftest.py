"""Integration tests: the collection against the real API server of the local cluster.

The session brings the local cluster up (hack/local-cluster/cluster.py; binaries are built
on first use) and down again. Each test runs ansible-playbook as a user would.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = [sys.executable, str(REPO / "hack" / "local-cluster" / "cluster.py")]
PLAYBOOKS = Path(__file__).parent / "playbooks"


def cluster_paths() -> dict:
    return json.loads(subprocess.run([*CLUSTER, "paths"], check=True, capture_output=True, text=True).stdout)


@pytest.fixture(scope="session")
def cluster():
    subprocess.run([*CLUSTER, "up"], check=True)
    yield cluster_paths()
    if os.environ.get("MESHOPS_KEEP_CLUSTER") != "1":
        subprocess.run([*CLUSTER, "down"], check=True)


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = self.binary_path()

    @staticmethod
    def binary_path() -> str:
        return shutil.which("kubectl") or str(REPO / ".venv" / "bin" / "kubectl")

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def snapshot(self) -> dict:
        """What a failed run must leave exactly as it was."""

        def names(*args):
            # (namespace, kind, name, generation): generation moves only when a spec changes,
            # unlike resourceVersion, which istiod's leader election bumps all the time.
            proc = self.run(*args, "-o", "json", check=False)
            if proc.returncode != 0:
                return []
            return sorted(
                (
                    i["metadata"].get("namespace", ""),
                    i["kind"],
                    i["metadata"]["name"],
                    i["metadata"].get("generation"),
                )
                for i in json.loads(proc.stdout)["items"]
            )

        # The five reads at once (each is a kubectl process and an API round trip; a test takes two snapshots).
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            namespaces, crds, istio_system, webhooks, helm_releases = pool.map(
                lambda args: names(*args),
                [
                    ("get", "namespaces"),
                    ("get", "crd"),
                    ("-n", "istio-system", "get", "deployments,services,serviceaccounts,secrets"),
                    ("get", "mutatingwebhookconfigurations,validatingwebhookconfigurations"),
                    ("-n", "istio-system", "get", "secrets", "-l", "owner=helm"),
                ],
            )
        return {
            "namespaces": [n[2] for n in namespaces],
            "crds": [n for n in crds if n[2].endswith(".istio.io")],
            "istio_system": istio_system,
            "webhooks": webhooks,
            "helm_releases": [n[2] for n in helm_releases],
        }


@pytest.fixture(scope="session")
def kubectl(cluster):
    return Kubectl(cluster["kubeconfig"])


LOCAL_GROUP_VARS = REPO / "hack" / "local-cluster" / "group_vars" / "all.yml"


def local_install_vars(paths: dict, **overrides) -> dict:
    """The test's options; the local cluster's settings come from LOCAL_GROUP_VARS (passed first)."""
    return {"istio_install_minimal_timeout": 120, **overrides}


class Result:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.seconds = seconds

    def recap(self, host: str = "localhost") -> dict:
        """changed/failed counts from the PLAY RECAP line for the host (the last one, for several plays)."""
        for line in reversed(self.out.splitlines()):
            if line.startswith(host) and "changed=" in line:
                return {k: int(v) for k, v in (p.split("=") for p in line.split(":", 1)[1].split())}
        raise AssertionError(f"no PLAY RECAP in output:\n{self.out[-3000:]}")


def api_writes(kubectl: Kubectl, resources: tuple) -> dict:
    """Write requests (not dry runs) the API server has counted so far per resource, from apiserver_request_total."""
    counts = dict.fromkeys(resources, 0.0)
    for line in kubectl.run("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{") or 'dry_run=""' not in line:
            continue
        labels = dict(p.split("=", 1) for p in line[line.index("{") + 1 : line.rindex("}")].split(","))
        resource, verb = labels.get("resource", "").strip('"'), labels.get("verb", "").strip('"')
        if resource in counts and verb in ("APPLY", "PATCH", "CREATE", "UPDATE") and labels.get("subresource") == '""':
            counts[resource] += float(line.rsplit(" ", 1)[1])
    return counts


LOCAL_INVENTORY = REPO / "hack" / "local-cluster" / "hosts.yml"


def playbook_command(playbook: str, extra_vars: dict, tmp_path: Path) -> list:
    """ansible-playbook for a test playbook (tests/integration/playbooks) or a collection one (playbooks/...)."""
    vars_file = tmp_path / f"vars-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps(extra_vars))
    path = REPO / playbook if playbook.startswith("playbooks/") else PLAYBOOKS / playbook
    cmd = ["ansible-playbook", str(path), "-e", f"@{LOCAL_GROUP_VARS}", "-e", f"@{vars_file}"]
    if playbook.startswith("playbooks/"):
        cmd[2:2] = ["-i", str(LOCAL_INVENTORY)]
    return cmd


@functools.lru_cache(maxsize=1)
def local_paths_json() -> str:
    """The local cluster's paths once per session, for the local inventory (see its group_vars)."""
    return os.environ.get("MESHOPS_LOCAL_PATHS") or json.dumps(cluster_paths())


def playbook_env() -> dict:
    return dict(
        os.environ,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        MESHOPS_REPO=str(REPO),
        MESHOPS_LOCAL_PATHS=local_paths_json(),
    )


def run_playbook(
    playbook: str,
    extra_vars: dict,
    tmp_path: Path,
    check: bool = False,
    verbosity: int = 0,
    diff: bool = False,
    env: dict | None = None,
) -> Result:
    cmd = playbook_command(playbook, extra_vars, tmp_path)
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or playbook_env(), check=False)
    return Result(proc, time.monotonic() - start)


@pytest.fixture
def loopback_server(tmp_path):
    """Serve a directory over HTTP on 127.0.0.1 (a chart repository or a release download site)."""
    servers = []

    def serve(directory: Path) -> str:
        def handler(*a, **kw):
            return http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **kw)

        port = free_port()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{port}"

    yield serve
    for server in servers:
        server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackPrometheus:
    """A private real Prometheus on loopback, scraping Istio-shaped counters from a spec the test writes."""

    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
        import loopback_prometheus
        from localcluster.prometheus import istio_request_series

        # Both reporters' requests (200s and, with errors=share, 503s) and latency histograms, for tests of logic
        # no proxy shows; the real sidecars of dataplane.py are scraped too.
        self.series_for = istio_request_series
        workdir.mkdir(parents=True, exist_ok=True)
        self.spec = workdir / "metrics-source.json"
        self.set_series([])
        # It also scrapes the local data plane's real sidecars and their process exporter (dataplane.py).
        from localcluster.common import dataplane_targets_dir

        self.proc, self.url = loopback_prometheus.start(
            workdir,
            self.spec,
            targets_dir=dataplane_targets_dir(),
        )

    def set_series(self, series: list) -> None:
        self.spec.write_text(json.dumps({"series": series}))

    def query(self, promql: str) -> list:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30) -> list:
        """Wait until the query returns samples (scrapes happen every second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"Prometheus at {self.url} never answered {promql!r} with data")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def loopback_prometheus(tmp_path):
    prom = LoopbackPrometheus(tmp_path / "prometheus")
    yield prom
    prom.stop()


def deployment(namespace: str, name: str, sidecar: bool = True) -> dict:
    """A Deployment whose pods carry an istio-proxy container when sidecar is true (as injected pods do)."""
    containers = [{"name": name, "image": f"example.com/{name}:1"}]
    if sidecar:
        containers.append({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.31.1"})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    }


def service(namespace: str, name: str) -> dict:
    """A Service for the Deployment of the same name (what a traffic baseline entry is for)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }


@pytest.fixture
def mesh_namespaces(kubectl):
    """Factory: a namespace with Deployments (name -> has sidecar), labeled for injection after its pods exist.

    kwok runs no containers, so 'injected' pods are made by hand: the label comes after the pods, so the
    real injector never touches them.
    """
    created = []

    def make(workloads: dict | None = None, prefix: str = "mesh") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        kubectl.run("create", "namespace", name)
        created.append(name)
        for workload, sidecar in (workloads or {"shop": True}).items():
            kubectl.run("apply", "-f", "-", stdin=json.dumps(deployment(name, workload, sidecar)))
            kubectl.run("-n", name, "rollout", "status", f"deployment/{workload}", "--timeout=120s")
        kubectl.run("label", "namespace", name, "istio-injection=enabled")
        return name

    yield make
    for name in created:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def mesh_namespace(mesh_namespaces):
    return mesh_namespaces()


# ------------------------------------------------------------------ several local clusters (a fleet)


def named_clusters(names: list[str] | tuple[str, ...], command: str = "up") -> dict:
    """Bring local clusters of their own (`cluster.py --name NAME up`: each its own API server, istiod and Prometheus
    on ports of its own) up, or down, all at once; up returns each one's paths by name."""
    procs = {
        n: subprocess.Popen([*CLUSTER, "--name", n, command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for n in names
    }
    for name, proc in procs.items():
        out = proc.communicate()[0].decode()
        if proc.returncode != 0:
            raise AssertionError(f"cluster.py --name {name} {command} failed:\n{out[-3000:]}")
    if command != "up":
        return {}
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True)
    return {n: json.loads(run([*CLUSTER, "--name", n, "paths"]).stdout) for n in names}


def local_cluster_vars(paths: dict) -> dict:
    """The variables of one local cluster's inventory host: its paths (group_vars/all.yml derives the rest)."""
    return {"meshops_local_cluster": paths["cluster_name"], "meshops_local": paths}


def fleet_inventory(directory: Path, hosts: dict, groups: dict | None = None) -> Path:
    """An inventory directory of cluster hosts (name -> host variables) in meshops_clusters, plus other groups
    (name -> host names), with the local cluster's settings as its group_vars/all.yml: as inventory variables, not
    extra variables, so each host's own (its kubeconfig, a timeout) win over them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "group_vars").mkdir(exist_ok=True)
    link = directory / "group_vars" / "all.yml"
    if not link.exists():
        link.symlink_to(LOCAL_GROUP_VARS)
    children = {group: {"hosts": {host: {} for host in names}} for group, names in (groups or {}).items()}
    inventory = {"all": {"children": {**children, "meshops_clusters": {"hosts": hosts}}}}
    (directory / "hosts.yml").write_text(json.dumps(inventory))
    return directory


def run_fleet_playbook(playbook: str, inventory: Path, extra_vars: dict, tmp_path: Path, **kwargs) -> Result:
    """A collection playbook (playbooks/...) over a fleet inventory (fleet_inventory), as a user runs it."""
    vars_file = tmp_path / f"vars-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps(extra_vars))
    cmd = ["ansible-playbook", "-i", str(inventory), str(REPO / playbook), "-e", f"@{vars_file}"]
    cmd += [f"--{k}" if v is True else f"--{k}={v}" for k, v in kwargs.items()]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=playbook_env(), check=False)
    return Result(proc, time.monotonic() - start)


# ------------------------------------------------------------------ a cluster of its own in ambient mode

# The ambient tests' cluster (test_ambient*.py, in that order: the refusals run on it before anything is installed).
# MESHOPS_AMBIENT_CLUSTER names another, so that two people (or a test run beside a demo) need not share one.
AMBIENT_CLUSTER = os.environ.get("MESHOPS_AMBIENT_CLUSTER", "ambient-a")


@pytest.fixture(scope="session")
def ambient(tmp_path_factory):
    """The ambient cluster, brought up for the session: its paths, a kubectl, the inventory host's variables
    (meshops_dataplane_mode: ambient) and an inventory of that one host."""
    tmp = tmp_path_factory.mktemp("ambient")
    paths = named_clusters([AMBIENT_CLUSTER])[AMBIENT_CLUSTER]
    host = {
        **local_cluster_vars(paths),
        "meshops_dataplane_mode": "ambient",
        "istio_install_minimal_gateway_api_url": paths["gateway_api_crds"],
    }
    yield {
        "name": AMBIENT_CLUSTER,
        "tmp": tmp,
        "paths": paths,
        "kubectl": Kubectl(paths["kubeconfig"]),
        "host": host,
        "inventory": fleet_inventory(tmp / "inventory", {AMBIENT_CLUSTER: host}),
    }
    if os.environ.get("MESHOPS_KEEP_CLUSTER") != "1":
        named_clusters([AMBIENT_CLUSTER], "down")


def ambient_run(ambient: dict, directory: str, host: dict | None = None, playbook: str = "rollout.yml", **kwargs):
    """A collection playbook over the ambient cluster, as a user runs it: rollout_stage install unless `kwargs`
    says otherwise (`extra` a dict of more extra variables; True values are bare flags, e.g. check=True); `host`
    replaces the inventory host's variables."""
    extra = {"rollout_stage": "install", **kwargs.pop("extra", {})}
    report_dir = "drift_report_dir" if playbook == "drift.yml" else "rollout_report_dir"
    extra.setdefault(report_dir, str(ambient["tmp"] / directory))
    inventory = (
        ambient["inventory"] if host is None else fleet_inventory(ambient["tmp"] / directory, {ambient["name"]: host})
    )
    return run_fleet_playbook(f"playbooks/{playbook}", inventory, extra, ambient["tmp"], **kwargs)


@pytest.fixture(scope="session")
def ambient_installed(ambient):
    """The ambient cluster with step 1 done (the install test did it already when it ran first; else it is done
    here, and a second install is a no-op)."""
    result = ambient_run(ambient, "installed")
    assert result.rc == 0, result.out[-4000:]
    return ambient
