"""Step 3 against the real local cluster and a real Prometheus on loopback: telemetry_addons, telemetry_status.

Istio is installed by the step 1 tests that run before this file. Each test that needs
metrics starts its own Prometheus (conftest.loopback_prometheus) and writes the
Istio-shaped series it should scrape.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from conftest import run_playbook

ADDON_KINDS = "deployments,services,configmaps,serviceaccounts,clusterroles,clusterrolebindings"


def options(tmp_path: Path, **extra) -> dict:
    """Grafana, Kiali and Jaeger from the local addon directory; Prometheus from the test (or none)."""
    return {
        "telemetry_addons_prometheus_mode": "none",
        "telemetry_addons_prometheus_url": "",
        "telemetry_addons_tracing_provider": "",
        "telemetry_addons_timeout": 20,
        "telemetry_addons_download_dir": str(tmp_path / "downloads"),
        **extra,
    }


def ours(kubectl) -> list:
    """(kind, name) of every object labeled as created by the telemetry role."""
    items = kubectl.json(
        "get", f"{ADDON_KINDS},telemetries.telemetry.istio.io", "-A", "-l", "meshops.istio/telemetry=true"
    )
    return sorted((i["kind"], i["metadata"]["name"]) for i in items["items"])


def addon_objects(kubectl) -> list:
    items = kubectl.json("-n", "istio-system", "get", "deployments,services,configmaps,serviceaccounts")
    names = {"prometheus", "grafana", "kiali", "jaeger", "tracing", "zipkin", "jaeger-collector"}
    names |= {"istio-grafana-dashboards", "istio-services-grafana-dashboards"}
    return sorted((i["kind"], i["metadata"]["name"]) for i in items["items"] if i["metadata"]["name"] in names)


def test_invalid_sampling_percentage_rejected_before_any_change(cluster, kubectl, tmp_path):
    before = (kubectl.snapshot(), ours(kubectl))
    result = run_playbook(
        "telemetry_addons.yml",
        options(tmp_path, telemetry_addons_tracing_provider="zipkin", telemetry_addons_sampling_percentage=150),
        tmp_path,
    )
    assert result.rc != 0
    assert "telemetry_addons_sampling_percentage is 150" in result.out
    assert "from 0 to 100" in result.out
    assert "nothing was changed" in result.out
    assert (kubectl.snapshot(), ours(kubectl)) == before


def test_tracing_provider_missing_from_mesh_config_refused(cluster, kubectl, tmp_path):
    before = ours(kubectl)
    result = run_playbook(
        "telemetry_addons.yml", options(tmp_path, telemetry_addons_tracing_provider="no-such-tracer"), tmp_path
    )
    assert result.rc != 0
    assert "Tracing provider(s) no-such-tracer not found in the mesh config" in result.out
    assert "ConfigMap istio-system/istio" in result.out
    assert ours(kubectl) == before


def test_prometheus_unreachable_fails_the_gate_naming_the_url(cluster, kubectl, tmp_path, mesh_namespace):
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = run_playbook(
        "telemetry_addons.yml",
        options(
            tmp_path,
            telemetry_addons_grafana_mode="none",
            telemetry_addons_kiali_mode="none",
            telemetry_addons_jaeger_mode="none",
            telemetry_addons_prometheus_mode="external",
            telemetry_addons_prometheus_url=url,
            # The gate polls until its timeout and nothing will answer: a second is as good as any wait.
            telemetry_addons_timeout=1,
        ),
        tmp_path,
    )
    assert result.rc != 0
    assert "the Istio metrics evidence is missing" in result.out
    assert f"cannot reach Prometheus at {url}" in result.out


def test_prometheus_without_istio_metrics_names_the_namespace(
    cluster, kubectl, tmp_path, mesh_namespace, loopback_prometheus
):
    # Istio traffic elsewhere, none for the test's namespace.
    loopback_prometheus.set_series(
        loopback_prometheus.series_for(("other-ns", "client"), ("other-ns", "server"), rate=3.0)
    )
    loopback_prometheus.wait_for("istio_requests_total")
    base = options(
        tmp_path,
        telemetry_addons_grafana_mode="none",
        telemetry_addons_kiali_mode="none",
        telemetry_addons_jaeger_mode="none",
        telemetry_addons_prometheus_mode="external",
        telemetry_addons_prometheus_url=loopback_prometheus.url,
        telemetry_addons_metrics_namespaces=[mesh_namespace],
        # The first run's gate polls until its timeout for series that will not come: a second is as good as any wait.
        telemetry_addons_timeout=1,
    )
    result = run_playbook("telemetry_addons.yml", base, tmp_path)
    assert result.rc != 0
    assert (
        f"Namespace {mesh_namespace} has 1 pod(s) with sidecars but Prometheus at {loopback_prometheus.url}"
        in result.out
    )
    assert "has no istio_requests_total or istio_tcp_connections_opened_total series" in result.out

    # Traffic starts flowing into the namespace: the same gate passes.
    loopback_prometheus.set_series(
        loopback_prometheus.series_for(("other-ns", "client"), (mesh_namespace, "shop"), rate=3.0)
    )
    loopback_prometheus.wait_for(f'istio_requests_total{{destination_workload_namespace="{mesh_namespace}"}}')
    result = run_playbook("telemetry_addons.yml", {**base, "telemetry_addons_timeout": 30}, tmp_path)
    assert result.rc == 0, result.out[-3000:]


def release_archive(cluster, directory: Path, tamper: bool = False) -> str:
    """An Istio-release-shaped archive with the addon manifests, and its published .sha256."""
    version = cluster["istio_version"]
    name = f"istio-{version}-linux-amd64.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for addon in ("prometheus", "grafana", "kiali", "jaeger"):
            data = (Path(cluster["addons_dir"]) / f"{addon}.yaml").read_bytes()
            info = tarfile.TarInfo(f"istio-{version}/samples/addons/{addon}.yaml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.sha256").write_text(f"{hashlib.sha256(archive).hexdigest()}  {name}\n")
    (directory / name).write_bytes(archive + (b"tampered" if tamper else b""))
    return name


def test_tampered_release_archive_stops_before_any_change(cluster, kubectl, tmp_path, loopback_server):
    name = release_archive(cluster, tmp_path / "site", tamper=True)
    url = loopback_server(tmp_path / "site")
    before = (kubectl.snapshot(), addon_objects(kubectl))
    result = run_playbook(
        "telemetry_addons.yml",
        options(tmp_path, telemetry_addons_source="release", telemetry_addons_release_url=f"{url}/{name}"),
        tmp_path,
    )
    assert result.rc != 0
    assert "checksum" in result.out.lower()
    assert (kubectl.snapshot(), addon_objects(kubectl)) == before


def test_install_from_release_then_absent_removes_only_what_it_created(
    cluster, kubectl, tmp_path, loopback_server, mesh_namespace, loopback_prometheus
):
    name = release_archive(cluster, tmp_path / "site")
    url = loopback_server(tmp_path / "site")
    loopback_prometheus.set_series(
        loopback_prometheus.series_for(("other-ns", "client"), (mesh_namespace, "shop"), rate=3.0)
    )
    # Objects the role did not create: one beside the addons, one named like an addon object elsewhere.
    kubectl.run("-n", "istio-system", "create", "configmap", "site-dashboards", "--from-literal=a=b")
    kubectl.run("-n", mesh_namespace, "create", "serviceaccount", "kiali")
    try:
        install = options(
            tmp_path,
            telemetry_addons_source="release",
            telemetry_addons_release_url=f"{url}/{name}",
            telemetry_addons_prometheus_mode="install",
            # The gate reaches the installed Prometheus at a URL (kwok's pods serve nothing).
            telemetry_addons_prometheus_url=loopback_prometheus.url,
            telemetry_addons_metrics_namespaces=[mesh_namespace],
            telemetry_addons_namespace_overrides=[{"namespace": mesh_namespace, "access_logging": True}],
            telemetry_addons_timeout=60,
        )
        result = run_playbook("telemetry_addons.yml", install, tmp_path)
        assert result.rc == 0, result.out[-3000:]
        created = ours(kubectl)
        assert ("Deployment", "prometheus") in created and ("Deployment", "kiali") in created
        assert ("Telemetry", "mesh-default") in created and ("Telemetry", "meshops-telemetry") in created
        assert ("ClusterRole", "prometheus") in created
        rerun = run_playbook("telemetry_addons.yml", install, tmp_path)
        assert rerun.rc == 0 and rerun.recap()["changed"] == 0, rerun.out[-3000:]

        result = run_playbook("telemetry_addons.yml", {**install, "telemetry_addons_state": "absent"}, tmp_path)
        assert result.rc == 0, result.out[-3000:]
        assert ours(kubectl) == []
        assert addon_objects(kubectl) == []
        assert kubectl.run("-n", "istio-system", "get", "configmap", "site-dashboards", check=False).returncode == 0
        assert kubectl.run("-n", mesh_namespace, "get", "serviceaccount", "kiali", check=False).returncode == 0
        again = run_playbook("telemetry_addons.yml", {**install, "telemetry_addons_state": "absent"}, tmp_path)
        assert again.rc == 0 and again.recap()["changed"] == 0

        # Present then absent in one play: the second run deletes what the first applied (issue 17).
        twice = run_playbook("telemetry_addons_twice.yml", install, tmp_path)
        assert twice.rc == 0, twice.out[-3000:]
        assert twice.recap()["changed"] >= 2, twice.out[-3000:]  # applied, then deleted
        assert ours(kubectl) == []
        assert addon_objects(kubectl) == []
    finally:
        kubectl.run("-n", "istio-system", "delete", "configmap", "site-dashboards", check=False)


def test_addon_object_made_by_hand_is_never_overwritten(cluster, kubectl, tmp_path):
    kubectl.run("-n", "istio-system", "create", "serviceaccount", "grafana")
    try:
        before = ours(kubectl)
        result = run_playbook("telemetry_addons.yml", options(tmp_path, telemetry_addons_source="local"), tmp_path)
        assert result.rc != 0
        assert "ServiceAccount istio-system/grafana already exists and was not created by meshops.istio" in result.out
        assert "telemetry_addons_grafana_mode to external" in result.out
        assert ours(kubectl) == before
    finally:
        kubectl.run("-n", "istio-system", "delete", "serviceaccount", "grafana", check=False)
