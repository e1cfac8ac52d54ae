"""``build``: the local cluster's binaries, compiled from their Go modules and cached outside the repository."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

from .common import (
    LOCAL_CLUSTER_DIR,
    VERSIONS_FILE,
    bin_dir,
    cache_dir,
    die,
    go_env,
    istio_release,
    log,
    read_versions,
    sh,
)
from .sources import package_istio, write_gateway_api_crds


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
    """What `build` builds and cache/current/ links: one wrapper Go module per upstream module.

    The previous Istio (istio_component(v, "previous")) is built on request only (`build --previous`).
    """
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
        istio_component(v, "current"),
    ]


def istio_component(v: dict[str, str], which: str) -> dict:
    """istioctl, pilot-discovery and pilot-agent of one Istio build (common.istio_release: current or previous)."""
    istio = istio_release(v, which)
    version, module_version = istio["version"], istio["module_version"]
    ldflags = " ".join(
        [
            f"-X istio.io/istio/pkg/version.buildVersion={version}",
            f"-X istio.io/istio/pkg/version.buildTag={version}",
            f"-X istio.io/istio/pkg/version.buildGitRevision={module_version}",
            "-X istio.io/istio/pkg/version.buildStatus=Clean",
            "-X istio.io/istio/pkg/version.buildHub=docker.io/istio",
        ]
    )
    return {
        "name": "istio" if which == "current" else f"istio-{which}",
        "key": istio["key"],
        "module": "istio.io/istio",
        "version": module_version,
        "binaries": {
            "istioctl": "istio.io/istio/istioctl/cmd/istioctl",
            "pilot-discovery": "istio.io/istio/pilot/cmd/pilot-discovery",
            # The sidecar agent of the local data plane (dataplane.py): it runs upstream Envoy.
            "pilot-agent": "istio.io/istio/pilot/cmd/pilot-agent",
        },
        "ldflags": ldflags,
        "staging_replace": None,
        # Some dependency versions an Istio commit requires are not served by the module
        # proxy; versions.env pins served substitutes (ISTIO_GO_REPLACES, ISTIO_PREVIOUS_GO_REPLACES).
        "replaces": parse_replaces(istio["replaces"]),
    }


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


def built(c: dict) -> bool:
    return all((bin_dir(c["key"]) / b).is_file() for b in c["binaries"])


def build_component(c: dict) -> None:
    out = bin_dir(c["key"])
    if built(c):
        log(f"{c['name']}: cached in {out}")
        return
    began = time.monotonic()
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
    seconds = int(time.monotonic() - began)
    log(f"{c['name']}: {', '.join(c['binaries'])} built in {seconds}s (module downloads included)")


STATS_FILTER_SRC = LOCAL_CLUSTER_DIR / "stats-filter"


def stats_filter_path() -> Path:
    """Where the build of the data plane's stats filter lives: keyed by its sources and the Go version."""
    digest = hashlib.sha256()
    for path in [*sorted(STATS_FILTER_SRC.glob("*.go")), STATS_FILTER_SRC / "go.mod"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    go = sh(["go", "env", "GOVERSION"], capture_output=True, text=True, env=go_env()).stdout.strip()
    digest.update(go.encode())
    return cache_dir() / "stats-filter" / f"stats-{digest.hexdigest()[:12]}.wasm"


def build_stats_filter() -> Path:
    """The local data plane's Istio stats filter (hack/local-cluster/stats-filter), built for WASI once per source."""
    out = stats_filter_path()
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    env = {**go_env(), "GOOS": "wasip1", "GOARCH": "wasm"}
    proc = sh(
        ["go", "build", "-trimpath", "-buildmode=c-shared", "-ldflags=-s -w", "-o", str(tmp), "."],
        cwd=STATS_FILTER_SRC,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        die(f"building the stats filter (in {STATS_FILTER_SRC}) failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    tmp.rename(out)
    log(f"stats filter: built {out} ({out.stat().st_size // 1024} KiB)")
    return out


def cmd_build(args: list[str]) -> None:
    """Build (or find cached) the default set, link it into cache/current/ and package its Istio charts (and write
    the Gateway API CRDs, sources.write_gateway_api_crds).

    ``--previous`` also builds the previous Istio (ISTIO_PREVIOUS_*) into its own cache directory, not linked into
    current/, and packages its charts: what the revision-upgrade tests install first.
    """
    if set(args) - {"--previous"}:
        die(f"build: unknown arguments {' '.join(args)} (expected nothing or --previous)")
    v = read_versions()
    cache_dir().mkdir(parents=True, exist_ok=True)
    wanted = components(v) + ([istio_component(v, "previous")] if "--previous" in args else [])
    todo = [c for c in wanted if not built(c)]
    if todo:
        log(f"building {', '.join(c['name'] for c in todo)} into {cache_dir()} (cold build: tens of minutes)")
        preflight_go(v)
    start = time.monotonic()
    for c in wanted:
        build_component(c)
    if todo:
        log(f"build finished in {int(time.monotonic() - start)}s")
    link_bins(v)
    build_stats_filter()
    for which in ("current", "previous") if "--previous" in args else ("current",):
        package_istio(v, which)
    write_gateway_api_crds(v)


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
