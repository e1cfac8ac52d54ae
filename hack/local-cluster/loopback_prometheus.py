"""A real Prometheus on loopback: the local cluster's metrics backend.

It scrapes the local data plane's real sidecars (dataplane.py writes a file_sd target file per sidecar, and one for
its process exporter, into the directory given with --targets-dir), and, for what no proxy can run (the scale
benchmark's hundreds of namespaces, the demo's kwok-only sample application), a tiny source of Istio-shaped
series described in a JSON spec.

The Prometheus is Debian's ``prometheus`` on 127.0.0.1; the spec source (this file, stdlib only) serves series
described in a JSON spec:

    {"series": [{"name": "istio_requests_total", "labels": {...}, "rate": 2.5}, ...]}

- a counter (the default) grows by ``rate`` per second while it is listed;
- ``"type": "gauge"`` serves ``value`` as it is;
- ``"type": "histogram"`` serves ``NAME_bucket`` (Istio's request-duration buckets),
  ``NAME_sum`` and ``NAME_count`` for ``rate`` observations per second, every one of
  them ``latency_ms`` long.

Rewrite the spec file at any time; the next scrape serves the new set (series that
disappear go stale in Prometheus at once).

Usage: loopback_prometheus.py run --dir DIR --port PORT --source-port PORT [--spec FILE] [--targets-dir DIR]
       (foreground; SIGTERM stops both processes)
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRAPE_INTERVAL = "1s"


def _series_key(series: dict) -> str:
    return series["name"] + json.dumps(series.get("labels", {}), sort_keys=True)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# Istio's default buckets for istio_request_duration_milliseconds.
LATENCY_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000)


def _format_labels(labels: dict) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


class CounterSource:
    """Series from a spec file; counters and histograms integrated over time so they only ever grow."""

    def __init__(self, spec: Path) -> None:
        self.spec = spec
        self.values: dict[str, float] = {}
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def _grow(self, key: str, rate: float, elapsed: float) -> float:
        self.values[key] = self.values.get(key, 0.0) + rate * elapsed
        return self.values[key]

    def _histogram(self, s: dict, elapsed: float, lines: list) -> None:
        name, labels = s["name"], s.get("labels", {})
        rate, latency = float(s.get("rate", 0)), float(s.get("latency_ms", 0))
        key = _series_key(s)
        for bound in (*LATENCY_BUCKETS_MS, "+Inf"):
            inside = bound == "+Inf" or latency <= bound
            value = self._grow(f"{key}le{bound}", rate if inside else 0.0, elapsed)
            lines.append(f"{name}_bucket{{{_format_labels({**labels, 'le': str(bound)})}}} {value:.3f}")
        lines.append(f"{name}_sum{{{_format_labels(labels)}}} {self._grow(key + 'sum', rate * latency, elapsed):.3f}")
        lines.append(f"{name}_count{{{_format_labels(labels)}}} {self._grow(key + 'count', rate, elapsed):.3f}")

    def render(self) -> str:
        try:
            series = json.loads(self.spec.read_text()).get("series", [])
        except (OSError, ValueError):
            series = []
        # One group per metric family, as the exposition format wants.
        series = sorted(series, key=lambda s: s["name"])
        with self.lock:
            now = time.monotonic()
            elapsed, self.last = now - self.last, now
            lines: list[str] = []
            typed: set[str] = set()
            for s in series:
                kind = s.get("type", "counter")
                if s["name"] not in typed:
                    lines.append(f"# TYPE {s['name']} {kind}")
                    typed.add(s["name"])
                if kind == "histogram":
                    self._histogram(s, elapsed, lines)
                    continue
                if kind == "gauge":
                    value = float(s.get("value", 0))
                else:
                    value = self._grow(_series_key(s), float(s.get("rate", 0)), elapsed)
                lines.append(f"{s['name']}{{{_format_labels(s.get('labels', {}))}}} {value:.3f}")
        return "\n".join(lines) + "\n"


def serve_source(source: CounterSource, port: int) -> http.server.ThreadingHTTPServer:
    return serve_metrics(source.render, port)


def serve_metrics(render, port: int = 0) -> http.server.ThreadingHTTPServer:
    """render() as Prometheus' text format on 127.0.0.1:port/metrics (0: a free port), on a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = render().encode()
            self.send_response(200 if self.path.startswith("/metrics") else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def prometheus_config(source_port: int, targets_dir: Path | None = None) -> str:
    """Scrape the spec's series and, with targets_dir, every target file the local data plane writes there: its
    sidecars' /stats/prometheus (labeled with the pod's namespace and name, as a kubernetes_sd pod job labels them)
    and its process exporter's container_* series (dataplane.py)."""
    config = (
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: istio-shaped\n"
        "    honor_labels: true\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{source_port}']\n"
    )
    if targets_dir is not None:
        config += (
            "  - job_name: loopback-dataplane\n"
            "    honor_labels: true\n"
            "    file_sd_configs:\n"
            f"      - files: ['{targets_dir}/*.json']\n"
            "        refresh_interval: 1s\n"
        )
    return config


def start_prometheus(workdir: Path, port: int, source_port: int, targets_dir: Path | None = None) -> subprocess.Popen:
    binary = shutil.which("prometheus")
    if not binary:
        raise SystemExit(
            "prometheus is not installed: `make prometheus` (or apt-get install prometheus) installs Debian's package"
        )
    config = workdir / "prometheus.yml"
    if targets_dir is not None:
        targets_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(prometheus_config(source_port, targets_dir))
    data = workdir / "data"
    if data.exists():
        shutil.rmtree(data)
    log_file = open(workdir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2h",
            "--log.level=warn",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def wait_ready(port: int, timeout: float = 60) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def run(workdir: Path, port: int, source_port: int, spec: Path, targets_dir: Path | None = None) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if not spec.exists():
        spec.write_text(json.dumps({"series": []}))
    server = serve_source(CounterSource(spec), source_port)
    prom = start_prometheus(workdir, port, source_port, targets_dir)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stopping.set())
    signal.signal(signal.SIGINT, lambda *_a: stopping.set())
    if not wait_ready(port):
        prom.terminate()
        raise SystemExit(f"prometheus did not become ready on 127.0.0.1:{port}; see {workdir / 'prometheus.log'}")
    print(f"prometheus ready on http://127.0.0.1:{port}, scraping 127.0.0.1:{source_port}", flush=True)
    while not stopping.is_set() and prom.poll() is None:
        stopping.wait(0.5)
    server.shutdown()
    if prom.poll() is None:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(workdir: Path, spec: Path, targets_dir: Path | None = None) -> tuple[subprocess.Popen, str]:
    """This script's `run` in a child process, on free loopback ports, serving the series of `spec` and scraping the
    data plane's targets in targets_dir. Returns once Prometheus is ready: the process (terminate it to stop both)
    and its URL."""
    port = free_port()
    args = [f"--dir={workdir}", f"--port={port}", f"--source-port={free_port()}", f"--spec={spec}"]
    args += [f"--targets-dir={targets_dir}"] if targets_dir else []
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    if "prometheus ready" not in line:
        proc.kill()
        raise RuntimeError(f"loopback Prometheus did not start: {line}{proc.stdout.read()[-2000:]}")
    return proc, f"http://127.0.0.1:{port}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="loopback_prometheus.py")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--source-port", required=True, type=int)
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--targets-dir", type=Path, help="the local data plane's scrape target files (file_sd)")
    args = parser.parse_args(argv)
    run(
        args.dir,
        args.port,
        args.source_port,
        args.spec or args.dir / "metrics-source.json",
        args.targets_dir,
    )


if __name__ == "__main__":
    os.umask(0o022)
    main(sys.argv[1:])
