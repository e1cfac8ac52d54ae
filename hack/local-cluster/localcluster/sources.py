"""``charts`` and ``paths``: Istio's charts and addon manifests from its module, and the paths the playbooks read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .common import cache_dir, die, go_env, log, read_versions, sh, state_dir
from .prometheus import PROMETHEUS_PORT, metrics_spec


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


def cmd_paths(args: list[str]) -> None:
    print(json.dumps(paths(), indent=2))
