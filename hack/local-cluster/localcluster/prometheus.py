"""The loopback Prometheus, and the Istio-shaped series it serves.

A real Prometheus (Debian's package) on 127.0.0.1 scraping Istio-shaped counters that
loopback_prometheus.py serves from a JSON spec: the `external` Prometheus of the local
scenario. The default spec is the sample application's traffic, all of it mTLS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .common import (
    LOCAL_CLUSTER_DIR,
    dataplane_targets_dir,
    die,
    log,
    pid_alive,
    state_dir,
    stop_pidfile,
)
from .ports import cluster_prometheus_ports


def prometheus_url() -> str:
    return f"http://127.0.0.1:{cluster_prometheus_ports()['prometheus']}"


def metrics_spec() -> Path:
    return state_dir() / "prometheus" / "metrics-source.json"


def workload_labels(src: tuple[str, str], dst: tuple[str, str], mtls: bool) -> dict:
    """The source and destination labels Istio's proxies put on a series (namespace, workload each)."""
    return {
        "source_workload": src[1],
        "source_workload_namespace": src[0],
        "source_principal": f"spiffe://cluster.local/ns/{src[0]}/sa/default" if mtls else "unknown",
        "destination_workload": dst[1],
        "destination_workload_namespace": dst[0],
        "destination_service": f"{dst[1]}.{dst[0]}.svc.cluster.local",
    }


def istio_request_series(
    src: tuple[str, str],
    dst: tuple[str, str],
    rate: float,
    mtls: bool = True,
    errors: float = 0.0,
    latency_ms: float = 20.0,
) -> list[dict]:
    """Series an Envoy sidecar pair would report for HTTP traffic from src to dst (namespace, workload).

    Both sides report (reporter source and destination): requests split into 200 and 503 by the share ``errors``,
    and the request-duration histogram. Only for what no proxy can run (the scale benchmark's many namespaces, unit
    tests, the kwok-only sample application): the local data plane's real sidecars report the real thing.
    """
    labels = {**workload_labels(src, dst, mtls), "request_protocol": "http"}
    labels["connection_security_policy"] = "mutual_tls" if mtls else "none"
    series = []
    for reporter in ("destination", "source"):
        side = {**labels, "reporter": reporter}
        for code, share in (("200", 1.0 - errors), ("503", errors)):
            if share > 0:
                labels_code = {**side, "response_code": code}
                series.append({"name": "istio_requests_total", "labels": labels_code, "rate": rate * share})
        series.append(
            {
                "name": "istio_request_duration_milliseconds",
                "type": "histogram",
                "labels": side,
                "rate": rate,
                "latency_ms": latency_ms,
            }
        )
    return series


def ztunnel_connection_series(src: tuple[str, str], dst: tuple[str, str], rate: float, mtls: bool) -> list[dict]:
    """The series the destination node's ztunnel would report for TCP connections from src to dst (namespace,
    workload; ("unknown", "unknown") for a client outside the mesh), with ztunnel's label names and values:
    ``connection_security_policy`` is ``mutual_tls`` over HBONE and ``unknown`` for a plaintext client. No ztunnel
    runs on the local cluster (docs/local-cluster.md), so the ambient tests' L4 evidence is this stand-in.
    """
    labels = {**workload_labels(src, dst, mtls), "reporter": "destination", "request_protocol": "tcp"}
    labels.update(response_flags="-", connection_security_policy="mutual_tls" if mtls else "unknown")
    return [{"name": "istio_tcp_connections_opened_total", "labels": labels, "rate": rate}]


def sidecar_series(namespace: str, pod: str, cpu_cores: float, memory_bytes: float) -> list[dict]:
    """cAdvisor's series for a pod's istio-proxy container: CPU seconds (a counter) and working-set memory."""
    labels = {"namespace": namespace, "pod": pod, "container": "istio-proxy"}
    return [
        {"name": "container_cpu_usage_seconds_total", "labels": labels, "rate": cpu_cores},
        {
            "name": "container_memory_working_set_bytes",
            "type": "gauge",
            "labels": labels,
            "value": memory_bytes,
        },
    ]


SAMPLE_TRAFFIC = [
    (("sample-frontend", "web"), ("sample-backend", "api"), 5.0),
    (("sample-frontend", "web"), ("sample-frontend", "catalog"), 2.0),
    (("sample-backend", "api"), ("sample-backend", "ledger"), 1.0),
]


def prometheus_pidfile() -> Path:
    return state_dir() / "prometheus.pid"


def start_metrics_stack() -> None:
    if pid_alive(prometheus_pidfile()):
        return
    if not shutil.which("prometheus"):
        die(
            "prometheus is not installed: the local cluster's metrics backend is Debian's `prometheus` "
            "package; run `make prometheus` (apt-get install prometheus)"
        )
    workdir = metrics_spec().parent
    workdir.mkdir(parents=True, exist_ok=True)
    if not metrics_spec().exists():
        series = [s for src, dst, rate in SAMPLE_TRAFFIC for s in istio_request_series(src, dst, rate)]
        metrics_spec().write_text(json.dumps({"series": series}, indent=2))
    log_file = open(workdir / "loopback-prometheus.log", "ab")  # noqa: SIM115 - owned by the child
    ports = cluster_prometheus_ports()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(LOCAL_CLUSTER_DIR / "loopback_prometheus.py"),
            "run",
            f"--dir={workdir}",
            f"--port={ports['prometheus']}",
            f"--source-port={ports['metrics_source']}",
            f"--spec={metrics_spec()}",
            f"--targets-dir={dataplane_targets_dir()}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    prometheus_pidfile().write_text(str(proc.pid))
    sys.path.insert(0, str(LOCAL_CLUSTER_DIR))
    from loopback_prometheus import wait_ready

    if not wait_ready(ports["prometheus"]):
        die(f"the loopback Prometheus did not start; see {workdir / 'loopback-prometheus.log'}")
    log(f"loopback Prometheus on {prometheus_url()} (Istio-shaped metrics from {metrics_spec()})")


def stop_metrics_stack() -> None:
    stop_pidfile(prometheus_pidfile())
