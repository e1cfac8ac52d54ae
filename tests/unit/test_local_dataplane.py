"""The local data plane's cluster objects and test application (hack/local-cluster/dataplane.py), without a cluster."""

import json

from conftest import load_script

dataplane = load_script("hack/local-cluster/dataplane.py", "meshops_local_dataplane")


def by_kind(objects):
    return {o["kind"]: o for o in objects}


def test_a_server_binds_inbound_and_outbound_to_its_own_loopback_address():
    objects = by_kind(dataplane.workload_objects("ns1", "echo", "127.0.0.61", 8080, 41000))
    entry, sidecar = objects["WorkloadEntry"]["spec"], objects["Sidecar"]["spec"]
    # The Service selects the entry by app=echo; clients learn from the label that it speaks Istio mTLS.
    assert entry == {
        "address": "127.0.0.61",
        "labels": {"app": "echo", "version": "v1", "security.istio.io/tlsMode": "istio"},
        "serviceAccount": "echo",
    }
    assert objects["ServiceAccount"]["metadata"] == {"name": "echo", "namespace": "ns1"}
    assert sidecar["workloadSelector"] == {"labels": {"app": "echo"}}
    (inbound,) = sidecar["ingress"]
    assert (inbound["bind"], inbound["port"]["number"], inbound["captureMode"]) == ("127.0.0.61", 8080, "NONE")
    assert inbound["defaultEndpoint"] == "127.0.0.1:41000"
    # Never the default 127.0.0.1 bind of captureMode NONE: the host istiod listens there. Port 9411 brings the
    # tracing collector's cluster.
    outbound = [(e["bind"], e["port"]["number"], e["captureMode"]) for e in sidecar["egress"]]
    assert outbound == [("127.0.0.61", 80, "NONE"), ("127.0.0.61", 9411, "NONE")]


def test_a_client_has_only_an_outbound_listener():
    sidecar = by_kind(dataplane.workload_objects("ns1", "client", "127.0.0.62", None, None))["Sidecar"]["spec"]
    assert "ingress" not in sidecar
    assert {e["bind"] for e in sidecar["egress"]} == {"127.0.0.62"}


def test_the_application_answers_status_delay_and_echoes_headers():
    app = dataplane.App()
    try:
        assert dataplane.request("127.0.0.1", app.port, "/status/503").status == 503
        delayed = dataplane.request("127.0.0.1", app.port, "/delay/200")
        assert delayed.status == 200 and delayed.seconds >= 0.2
        echoed = dataplane.request("127.0.0.1", app.port, "/", host="echo.ns1.svc.cluster.local")
        assert json.loads(echoed.body)["host"] == "echo.ns1.svc.cluster.local"
        assert app.hits == 3
    finally:
        app.stop()


def test_the_service_selects_the_workload_entry_port():
    service = dataplane.Mesh.service_object("ns1")["spec"]
    assert service["selector"] == {"app": "echo"}
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": dataplane.Mesh.PORT}]


def test_a_workload_alone_in_its_namespace_gets_the_namespace_default_sidecar():
    """istioctl analyze reports a Sidecar selector matching only a WorkloadEntry (IST0101): alone, no selector."""
    sidecar = dataplane.workload_objects("ns", "echo", "127.0.0.61", 8080, 30000, selector=False)[2]
    assert "workloadSelector" not in sidecar["spec"]
    assert sidecar["spec"]["ingress"][0]["bind"] == "127.0.0.61"


def test_a_fault_fails_its_share_of_requests_evenly_and_the_load_counts_replies():
    app = dataplane.App()
    try:
        app.set_fault(dataplane.Fault(share=0.4))
        codes = [dataplane.request("127.0.0.1", app.port, "/").status for _n in range(10)]
        assert codes.count(503) == 4 and codes.count(200) == 6, codes
        assert codes[:3] == [503, 200, 503]  # spread, not a burst
        app.set_fault(None)
        load = dataplane.Load("127.0.0.1", app.port, None, rps=50, count=20).start()
        load._thread.join(timeout=10)
        assert load.replies == {200: 20} and load.sent == 20
    finally:
        app.stop()


def test_the_process_exporter_reports_memory_and_cpu_as_cadvisor_names_them():
    import os

    class Fake:
        namespace, name, pod = "ns", "echo", "echo-loopback"

        @staticmethod
        def processes():
            return [os.getpid()]

    usage = dataplane.ProxyUsage()
    usage.sidecars[("ns", "echo")] = Fake()
    text = usage.render()
    labels = 'container="istio-proxy",namespace="ns",pod="echo-loopback"'
    memory = float(text.split(f"container_memory_working_set_bytes{{{labels}}} ")[1].split()[0])
    assert memory > 10 * 2**20  # this test process's resident memory
    assert f"container_cpu_usage_seconds_total{{{labels}}} " in text
