# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Telemetry addon decisions: Istio's addon manifests in, labeled and wired objects out; Telemetry resources rendered.

Pure logic over plain data, behind the telemetry filters (plugins/filter/telemetry_addons.py). Refused settings or
manifests raise InvalidInput, every problem at once where there are several; the filters hand it on as
AnsibleFilterError.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.meshops.istio.plugins.module_utils import objects
from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput

try:
    import yaml
except ImportError:  # pragma: no cover - the filters run on the controller, where ansible-core brings PyYAML
    yaml = None

MANAGED_LABEL = "meshops.istio/telemetry"
ADDON_LABEL = "meshops.istio/addon"
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshops-istio"}
ADDONS = ("prometheus", "grafana", "kiali", "jaeger")
MODES = ("install", "external", "none")
# In-cluster addresses of Istio's addons (the Services their manifests create).
IN_CLUSTER_URLS = {
    "prometheus": "http://prometheus.{ns}:9090",
    "grafana": "http://grafana.{ns}:3000",
    "jaeger": "http://tracing.{ns}:16685/jaeger",
}
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
TELEMETRY_NAME = "mesh-default"
NAMESPACE_TELEMETRY_NAME = "meshops-telemetry"


def addons_plan(addons: Mapping[str, Any]) -> Dict[str, Dict[str, str]]:
    """Validate {addon: {mode, url}}: every problem at once, naming the addon and the option."""
    problems = []
    plan = {}
    for name in ADDONS:
        cfg = addons.get(name) or {}
        mode = str(cfg.get("mode") or "none")
        url = str(cfg.get("url") or "")
        if mode not in MODES:
            problems.append(f"telemetry_addons_{name}_mode is {mode!r}: use one of {', '.join(MODES)}.")
        elif mode == "external" and not url:
            problems.append(
                f"telemetry_addons_{name}_mode is external but telemetry_addons_{name}_url is empty: give the URL of "
                f"the {name} the site runs (for example https://{name}.example.com), or use mode install."
            )
        if url and not _URL.match(url):
            problems.append(f"telemetry_addons_{name}_url {url!r} is not an http(s) URL.")
        plan[name] = {"mode": mode, "url": url.rstrip("/")}
    unknown = sorted(set(addons) - set(ADDONS))
    if unknown:
        problems.append(f"unknown addons {', '.join(unknown)}: the addons are {', '.join(ADDONS)}.")
    if problems:
        raise InvalidInput("invalid telemetry addon settings (nothing was changed): " + " ".join(problems))
    return plan


def addon_url(plan: Mapping[str, Mapping[str, str]], name: str, namespace: str) -> str:
    """Where Istio and Kiali find an addon: the external URL, or the in-cluster Service of an installed one."""
    cfg = plan.get(name) or {}
    if cfg.get("mode") == "external":
        return str(cfg["url"])
    if cfg.get("mode") == "install" and name in IN_CLUSTER_URLS:
        return IN_CLUSTER_URLS[name].format(ns=namespace)
    return ""


def _json_escape_astral(text: str) -> str:
    """Write characters beyond the BMP of a JSON document as JSON escapes (the same JSON once parsed).

    Grafana's dashboards carry emoji. The Kubernetes client sends server-side-apply bodies as JSON
    with surrogate-pair escapes, which the API server's YAML decoder rejects; as escapes inside the
    dashboard JSON itself, they reach Grafana unchanged.
    """
    out = []
    for char in text:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(char)
    return "".join(out)


def _wire_kiali(obj: Dict[str, Any], plan: Mapping[str, Mapping[str, str]], namespace: str) -> None:
    """Point Kiali's config (ConfigMap kiali, config.yaml) at the Prometheus, Grafana and tracing in use."""
    data = obj.get("data") or {}
    config = yaml.safe_load(data.get("config.yaml") or "{}") or {}
    services = config.setdefault("external_services", {})
    prometheus = addon_url(plan, "prometheus", namespace)
    if prometheus:
        services.setdefault("prometheus", {}).update({"enabled": True, "url": prometheus})
    grafana = addon_url(plan, "grafana", namespace)
    services["grafana"] = {
        "enabled": bool(grafana),
        **({"internal_url": grafana, "external_url": grafana} if grafana else {}),
    }
    tracing = addon_url(plan, "jaeger", namespace)
    services["tracing"] = {"enabled": bool(tracing)}
    if tracing:
        services["tracing"].update({"provider": "jaeger", "internal_url": tracing, "use_grpc": False})
    data["config.yaml"] = yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
    obj["data"] = data


def addon_objects(
    docs: Sequence[Any], addon: str, plan: Mapping[str, Mapping[str, str]], namespace: str = "istio-system"
) -> List[Dict[str, Any]]:
    """The objects of one addon manifest, labeled as ours; Kiali wired to the other addons."""
    if addon not in ADDONS:
        raise InvalidInput(f"telemetry_addon_objects: unknown addon {addon!r}; the addons are {', '.join(ADDONS)}")
    out = []
    for doc in docs or []:
        if not isinstance(doc, Mapping) or not doc.get("kind"):
            continue
        if doc["kind"] in ("List",):
            raise InvalidInput(f"the {addon} manifest holds a List: expected plain objects, one per document")
        obj = copy.deepcopy(dict(doc))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise InvalidInput(f"the {addon} manifest has a {obj['kind']} without a name: is it the right file?")
        meta["labels"] = {**(meta.get("labels") or {}), **MANAGED_BY, MANAGED_LABEL: "true", ADDON_LABEL: addon}
        if obj["kind"] == "ConfigMap" and addon == "kiali" and meta["name"] == "kiali":
            _wire_kiali(obj, plan, namespace)
        if obj["kind"] == "ConfigMap":
            obj["data"] = {
                k: _json_escape_astral(v) if k.endswith(".json") and isinstance(v, str) else v
                for k, v in (obj.get("data") or {}).items()
            }
        out.append(obj)
    if not any(o["kind"] == "Deployment" for o in out):
        raise InvalidInput(
            f"the {addon} manifest has no Deployment: it is not Istio's {addon}.yaml addon (samples/addons); "
            "check telemetry_addons_local_dir or the release archive."
        )
    return out


def manifest_objects(
    texts: Mapping[str, str], plan: Mapping[str, Mapping[str, str]], namespace: str = "istio-system"
) -> List[Dict[str, Any]]:
    """The objects of several addon manifests given as YAML text by addon, in one pass (see addon_objects).

    Parsing here keeps the large manifests (Grafana's dashboards) out of Ansible's variables, which made a
    per-addon loop of set_fact cost seconds.
    """
    out: List[Dict[str, Any]] = []
    for addon, text in texts.items():
        try:
            docs = list(yaml.safe_load_all(str(text)))
        except yaml.YAMLError as exc:
            raise InvalidInput(f"the {addon} addon manifest is not valid YAML: {exc}") from None
        out.extend(addon_objects(docs, str(addon), plan, namespace))
    return out


def conflicts(desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> List[str]:
    """Sentences for live objects with an addon object's kind and name that this collection did not create."""
    wanted = {
        (d["kind"], (d.get("metadata") or {}).get("namespace"), d["metadata"]["name"]): (
            d["metadata"].get("labels") or {}
        ).get(ADDON_LABEL)
        for d in desired
    }
    out = []
    for obj in live:
        key = (obj.get("kind"), objects.meta(obj).get("namespace"), objects.meta(obj).get("name"))
        if key in wanted and objects.labels(obj).get(MANAGED_LABEL) != "true":
            where = f"{key[1]}/{key[2]}" if key[1] else key[2]
            out.append(
                f"{key[0]} {where} already exists and was not created by meshops.istio: the {wanted[key]} addon "
                f"would overwrite it. Set telemetry_addons_{wanted[key]}_mode to external (and its URL) to use the "
                "one the site runs, or remove that object first."
            )
    return out


def stale(managed: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Objects this role created earlier that the current settings no longer want (removed or external addons)."""
    return objects.stale(managed, desired, MANAGED_LABEL)


def _sampling_problem(value: Any, where: str) -> Optional[str]:
    if isinstance(value, bool):
        return f"{where} is {value!r}: give a number from 0 to 100 (percent of requests traced)."
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{where} is {value!r}: give a number from 0 to 100 (percent of requests traced)."
    if not 0.0 <= number <= 100.0:
        return f"{where} is {value!r}: it is a percentage, give a number from 0 to 100 (for example 1 for 1%)."
    return None


def _telemetry_spec(provider: str, sampling: Any, access_logging: bool) -> Dict[str, Any]:
    spec: Dict[str, Any] = {}
    if provider:
        spec["tracing"] = [{"providers": [{"name": provider}], "randomSamplingPercentage": float(sampling)}]
    else:
        spec["tracing"] = [{"disableSpanReporting": True}]
    spec["accessLogging"] = [{"providers": [{"name": "envoy"}], "disabled": not access_logging}]
    return spec


def telemetry_resources(settings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The mesh-wide Telemetry in the root namespace plus per-namespace overrides; metrics stay at Istio's defaults.

    settings: root_namespace, tracing_provider ('' = no tracing), sampling_percentage, access_logging,
    namespace_overrides (list of namespace, and any of tracing_provider, sampling_percentage, access_logging).
    """
    problems = []
    root = str(settings.get("root_namespace") or "istio-system")
    provider = str(settings.get("tracing_provider") or "")
    sampling = settings.get("sampling_percentage", 1.0)
    access = bool(settings.get("access_logging", False))
    problem = _sampling_problem(sampling, "telemetry_addons_sampling_percentage")
    if problem:
        problems.append(problem)
    if provider and not _DNS_LABEL.match(provider.replace(".", "-")):
        problems.append(f"telemetry_addons_tracing_provider {provider!r} is not a valid extension provider name.")
    desired = [_telemetry(root, TELEMETRY_NAME, _telemetry_spec(provider, sampling, access) if not problems else {})]
    seen = set()
    for i, override in enumerate(settings.get("namespace_overrides") or []):
        where = f"telemetry_addons_namespace_overrides[{i}]"
        if not isinstance(override, Mapping) or not override.get("namespace"):
            problems.append(f"{where} has no namespace: each override names a namespace.")
            continue
        ns = str(override["namespace"])
        unknown = sorted(set(override) - {"namespace", "tracing_provider", "sampling_percentage", "access_logging"})
        if unknown:
            problems.append(
                f"{where} (namespace {ns}) has unknown keys {', '.join(unknown)}: use tracing_provider, "
                "sampling_percentage, access_logging."
            )
        if not _DNS_LABEL.match(ns):
            problems.append(f"{where}: {ns!r} is not a valid namespace name.")
        if ns == root:
            problems.append(f"{where}: namespace {ns} is the root namespace; set the mesh-wide options instead.")
        if ns in seen:
            problems.append(f"{where}: namespace {ns} is listed twice.")
        seen.add(ns)
        ns_sampling = override.get("sampling_percentage", sampling)
        problem = _sampling_problem(ns_sampling, f"the sampling_percentage of namespace {ns} ({where})")
        if problem:
            problems.append(problem)
            continue
        spec = _telemetry_spec(
            str(override.get("tracing_provider", provider) or ""),
            ns_sampling,
            bool(override.get("access_logging", access)),
        )
        desired.append(_telemetry(ns, NAMESPACE_TELEMETRY_NAME, spec))
    if problems:
        raise InvalidInput("invalid telemetry settings (nothing was changed): " + " ".join(problems))
    return desired


def _telemetry(namespace: str, name: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, MANAGED_LABEL: "true"}},
        "spec": spec,
    }


def extension_providers(mesh_configmap: Optional[Mapping[str, Any]]) -> List[str]:
    """Names of the extension providers in the istio ConfigMap's mesh config, plus Istio's built-in ones."""
    names = ["envoy", "prometheus", "stackdriver"]
    mesh = ((mesh_configmap or {}).get("data") or {}).get("mesh") or ""
    try:
        config = yaml.safe_load(mesh) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the mesh config in ConfigMap istio is not YAML: {exc}") from None
    for provider in config.get("extensionProviders") or []:
        if isinstance(provider, Mapping) and provider.get("name"):
            names.append(str(provider["name"]))
    return names


def tracing_providers_missing(
    telemetry: Sequence[Mapping[str, Any]], mesh_configmap: Optional[Mapping[str, Any]]
) -> List[str]:
    """The tracing providers the Telemetry resources name that the mesh config does not define, in order."""
    defined = set(extension_providers(mesh_configmap))
    missing: List[str] = []
    for resource in telemetry or []:
        for tracing in ((resource or {}).get("spec") or {}).get("tracing") or []:
            for provider in (tracing or {}).get("providers") or []:
                name = (provider or {}).get("name")
                if name and name not in defined and name not in missing:
                    missing.append(str(name))
    return missing
