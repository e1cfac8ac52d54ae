# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Install decisions: conflicts with an existing install, chart downloads, manifests ready to apply.

Pure logic over plain data, behind the install filters (plugins/filter/install.py). Refusals raise InvalidInput
with the message the user reads; the filters hand it on as AnsibleFilterError.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Sequence, Union
from urllib.parse import urljoin

from ansible_collections.meshops.istio.plugins.module_utils.errors import InvalidInput

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

METHOD_LABEL = "meshops.istio/install-method"
# Fields istiod itself manages on its webhook configurations: applying our value would
# fight istiod on every run (and look like drift).
ISTIOD_MANAGED_WEBHOOK_FIELDS = ("caBundle",)
# Validators whose failure policy istiod switches from Ignore to Fail once it serves.
ISTIOD_MANAGED_VALIDATORS = ("istio-validator", "istiod-default-validator")
# Locations Istio stopped publishing to with 1.31 (its Google Cloud hosting; Istio 1.31 Upgrade Notes).
RETIRED_CHART_REPOSITORIES = ("istio-release.storage.googleapis.com", "storage.googleapis.com/istio-release")
RETIRED_REGISTRIES = ("gcr.io/istio-release", "registry.istio.io")


def control_plane_differences(
    istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str
) -> List[Dict[str, Any]]:
    """How each existing istiod (istio_readiness' istiod list) differs from the install asked for: version, revision,
    install method."""
    wanted_rev = revision or "default"
    out = []
    for item in istiod:
        ref = {"namespace": item.get("namespace"), "name": item.get("name")}
        found_version = item.get("version")
        if found_version and found_version != version:
            out.append({**ref, "field": "Istio version", "declared": version, "live": found_version})
        found_rev = item.get("revision", "default")
        if found_rev != wanted_rev:
            out.append({**ref, "field": "revision", "declared": wanted_rev, "live": found_rev})
        found_method = item.get("install_method")
        if found_method and found_method not in ("unknown", method):
            out.append({**ref, "field": "install method", "declared": method, "live": found_method})
    return out


def conflicts(istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str) -> List[str]:
    """Sentences describing an existing istiod that differs in version, revision or method."""
    sentence = {
        "Istio version": "runs Istio {live}, not {declared}.",
        "revision": "belongs to revision {live!r}, not {declared!r}.",
        "install method": "was installed with {live}, not {declared}.",
    }
    return [
        f"Deployment {d['namespace']}/{d['name']} " + sentence[d["field"]].format(**d)
        for d in control_plane_differences(istiod, version, revision, method)
    ]


def control_plane_drift(
    istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str
) -> List[Dict[str, Any]]:
    """Drift entries (meshops.istio.drift_changes' shape, step install) for an istiod that differs from the declared."""
    return [
        {"step": "install", "kind": "Deployment", **d}
        for d in control_plane_differences(istiod, version, revision, method)
    ]


def chart_downloads(
    index: Mapping[str, Any], charts: Sequence[str], version: str, repository: str, overrides: Mapping[str, str]
) -> List[Dict[str, str]]:
    """For each chart, the download URL and the sha256 the repository index publishes for it (or ``overrides``)."""
    name = "helm_chart_downloads"
    if not isinstance(index, Mapping) or "entries" not in index:
        raise InvalidInput(
            f"{name}: the chart repository index at {repository} has no 'entries': check the repository URL."
        )
    out = []
    for chart in charts:
        entries = index["entries"].get(chart) or []
        entry = next((e for e in entries if str(e.get("version")) == str(version)), None)
        if entry is None:
            known = ", ".join(sorted({str(e.get("version")) for e in entries})[-5:]) or "none"
            raise InvalidInput(
                f"{name}: chart {chart!r} version {version} is not in the repository index at {repository} "
                f"(newest there: {known}): pick a published version or another chart source."
            )
        digest = overrides.get(chart) or entry.get("digest")
        if not digest:
            raise InvalidInput(
                f"{name}: chart {chart!r} {version} has no published sha256 digest in {repository}/index.yaml: "
                f"give it in istio_install_minimal_chart_sha256.{chart}."
            )
        urls = entry.get("urls") or []
        if not urls:
            raise InvalidInput(f"{name}: chart {chart!r} {version} lists no download URL in {repository}.")
        out.append(
            {
                "name": chart,
                "url": urljoin(repository.rstrip("/") + "/", urls[0]),
                "sha256": str(digest).lower(),
                "file": f"{chart}-{version}.tgz",
            }
        )
    return out


def _docs(text: str) -> List[Dict[str, Any]]:
    if yaml is None:  # pragma: no cover
        raise InvalidInput("istio_manifests: PyYAML is required")
    try:
        return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
    except yaml.YAMLError as exc:
        raise InvalidInput(f"istio_manifests: the rendered manifests are not valid YAML: {exc}") from None


def manifests(rendered: Union[str, List[Any]], method: str = "istioctl") -> List[Dict[str, Any]]:
    """Rendered install manifests (YAML text or a list of objects) as a list ready for server-side apply.

    CRDs and Namespaces come first; fields istiod manages on its webhooks are dropped so that
    applying does not fight istiod; every object is labelled with the install method.
    """
    if isinstance(rendered, str):
        docs = _docs(rendered)
    else:
        docs = [copy.deepcopy(d) for d in rendered if isinstance(d, dict) and d.get("kind")]
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        meta.setdefault("labels", {})[METHOD_LABEL] = method
        if doc["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for hook in doc.get("webhooks") or []:
                for field in ISTIOD_MANAGED_WEBHOOK_FIELDS:
                    (hook.get("clientConfig") or {}).pop(field, None)
                if doc["kind"] == "ValidatingWebhookConfiguration" and meta.get("name", "").startswith(
                    ISTIOD_MANAGED_VALIDATORS
                ):
                    # istiod switches this from Ignore to Fail once it serves validation.
                    hook.pop("failurePolicy", None)
    order = {"CustomResourceDefinition": 0, "Namespace": 1}
    return sorted(docs, key=lambda d: order.get(d["kind"], 2))


def retired_sources(options: Mapping[str, Any]) -> List[str]:
    """Sentences naming each chart or image source the run would use that Istio is retiring."""
    source = options.get("chart_source")
    found = []
    repository = str(options.get("chart_repository") or "")
    if source == "repository" and any(old in repository for old in RETIRED_CHART_REPOSITORIES):
        found.append(f"istio_install_minimal_chart_repository is {repository}.")
    oci = str(options.get("chart_oci") or "")
    if source == "oci" and any(old in oci for old in RETIRED_REGISTRIES):
        found.append(f"istio_install_minimal_chart_oci is {oci}.")
    hub = str(options.get("hub") or "")
    if any(hub == old or hub.startswith(old + "/") for old in RETIRED_REGISTRIES):
        found.append(f"The image hub is {hub}.")
    return found
