# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Helm 3 releases as Helm stores them in the cluster, read without the helm binary: pure functions.

Helm 3 keeps each revision of a release in a Secret of type ``helm.sh/release.v1`` in the release's namespace,
labeled ``owner=helm``, ``name=<release>``, ``version=<revision>`` and ``status``. Its ``data.release`` is (under
the API's own base64) Helm's base64 of the gzip of the release as JSON: ``chart.metadata.version`` is the chart's
version and ``config`` the values given at install or upgrade (what ``helm get values`` prints). One list of those
Secrets answers what ``helm list`` and ``helm get values`` answer for every release, in one API request.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any, Dict, Iterable, List, Mapping

_GZIP_MAGIC = b"\x1f\x8b\x08"


def release_selector(names: Iterable[str]) -> str:
    """The label selector of the Secrets of these releases (every revision Helm keeps of each)."""
    return f"owner=helm,name in ({','.join(dict.fromkeys(names))})"


def decode_release(secret: Mapping[str, Any]) -> Dict[str, Any]:
    """The release a Helm release Secret holds, as Helm wrote it; ValueError when it is not one."""
    payload = (secret.get("data") or {}).get("release")
    if not payload:
        raise ValueError("no data.release")
    data = base64.b64decode(base64.b64decode(payload))
    if data[:3] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    return json.loads(data)


def _revision(secret: Mapping[str, Any]) -> int:
    try:
        return int(((secret.get("metadata") or {}).get("labels") or {}).get("version", 0))
    except (TypeError, ValueError):
        return 0


def latest_releases(secrets: Iterable[Mapping[str, Any]], names: Iterable[str]) -> List[Dict[str, Any]]:
    """For each release name, its latest revision: found, revision, status, chart name and version, and the values
    given (``config``). A release with no Secret is ``found: false``; one whose latest Secret cannot be decoded is
    found with status ``unreadable`` (its problem in ``error``)."""
    latest: Dict[str, Mapping[str, Any]] = {}
    for secret in secrets:
        name = ((secret.get("metadata") or {}).get("labels") or {}).get("name")
        if name and (name not in latest or _revision(secret) > _revision(latest[name])):
            latest[name] = secret
    out = []
    for name in dict.fromkeys(names):
        secret = latest.get(name)
        if secret is None:
            out.append({"name": name, "found": False})
            continue
        summary: Dict[str, Any] = {"name": name, "found": True, "revision": _revision(secret)}
        try:
            release = decode_release(secret)
        except (ValueError, TypeError, OSError, EOFError) as exc:
            out.append({**summary, "status": "unreadable", "error": f"cannot decode its Secret: {exc}"})
            continue
        chart = (release.get("chart") or {}).get("metadata") or {}
        summary.update(
            status=(release.get("info") or {}).get("status") or "unknown",
            chart=chart.get("name"),
            version=chart.get("version"),
            values=release.get("config") or {},
        )
        out.append(summary)
    return out
