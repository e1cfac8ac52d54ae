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
        "labels": {"app": "echo", "security.istio.io/tlsMode": "istio"},
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
