"""``istiod-supervise``: the host istiod supervisor.

kwok only simulates pods, so the istiod Deployment's pod serves nothing. The local
cluster therefore runs the real pilot-discovery on the host whenever the cluster has an
istiod install to serve: the Deployment istio-system/istiod exists with replicas > 0
and the injector ConfigMap exists. Scale the Deployment to 0 (or delete it) and the
host istiod stops, exactly as the webhooks would see a dead istiod pod. The webhooks
reach it by URL (https://localhost:15017/...), set in the install values overlay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import (
    CLUSTER_NAME,
    LOCAL_CLUSTER_DIR,
    cache_dir,
    find_kubectl,
    kubectl,
    log,
    pid_alive,
    state_dir,
    stop_pidfile,
)

ISTIOD_NAMESPACE = "istio-system"
ISTIOD_HTTPS_PORT = int(os.environ.get("MESHOPS_ISTIOD_HTTPS_PORT", "15017"))


def supervisor_pidfile() -> Path:
    return state_dir() / "istiod-supervisor.pid"


class ApiClient:
    """Minimal stdlib HTTPS client for the supervisor, from `kubectl config view --raw`."""

    def __init__(self) -> None:
        import base64
        import ssl

        raw = kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
        cfg = json.loads(raw)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        ctx = ssl.create_default_context()
        certs = state_dir() / "supervisor-certs"
        certs.mkdir(mode=0o700, parents=True, exist_ok=True)

        def materialize(data_key: str, file_key: str, name: str, src: dict) -> str | None:
            if src.get(data_key):
                path = certs / name
                path.write_bytes(base64.b64decode(src[data_key]))
                path.chmod(0o600)
                return str(path)
            return src.get(file_key)

        ca = materialize("certificate-authority-data", "certificate-authority", "ca.crt", cluster)
        if ca:
            ctx.load_verify_locations(ca)
        elif cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = materialize("client-certificate-data", "client-certificate", "client.crt", user)
        key = materialize("client-key-data", "client-key", "client.key", user)
        if cert and key:
            ctx.load_cert_chain(cert, key)
        self.token = user.get("token")
        self.ctx = ctx

    def get(self, path: str) -> dict | None:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.server + path)
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def istiod_wanted(api: ApiClient) -> bool:
    dep = api.get(f"/apis/apps/v1/namespaces/{ISTIOD_NAMESPACE}/deployments/istiod")
    if not dep or (dep.get("spec") or {}).get("replicas", 1) == 0:
        return False
    cm = api.get(f"/api/v1/namespaces/{ISTIOD_NAMESPACE}/configmaps/istio-sidecar-injector")
    return cm is not None


def start_pilot_discovery() -> subprocess.Popen:
    logdir = state_dir() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    workdir = state_dir() / "istiod"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        {
            "KUBECONFIG": str(state_dir() / "kubeconfig"),
            "POD_NAMESPACE": ISTIOD_NAMESPACE,
            "POD_NAME": "istiod-host",
            "REVISION": "default",
            "ISTIOD_CUSTOM_HOST": "localhost",
            "PILOT_ENABLE_ANALYSIS": "false",
            "CLUSTER_ID": "Kubernetes",
            "ENABLE_CA_SERVER": "true",
            # The local data plane (dataplane.py) runs upstream Envoy, which rejects the two Istio-only HTTP
            # filters these add. Real clusters keep Istio's defaults; only this host istiod changes them.
            "PILOT_ENABLE_METADATA_EXCHANGE": "false",
            "PILOT_ENABLE_ALPN_FILTER": "false",
        }
    )
    log_file = open(logdir / "pilot-discovery.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            str(cache_dir() / "current" / "pilot-discovery"),
            "discovery",
            f"--kubeconfig={state_dir() / 'kubeconfig'}",
            f"--kubectl={find_kubectl()}",
            f"--httpsAddr=127.0.0.1:{ISTIOD_HTTPS_PORT}",
            "--httpAddr=127.0.0.1:15080",
            "--grpcAddr=127.0.0.1:15010",
            "--secureGRPCAddr=127.0.0.1:15012",
            "--monitoringAddr=127.0.0.1:15014",
            "--keepaliveMaxServerConnectionAge=30m",
            "--log_output_level=default:info",
        ],
        cwd=workdir,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def cmd_istiod_supervise(args: list[str]) -> None:
    """Foreground loop (run detached by `up`): keep pilot-discovery in step with the cluster."""
    import signal

    api = ApiClient()
    child: subprocess.Popen | None = None
    stopping = False

    def stop(*_a: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failures = 0
    while not stopping:
        try:
            wanted = istiod_wanted(api)
            failures = 0
        except Exception as exc:  # API briefly unavailable: keep the current state
            failures += 1
            log(f"supervisor: cannot read the cluster ({exc}); keeping istiod as it is")
            wanted = child is not None and child.poll() is None
        if wanted and (child is None or child.poll() is not None):
            if child is not None:
                log(f"supervisor: pilot-discovery exited with {child.returncode}; restarting")
                time.sleep(1)
            log("supervisor: istiod is installed; starting pilot-discovery on the host")
            try:
                child = start_pilot_discovery()
            except OSError as exc:
                log(f"supervisor: cannot start pilot-discovery ({exc}); retrying")
                child = None
                time.sleep(5)
        elif not wanted and child is not None and child.poll() is None:
            log("supervisor: istiod is scaled to 0 or uninstalled; stopping pilot-discovery")
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
            child = None
        time.sleep(1 if failures == 0 else min(10, failures))
    if child is not None and child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()


def start_supervisor() -> None:
    pidfile = supervisor_pidfile()
    if pid_alive(pidfile):
        return
    logdir = state_dir() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log_file = open(logdir / "istiod-supervisor.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, str(LOCAL_CLUSTER_DIR / "cluster.py"), "istiod-supervise"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, MESHOPS_CLUSTER_NAME=CLUSTER_NAME),
    )
    pidfile.write_text(str(proc.pid))
    log(f"host istiod supervisor started (pid {proc.pid}); pilot-discovery runs while istiod is installed")


def stop_supervisor() -> None:
    stop_pidfile(supervisor_pidfile())
    # A pilot-discovery left behind by a killed supervisor.
    binary = str(cache_dir() / "current" / "pilot-discovery")
    subprocess.run(["pkill", "-f", f"^{binary} discovery"], check=False)
