"""Benchmark: what one real sidecar of the local data plane costs, with and without the project's stats filter.

Usage (the local cluster up with Istio installed, e.g. after `make demo`; nothing else on it needs to change):
    .venv/bin/python bench/dataplane.py [--rps 20] [--seconds 20]

For each variant (the stats filter loaded through its WasmPlugin, and no filter at all) it starts one server (the
test application behind a sidecar) and one client sidecar in a namespace of its own, sends --rps requests per second
for --seconds through both sidecars, and reports:

- the time from starting the two sidecars to both ready (pilot-agent, Envoy, xDS and SDS, the wasm module compiled);
- resident memory of pilot-agent and of Envoy (the server's), at rest after start and after the load;
- CPU seconds both processes used during the load, as a share of one core;
- the median and p99 request time the caller saw.

Nothing is asserted: this prints a Markdown table. The namespaces are deleted afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
import dataplane  # noqa: E402
from localcluster.common import kubectl  # noqa: E402


def rss(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * dataplane.PAGE_SIZE / 2**20


def measure(namespace: str, with_filter: bool, rps: float, seconds: float) -> dict:
    kubectl("create", "namespace", namespace, check=False)
    plugin = dataplane.stats_plugin
    if not with_filter:
        # The same objects without the WasmPlugin: a ServiceAccount stands in for it.
        dataplane.stats_plugin = lambda ns: {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "no-stats-filter", "namespace": ns},
        }
    plane = dataplane.DataPlane()
    try:
        server = plane.server(namespace)
        client = plane.client(namespace, "loadgen")
        began = time.monotonic()
        plane.start()
        ready = time.monotonic() - began
        time.sleep(3)
        agent, *envoy = server.sidecar.processes()
        at_rest = (rss(agent), sum(rss(p) for p in envoy))
        cpu_before = dataplane.ProxyUsage.usage(server.sidecar.processes() + client.processes())[1]
        times = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.monotonic()
            reply = dataplane.request(client.ip, 80, "/", host=server.host)
            times.append((time.monotonic() - start) * 1000)
            assert reply.status == 200, reply
            time.sleep(max(0.0, 1 / rps - (time.monotonic() - start)))
        cpu = dataplane.ProxyUsage.usage(server.sidecar.processes() + client.processes())[1] - cpu_before
        loaded = (rss(agent), sum(rss(p) for p in envoy))
        times.sort()
        return {
            "variant": "stats filter (wasm, V8)" if with_filter else "no stats filter",
            "ready_s": ready,
            "rest": at_rest,
            "loaded": loaded,
            "cpu_share": cpu / seconds,
            "requests": len(times),
            "p50": statistics.median(times),
            "p99": times[int(len(times) * 0.99) - 1],
        }
    finally:
        plane.stop()
        dataplane.stats_plugin = plugin
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/dataplane.py")
    parser.add_argument("--rps", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    suffix = str(int(time.time()))[-5:]
    rows = [
        measure(f"bench-dp-{name}-{suffix}", with_filter, args.rps, args.seconds)
        for name, with_filter in (("wasm", True), ("plain", False))
    ]
    print(f"{args.rps:g} requests/s for {args.seconds:g} s through a client and a server sidecar\n")
    print(
        "| variant | both ready | pilot-agent / Envoy RSS at rest | after the load | CPU (both sidecars) | "
        "requests | p50 | p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['ready_s']:.1f} s | {r['rest'][0]:.0f} / {r['rest'][1]:.0f} MiB | "
            f"{r['loaded'][0]:.0f} / {r['loaded'][1]:.0f} MiB | {r['cpu_share'] * 100:.1f} % of a core | "
            f"{r['requests']} | {r['p50']:.2f} ms | {r['p99']:.2f} ms |"
        )


if __name__ == "__main__":
    main()
