"""A real Prometheus on loopback, scraping Istio-shaped metrics: the local cluster's metrics backend.

kwok pods run no containers, so no Envoy sidecar ever reports a request. For the
telemetry, mTLS and wave-analysis gates to query a real Prometheus HTTP API, the local
cluster runs Debian's ``prometheus`` on 127.0.0.1 scraping a tiny metrics source (this
file, stdlib only) that serves series described in a JSON spec:

    {"series": [{"name": "istio_requests_total", "labels": {...}, "rate": 2.5}, ...]}

- a counter (the default) grows by ``rate`` per second while it is listed;
- ``"type": "gauge"`` serves ``value`` as it is;
- ``"type": "histogram"`` serves ``NAME_bucket`` (Istio's request-duration buckets),
  ``NAME_sum`` and ``NAME_count`` for ``rate`` observations per second, every one of
  them ``latency_ms`` long.

A series with ``"when_labeled": NS`` is served only while namespace NS is labeled for
injection (``istio-injection=enabled`` or ``istio.io/rev``), one with
``"unless_labeled": NS`` only while it is not: so a test or the demo can make a wave's
metrics degrade once the rollout labels it. The source reads the labels with kubectl
(``--kubeconfig``), at most once a second, only while a series has such a condition.

Rewrite the spec file at any time; the next scrape serves the new set (series that
disappear go stale in Prometheus at once).

Usage: loopback_prometheus.py run --dir DIR --port PORT --source-port PORT [--spec FILE]
                                  [--kubeconfig FILE [--kubectl PATH]]
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


class InjectionLabels:
    """Which namespaces are labeled for injection, from kubectl, cached for a second."""

    def __init__(self, kubeconfig: Path | None, kubectl: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl or shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
        self.read_at = -1.0
        self.labeled: set[str] = set()

    def get(self) -> set[str]:
        if self.kubeconfig is None or time.monotonic() - self.read_at < 1.0:
            return self.labeled
        try:
            out = subprocess.run(
                [
                    self.kubectl,
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--request-timeout=5s",
                    "get",
                    "namespaces",
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            labeled = set()
            for item in json.loads(out).get("items", []):
                labels = item["metadata"].get("labels") or {}
                if labels.get("istio-injection") == "enabled" or labels.get("istio.io/rev"):
                    labeled.add(item["metadata"]["name"])
            self.labeled = labeled
        except (OSError, ValueError, subprocess.SubprocessError):
            pass  # keep the last answer: a slow API server must not make series flap
        self.read_at = time.monotonic()
        return self.labeled


class CounterSource:
    """Series from a spec file; counters and histograms integrated over time so they only ever grow."""

    def __init__(self, spec: Path, kubeconfig: Path | None = None, kubectl: str | None = None) -> None:
        self.spec = spec
        self.values: dict[str, float] = {}
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.injection = InjectionLabels(kubeconfig, kubectl)

    def _served(self, series: list) -> list:
        if not any("when_labeled" in s or "unless_labeled" in s for s in series):
            return series
        labeled = self.injection.get()
        return [
            s
            for s in series
            if ("when_labeled" not in s or s["when_labeled"] in labeled)
            and ("unless_labeled" not in s or s["unless_labeled"] not in labeled)
        ]

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
        series = sorted(self._served(series), key=lambda s: s["name"])
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
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = source.render().encode()
            self.send_response(200 if self.path.startswith("/metrics") else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def prometheus_config(source_port: int) -> str:
    return (
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: istio-shaped\n"
        "    honor_labels: true\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{source_port}']\n"
    )


def start_prometheus(workdir: Path, port: int, source_port: int) -> subprocess.Popen:
    binary = shutil.which("prometheus")
    if not binary:
        raise SystemExit(
            "prometheus is not installed: `make prometheus` (or apt-get install prometheus) installs Debian's package"
        )
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(source_port))
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


def run(
    workdir: Path, port: int, source_port: int, spec: Path, kubeconfig: Path | None = None, kubectl: str | None = None
) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if not spec.exists():
        spec.write_text(json.dumps({"series": []}))
    server = serve_source(CounterSource(spec, kubeconfig, kubectl), source_port)
    prom = start_prometheus(workdir, port, source_port)
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


def start(workdir: Path, spec: Path, kubeconfig: str = "", kubectl: str = "") -> tuple[subprocess.Popen, str]:
    """This script's `run` in a child process, on free loopback ports, serving the series of `spec` (with kubeconfig,
    series with when_labeled/unless_labeled follow that cluster's namespace labels). Returns once Prometheus is
    ready: the process (terminate it to stop both) and Prometheus' URL."""
    port = free_port()
    args = [f"--dir={workdir}", f"--port={port}", f"--source-port={free_port()}", f"--spec={spec}"]
    args += [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    args += [f"--kubectl={kubectl}"] if kubectl else []
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
    parser.add_argument("--kubeconfig", type=Path, help="the cluster whose namespace labels when_labeled reads")
    parser.add_argument("--kubectl", help="the kubectl to read them with (default: from PATH)")
    args = parser.parse_args(argv)
    run(
        args.dir,
        args.port,
        args.source_port,
        args.spec or args.dir / "metrics-source.json",
        args.kubeconfig,
        args.kubectl,
    )


if __name__ == "__main__":
    os.umask(0o022)
    main(sys.argv[1:])
