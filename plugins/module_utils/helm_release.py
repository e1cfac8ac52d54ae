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
from typing import Any, Dict, Iterable, List, Mapping, Sequence

from ansible_collections.meshops.istio.plugins.module_utils.objects import flatten

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


def release_drift(
    releases: Sequence[Mapping[str, Any]], declared: Sequence[Mapping[str, Any]], namespace: str
) -> List[Dict[str, Any]]:
    """Drift entries (step install, kind HelmRelease) for each declared release (name, version, values) that the
    live one (latest_releases' summary, as istio_readiness reports it) does not match: missing, not deployed,
    another chart version, or a value given differently (one entry per value, by dotted path). What a Helm upgrade
    would change."""
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
