"""Step 1 against the real local cluster: istio_install_minimal and istio_readiness.

Order matters (pytest runs a file top to bottom): the refusals run on an empty cluster,
then an install by istioctl, then the refusals that need an existing install, then the
readiness report with istiod stopped. The helm method is converged by Molecule.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import yaml
from conftest import local_install_vars, run_playbook


def broken_kubeconfig(cluster, tmp_path, **changes) -> str:
    """A copy of the cluster's kubeconfig with the server or the user changed."""
    config = yaml.safe_load(Path(cluster["kubeconfig"]).read_text())
    if "server" in changes:
        config["clusters"][0]["cluster"]["server"] = changes["server"]
    if "token" in changes:
        config["users"][0]["user"] = {"token": changes["token"]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def refused_without_change(kubectl, tmp_path, options: dict, *expected: str) -> None:
    """The role must fail with each expected text and leave the cluster exactly as it was."""
    before = kubectl.snapshot()
    result = run_playbook("install_minimal.yml", options, tmp_path)
    assert result.rc != 0
    for text in expected:
        assert text in result.out, result.out[-3000:]
    assert kubectl.snapshot() == before


def from_repository(url: str, tmp_path) -> dict:
    return {
        "istio_install_minimal_chart_source": "repository",
        "istio_install_minimal_chart_repository": url,
        "istio_install_minimal_download_dir": str(tmp_path / "downloads"),
    }


# ------------------------------------------------------------------ before any install


def test_unsupported_kubernetes_version_refused_before_any_change(cluster, kubectl, tmp_path):
    before = kubectl.snapshot()
    result = run_playbook(
        "install_minimal.yml", local_install_vars(cluster, istio_install_minimal_version="1.27.3"), tmp_path
    )
    assert result.rc != 0
    assert "Istio 1.27.3 does not support Kubernetes 1.36: it is tested on 1.29 to 1.33" in result.out
    assert "Set istio_install_minimal_allow_unsupported_kubernetes: true" in result.out
    assert "Nothing was changed." in result.out
    assert kubectl.snapshot() == before


def test_unsupported_kubernetes_version_allowed_by_the_option_only_warns(cluster, kubectl, tmp_path):
    """The override turns the refusal into a warning; what stops this run later (charts of 1.27.3 missing, or
    an install of another version) still stops it before any change."""
    before = kubectl.snapshot()
    result = run_playbook(
        "install_minimal.yml",
        local_install_vars(
            cluster, istio_install_minimal_version="1.27.3", istio_install_minimal_allow_unsupported_kubernetes=True
        ),
        tmp_path,
    )
    assert "istio_install_minimal_allow_unsupported_kubernetes is true" in result.out
    assert "Istio is not tested on this Kubernetes version" in result.out
    assert "Preflight: istio_install_minimal_version is 1.27.3 and the cluster runs" not in result.out
    assert result.rc != 0
    assert kubectl.snapshot() == before


def test_unreachable_api_server_says_which_and_what_to_do(cluster, kubectl, tmp_path):
    before = kubectl.snapshot()
    bad = broken_kubeconfig(cluster, tmp_path, server="https://127.0.0.1:1")
    result = run_playbook("install_minimal.yml", local_install_vars(cluster, meshops_kubeconfig=bad), tmp_path)
    assert result.rc != 0
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:1" in result.out
    assert "Check that the API server is running" in result.out
    assert kubectl.snapshot() == before


def test_missing_kubeconfig_names_the_setting(cluster, kubectl, tmp_path):
    result = run_playbook(
        "install_minimal.yml", local_install_vars(cluster, meshops_kubeconfig=str(tmp_path / "nope")), tmp_path
    )
    assert result.rc != 0
    assert "cannot load the Kubernetes connection settings" in result.out
    assert "Check the kubeconfig path and context" in result.out


def test_wrong_credentials_rejected_and_token_never_printed(cluster, kubectl, tmp_path):
    token = "meshops-secret-token-4f0c2a"
    bad = broken_kubeconfig(cluster, tmp_path, token=token)
    result = run_playbook(
        "install_minimal.yml", local_install_vars(cluster, meshops_kubeconfig=bad), tmp_path, verbosity=3
    )
    assert result.rc != 0
    assert "rejected the credentials (401 Unauthorized)" in result.out
    assert token not in result.out


def test_tampered_chart_in_repository_stops_before_any_change(cluster, kubectl, tmp_path, loopback_server):
    repo = tmp_path / "repo"
    shutil.copytree(cluster["charts_dir"], repo)
    with open(repo / f"istiod-{cluster['istio_version']}.tgz", "ab") as chart:
        chart.write(b"tampered")
    options = local_install_vars(cluster, **from_repository(loopback_server(repo), tmp_path))
    refused_without_change(kubectl, tmp_path, options, "did not match")


def test_wrong_sha256_for_local_chart_stops_before_any_change(cluster, kubectl, tmp_path):
    options = local_install_vars(cluster, istio_install_minimal_chart_sha256={"istiod": "0" * 64})
    refused_without_change(kubectl, tmp_path, options, "the file is corrupt or was tampered with")


def test_check_mode_on_empty_cluster_reports_changes_and_writes_nothing(cluster, kubectl, tmp_path, loopback_server):
    """Also proves the repository path: the untampered charts pass their published sha256."""
    before = kubectl.snapshot()
    options = local_install_vars(cluster, **from_repository(loopback_server(Path(cluster["charts_dir"])), tmp_path))
    result = run_playbook("install_minimal.yml", options, tmp_path, check=True)
    assert result.rc == 0, result.out[-3000:]
    assert result.recap()["changed"] >= 2, "check mode must report the two chart installs"
    assert "would be installed or changed" in result.out
    assert kubectl.snapshot() == before


def test_tampered_istioctl_archive_stops_before_any_change(cluster, kubectl, tmp_path, loopback_server):
    site = tmp_path / "release"
    site.mkdir()
    archive = site / "istioctl-test-linux-amd64.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(Path(cluster["bin_dir"]) / "istioctl", arcname="istioctl")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (site / (archive.name + ".sha256")).write_text(f"{digest}  {archive.name}\n")
    with open(archive, "ab") as fh:
        fh.write(b"tampered")
    options = local_install_vars(
        cluster,
        istio_install_minimal_method="istioctl",
        istio_install_minimal_istioctl_archive_url=f"{loopback_server(site)}/{archive.name}",
        istio_install_minimal_download_dir=str(tmp_path / "downloads"),
    )
    refused_without_change(kubectl, tmp_path, options, "did not match")


# ------------------------------------------------------------------ install with istioctl


def test_istioctl_method_converges_idempotently(cluster, kubectl, tmp_path):
    options = local_install_vars(cluster, istio_install_minimal_method="istioctl")
    first = run_playbook("install_minimal.yml", options, tmp_path)
    assert first.rc == 0, first.out[-4000:]
    assert first.recap()["changed"] > 0
    second = run_playbook("install_minimal.yml", options, tmp_path)
    assert second.rc == 0, second.out[-4000:]
    assert second.recap()["changed"] == 0, second.out[-4000:]
    before = kubectl.snapshot()
    check = run_playbook("install_minimal.yml", options, tmp_path, check=True)
    assert check.rc == 0, check.out[-4000:]
    assert check.recap()["changed"] == 0, check.out[-4000:]
    assert kubectl.snapshot() == before
    dep = kubectl.json("-n", "istio-system", "get", "deployment", "istiod")
    assert dep["metadata"]["labels"]["meshops.istio/install-method"] == "istioctl"
    print(
        f"\nistioctl method: converge {first.seconds:.1f}s, no-op rerun {second.seconds:.1f}s, "
        f"check mode {check.seconds:.1f}s"
    )


def test_existing_install_of_another_version_refused(cluster, kubectl, tmp_path):
    options = local_install_vars(
        cluster, istio_install_minimal_method="istioctl", istio_install_minimal_version="1.30.3"
    )
    refused_without_change(
        kubectl,
        tmp_path,
        options,
        "Deployment istio-system/istiod runs Istio 1.31.1, not 1.30.3.",
        "istio_install_minimal_allow_upgrade",
    )


def test_existing_install_by_another_method_refused(cluster, kubectl, tmp_path):
    refused_without_change(
        kubectl,
        tmp_path,
        local_install_vars(cluster),
        "Deployment istio-system/istiod was installed with istioctl, not helm.",
    )


# ------------------------------------------------------------------ readiness


def readiness(cluster, tmp_path, **extra) -> dict:
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    result = run_playbook(
        "readiness.yml",
        {"meshops_kubeconfig": cluster["kubeconfig"], "meshops_report_path": str(report), **extra},
        tmp_path,
    )
    assert result.rc == 0, result.out[-3000:]
    return json.loads(report.read_text())


def test_readiness_names_the_webhook_that_does_not_answer_when_istiod_stops(cluster, kubectl, tmp_path):
    assert readiness(cluster, tmp_path)["ready"] is True
    kubectl.run("-n", "istio-system", "scale", "deployment", "istiod", "--replicas=0")
    try:
        # The host istiod follows the Deployment within a second or two.
        report = None
        for _attempt in range(30):
            report = readiness(cluster, tmp_path)
            if not report["injection_probe"].get("answered") and not report["validation_probe"].get("answered"):
                break
        assert report["ready"] is False
        text = " ".join(report["problems"])
        assert "MutatingWebhookConfiguration istio-sidecar-injector does not answer" in text
        assert "https://localhost:15017/inject" in text
        assert "ValidatingWebhookConfiguration istio-validator-istio-system" in text
    finally:
        kubectl.run("-n", "istio-system", "scale", "deployment", "istiod", "--replicas=1")
    assert readiness(cluster, tmp_path, meshops_wait=True, meshops_wait_timeout=120)["ready"] is True
