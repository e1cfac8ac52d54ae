"""Helpers shared by the Molecule verify tests (pytest-testinfra)."""

import json

import pytest


@pytest.fixture(scope="module")
def kubeconfig(host):
    """The scenario's kubeconfig path, rendered by Ansible from the inventory."""
    return host.ansible("ansible.builtin.debug", "var=meshops_kubeconfig", check=False)["meshops_kubeconfig"]


@pytest.fixture
def kube(host, kubeconfig):
    """Run kubectl against the scenario's cluster and decode JSON output."""

    def run(*args, parse=True):
        cmd = host.run("kubectl --kubeconfig %s " + " ".join(["%s"] * len(args)), kubeconfig, *args)
        assert cmd.rc == 0, f"kubectl {' '.join(args)} failed: {cmd.stderr}"
        return json.loads(cmd.stdout) if parse else cmd.stdout

    return run
