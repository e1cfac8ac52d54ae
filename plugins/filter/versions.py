# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Version filters: which Kubernetes versions an Istio release supports."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from ansible.errors import AnsibleFilterError

# Istio's published support matrix (istio.io, "Supported Releases": the Kubernetes versions each Istio minor is
# tested on). Add a row when the collection adopts a new Istio minor (docs/versions.md).
ISTIO_KUBERNETES_SUPPORT: Dict[str, Tuple[str, ...]] = {
    "1.26": ("1.29", "1.30", "1.31", "1.32", "1.33"),
    "1.27": ("1.29", "1.30", "1.31", "1.32", "1.33"),
    "1.28": ("1.30", "1.31", "1.32", "1.33", "1.34"),
    "1.29": ("1.31", "1.32", "1.33", "1.34", "1.35"),
    "1.30": ("1.32", "1.33", "1.34", "1.35", "1.36"),
    "1.31": ("1.32", "1.33", "1.34", "1.35", "1.36"),
}

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+][0-9A-Za-z.+-]*)?$")


def _minor(value: Any, what: str, filter_name: str) -> str:
    if isinstance(value, dict):
        # A Kubernetes /version answer: {"major": "1", "minor": "36", "gitVersion": "v1.36.3"}
        value = value.get("gitVersion") or f"{value.get('major')}.{str(value.get('minor', '')).rstrip('+')}"
    if not isinstance(value, str):
        raise AnsibleFilterError(f"{filter_name}: {what} must be a version string like '1.30.4', got {value!r}")
    match = _VERSION.match(value.strip())
    if not match:
        raise AnsibleFilterError(f"{filter_name}: {what} {value!r} is not a version like '1.30.4' or 'v1.36.3'")
    return f"{int(match.group(1))}.{int(match.group(2))}"


def _key(minor: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in minor.split("."))


def istio_kubernetes_compatibility(istio_version: Any, kubernetes_version: Any) -> Dict[str, Any]:
    """Whether istio_version supports kubernetes_version, with a sentence that says what to do."""
    name = "istio_kubernetes_compatibility"
    istio_minor = _minor(istio_version, "the Istio version", name)
    kube_minor = _minor(kubernetes_version, "the Kubernetes version", name)
    supported: List[str] = list(ISTIO_KUBERNETES_SUPPORT.get(istio_minor, ()))
    if not supported:
        known = ", ".join(sorted(ISTIO_KUBERNETES_SUPPORT, key=_key))
        return {
            "supported": False,
            "known_istio": False,
            "istio_minor": istio_minor,
            "kubernetes_minor": kube_minor,
            "supported_kubernetes": [],
            "message": f"Istio {istio_version} is not in this collection's compatibility table (known: {known}): "
            "pin a known Istio version, or add its row after checking Istio's supported releases page.",
        }
    ok = kube_minor in supported
    if ok:
        message = f"Istio {istio_version} supports Kubernetes {kube_minor}."
    elif _key(kube_minor) > _key(supported[-1]):
        message = (
            f"Istio {istio_version} does not support Kubernetes {kube_minor}: it is tested on {supported[0]} to "
            f"{supported[-1]}, and Kubernetes {kube_minor} is newer than any of them. Take an Istio release whose "
            "support table lists it, or keep the cluster on a listed version until one does."
        )
    else:
        message = (
            f"Istio {istio_version} does not support Kubernetes {kube_minor}: it is tested on {supported[0]} to "
            f"{supported[-1]}, and Kubernetes {kube_minor} is older. Upgrade the cluster first, or pick an older "
            "Istio release that supports it."
        )
    return {
        "supported": ok,
        "known_istio": True,
        "istio_minor": istio_minor,
        "kubernetes_minor": kube_minor,
        "supported_kubernetes": supported,
        "message": message,
    }


class FilterModule:
    def filters(self):
        return {"istio_kubernetes_compatibility": istio_kubernetes_compatibility}
