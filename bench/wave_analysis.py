"""Benchmark: what a wave's health analysis costs beyond the bake time it was asked to wait.

Usage (after `make venv`; needs Debian's prometheus, no cluster):
    .venv/bin/python bench/wave_analysis.py [WORKLOADS ...]   (default: 5 50 200)

For each size N it serves N workloads spread over 5 namespaces (each called by a meshed caller, with a latency
histogram and an istio-proxy container's CPU and memory) from a private loopback Prometheus
(hack/local-cluster/loopback_prometheus.py), then runs the module meshops.istio.wave_analysis through
ansible-playbook:

- a baseline read (stage baseline, one read over 20s);
- a bake of 10s analysed every 2s (stage bake: 5 analyses).

Each row gives the wall time of the task (from the profile_tasks callback), the time beyond the bake for the bake
row, and the instant queries Prometheus answered (its own prometheus_http_requests_total for /api/v1/query from its
/metrics, before and after). Nothing is asserted: this prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
import loopback_prometheus  # noqa: E402
from localcluster.prometheus import istio_request_series, sidecar_series  # noqa: E402  (the series the local cluster serves)

BAKE, INTERVAL = "10s", "2s"


def series(workloads: int) -> list:
    out = []
    for i in range(workloads):
        ns = f"bench-{i % 5}"
        out += istio_request_series(("caller", "web"), (ns, f"app-{i}"), 5.0, latency_ms=20)
        out += sidecar_series(ns, f"app-{i}-0", 0.05, 60 * 2**20)
    return out


def queries_answered(url: str) -> float:
    """Prometheus's own count of instant queries served, read from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics") as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def playbook(url: str, stage: str, tmp: Path) -> str:
    task = {
        "meshops.istio.wave_analysis": {
            "namespaces": [f"bench-{i}" for i in range(5)],
            "stage": stage,
            "prometheus_url": url,
            "settings": {"bake_time": BAKE, "interval": INTERVAL, "baseline_window": "20s"},
        },
        "register": "analysis",
    }
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {"name": f"wave analysis {stage}", **task},
                {
                    "ansible.builtin.assert": {
                        "that": "analysis.passed",
                        "fail_msg": "{{ analysis.problems + analysis.inconclusive }}",
                    }
                },
            ],
        }
    ]
    path = tmp / f"{stage}.yml"
    path.write_text(json.dumps(play))
    return str(path)


def run(url: str, stage: str, tmp: Path) -> tuple[float, float]:
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".build" / "collections"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "ANSIBLE_NOCOLOR": "1",
    }
    before = queries_answered(url)
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            playbook(url, stage, tmp),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-2000:])
    match = re.search(rf"wave analysis {stage} -+ (\d+\.\d+)s", proc.stdout)
    seconds = float(match.group(1)) if match else float("nan")
    return seconds, queries_answered(url) - before


def main(sizes: list[int]) -> None:
    rows = ["| workloads | stage | task time | beyond the bake | instant queries |", "|---|---|---|---|---|"]
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            spec = tmp / "spec.json"
            spec.write_text(json.dumps({"series": series(size)}))
            prom, url = loopback_prometheus.start(tmp, spec)
            try:
                time.sleep(25)  # a baseline window's worth of scrapes
                for stage in ("baseline", "bake"):
                    seconds, queries = run(url, stage, tmp)
                    beyond = f"{seconds - 10:.1f}s" if stage == "bake" else "-"
                    rows.append(f"| {size} | {stage} | {seconds:.1f}s | {beyond} | {queries:.0f} |")
            finally:
                prom.terminate()
                prom.wait(timeout=30)
    print("\n".join(rows))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5, 50, 200])
