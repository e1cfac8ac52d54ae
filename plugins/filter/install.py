# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Install filters, thin over plugins/module_utils/install.py and helm_release.py (the decisions)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.errors import raised_as
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

helm_release = module_utils("helm_release")
install = module_utils("install")
readiness = module_utils("readiness")


def _istiod_list(name: str, istiod: Any) -> None:
    if not isinstance(istiod, (list, tuple)):
        raise AnsibleFilterError(f"{name}: expected the istiod list from istio_readiness, got {type(istiod).__name__}")


def istio_install_conflicts(istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str) -> List[str]:
    """Sentences describing an existing istiod that differs in version, revision or method."""
    _istiod_list("istio_install_conflicts", istiod)
    return install.conflicts(istiod, version, revision, method)


def control_plane_drift(
    istiod: Sequence[Mapping[str, Any]], version: str, revision: str, method: str
) -> List[Dict[str, Any]]:
    """Drift entries (meshops.istio.drift_changes' shape, step install) for an istiod that differs from the declared."""
    _istiod_list("control_plane_drift", istiod)
    return install.control_plane_drift(istiod, version, revision, method)


def helm_release_drift(
    releases: Sequence[Mapping[str, Any]], declared: Sequence[Mapping[str, Any]], namespace: str
) -> List[Dict[str, Any]]:
    """Drift entries (step install, kind HelmRelease) for each declared release the live one does not match."""
    if not isinstance(releases, (list, tuple)) or not isinstance(declared, (list, tuple)):
        raise AnsibleFilterError(
            "helm_release_drift: expected the helm_releases list from istio_readiness and a declared list"
        )
    return helm_release.release_drift(releases, declared, namespace)


def helm_chart_downloads(
    index: Mapping[str, Any],
    charts: Sequence[str],
    version: str,
    repository: str,
    sha256_overrides: Optional[Mapping[str, str]] = None,
    directory: str = "",
) -> List[Dict[str, str]]:
    """For each chart, the download URL and the sha256 the repository index publishes for it; with ``directory``,
    the files entries of meshops.istio.verified_download (url, dest in that directory, sha256)."""
    with raised_as(AnsibleFilterError):
        charts_found = install.chart_downloads(index, charts, version, repository, sha256_overrides or {})
    if not directory:
        return charts_found
    base = directory.rstrip("/")
    return [{"url": c["url"], "dest": f"{base}/{c['file']}", "sha256": c["sha256"]} for c in charts_found]


def istio_manifests(rendered: Any, method: str = "istioctl") -> List[Dict[str, Any]]:
    """Rendered install manifests as a list ready for server-side apply."""
    if not isinstance(rendered, (str, list)):
        raise AnsibleFilterError(
            f"istio_manifests: expected YAML text or a list of objects, got {type(rendered).__name__}"
        )
    with raised_as(AnsibleFilterError):
        return install.manifests(rendered, method)


def retired_istio_sources(options: Mapping[str, Any]) -> List[str]:
    """Sentences naming each chart or image source the run would use that Istio is retiring."""
    if not isinstance(options, Mapping):
        raise AnsibleFilterError(f"retired_istio_sources: expected a dict of the role's options, got {options!r}")
    return install.retired_sources(options)


def gateway_api_problems(report: Any, version: str) -> List[str]:
    """Why the Gateway API CRDs istio_readiness found (its gateway_api) may not be replaced by ``version``."""
    if not isinstance(report, Mapping) or not isinstance(version, str):
        raise AnsibleFilterError(
            "gateway_api_problems: expected istio_readiness's gateway_api dictionary and a version like '1.6.0'"
        )
    return readiness.gateway_api_problems(dict(report), version)


class FilterModule:
    def filters(self):
        return {
            "gateway_api_problems": gateway_api_problems,
            "istio_install_conflicts": istio_install_conflicts,
            "control_plane_drift": control_plane_drift,
            "helm_release_drift": helm_release_drift,
            "helm_chart_downloads": helm_chart_downloads,
            "istio_manifests": istio_manifests,
            "retired_istio_sources": retired_istio_sources,
        }
