"""mTLS readiness decisions (module_utils/mtls.py) and the PeerAuthentication conflict filter."""

import pytest
from ansible_collections.meshops.istio.plugins.filter.peer_authentication import peer_authentication_conflicts
from ansible_collections.meshops.istio.plugins.module_utils.mtls import (
    effective_mode,
    mtls_only_authorization,
    namespace_readiness,
    plaintext_query,
    plaintext_sources,
    tls_disabling_rules,
)


def sample(dst_ns, dst, src_ns, src, value):
    labels = {
        "destination_workload_namespace": dst_ns,
        "destination_workload": dst,
        "source_workload_namespace": src_ns,
        "source_workload": src,
    }
    return {"labels": labels, "value": value}


def pa(namespace, name, mode=None, selector=None, created="2026-01-01T00:00:00Z"):
    spec = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = selector
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created}, "spec": spec}


def decide(**kw):
    args = {
        "namespace": "shop",
        "sidecar_report": {"complete": True},
        "sidecar_problems": [],
        "plaintext": [],
        "evidence_problem": None,
        "tls_rules": [],
        "authz": [],
        "mode": "PERMISSIVE",
        "window": "3600s",
    }
    args.update(kw)
    return namespace_readiness(**args)


def test_query_asks_destination_reported_non_mtls_request_and_tcp_metrics():
    query = plaintext_query("600s")
    assert 'connection_security_policy!="mutual_tls"' in query
    assert 'reporter="destination"' in query
    assert "istio_tcp_connections_opened_total" in query and "[600s]" in query


def test_plaintext_sources_are_ranked_limited_and_named():
    samples = [
        sample("shop", "api", "batch", "report", 5),
        sample("shop", "api", "unknown", "unknown", 50),
        sample("shop", "web", "ops", "curl", 1),
        sample("other", "api", "batch", "report", 99),
    ]
    rows = plaintext_sources(samples, "shop", top=2)
    assert rows == [
        {"source": "unknown (a client without a sidecar)", "destination": "shop/api", "count": 50.0},
        {"source": "batch/report", "destination": "shop/api", "count": 5.0},
    ]


def test_clean_namespace_is_ready():
    report = decide()
    assert report["ready_for_strict"] is True and report["problems"] == []


def test_plaintext_traffic_blocks_strict_and_names_the_source():
    report = decide(plaintext=[{"source": "batch/report", "destination": "shop/api", "count": 5.0}])
    assert report["ready_for_strict"] is False
    assert "batch/report -> shop/api (5)" in report["problems"][0]


def test_missing_evidence_blocks_strict_and_says_so():
    report = decide(plaintext=None, evidence_problem="cannot reach Prometheus at http://p")
    assert report["ready_for_strict"] is False
    assert report["traffic_evidence"] is False
    assert "the traffic evidence is missing (cannot reach Prometheus at http://p)" in report["problems"][0]


def test_sidecar_gap_blocks_strict():
    report = decide(sidecar_report={"complete": False}, sidecar_problems=["Namespace shop: 1 of 3 eligible pods ..."])
    assert report["ready_for_strict"] is False and report["sidecars_complete"] is False
    incomplete = decide(sidecar_report={"complete": False})
    assert "not every eligible pod runs a Ready sidecar" in incomplete["problems"][0]


def test_authorization_advisories_do_not_block_and_vanish_under_strict():
    authz = [("AuthorizationPolicy shop/only-frontend", ["source.namespaces"])]
    permissive = decide(authz=authz)
    assert permissive["ready_for_strict"] is True
    assert "plaintext requests never match it" in permissive["advisories"][0]
    assert decide(authz=authz, mode="STRICT")["advisories"] == []


@pytest.mark.parametrize(
    ("rule_ns", "spec", "hit"),
    [
        ("shop", {"host": "api", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}, "trafficPolicy"),
        (
            "other",
            {"host": "api.shop.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
            "trafficPolicy",
        ),
        ("istio-system", {"host": "*.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}, "trafficPolicy"),
        (
            "shop",
            {
                "host": "api.shop",
                "trafficPolicy": {"portLevelSettings": [{"port": {"number": 8080}, "tls": {"mode": "DISABLE"}}]},
            },
            "trafficPolicy port 8080",
        ),
        (
            "shop",
            {"host": "api", "subsets": [{"name": "v1", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}]},
            "subset v1",
        ),
        ("shop", {"host": "api", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}, None),
        ("other", {"host": "api", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}, None),
        ("shop", {"host": "example.com", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}, None),
    ],
)
def test_destination_rules_that_disable_tls_toward_the_namespace(rule_ns, spec, hit):
    rule = {"metadata": {"namespace": rule_ns, "name": "r"}, "spec": spec}
    found = tls_disabling_rules([rule], "shop")
    if hit:
        assert len(found) == 1 and f"DestinationRule {rule_ns}/r sets tls.mode DISABLE ({hit})" in found[0]
    else:
        assert found == []


def test_authorization_policies_relying_on_peer_identity():
    policies = [
        {
            "metadata": {"namespace": "shop", "name": "by-ns"},
            "spec": {"rules": [{"from": [{"source": {"namespaces": ["a"]}}]}]},
        },
        {
            "metadata": {"namespace": "shop", "name": "by-cond"},
            "spec": {"rules": [{"when": [{"key": "source.principal", "values": ["x"]}]}]},
        },
        {
            "metadata": {"namespace": "shop", "name": "by-ip"},
            "spec": {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]},
        },
    ]
    assert mtls_only_authorization(policies) == [
        ("AuthorizationPolicy shop/by-ns", ["source.namespaces"]),
        ("AuthorizationPolicy shop/by-cond", ["when source.principal"]),
    ]


def test_effective_mode_namespace_then_mesh_then_permissive():
    assert effective_mode([], "shop", "istio-system") == "PERMISSIVE"
    mesh = pa("istio-system", "default", "STRICT")
    assert effective_mode([mesh], "shop", "istio-system") == "STRICT"
    assert effective_mode([mesh, pa("shop", "default", "PERMISSIVE")], "shop", "istio-system") == "PERMISSIVE"
    assert effective_mode([mesh, pa("shop", "default", "UNSET")], "shop", "istio-system") == "STRICT"
    workload_only = pa("shop", "w", "DISABLE", selector={"matchLabels": {"app": "x"}})
    assert effective_mode([workload_only], "shop", "istio-system") == "PERMISSIVE"
    older = pa("shop", "a", "STRICT", created="2025-01-01T00:00:00Z")
    assert effective_mode([pa("shop", "b", "PERMISSIVE"), older], "shop", "istio-system") == "STRICT"


def test_peer_authentication_conflicts():
    found = peer_authentication_conflicts(
        [
            pa("shop", "default", "STRICT"),
            pa("shop", "legacy", "PERMISSIVE"),
            pa("shop", "w", "STRICT", selector={"matchLabels": {"app": "x"}}),
        ],
        "default",
    )
    assert found == {"others": ["shop/legacy"], "strict": ["shop/default"]}
