"""``charts`` and ``paths``: Istio's charts and addon manifests from its module, and the paths the playbooks read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .common import CLUSTER_NAME, bin_dir, cache_dir, die, go_env, istio_release, log, read_versions, sh, state_dir
from .ports import cluster_block, webhook_urls
from .prometheus import metrics_spec, prometheus_url


def charts_dir(v: dict[str, str], which: str = "current") -> Path:
    """Istio's base and istiod charts of one Istio build (common.istio_release), packaged with a Helm index."""
    return cache_dir() / "charts" / istio_release(v, which)["name"]


def envoy_bootstrap(v: dict[str, str], which: str = "current") -> Path:
    """Istio's Envoy bootstrap template for this Istio build, beside its charts."""
    charts = charts_dir(v, which)
    return charts.with_name(charts.name + "-envoy_bootstrap_tmpl.json")


def addons_dir(v: dict[str, str], which: str = "current") -> Path:
    return cache_dir() / "addons" / istio_release(v, which)["name"]


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
    """``charts [--previous]``: package the charts of the default (or the previous) Istio build; print where."""
    if set(args) - {"--previous"}:
        die(f"charts: unknown arguments {' '.join(args)} (expected nothing or --previous)")
    print(package_istio(read_versions(), "previous" if "--previous" in args else "current"))


def package_istio(v: dict[str, str], which: str) -> Path:
    """Package Istio's base and istiod charts from the Istio module of one build: an air-gapped chart source.

    Istio's addon manifests (samples/addons) and Envoy bootstrap template are copied beside them, for the same
    reason. The result is a directory with base-<version>.tgz, istiod-<version>.tgz and a Helm repository
    index.yaml, usable as a local chart directory or served as a repository. Nothing is redone once present.
    """
    istio = istio_release(v, which)
    out = charts_dir(v, which)
    version = istio["version"]
    bootstrap = envoy_bootstrap(v, which)
    if (out / "index.yaml").is_file() and (addons_dir(v, which) / "prometheus.yaml").is_file() and bootstrap.is_file():
        return out
    mod = sh(
        ["go", "mod", "download", "-json", f"istio.io/istio@{istio['module_version']}"],
        env=go_env(),
        capture_output=True,
        text=True,
        cwd=cache_dir(),
    )
    if mod.returncode != 0:
        die(f"cannot download istio.io/istio@{istio['module_version']}: {mod.stdout}{mod.stderr}")
    module_dir = Path(json.loads(mod.stdout)["Dir"])
    copy_addons(module_dir / "samples" / "addons", addons_dir(v, which))
    # pilot-agent renders Envoy's bootstrap from Istio's template (the proxy image ships it).
    bootstrap.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module_dir / "tools" / "packaging" / "common" / "envoy_bootstrap.json", bootstrap)
    if (out / "index.yaml").is_file():
        return out
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
    return out


def paths() -> dict[str, str | int]:
    v = read_versions()
    current = cache_dir() / "current"
    previous = istio_release(v, "previous")
    block = cluster_block()
    webhooks = webhook_urls(0, block)
    return {
        "bin_dir": str(current),
        "charts_dir": str(charts_dir(v)),
        "addons_dir": str(addons_dir(v)),
        "envoy_bootstrap": str(envoy_bootstrap(v)),
        # The previous Istio (`cluster.py build --previous`), for revision-upgrade tests: its own binaries, not in
        # current/, and its charts. Present once built; the keys are there either way.
        "previous_istio_version": previous["version"],
        "previous_bin_dir": str(bin_dir(previous["key"])),
        "previous_charts_dir": str(charts_dir(v, "previous")),
        "previous_addons_dir": str(addons_dir(v, "previous")),
        "prometheus_url": prometheus_url(),
        "metrics_spec": str(metrics_spec()),
        "kubeconfig": str(state_dir() / "kubeconfig"),
        "workdir": str(state_dir()),
        **{k.lower(): val for k, val in v.items()},
        # Which cluster these are, its port block (localcluster/ports.py) and the webhook URLs of its host istiod's
        # slot 0, for the local install values (group_vars/all.yml).
        "cluster_name": CLUSTER_NAME,
        "port_block": block,
        "istiod_injection_url": webhooks["injection"],
        "istiod_validation_url": webhooks["validation"],
    }


def cmd_paths(args: list[str]) -> None:
    print(json.dumps(paths(), indent=2))
