"""Two istiod revisions at once on the local cluster: one host pilot-discovery per revision (issue 14).

Revision a is installed with helm from the previous Istio's charts (ISTIO_PREVIOUS_VERSION) and runs that Istio's
pilot-discovery; revision b from the default charts and build. Each gets host ports of its own through the install
values (localcluster.istiod.revision_install_values, also `cluster.py revision-values`). Both inject at once, a
revision tag made from b injects as b, and removing a stops its process while b keeps serving. A default revision
left by test_istio_install_minimal.py keeps slot 0 (port 15017) throughout, and a and b take the first free
slots after it; the test removes everything it added.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import CLUSTER, LOCAL_GROUP_VARS, REPO, cluster_paths
from test_reliability import wait_for  # the suite's polling loop (returns the first truthy value)

sys.path.insert(0, str(REPO / "hack" / "local-cluster"))
# The one place for a revision's ports and values, and what the supervisor serves now (`cluster.py status`).
from localcluster.istiod import SLOTS, revision_install_values, served_revisions, slot_ports


def free_slots() -> dict:
    """Slots for revisions a and b that no served revision holds (slot 0, port 15017, is the default revision's)."""
    taken = {revision["slot"] for revision in served_revisions().values()}
    free = [slot for slot in range(1, SLOTS) if slot not in taken]
    return {"a": free[0], "b": free[1]}


@pytest.fixture(scope="module")
def builds(cluster):
    """Both Istio builds: the previous one is built on first use (`cluster.py build --previous`), cached after."""
    subprocess.run([*CLUSTER, "build", "--previous"], check=True)
    return cluster_paths()


def helm(paths: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [f"{paths['bin_dir']}/helm", "--kubeconfig", paths["kubeconfig"], "-n", "istio-system", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def install_istiod(paths: dict, tmp_path: Path, revision: str, slot: int, charts_dir: str, version: str) -> None:
    """helm install istiod-<revision>: the local install values, then the revision's own (helm merges -f files)."""
    local = tmp_path / "local-values.json"
    local.write_text(json.dumps(yaml.safe_load(LOCAL_GROUP_VARS.read_text())["istio_install_minimal_values"]))
    own = tmp_path / f"values-{revision}.json"
    own.write_text(json.dumps({**revision_install_values(revision, slot), "global": {"tag": version}}))
    chart = f"{charts_dir}/istiod-{version}.tgz"
    values = ["-f", str(local), "-f", str(own)]
    helm(paths, "install", f"istiod-{revision}", chart, *values, "--create-namespace", "--wait", "--timeout=90s")


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pilot_version(slot: int) -> str | None:
    """The Istio version the pilot-discovery of a slot reports on its own monitoring port, once it is ready."""
    ports = slot_ports(slot)
    if get(f"http://127.0.0.1:{ports['http']}/ready") is None:
        return None
    return get(f"http://127.0.0.1:{ports['monitoring']}/version")


def validations_failed(slot: int) -> float:
    """How many objects the pilot-discovery of a slot has refused in its validation webhook (its own metric)."""
    metrics = get(f"http://127.0.0.1:{slot_ports(slot)['monitoring']}/metrics") or ""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("galley_validation_failed")
    )


def create_pod(kubectl, namespace: str) -> dict:
    """A bare pod as the API server stored it, i.e. after the injection webhook (retried while it starts)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }
    proc = None
    for _attempt in range(30):
        proc = kubectl.run("create", "-o", "json", "-f", "-", stdin=json.dumps(pod), check=False)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        time.sleep(1)
    raise AssertionError(f"no pod could be created in {namespace}: {proc.stderr}")


def injection(pod: dict) -> tuple[str, str]:
    """(the revision that injected the pod, its istio-proxy image tag)."""
    status = json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])
    spec = pod["spec"]
    proxy = next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == "istio-proxy")
    return status["revision"], proxy["image"].rsplit(":", 1)[1]


def invalid_virtual_service(namespace: str) -> dict:
    """A VirtualService of revision b that only istiod's validation rejects (a host name with a space)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "no-host", "namespace": namespace, "labels": {"istio.io/rev": "b"}},
        "spec": {"hosts": ["a b"], "http": [{"route": [{"destination": {"host": "echo"}}]}]},
    }


def test_two_revisions_served_at_once_and_one_removed(builds, kubectl, tmp_path):
    paths = builds
    previous, current = paths["previous_istio_version"], paths["istio_version"]
    suffix = uuid.uuid4().hex[:6]
    tag = f"tag-{suffix}"
    namespaces = {rev: f"rev-{rev}-{suffix}" for rev in ("a", "b", tag)}
    # Run alone on an empty cluster, the test adds Istio's CRDs (the default base chart) and removes them after.
    empty = kubectl.run("get", "crd", "virtualservices.networking.istio.io", check=False).returncode != 0
    system_before = kubectl.run("get", "namespace", "istio-system", check=False).returncode == 0
    istioctl = [f"{paths['bin_dir']}/istioctl", "--kubeconfig", paths["kubeconfig"], "-i", "istio-system"]
    slots = free_slots()
    start = time.monotonic()
    try:
        if empty:
            helm(paths, "install", "istio-base", f"{paths['charts_dir']}/base-{current}.tgz", "--create-namespace")
        install_istiod(paths, tmp_path, "a", slots["a"], paths["previous_charts_dir"], previous)
        install_istiod(paths, tmp_path, "b", slots["b"], paths["charts_dir"], current)

        # One pilot-discovery per revision, each on its slot's ports, each the build its image names.
        assert wait_for(
            lambda: {"a", "b"} <= set(served_revisions()) and served_revisions(), 60, "revisions a and b served"
        )
        running = served_revisions()
        assert (running["a"]["slot"], running["a"]["version"]) == (slots["a"], previous)
        assert running["a"]["binary"] == f"{paths['previous_bin_dir']}/pilot-discovery"
        assert (running["b"]["slot"], running["b"]["version"]) == (slots["b"], current)
        assert wait_for(lambda: pilot_version(slots["a"]), 60, "revision a's pilot-discovery ready").startswith(
            previous
        )
        assert wait_for(lambda: pilot_version(slots["b"]), 60, "revision b's pilot-discovery ready").startswith(current)

        # Both webhooks answer: a pod in a namespace of each revision is injected by that revision.
        for rev, label in (("a", "a"), ("b", "b")):
            kubectl.run("create", "namespace", namespaces[rev])
            kubectl.run("label", "namespace", namespaces[rev], f"istio.io/rev={label}")
        assert injection(create_pod(kubectl, namespaces["a"])) == ("a", previous)
        assert injection(create_pod(kubectl, namespaces["b"])) == ("b", current)

        # A revision tag made from b (istioctl copies b's webhook URL): its namespaces are injected by b.
        subprocess.run([*istioctl, "tag", "set", tag, "--revision", "b", "-y"], check=True, capture_output=True)
        kubectl.run("create", "namespace", namespaces[tag])
        kubectl.run("label", "namespace", namespaces[tag], f"istio.io/rev={tag}")
        assert injection(create_pod(kubectl, namespaces[tag])) == ("b", current)

        # Revision a goes: its process stops and its ports close; b keeps serving.
        helm(paths, "uninstall", "istiod-a", "--wait", "--timeout=90s")
        wait_for(lambda: "a" not in served_revisions(), 60, "revision a's pilot-discovery stopped")
        assert not any(listening(port) for port in slot_ports(slots["a"]).values())
        assert served_revisions()["b"]["pid"] == running["b"]["pid"], "b was restarted"
        assert injection(create_pod(kubectl, namespaces["b"])) == ("b", current)
        # b's own validator (objects labeled istio.io/rev=b) calls b too, so it still answers with a gone: b counts
        # the refusal (a default revision's validator, when there is one, is called as well and may answer first).
        refusals = validations_failed(slots["b"])
        refused = kubectl.run(
            "apply", "-f", "-", stdin=json.dumps(invalid_virtual_service(namespaces["b"])), check=False
        )
        assert refused.returncode != 0
        assert 'domain name "a b" invalid' in refused.stderr, refused.stderr
        assert validations_failed(slots["b"]) > refusals
        print(f"\ntwo revisions installed, checked and one removed in {time.monotonic() - start:.1f}s")
    finally:
        subprocess.run([*istioctl, "tag", "remove", tag, "-y"], check=False, capture_output=True)
        for rev in ("a", "b"):
            helm(paths, "uninstall", f"istiod-{rev}", "--wait", "--timeout=90s", check=False)
        kubectl.run("delete", "namespace", *namespaces.values(), "--ignore-not-found", "--timeout=90s", check=False)
        if empty:  # the base chart keeps its CRDs on uninstall (helm.sh/resource-policy: keep)
            helm(paths, "uninstall", "istio-base", "--wait", check=False)
            kubectl.run("delete", "crd", "-l", "app.kubernetes.io/instance=istio-base", check=False)
        if not system_before:
            kubectl.run("delete", "namespace", "istio-system", "--timeout=90s", check=False)
    wait_for(lambda: not {"a", "b"} & set(served_revisions()), 60, "revision b's pilot-discovery stopped")
    assert kubectl.run("-n", "istio-system", "get", "service", f"istiod-revision-tag-{tag}", check=False).returncode
