"""Helpers shared by the Molecule verify tests (pytest-testinfra)."""

import json

import pytest


@pytest.fixture
def kube(host):
    """Run kubectl against the scenario's cluster and decode JSON output."""
    kubeconfig = host.ansible.get_variables()["meshops_kubeconfig"]

    def run(*args, parse=True):
        cmd = host.run("kubectl --kubeconfig %s " + " ".join(["%s"] * len(args)), kubeconfig, *args)
        assert cmd.rc == 0, f"kubectl {' '.join(args)} failed: {cmd.stderr}"
        return json.loads(cmd.stdout) if parse else cmd.stdout

    return run
