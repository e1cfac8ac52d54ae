"""Verify step 4: the baseline resources exist as declared, istiod accepted them, istioctl analyze is clean."""

SERVICES = {
    ("sample-frontend", "web"): "10s",
    ("sample-frontend", "catalog"): "10s",
    ("sample-backend", "api"): "5s",
    ("sample-backend", "ledger"): "10s",
    ("sample-mesh", "echo"): "1s",
}


def test_one_destination_rule_and_virtual_service_per_service(kube):
    for (namespace, name), timeout in SERVICES.items():
        vs = kube("-n", namespace, "get", "virtualservices.networking.istio.io", f"baseline-{name}", "-o", "json")
        dr = kube("-n", namespace, "get", "destinationrules.networking.istio.io", f"baseline-{name}", "-o", "json")
        host = f"{name}.{namespace}.svc.cluster.local"
        assert vs["spec"]["hosts"] == [host]
        assert vs["spec"]["http"][0]["timeout"] == timeout
        assert dr["spec"]["host"] == host
        assert dr["metadata"]["labels"]["meshops.istio/traffic-baseline"] == "true"
    ledger = kube(
        "-n", "sample-backend", "get", "destinationrules.networking.istio.io", "baseline-ledger", "-o", "json"
    )
    assert ledger["spec"]["trafficPolicy"]["loadBalancer"]["simple"] == "ROUND_ROBIN"


def test_istioctl_analyze_reports_no_errors(host, kubeconfig):
    istioctl = host.ansible("ansible.builtin.debug", "var=meshops_istioctl", check=False)["meshops_istioctl"]
    for namespace in ("sample-frontend", "sample-backend"):
        cmd = host.run("%s analyze --kubeconfig %s -n %s --failure-threshold Error", istioctl, kubeconfig, namespace)
        assert cmd.rc == 0, f"istioctl analyze -n {namespace}: {cmd.stdout} {cmd.stderr}"
        assert "Error [" not in cmd.stdout, cmd.stdout
