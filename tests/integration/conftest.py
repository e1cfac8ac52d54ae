"""Integration tests: the collection against the real API server of the local cluster.

The session brings the local cluster up (hack/local-cluster/cluster.py; binaries are built
on first use) and down again. Each test runs ansible-playbook as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = [sys.executable, str(REPO / "hack" / "local-cluster" / "cluster.py")]
PLAYBOOKS = Path(__file__).parent / "playbooks"


def cluster_paths() -> dict:
    return json.loads(subprocess.run([*CLUSTER, "paths"], check=True, capture_output=True, text=True).stdout)


@pytest.fixture(scope="session")
def cluster():
    subprocess.run([*CLUSTER, "up"], check=True)
    yield cluster_paths()
    if os.environ.get("MESHOPS_KEEP_CLUSTER") != "1":
        subprocess.run([*CLUSTER, "down"], check=True)


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = shutil.which("kubectl") or str(REPO / ".venv" / "bin" / "kubectl")

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def snapshot(self) -> dict:
        """What a failed run must leave exactly as it was."""

        def names(*args):
            # (namespace, kind, name, generation): generation moves only when a spec changes,
            # unlike resourceVersion, which istiod's leader election bumps all the time.
            proc = self.run(*args, "-o", "json", check=False)
            if proc.returncode != 0:
                return []
            return sorted(
                (
                    i["metadata"].get("namespace", ""),
                    i["kind"],
                    i["metadata"]["name"],
                    i["metadata"].get("generation"),
                )
                for i in json.loads(proc.stdout)["items"]
            )

        return {
            "namespaces": [n[2] for n in names("get", "namespaces")],
            "crds": [n for n in names("get", "crd") if n[2].endswith(".istio.io")],
            "istio_system": names("-n", "istio-system", "get", "deployments,services,serviceaccounts,secrets"),
            "webhooks": names("get", "mutatingwebhookconfigurations,validatingwebhookconfigurations"),
            "helm_releases": [n[2] for n in names("-n", "istio-system", "get", "secrets", "-l", "owner=helm")],
        }


@pytest.fixture(scope="session")
def kubectl(cluster):
    return Kubectl(cluster["kubeconfig"])


LOCAL_GROUP_VARS = REPO / "hack" / "local-cluster" / "group_vars" / "all.yml"


def local_install_vars(paths: dict, **overrides) -> dict:
    """The test's options; the local cluster's settings come from LOCAL_GROUP_VARS (passed first)."""
    return {"istio_install_minimal_timeout": 120, **overrides}


class Result:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.seconds = seconds

    def recap(self) -> dict:
        """changed/failed counts from the PLAY RECAP line for localhost."""
        for line in self.out.splitlines():
            if line.startswith("localhost") and "changed=" in line:
                return {k: int(v) for k, v in (p.split("=") for p in line.split(":", 1)[1].split())}
        raise AssertionError(f"no PLAY RECAP in output:\n{self.out[-3000:]}")


def run_playbook(
    playbook: str, extra_vars: dict, tmp_path: Path, check: bool = False, verbosity: int = 0, diff: bool = False
) -> Result:
    vars_file = tmp_path / f"vars-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps(extra_vars))
    cmd = ["ansible-playbook", str(PLAYBOOKS / playbook), "-e", f"@{LOCAL_GROUP_VARS}", "-e", f"@{vars_file}"]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", MESHOPS_REPO=str(REPO))
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return Result(proc, time.monotonic() - start)
