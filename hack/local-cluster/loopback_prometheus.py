"""A real Prometheus on loopback, scraping Istio-shaped metrics: the local cluster's metrics backend.

kwok pods run no containers, so no Envoy sidecar ever reports a request. For the
telemetry and mTLS gates to query a real Prometheus HTTP API, the local cluster runs
Debian's ``prometheus`` on 127.0.0.1 scraping a tiny metrics source (this file, stdlib
only) that serves counters described in a JSON spec:

    {"series": [{"name": "istio_requests_total", "labels": {...}, "rate": 2.5}, ...]}

Each counter grows by ``rate`` per second while it is listed. Rewrite the spec file at
any time; the next scrape serves the new set (series that disappear go stale in
Prometheus at once). Tests use this to make plaintext traffic appear or a namespace's
metrics vanish.

Usage: loopback_prometheus.py run --dir DIR --port PORT --source-port PORT [--spec FILE]
       (foreground; SIGTERM stops both processes)
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
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


class CounterSource:
    """Counters from a spec file, integrated over time so they only ever grow."""

    def __init__(self, spec: Path) -> None:
        self.spec = spec
        self.values: dict[str, float] = {}
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def render(self) -> str:
        try:
            series = json.loads(self.spec.read_text()).get("series", [])
        except (OSError, ValueError):
            series = []
        with self.lock:
            now = time.monotonic()
            elapsed, self.last = now - self.last, now
            lines: list[str] = []
            typed: set[str] = set()
            for s in series:
                key = _series_key(s)
                self.values[key] = self.values.get(key, 0.0) + float(s.get("rate", 0)) * elapsed
                if s["name"] not in typed:
                    lines.append(f"# TYPE {s['name']} counter")
                    typed.add(s["name"])
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.get("labels", {}).items()))
                lines.append(f"{s['name']}{{{labels}}} {self.values[key]:.3f}")
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


def run(workdir: Path, port: int, source_port: int, spec: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if not spec.exists():
        spec.write_text(json.dumps({"series": []}))
    server = serve_source(CounterSource(spec), source_port)
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="loopback_prometheus.py")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--source-port", required=True, type=int)
    parser.add_argument("--spec", type=Path)
    args = parser.parse_args(argv)
    run(args.dir, args.port, args.source_port, args.spec or args.dir / "metrics-source.json")


if __name__ == "__main__":
    os.umask(0o022)
    main(sys.argv[1:])
