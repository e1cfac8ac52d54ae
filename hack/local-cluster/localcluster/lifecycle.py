"""``up``, ``down`` and ``status``: the cluster itself, run by kwokctl's binary runtime with the cached binaries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from .build import cmd_build
from .common import (
    CLUSTER_NAME,
    cache_dir,
    cluster_logs_hint,
    die,
    kubectl,
    log,
    read_versions,
    sh,
    state_dir,
    stop_pidfile,
    wait_for,
)
from .istiod import served_revisions, start_supervisor, stop_supervisor
from .ports import claim_block, host_lock
from .prometheus import start_metrics_stack, stop_metrics_stack
from .sources import paths

NODE_COUNT = int(os.environ.get("MESHOPS_NODE_COUNT", "3"))
# kwokctl allocates its ports itself (from 32766 down); set this only to pin the API port.
APISERVER_PORT = os.environ.get("MESHOPS_APISERVER_PORT", "")


def kwokctl_env() -> dict[str, str]:
    env = dict(os.environ)
    env["KWOK_WORKDIR"] = str(cache_dir() / "kwok")
    # Everything is local: never let kwokctl reach for a download.
    env["KWOK_KUBE_VERSION"] = "v" + read_versions()["KUBERNETES_VERSION"]
    return env


def kwokctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run kwokctl; its structured log goes to <state>/logs/kwokctl.log, shown on failure."""
    binary = cache_dir() / "current" / "kwokctl"
    cmd = [str(binary), "--name", CLUSTER_NAME, *args]
    proc = sh(cmd, env=kwokctl_env(), capture_output=True, text=True)
    logdir = state_dir() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / "kwokctl.log", "a") as fh:
        fh.write(f"$ kwokctl {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        die(
            f"`kwokctl {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}\n"
            f"Component logs: {cluster_logs_hint()}"
        )
    return proc


def api_ready() -> bool:
    if not (state_dir() / "kubeconfig").is_file():
        return False
    try:
        proc = kubectl("get", "--raw", "/readyz", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


def ready_nodes() -> list[str]:
    proc = kubectl("get", "nodes", "-o", "json", check=False)
    if proc.returncode != 0:
        return []
    names = []
    for node in json.loads(proc.stdout).get("items", []):
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            names.append(node["metadata"]["name"])
    return names


def cluster_exists() -> bool:
    return (cache_dir() / "kwok" / "clusters" / CLUSTER_NAME).exists()


def cmd_up(args: list[str]) -> None:
    start = time.monotonic()
    cmd_build([])
    v = read_versions()
    bins = cache_dir() / "current"
    state_dir().mkdir(parents=True, exist_ok=True)
    kubeconfig = state_dir() / "kubeconfig"
    if api_ready() and len(ready_nodes()) >= NODE_COUNT:
        with host_lock():
            claim_block()
        start_supervisor()
        start_metrics_stack()
        log(f"cluster {CLUSTER_NAME!r} is already up; kubeconfig: {kubeconfig}")
        return
    if cluster_exists():
        log(f"cluster {CLUSTER_NAME!r} exists but is not healthy: recreating it")
        cmd_down([])
        state_dir().mkdir(parents=True, exist_ok=True)
    with host_lock():
        block = claim_block()
        log(
            f"starting cluster {CLUSTER_NAME!r}: Kubernetes v{v['KUBERNETES_VERSION']}, "
            f"etcd {v['ETCD_VERSION']}, kwok {v['KWOK_VERSION']}" + (f"; host port block {block}" if block else "")
        )
        kwokctl(
            "create",
            "cluster",
            "--runtime=binary",
            f"--kubeconfig={kubeconfig}",
            *([f"--kube-apiserver-port={APISERVER_PORT}"] if APISERVER_PORT else []),
            "--kube-authorization=true",
            "--kube-admission=true",
            f"--etcd-binary={bins / 'etcd'}",
            f"--kube-apiserver-binary={bins / 'kube-apiserver'}",
            f"--kube-controller-manager-binary={bins / 'kube-controller-manager'}",
            f"--kube-scheduler-binary={bins / 'kube-scheduler'}",
            f"--kwok-controller-binary={bins / 'kwok'}",
            "--wait=120s",
        )
    wait_for("the API server's /readyz", api_ready, 120)
    log(f"creating {NODE_COUNT} kwok nodes")
    kwokctl("scale", "node", f"--replicas={NODE_COUNT}")
    wait_for(f"{NODE_COUNT} Ready nodes", lambda: len(ready_nodes()) >= NODE_COUNT, 120)
    start_supervisor()
    start_metrics_stack()
    log(f"cluster {CLUSTER_NAME!r} is up in {time.monotonic() - start:.1f}s; nodes: {', '.join(ready_nodes())}")
    log(f"export KUBECONFIG={kubeconfig}")


def cmd_down(args: list[str]) -> None:
    stop_supervisor()
    stop_metrics_stack()
    # Data-plane sidecars (dataplane.py) a killed test left running.
    for pidfile in (state_dir() / "dataplane").glob("*/agent.pid"):
        stop_pidfile(pidfile)
    if cluster_exists() and (cache_dir() / "current" / "kwokctl").exists():
        log(f"deleting cluster {CLUSTER_NAME!r}")
        kwokctl("delete", "cluster", f"--kubeconfig={state_dir() / 'kubeconfig'}", check=False)
    leftover = cache_dir() / "kwok" / "clusters" / CLUSTER_NAME
    if leftover.exists():
        shutil.rmtree(leftover, ignore_errors=True)
    if state_dir().exists():
        shutil.rmtree(state_dir(), ignore_errors=True)
    log(f"cluster {CLUSTER_NAME!r} is down")


def cmd_status(args: list[str]) -> None:
    up = api_ready()
    nodes = ready_nodes() if up else []
    status = {"name": CLUSTER_NAME, "api_ready": up, "ready_nodes": nodes, "istiod_revisions": served_revisions()}
    print(json.dumps({**status, **paths()}, indent=2))
    raise SystemExit(0 if up else 3)
