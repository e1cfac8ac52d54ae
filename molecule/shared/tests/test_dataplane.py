"""Verify steps 4 and 5 in a real data plane, where the scenario has one.

The local scenario's Service sample-mesh/echo is backed by real sidecars on loopback (pilot-agent and upstream Envoy,
hack/local-cluster/dataplane.py) configured by the scenario's istiod: the converged baseline must reach them and act.
The kind scenario's nodes run the sidecars of real pods instead, and skip this file.
"""

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME") != "local", reason="only the local scenario runs loopback sidecars"
)


@pytest.fixture(scope="module")
def mesh():
    sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "hack" / "local-cluster"))
    import dataplane

    # Addresses of its own: make test runs this beside the integration tests, whose meshes take 127.0.0.61 to .72.
    started = dataplane.Mesh("sample-mesh", server_ip="127.0.0.81", client_ip="127.0.0.82")
    try:
        yield started.start()
    finally:
        started.stop()


def test_the_converged_baseline_times_out_and_retries_in_envoy(mesh):
    route = mesh.route()["route"]
    retry = route["retry_policy"]
    assert (route["timeout"], retry["num_retries"], retry["per_try_timeout"], retry["retry_on"]) == (
        "1s",
        2,
        "0.400s",
        "5xx",
    )
    hits = mesh.app.hits
    reply = mesh.get("/delay/3000")
    assert reply.status == 504 and 0.9 <= reply.seconds < 2.5, reply
    assert mesh.app.hits - hits == 3  # three 400 ms tries inside the 1 s timeout
    hits, retried = mesh.app.hits, mesh.cluster_stat("upstream_rq_retry")
    assert mesh.get("/status/503").status == 503
    assert (mesh.app.hits - hits, mesh.cluster_stat("upstream_rq_retry") - retried) == (3, 2)


def test_permissive_serves_mtls_with_the_spiffe_identity_and_plaintext(mesh):
    reply = mesh.get("/")
    assert reply.status == 200, reply
    xfcc = json.loads(reply.body)["x-forwarded-client-cert"]
    assert "URI=spiffe://cluster.local/ns/sample-mesh/sa/client" in xfcc, xfcc
    assert mesh.plaintext("/").status == 200
    mesh.client.assert_nothing_rejected()
    mesh.server.assert_nothing_rejected()
