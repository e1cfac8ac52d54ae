"""``charts`` and ``paths``: Istio's charts and addon manifests from its module, the Gateway API CRDs from theirs,
and the paths the playbooks read."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from .common import CLUSTER_NAME, bin_dir, cache_dir, die, go_env, istio_release, log, read_versions, sh, state_dir
from .ports import cluster_block, slot_ports, webhook_urls
from .prometheus import metrics_spec, prometheus_url

# The charts packaged from an Istio module: each chart's name (its Chart.yaml's, which names the package
# <name>-<version>.tgz) and its directory under manifests/charts. base and istiod make the control plane; cni (Istio's
# CNI node agent) and ztunnel are ambient mode's node agents.
CHARTS = {
    "base": "base",
    "istiod": "istio-control/istio-discovery",
    "cni": "istio-cni",
    "ztunnel": "ztunnel",
}


def charts_dir(v: dict[str, str], which: str = "current") -> Path:
    """Istio's charts (CHARTS) of one Istio build (common.istio_release), packaged with a Helm index."""
    return cache_dir() / "charts" / istio_release(v, which)["name"]


def chart_files(version: str) -> dict[str, str]:
    """The package file of each chart of CHARTS at ``version``: {"cni": "cni-1.31.1.tgz", ...}."""
    return {name: f"{name}-{version}.tgz" for name in CHARTS}


def index_urls(index: Path) -> set[str]:
    """The chart files a Helm repository index.yaml lists (its entries' ``urls``); empty when there is no index.

    helm repo index writes each URL as a list item of its own line (``    - base-1.31.1.tgz``), and nothing else in
    the file is a list item ending in .tgz, so no YAML parser is needed.
    """
    try:
        text = index.read_text()
    except OSError:
        return set()
    return set(re.findall(r"^\s*- (\S+\.tgz)\s*$", text, flags=re.MULTILINE))


def missing_charts(out: Path, version: str) -> list[str]:
    """The charts of CHARTS a charts directory lacks: its package file is absent or its index does not list it."""
    listed = index_urls(out / "index.yaml")
    return [name for name, file in chart_files(version).items() if file not in listed or not (out / file).is_file()]


def download_module(module: str, version: str) -> Path:
    """The source directory of a Go module at a version, from Go's module cache (the module proxy fills it)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    mod = sh(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        env=go_env(),
        capture_output=True,
        text=True,
        cwd=cache_dir(),
    )
    if mod.returncode != 0:
        die(f"cannot download {module}@{version}: {mod.stdout}{mod.stderr}")
    return Path(json.loads(mod.stdout)["Dir"])


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
    """``charts [--previous]``: package the charts of the default (or the previous) Istio build; print where.

    The Gateway API CRDs at the pinned version (write_gateway_api_crds) are written too: they go with any Istio build.
    """
    if set(args) - {"--previous"}:
        die(f"charts: unknown arguments {' '.join(args)} (expected nothing or --previous)")
    v = read_versions()
    print(package_istio(v, "previous" if "--previous" in args else "current"))
    write_gateway_api_crds(v)


def package_istio(v: dict[str, str], which: str) -> Path:
    """Package Istio's charts (CHARTS) from the Istio module of one build: an air-gapped chart source.

    Istio's addon manifests (samples/addons) and Envoy bootstrap template are copied beside them, for the same
    reason. The result is a directory with base-, istiod-, cni- and ztunnel-<version>.tgz and a Helm repository
    index.yaml listing them, usable as a local chart directory or served as a repository. Nothing is redone once
    complete; a directory made before a chart was added to CHARTS gains that chart (package_charts).
    """
    istio = istio_release(v, which)
    out = charts_dir(v, which)
    version = istio["version"]
    bootstrap = envoy_bootstrap(v, which)
    missing = missing_charts(out, version)
    if not missing and (addons_dir(v, which) / "prometheus.yaml").is_file() and bootstrap.is_file():
        return out
    module_dir = download_module("istio.io/istio", istio["module_version"])
    copy_addons(module_dir / "samples" / "addons", addons_dir(v, which))
    # pilot-agent renders Envoy's bootstrap from Istio's template (the proxy image ships it).
    bootstrap.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module_dir / "tools" / "packaging" / "common" / "envoy_bootstrap.json", bootstrap)
    if missing:
        package_charts(module_dir / "manifests" / "charts", out, version, missing)
    return out


def package_charts(src: Path, out: Path, version: str, names: list[str]) -> None:
    """Package the charts ``names`` of CHARTS from an Istio module's manifests/charts into ``out``, at ``version``.

    A new directory is made whole beside ``out`` and renamed into place. A directory that has an index already (a
    cache made before a chart was added to CHARTS) keeps the packages it has, so their digests stay those its index
    and any recorded sha256 name: the new packages are moved in one by one, then an index that adds them to the old
    one's entries (helm repo index --merge) replaces the old index. A reader of the directory meanwhile (a test
    installing from it) sees either index, each listing only files that are there.
    """
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    helm = str(cache_dir() / "current" / "helm")
    files = chart_files(version)
    for name in names:
        chart = src / CHARTS[name]
        proc = sh(
            [helm, "package", str(chart), "--version", version, "--app-version", version, "--destination", str(tmp)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            die(f"helm package {chart} failed: {proc.stderr}")
        if not (tmp / files[name]).is_file():
            die(f"helm package {chart} did not write {files[name]}: is the chart still named {name!r}?")
    old_index = out / "index.yaml"
    incremental = old_index.is_file()
    merge = ["--merge", str(old_index)] if incremental else []
    proc = sh([helm, "repo", "index", str(tmp), *merge], capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"helm repo index failed: {proc.stderr}")
    if incremental:
        for name in names:
            os.replace(tmp / files[name], out / files[name])
        os.replace(tmp / "index.yaml", old_index)
        shutil.rmtree(tmp)
        log(f"added Istio {version} charts {', '.join(names)} to {out}")
        return
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"packaged Istio {version} charts ({', '.join(names)}) into {out}")


# ------------------------------------------------------------------ the Gateway API CRDs (ambient mode's waypoints)

GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
BUNDLE_VERSION_ANNOTATION = "gateway.networking.k8s.io/bundle-version"


def gateway_api_crds(v: dict[str, str]) -> Path:
    """The Gateway API standard channel's install file at GATEWAY_API_VERSION (write_gateway_api_crds)."""
    return cache_dir() / "gateway-api" / f"v{v['GATEWAY_API_VERSION']}" / "standard-install.yaml"


def go_mod_requirement(gomod: str, module: str) -> str | None:
    """The version of ``module`` that a go.mod's text requires (``require`` line or block), None when it does not."""
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod, flags=re.MULTILINE)
    return found.group(1) if found else None


def kustomization_resources(kustomization: Path) -> list[str]:
    """The ``resources`` list of a kustomization.yaml, in its order (plain ``  - path`` items, as Gateway API's)."""
    resources: list[str] = []
    inside = False
    for raw in kustomization.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "-")):
            inside = line == "resources:"
            continue
        item = re.fullmatch(r"\s*- +(\S+)", line)
        if inside and item:
            resources.append(item.group(1).strip("\"'"))
    return resources


def yaml_documents(text: str) -> list[str]:
    """The non-empty documents of a multi-document YAML text (split at ``---`` lines; comments are not content)."""
    docs = re.split(r"^---\s*$", text, flags=re.MULTILINE)
    return [doc for doc in docs if any(ln.strip() and not ln.lstrip().startswith("#") for ln in doc.splitlines())]


def standard_install(module_dir: Path, version: str) -> str:
    """Gateway API's standard-channel install file, from the module source of ``version`` (v1.6.0).

    What upstream's release asset standard-install.yaml holds: every file of config/crd/standard/ (the channel's
    CRDs, and the ValidatingAdmissionPolicy safe-upgrades with its binding, which refuses experimental CRDs over
    standard ones and bundle versions before v1.5), here in the order config/crd/kustomization.yaml lists them, each
    after a ``---`` and a comment naming it. Every object must carry the annotation
    gateway.networking.k8s.io/bundle-version: ``version`` (istiod ignores a Gateway API CRD without it).
    """
    crd_dir = module_dir / "config" / "crd"
    listed = kustomization_resources(crd_dir / "kustomization.yaml")
    present = sorted(f"standard/{p.name}" for p in (crd_dir / "standard").glob("gateway*.yaml"))
    if sorted(listed) != present:
        die(
            f"{crd_dir}: kustomization.yaml lists {', '.join(listed) or 'nothing'}, but standard/ holds "
            f"{', '.join(present) or 'nothing'}: which of them is the standard install?"
        )
    annotation = re.compile(rf"^\s+{re.escape(BUNDLE_VERSION_ANNOTATION)}: {re.escape(version)}\s*$", re.MULTILINE)
    parts = [
        f"# Gateway API {version}, standard channel: the files of config/crd/standard/ in {GATEWAY_API_MODULE}@"
        f"{version},\n# in the order of config/crd/kustomization.yaml.\n"
        "# Written by meshops.istio's local cluster (hack/local-cluster, `cluster.py charts`).\n"
    ]
    for resource in listed:
        text = (crd_dir / resource).read_text()
        docs = yaml_documents(text)
        unmarked = [doc for doc in docs if not annotation.search(doc)]
        if not docs or unmarked:
            die(f"{crd_dir / resource}: not every object is annotated {BUNDLE_VERSION_ANNOTATION}: {version}")
        parts.append(f"---\n#\n# config/crd/{resource}\n#\n{text.rstrip()}\n")
    return "".join(parts)


def write_gateway_api_crds(v: dict[str, str]) -> Path:
    """Write standard-install.yaml of Gateway API GATEWAY_API_VERSION from its Go module, and its sha256 beside it.

    ``<cache>/gateway-api/v<version>/standard-install.yaml`` and ``standard-install.yaml.sha256`` (``<hex>
    standard-install.yaml``, as sha256sum writes it). The version must be the one the default Istio module requires
    (its go.mod), so ambient mode's waypoints get the CRDs istiod was built against. Nothing is redone while the
    file still matches its sha256.
    """
    out = gateway_api_crds(v)
    checksum = out.with_name(out.name + ".sha256")
    if out.is_file() and checksum.is_file():
        recorded = checksum.read_text().split()
        if recorded and recorded[0] == hashlib.sha256(out.read_bytes()).hexdigest():
            return out
    version = "v" + v["GATEWAY_API_VERSION"]
    istio = istio_release(v)
    gomod = (download_module("istio.io/istio", istio["module_version"]) / "go.mod").read_text()
    required = go_mod_requirement(gomod, GATEWAY_API_MODULE)
    if required != version:
        die(
            f"GATEWAY_API_VERSION={v['GATEWAY_API_VERSION']}, but Istio {istio['version']} (istio.io/istio@"
            f"{istio['module_version']}) requires {GATEWAY_API_MODULE} {required}: move the pins together "
            "(versions.env)"
        )
    text = standard_install(download_module(GATEWAY_API_MODULE, version), version)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    for path, content in ((out, text), (checksum, f"{digest}  {out.name}\n")):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(content)
        os.replace(tmp, path)
    log(f"wrote the Gateway API {version} standard CRDs into {out} (sha256 {digest})")
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
        # Ambient mode's Gateway API CRDs (standard channel) at the pinned version, written by `charts` from their
        # module; gateway_api_version comes with the other pins of versions.env below.
        "gateway_api_crds": str(gateway_api_crds(v)),
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
        # Its debug and metrics port (the collection's ambient enrollment gate reads /debug/ambientz there).
        "istiod_monitoring_url": f"http://127.0.0.1:{slot_ports(0, block)['monitoring']}",
    }


def cmd_paths(args: list[str]) -> None:
    print(json.dumps(paths(), indent=2))
