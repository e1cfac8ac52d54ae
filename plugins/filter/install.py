# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Filters for installing Istio: conflicts with an existing install, chart downloads, manifests."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import urljoin

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.objects import flatten

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


def _control_plane_differences(
    name: str, istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str
) -> List[Dict[str, Any]]:
    """How each existing istiod differs from the install asked for: version, revision, install method."""
    if not isinstance(istiod, (list, tuple)):
        raise AnsibleFilterError(f"{name}: expected the istiod list from istio_readiness, got {type(istiod).__name__}")
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


def istio_install_conflicts(istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str) -> List[str]:
    """Sentences describing an existing istiod that differs in version, revision or method."""
    sentence = {
        "Istio version": "runs Istio {live}, not {declared}.",
        "revision": "belongs to revision {live!r}, not {declared!r}.",
        "install method": "was installed with {live}, not {declared}.",
    }
    return [
        f"Deployment {d['namespace']}/{d['name']} " + sentence[d["field"]].format(**d)
        for d in _control_plane_differences("istio_install_conflicts", istiod, version, revision, method)
    ]


def control_plane_drift(
    istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str
) -> List[Dict[str, Any]]:
    """Drift entries (meshops.istio.drift_changes' shape, step install) for an istiod that differs from the declared."""
    return [
        {"step": "install", "kind": "Deployment", **d}
        for d in _control_plane_differences("control_plane_drift", istiod, version, revision, method)
    ]


def helm_release_drift(
    releases: Sequence[Mapping[str, Any]], declared: Sequence[Mapping[str, Any]], namespace: str
) -> List[Dict[str, Any]]:
    """Drift entries (step install, kind HelmRelease) for each declared release (name, version, values) that the
    live one (istio_readiness' helm_releases) does not match: missing, not deployed, another chart version, or a
    value given differently (one entry per value, by dotted path). What a Helm upgrade would change."""
    name = "helm_release_drift"
    if not isinstance(releases, (list, tuple)) or not isinstance(declared, (list, tuple)):
        raise AnsibleFilterError(f"{name}: expected the helm_releases list from istio_readiness and a declared list")
    live_by_name = {r.get("name"): r for r in releases if isinstance(r, Mapping)}
    out: List[Dict[str, Any]] = []
    for want in declared:
        ref = {"step": "install", "kind": "HelmRelease", "namespace": namespace, "name": want["name"]}
        live = live_by_name.get(want["name"]) or {}
        if not live.get("found"):
            out.append({**ref, "field": "(object)", "declared": "present", "live": "missing"})
            continue
        if live.get("status") != "deployed":
            out.append({**ref, "field": "status", "declared": "deployed", "live": live.get("status")})
        if str(live.get("version")) != str(want["version"]):
            out.append({**ref, "field": "chart version", "declared": str(want["version"]), "live": live.get("version")})
        wanted, found = flatten(want.get("values") or {}), flatten(live.get("values") or {})
        for path in sorted(set(wanted) | set(found)):
            if wanted.get(path) != found.get(path):
                out.append(
                    {
                        **ref,
                        "field": f"values.{path}",
                        "declared": wanted.get(path, "(absent)"),
                        "live": found.get(path, "(absent)"),
                    }
                )
    return out


def helm_chart_downloads(
    index: Mapping[str, Any],
    charts: Sequence[str],
    version: str,
    repository: str,
    sha256_overrides: Optional[Mapping[str, str]] = None,
) -> List[Dict[str, str]]:
    """For each chart, the download URL and the sha256 the repository index publishes for it."""
    name = "helm_chart_downloads"
    if not isinstance(index, Mapping) or "entries" not in index:
        raise AnsibleFilterError(
            f"{name}: the chart repository index at {repository} has no 'entries': check the repository URL."
        )
    overrides = dict(sha256_overrides or {})
    out = []
    for chart in charts:
        entries = index["entries"].get(chart) or []
        entry = next((e for e in entries if str(e.get("version")) == str(version)), None)
        if entry is None:
            known = ", ".join(sorted({str(e.get("version")) for e in entries})[-5:]) or "none"
            raise AnsibleFilterError(
                f"{name}: chart {chart!r} version {version} is not in the repository index at {repository} "
                f"(newest there: {known}): pick a published version or another chart source."
            )
        digest = overrides.get(chart) or entry.get("digest")
        if not digest:
            raise AnsibleFilterError(
                f"{name}: chart {chart!r} {version} has no published sha256 digest in {repository}/index.yaml: "
                f"give it in istio_install_minimal_chart_sha256.{chart}."
            )
        urls = entry.get("urls") or []
        if not urls:
            raise AnsibleFilterError(f"{name}: chart {chart!r} {version} lists no download URL in {repository}.")
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
        raise AnsibleFilterError("istio_manifests: PyYAML is required")
    try:
        return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
    except yaml.YAMLError as exc:
        raise AnsibleFilterError(f"istio_manifests: the rendered manifests are not valid YAML: {exc}") from None


def istio_manifests(rendered: Any, method: str = "istioctl") -> List[Dict[str, Any]]:
    """Rendered install manifests as a list ready for server-side apply.

    CRDs and Namespaces come first; fields istiod manages on its webhooks are dropped so that
    applying does not fight istiod; every object is labelled with the install method.
    """
    if isinstance(rendered, str):
        docs = _docs(rendered)
    elif isinstance(rendered, list):
        docs = [copy.deepcopy(d) for d in rendered if isinstance(d, dict) and d.get("kind")]
    else:
        raise AnsibleFilterError(
            f"istio_manifests: expected YAML text or a list of objects, got {type(rendered).__name__}"
        )
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


def retired_istio_sources(options: Mapping[str, Any]) -> List[str]:
    """Sentences naming each chart or image source the run would use that Istio is retiring."""
    if not isinstance(options, Mapping):
        raise AnsibleFilterError(f"retired_istio_sources: expected a dict of the role's options, got {options!r}")
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


class FilterModule:
    def filters(self):
        return {
            "istio_install_conflicts": istio_install_conflicts,
            "control_plane_drift": control_plane_drift,
            "helm_release_drift": helm_release_drift,
            "helm_chart_downloads": helm_chart_downloads,
            "istio_manifests": istio_manifests,
            "retired_istio_sources": retired_istio_sources,
        }
