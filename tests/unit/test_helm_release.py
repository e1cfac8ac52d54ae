"""Helm release Secrets decoded without helm (plugins/module_utils/helm_release.py) and compared with the declared
releases (release_drift, behind the helm_release_drift filter). The Secrets here are built the way Helm 3 stores a
release; the integration test test_zzz_upgrade_helm.py reads real ones that helm wrote."""

import base64
import gzip
import json

import pytest
from ansible_collections.meshops.istio.plugins.module_utils.helm_release import (
    decode_release,
    latest_releases,
    release_drift,
    release_selector,
)


def release_secret(name, revision, status="deployed", version="1.31.1", values=None, compress=True):
    release = {
        "name": name,
        "version": revision,
        "info": {"status": status},
        "chart": {"metadata": {"name": name.split("-")[0], "version": version}},
        "config": values or {},
        "manifest": "---\n",
    }
    data = json.dumps(release).encode()
    data = gzip.compress(data) if compress else data
    helm_encoded = base64.b64encode(data)  # Helm's own encoding
    return {
        "metadata": {
            "name": f"sh.helm.release.v1.{name}.v{revision}",
            "labels": {"owner": "helm", "name": name, "status": status, "version": str(revision)},
        },
        "type": "helm.sh/release.v1",
        "data": {"release": base64.b64encode(helm_encoded).decode()},  # the API's
    }


def test_decode_reads_compressed_and_plain_releases():
    assert decode_release(release_secret("istiod", 1, values={"a": 1}))["config"] == {"a": 1}
    assert decode_release(release_secret("istiod", 1, compress=False))["chart"]["metadata"]["version"] == "1.31.1"
    with pytest.raises(ValueError):
        decode_release({"data": {}})


def test_latest_revision_of_each_release_in_the_order_asked():
    secrets = [
        release_secret("istiod", 1, status="superseded", version="1.30.4", values={"old": True}),
        release_secret("istiod", 10, values={"pilot": {"env": {"A": "1"}}}),
        release_secret("istiod", 2, status="superseded"),
        release_secret("istio-base", 3, status="failed"),
    ]
    out = latest_releases(secrets, ["istio-base", "istiod", "missing", "istiod"])
    assert [r["name"] for r in out] == ["istio-base", "istiod", "missing"]
    assert (out[0]["revision"], out[0]["status"]) == (3, "failed")
    assert out[1] == {
        "name": "istiod",
        "found": True,
        "revision": 10,
        "status": "deployed",
        "chart": "istiod",
        "version": "1.31.1",
        "values": {"pilot": {"env": {"A": "1"}}},
    }
    assert out[2] == {"name": "missing", "found": False}


def test_an_undecodable_secret_is_found_but_unreadable():
    broken = release_secret("istiod", 1)
    broken["data"]["release"] = base64.b64encode(b"not helm").decode()
    (out,) = latest_releases([broken], ["istiod"])
    assert out["found"] and out["status"] == "unreadable" and "cannot decode" in out["error"]


DECLARED = [
    {"name": "istio-base", "version": "1.31.1", "values": {"defaultRevision": "1-31-1", "global": {"tag": "1.31.1"}}},
    {"name": "istiod-1-31-1", "version": "1.31.1", "values": {"global": {"tag": "1.31.1"}, "revision": "1-31-1"}},
]


def live(declared, **changes):
    return [{"name": d["name"], "found": True, "status": "deployed", **d, **changes} for d in declared]


def test_releases_as_declared_are_no_drift():
    assert release_drift(live(DECLARED), DECLARED, "istio-system") == []


def test_each_difference_is_one_entry_naming_the_field():
    releases = live(DECLARED)
    releases[0] = {**releases[0], "version": "1.30.4", "status": "pending-upgrade"}
    releases[1] = {**releases[1], "values": {"global": {"tag": "1.31.0", "hub": "gcr.io/istio-release"}}}
    entries = release_drift(releases, DECLARED, "istio-system")
    ref = {"step": "install", "kind": "HelmRelease", "namespace": "istio-system"}
    assert entries == [
        {**ref, "name": "istio-base", "field": "status", "declared": "deployed", "live": "pending-upgrade"},
        {**ref, "name": "istio-base", "field": "chart version", "declared": "1.31.1", "live": "1.30.4"},
        {
            **ref,
            "name": "istiod-1-31-1",
            "field": "values.global.hub",
            "declared": "(absent)",
            "live": "gcr.io/istio-release",
        },
        {**ref, "name": "istiod-1-31-1", "field": "values.global.tag", "declared": "1.31.1", "live": "1.31.0"},
        {**ref, "name": "istiod-1-31-1", "field": "values.revision", "declared": "1-31-1", "live": "(absent)"},
    ]


def test_a_missing_release_is_one_entry():
    entries = release_drift([{"name": "istio-base", "found": False}], DECLARED[:1], "istio-system")
    assert [(e["name"], e["field"], e["declared"], e["live"]) for e in entries] == [
        ("istio-base", "(object)", "present", "missing")
    ]


def test_the_selector_names_each_release_once():
    assert release_selector(["istio-base", "istiod", "istio-base"]) == "owner=helm,name in (istio-base,istiod)"
