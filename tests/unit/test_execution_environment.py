"""The AWX execution environment: ansible-builder turns it into a build context, with the pinned versions."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from localcluster.common import read_versions


def test_ansible_builder_creates_the_build_context(tmp_path):
    builder = shutil.which("ansible-builder") or str(Path(sys.executable).parent / "ansible-builder")
    context = tmp_path / "context"
    proc = subprocess.run(
        [
            builder,
            "create",
            "-f",
            str(REPO / "execution-environment" / "execution-environment.yml"),
            "-c",
            str(context),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = {p.name for p in context.iterdir()}
    build_file = context / ("Containerfile" if "Containerfile" in files else "Dockerfile")
    text = build_file.read_text()
    versions = read_versions()
    assert f"ARG HELM_VERSION={versions['HELM_VERSION']}" in text
    assert f"ARG ISTIO_VERSION={versions['ISTIO_VERSION']}" in text
    assert "sha256sum -c" in text
    build = context / "_build"
    assert (build / "requirements.txt").read_text() == (REPO / "requirements.txt").read_text()
    assert (build / "requirements.yml").read_text() == (REPO / "requirements.yml").read_text()
    assert (build / "bindep.txt").read_text() == (REPO / "bindep.txt").read_text()
