"""Benchmark: a nightly drift over a fleet - one cluster against several in one run.

Usage (after `make venv cluster-build`):  .venv/bin/python bench/fleet.py [--clusters N] [--namespaces M] [--repeat R]
(default: 3 clusters of 20 namespaces, 3 runs each)

It brings up N local clusters of their own (cluster.py --name fleet-bench-K: each its own API server, istiod and
loopback Prometheus), gives each M namespaces of two Deployments and two Services declared as bench/scale.py
declares them (scale-0 the pilot, the rest in two waves, every Service in the traffic baseline), rolls all of them
out in one run (one cluster wave of N), then times the drift playbook (report only, nothing drifted) over the first
cluster alone and over all N in one run with forks N. Each row gives the wall time (median of R runs, and the
range), the ratio to the one-cluster run, the CPU seconds the controller spent (every child process: Ansible, its
forks, the modules), and the API requests each cluster's API server counted (from apiserver_request_total, minus its
idle rate over the same time). The clusters are removed at the end (--keep leaves them up). Nothing is asserted:
this prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
sys.path.insert(0, str(REPO / "bench"))

from conftest import Kubectl, fleet_inventory, local_cluster_vars, named_clusters, run_fleet_playbook  # noqa: E402
from localcluster.prometheus import istio_request_series  # noqa: E402
from scale import PREFIX, app_manifest, declared, idle_rate, requests_total  # noqa: E402


def prepare(paths: dict, namespaces: list[str]) -> Kubectl:
    """The sample namespaces in one cluster, and traffic for them in that cluster's Prometheus."""
    kubectl = Kubectl(paths["kubeconfig"])
    kubectl.run("apply", "-f", "-", stdin=app_manifest(namespaces))
    for ns in namespaces:
        kubectl.run("-n", ns, "rollout", "status", "deployment/api", "deployment/web", "--timeout=300s")
    series = [s for ns in namespaces for s in istio_request_series((ns, "web"), (ns, "api"), 1.0)]
    Path(paths["metrics_spec"]).write_text(json.dumps({"series": series}))
    return kubectl


def timed_drift(inventory: Path, target: str, kubectls: dict, extra: dict, tmp: Path, forks: int) -> tuple:
    """One drift run over ``target``: seconds, the requests each cluster of it served, and the CPU seconds the
    controller spent (ansible-playbook, its forks and the modules they ran: every child process, user and system)."""
    rates = {name: idle_rate(k, 5.0) for name, k in kubectls.items()}
    before = {name: requests_total(k) for name, k in kubectls.items()}
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_fleet_playbook("playbooks/drift.yml", inventory, {**extra, "meshops_target": target}, tmp, forks=forks)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    if result.rc != 0:
        raise SystemExit(f"drift over {target} failed:\n{result.out[-4000:]}")
    requests = {
        name: round(requests_total(k) - before[name] - 1 - rates[name] * result.seconds) for name, k in kubectls.items()
    }
    return result.seconds, requests, cpu_seconds


def main() -> None:
    # ansible-playbook of this interpreter's virtualenv, and the collection as `make collection-link` links it.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".build" / "collections"))
    os.environ.setdefault("MESHOPS_REPO", str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the clusters up")
    args = parser.parse_args()
    names = [f"fleet-bench-{i}" for i in range(args.clusters)]
    namespaces = [f"{PREFIX}{i}" for i in range(args.namespaces)]
    start = time.monotonic()
    paths = named_clusters(names)
    print(f"{len(names)} clusters up in {time.monotonic() - start:.1f} s", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            kubectls = {name: prepare(paths[name], namespaces) for name in names}
            inventory = fleet_inventory(tmp / "inventory", {n: local_cluster_vars(paths[n]) for n in names})
            state = {**declared(namespaces), "drift_report_dir": str(tmp / "drift"), "rollout_report_dir": str(tmp)}
            result = run_fleet_playbook(
                "playbooks/rollout.yml",
                inventory,
                {**state, "meshops_cluster_waves": len(names)},
                tmp,
                forks=len(names),
            )
            if result.rc != 0:
                raise SystemExit(f"the first rollout failed:\n{result.out[-4000:]}")
            print(f"first rollout of {len(names)} clusters in one wave: {result.seconds:.1f} s", flush=True)
            rows = []
            for label, target in (
                ("drift, 1 cluster", names[0]),
                (f"drift, {len(names)} clusters", "meshops_clusters"),
            ):
                runs = []
                for _attempt in range(args.repeat):
                    seconds, requests, cpu = timed_drift(inventory, target, kubectls, state, tmp, len(names))
                    runs.append((seconds, requests, cpu))
                    print(f"{label}: {seconds:.1f} s, controller CPU {cpu:.1f} s, requests {requests}", flush=True)
                seconds, requests, cpu = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
                touched = [requests[n] for n in (names[:1] if target == names[0] else names)]
                rows.append((label, seconds, min(r[0] for r in runs), max(r[0] for r in runs), touched, cpu))
            one = rows[0][1]
            print()
            print(f"{args.namespaces} namespaces per cluster, forks {len(names)}, median of {args.repeat}")
            print()
            print(
                "| run | seconds (range) | ratio to one cluster | controller CPU seconds | API requests per cluster |"
            )
            print("| --- | ---: | ---: | ---: | --- |")
            for label, seconds, low, high, touched, cpu in rows:
                per = ", ".join(str(r) for r in touched)
                print(f"| {label} | {seconds:.1f} ({low:.1f}-{high:.1f}) | {seconds / one:.2f} | {cpu:.1f} | {per} |")
            print(
                f"\nper-cluster requests, median: {statistics.median(rows[-1][4]):.0f} (one cluster: {rows[0][4][0]})"
            )
    finally:
        if not args.keep:
            named_clusters(names, "down")


if __name__ == "__main__":
    main()
