"""Verify step 5: PERMISSIVE mesh-wide, accepted by istiod; the sample namespaces' evidence says STRICT is safe."""

import json


def test_mesh_wide_permissive_policy(kube):
    policy = kube("-n", "istio-system", "get", "peerauthentications.security.istio.io", "default", "-o", "json")
    assert policy["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert policy["metadata"]["labels"]["meshops.istio/mtls"] == "true"


def test_istiod_validates_peer_authentications(host, kube, kubeconfig):
    webhooks = kube("get", "validatingwebhookconfigurations", "-o", "json")["items"]
    assert any(
        "security.istio.io" in r["apiGroups"] and h["failurePolicy"] == "Fail"
        for w in webhooks
        for h in w["webhooks"]
        for r in h["rules"]
    )
    # Every PeerAuthentication write passes istiod's fail-closed webhook: the policy exists, so istiod
    # accepted it, and a server-side dry run of a copy passes it again now.
    copy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "dry-run-copy", "namespace": "istio-system"},
        "spec": {"mtls": {"mode": "PERMISSIVE"}},
    }
    cmd = host.run("echo %s | kubectl --kubeconfig %s create --dry-run=server -f -", json.dumps(copy), kubeconfig)
    assert cmd.rc == 0, cmd.stderr


def test_sample_namespaces_ready_for_strict_on_real_prometheus_evidence(host, kubeconfig):
    url = host.ansible("ansible.builtin.debug", "var=meshops_prometheus_url", check=False)["meshops_prometheus_url"]
    result = host.ansible(
        "meshops.istio.mtls_readiness",
        f"kubeconfig={kubeconfig} prometheus_url={url} namespaces=sample-frontend,sample-backend window=60",
        check=False,
    )
    assert result["prometheus"]["reachable"] is True
    assert result["ready_for_strict"] is True, result["problems"]
    assert {n["mode"] for n in result["namespaces"]} == {"PERMISSIVE"}
