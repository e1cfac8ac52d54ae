"""Benchmark: how the rollout and drift costs grow with the number of declared objects.

Usage (after `make venv cluster-build`):  .venv/bin/python bench/scale.py [--repeat R] [SIZE ...]   (default: 5 50;
issue 31's 500-namespace row needs 10 kwok nodes: `MESHOPS_NODE_COUNT=10 cluster.py up`, then `bench/scale.py 500`)

For each size N it creates N namespaces (scale-0 ... scale-N-1), each with two Deployments and two Services,
declares every Service in the traffic baseline, scale-0 as the pilot and the rest in two waves, then measures
on the local cluster:

- the first rollout (playbooks/rollout.yml: labels, restarts, gates, baseline objects);
- a no-op rollout (the same again: nothing to change);
- a no-op drift (playbooks/drift.yml: report only, nothing drifted);
- the anchor: `kubectl diff --server-side` over the same managed objects (namespace labels, DestinationRules,
  VirtualServices, PeerAuthentications, Telemetry, addon objects), as read back from the cluster.

Each row gives the wall time, the controller's CPU time (ansible-playbook, its workers and its module processes: on
this 2-core machine a steadier figure than the wall time), the API requests the API server counted (sum of
apiserver_request_total before and after, minus the idle rate of the cluster's own components measured just before,
over the same time) and, for playbooks, the tasks from the recap (ok + failed + skipped) and the seconds spent in
workload restarts and gates (from the profile_tasks callback), the rest being Ansible's and the modules' own cost.
The mesh itself (Istio, addons) is installed once by a warm-up run before the first size, so "first rollout" means
the namespaces' first rollout. With --repeat R the no-op rollout and the drift run R times each and the table gives
the median run and the range (one run on this 2-core machine varies by several seconds). The namespaces are removed
at the end (--keep leaves them). --save DIR keeps each run's output, profile_tasks summary included, to see where
the time goes.
Nothing is asserted: this prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

sys.path.insert(0, str(REPO / "hack" / "local-cluster"))

from conftest import CLUSTER, Kubectl, cluster_paths, run_playbook  # noqa: E402
from localcluster.prometheus import istio_request_series, metrics_spec  # noqa: E402

PREFIX = "scale-"
WARMUP_NS = "scale-warmup"
TRAFFIC = "meshops.istio/traffic-baseline=true"
TELEMETRY = "meshops.istio/telemetry=true"
# Tasks that wait for the cluster rather than for Ansible: workload restarts and the gates.
WAITING = re.compile(r"Restart only the workloads|[Gg]ate|Sidecars complete|Control plane still ready")
TASK_TIME = re.compile(r"^(.*?) -+ ([0-9.]+)s$", re.M)
COUNTER = re.compile(r"^apiserver_request_total\{[^}]*\}\s+([0-9.e+]+)$", re.M)


def requests_total(kubectl: Kubectl) -> float:
    return sum(float(v) for v in COUNTER.findall(kubectl.run("get", "--raw", "/metrics").stdout))


def idle_rate(kubectl: Kubectl, seconds: float = 10.0) -> float:
    """Requests per second the cluster's own components (istiod, controllers, kwok) make while nothing runs."""
    before = requests_total(kubectl)
    time.sleep(seconds)
    return (requests_total(kubectl) - before - 1) / seconds  # the second read itself counts once


def waiting_seconds(output: str) -> float:
    """Seconds spent in restarts and gates, from the profile_tasks summary of a run."""
    summary = output.split("=" * 79, 1)[-1]
    return sum(float(t) for name, t in TASK_TIME.findall(summary) if WAITING.search(name))


def app_manifest(namespaces: list[str]) -> str:
    items = []
    for ns in namespaces:
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for app in ("api", "web"):
            labels = {"app": app}
            items.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": app, "namespace": ns},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": app, "image": f"example.com/{app}:1"}]},
                        },
                    },
                }
            )
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": app, "namespace": ns},
                    # Headless: the local API server's default Service range (a /24) holds about 250 cluster
                    # IPs, fewer than the 1,000 Services of 500 namespaces; the collection reads no cluster IP.
                    "spec": {"selector": labels, "clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
                }
            )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def serve_traffic(namespaces: list[str]) -> None:
    """Istio-shaped request series (web -> api) for each namespace in the local cluster's loopback Prometheus,
    so step 3's metrics gate sees the traffic a meshed namespace would have."""
    series = [s for ns in namespaces for s in istio_request_series((ns, "web"), (ns, "api"), 1.0)]
    metrics_spec().write_text(json.dumps({"series": series}))


def declared(namespaces: list[str]) -> dict:
    pilot, rest = namespaces[:1], namespaces[1:]
    half = (len(rest) + 1) // 2
    waves = [{"name": "one", "namespaces": rest[:half]}, {"name": "two", "namespaces": rest[half:]}]
    return {
        "rollout_pilot_namespaces": pilot,
        "rollout_waves": [w for w in waves if w["namespaces"]],
        "rollout_timeout": 300,
        # The waves' health analysis costs the same per wave whatever the object count (bench/wave_analysis.py
        # measures it); off here so the figures stay comparable with the earlier runs of this benchmark.
        "rollout_analysis": False,
        "namespace_injection_timeout": 300,
        "traffic_baseline_services": [
            {"name": app, "namespace": ns, "port": 80} for ns in namespaces for app in ("api", "web")
        ],
    }


def managed_objects(kubectl: Kubectl, namespaces: list[str]) -> list[dict]:
    """The objects the collection manages, read back, with what the API server owns stripped."""
    out = []
    for ns in namespaces:
        labels = kubectl.json("get", "namespace", ns)["metadata"].get("labels", {})
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {k: v for k, v in labels.items() if k == "istio-injection"}},
            }
        )
    queries = [
        ("destinationrules.networking.istio.io,virtualservices.networking.istio.io", TRAFFIC),
        ("peerauthentications.security.istio.io", "meshops.istio/mtls=true"),
        ("telemetries.telemetry.istio.io,serviceaccounts,configmaps,services,deployments", TELEMETRY),
    ]
    for kinds, selector in queries:
        for item in kubectl.json("get", kinds, "-A", "-l", selector)["items"]:
            meta = item["metadata"]
            clean = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
            clean.get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
            clean.get("annotations", {}).pop("deployment.kubernetes.io/revision", None)
            out.append({k: v for k, v in item.items() if k not in ("status", "metadata")} | {"metadata": clean})
    return out


class Bench:
    def __init__(self, tmp: Path, save: Path | None = None) -> None:
        self.save = save
        self.runs = 0
        self.paths = cluster_paths()
        self.kubectl = Kubectl(self.paths["kubeconfig"])
        self.tmp = tmp
        # Resolved once: the local inventory would otherwise ask cluster.py for its paths on every task.
        self.base = {"meshops_local": self.paths}

    def playbook(self, name: str, extra: dict) -> tuple[float, int, dict]:
        rate = idle_rate(self.kubectl)
        before = requests_total(self.kubectl)
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = run_playbook(name, {**self.base, **extra}, self.tmp)
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = requests_total(self.kubectl)
        if self.save:
            self.runs += 1
            self.save.mkdir(parents=True, exist_ok=True)
            (self.save / f"{self.runs:02d}-{Path(name).stem}.log").write_text(result.out)
        if result.rc != 0:
            raise SystemExit(f"{name} failed:\n{result.out[-4000:]}")
        recap = result.recap("local-cluster")
        tasks = recap["ok"] + recap["failed"] + recap["skipped"]
        waiting = waiting_seconds(result.out)
        # ansible-playbook, its workers and module processes (all waited-for children): the controller's CPU.
        cpu_seconds = used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime
        recap = {"tasks": tasks, "waiting": waiting, "cpu": cpu_seconds}
        return result.seconds, round(after - before - 1 - rate * result.seconds), recap

    def kubectl_diff(self, namespaces: list[str]) -> tuple[float, int, int]:
        objects = managed_objects(self.kubectl, namespaces)
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        before = requests_total(self.kubectl)
        start = time.monotonic()
        proc = self.kubectl.run("diff", "--server-side", "--force-conflicts", "-f", "-", check=False, stdin=manifest)
        seconds = time.monotonic() - start
        after = requests_total(self.kubectl)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"kubectl diff failed: {proc.stderr}")
        return seconds, round(after - before - 1), len(objects)


def main() -> None:
    # Per-task times, to tell the time spent waiting on restarts and gates from Ansible's own.
    os.environ["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    os.environ["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "all"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[5, 50])
    parser.add_argument("--keep", action="store_true", help="leave the namespaces in place")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each no-op row this many times and report the median (and range)"
    )
    parser.add_argument(
        "--save", type=Path, help="write each playbook run's output (with its profile_tasks summary) to this directory"
    )
    args = parser.parse_args()
    subprocess.run([*CLUSTER, "up"], check=True, capture_output=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), args.save)
        kubectl = bench.kubectl
        spec = metrics_spec()
        original = spec.read_text() if spec.exists() else None
        # Each namespace runs two pods; kwok's nodes take 110 each (3 nodes by default: about 160 namespaces).
        nodes = kubectl.json("get", "nodes")["items"]
        room = sum(int(n["status"]["allocatable"].get("pods", 0)) for n in nodes)
        needed = 2 * (max(args.sizes) + 1) + 20  # the bench's pods plus the mesh's own
        if needed > room:
            raise SystemExit(
                f"{max(args.sizes)} namespaces need about {needed} pods; the cluster's {len(nodes)} nodes take {room}."
                f" Bring it up with more: cluster.py down, then MESHOPS_NODE_COUNT={-(-needed // 110)} cluster.py up."
            )
        # A namespace left terminating by an earlier run must be gone before it is created again.
        names = [WARMUP_NS, *(f"{PREFIX}{i}" for i in range(max(args.sizes)))]
        kubectl.run("wait", "--for=delete", *(f"namespace/{n}" for n in names), "--timeout=300s", check=False)
        kubectl.run("apply", "-f", "-", stdin=app_manifest([WARMUP_NS]))
        serve_traffic([WARMUP_NS])
        print(f"warm-up: the mesh itself, pilot {WARMUP_NS}", flush=True)
        bench.playbook("playbooks/rollout.yml", {**declared([WARMUP_NS]), "traffic_baseline_services": []})
        for size in args.sizes:
            namespaces = [f"{PREFIX}{i}" for i in range(size)]
            kubectl.run("apply", "-f", "-", stdin=app_manifest(namespaces))
            serve_traffic([WARMUP_NS, *namespaces])
            for ns in namespaces:
                kubectl.run("-n", ns, "rollout", "status", "deployment/api", "deployment/web", "--timeout=300s")
            state = declared(namespaces)
            for label, playbook, times in (
                ("first rollout", "playbooks/rollout.yml", 1),
                ("no-op rollout", "playbooks/rollout.yml", args.repeat),
                ("drift, nothing drifted", "playbooks/drift.yml", args.repeat),
            ):
                extra = {**state, "drift_report_dir": str(Path(tmp) / "drift")} if "drift" in label else state
                runs = []
                for _attempt in range(times):
                    seconds, requests, recap = bench.playbook(playbook, extra)
                    runs.append((seconds, requests, recap))
                    line = (
                        f"{size:>4} {label:24} {seconds:7.1f} s {requests:>7} requests {recap['tasks']:>4} tasks, "
                        f"{recap['waiting']:.1f} s in restarts and gates, controller CPU {recap['cpu']:.1f} s"
                    )
                    print(line, flush=True)
                # The median run by time; the spread says how much one run can be trusted on this machine.
                seconds, requests, recap = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
                spread = f" ({min(r[0] for r in runs):.1f}-{max(r[0] for r in runs):.1f})" if times > 1 else ""
                rows.append((size, label + spread, seconds, requests, recap["tasks"], recap["waiting"], recap["cpu"]))
            seconds, requests, count = bench.kubectl_diff(namespaces)
            rows.append((size, f"kubectl diff --server-side ({count} objects)", seconds, requests, None, None, None))
            print(f"{size:>4} kubectl diff ({count} objects) {seconds:7.1f} s {requests:>7} requests", flush=True)
            if not args.keep:
                kubectl.run("delete", "namespace", *namespaces, "--wait=true", "--timeout=300s", check=False)
        if not args.keep:
            kubectl.run("delete", "namespace", WARMUP_NS, "--wait=true", "--timeout=300s", check=False)
        if original is not None:
            spec.write_text(original)
    print()
    print("| namespaces | run | seconds | of which restarts and gates | controller CPU s | API requests | tasks |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for size, label, seconds, requests, tasks, waiting, cpu in rows:
        wait = "" if waiting is None else f"{waiting:.1f}"
        used = "" if cpu is None else f"{cpu:.1f}"
        print(f"| {size} | {label} | {seconds:.1f} | {wait} | {used} | {requests} | {'' if tasks is None else tasks} |")


if __name__ == "__main__":
    main()
