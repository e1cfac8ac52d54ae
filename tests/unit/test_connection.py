"""The connection guard's rules (filter connection_problems) and the AWX credential type the collection ships."""

import json
from pathlib import Path

import pytest
from ansible_collections.meshops.istio.plugins.filter.connection import connection_problems
from conftest import load_script

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG = {"kubeconfig": "/secure/kubeconfig"}
JOB_TOKEN = {"env_host": "https://api.prod:6443", "env_credential": True}


def test_an_explicit_kubeconfig_with_verification_is_accepted():
    assert connection_problems(KUBECONFIG, "prod-eu-1") == []
    assert connection_problems({"env_kubeconfig": "/runner/env/tmpk8s", "context": "prod-eu-1"}, "prod-eu-1", 3) == []
    assert connection_problems({**JOB_TOKEN, "env_verify_ssl": "True"}, "prod-eu-1") == []


def test_no_connection_refuses_the_in_cluster_fallback():
    (problem,) = connection_problems({}, "prod-eu-1")
    assert problem.startswith("No cluster connection is configured for prod-eu-1")
    assert "refuses to fall back to in-cluster credentials" in problem
    # A host without a token is not a job token: K8S_AUTH_HOST alone does not authenticate.
    assert connection_problems({"env_host": "https://api:6443", "env_credential": False}, "h")[0].startswith("No ")


@pytest.mark.parametrize("own", [{"kubeconfig": "/k"}, {"context": "prod-us-1"}, {"kubeconfig": "/k", "context": "c"}])
def test_a_job_token_beside_a_host_connection_is_refused(own):
    (problem,) = connection_problems({**JOB_TOKEN, **own}, "prod-us-1")
    named = [name for name in ("meshops_kubeconfig", "meshops_context") if name in problem.split(", but")[0]]
    assert named == [f"meshops_{key}" for key in own], problem
    assert "kubernetes.core would use the token and ignore" in problem
    assert "would silently reach https://api.prod:6443" in problem
    assert "meshops_context on each host" in problem


def test_a_job_token_over_several_cluster_hosts_is_refused():
    assert connection_problems(JOB_TOKEN, "prod-eu-1", 1) == []
    (problem,) = connection_problems(JOB_TOKEN, "prod-eu-1", 3)
    assert "targets 3 cluster hosts: every one of them would reach https://api.prod:6443" in problem
    assert "meshops_target" in problem


@pytest.mark.parametrize("spelling", ["False", "false", "no", "0", "off", "n", "maybe", " "])
def test_verification_off_in_the_environment_is_refused(spelling):
    (problem,) = connection_problems({**KUBECONFIG, "env_verify_ssl": spelling}, "h")
    assert problem.startswith(f"K8S_AUTH_VERIFY_SSL is off ({spelling!r}")
    assert "meshops_validate_certs: true" in problem


@pytest.mark.parametrize("spelling", ["y", "yes", "t", "true", "on", "1", "True", "YES"])
def test_verification_on_or_unset_in_the_environment_is_accepted(spelling):
    assert connection_problems({**KUBECONFIG, "env_verify_ssl": spelling}, "h") == []
    assert connection_problems({**KUBECONFIG, "env_verify_ssl": ""}, "h") == []


def test_validate_certs_on_the_host_decides_over_the_environment():
    # AWX's bearer token credential without a CA injects K8S_AUTH_VERIFY_SSL=False; the host says: verify.
    awx = {**JOB_TOKEN, "env_verify_ssl": "False"}
    assert connection_problems({**awx, "validate_certs": True}, "h") == []
    assert connection_problems({**awx, "validate_certs": "yes"}, "h") == []
    (problem,) = connection_problems({**KUBECONFIG, "env_verify_ssl": "True", "validate_certs": False}, "h")
    assert problem.startswith("meshops_validate_certs is False for h")
    (problem,) = connection_problems({**KUBECONFIG, "validate_certs": "sometimes"}, "h")
    assert "meshops_validate_certs is 'sometimes'" in problem


def test_allow_insecure_lets_a_lab_cluster_through_but_not_a_missing_or_ambiguous_connection():
    lab = {**KUBECONFIG, "env_verify_ssl": "false", "allow_insecure": True}
    assert connection_problems(lab, "lab") == []
    assert connection_problems({**lab, "validate_certs": False}, "lab") == []
    assert connection_problems({"allow_insecure": True}, "lab")[0].startswith("No cluster connection")
    assert "ignore meshops_context" in connection_problems({**JOB_TOKEN, "context": "c", "allow_insecure": "true"})[0]


def test_problems_accumulate():
    problems = connection_problems({**JOB_TOKEN, "context": "c", "env_verify_ssl": "0"}, "h")
    assert len(problems) == 2


def test_the_shipped_credential_type_injects_one_kubeconfig_and_never_turns_verification_off(tmp_path):
    credential_type = json.loads((REPO / "docs/awx/credential_type.json").read_text())
    fields = {f["id"]: f for f in credential_type["inputs"]["fields"]}
    assert set(credential_type["inputs"]["required"]) <= set(fields)
    assert fields["kubeconfig"]["secret"] and fields["kubeconfig"]["multiline"]
    env = load_script("tests/awx_injection.py", "awx_injection").inject(
        credential_type, {"kubeconfig": "apiVersion: v1\nkind: Config\n"}, tmp_path
    )
    assert set(env) == {"K8S_AUTH_KUBECONFIG"}
    assert Path(env["K8S_AUTH_KUBECONFIG"]).read_text() == "apiVersion: v1\nkind: Config\n"
    # What the job then sees passes the guard for every host that names its context.
    settings = {"env_kubeconfig": env["K8S_AUTH_KUBECONFIG"], "context": "prod-eu-1"}
    assert connection_problems(settings, "prod-eu-1", 2) == []


def test_a_bare_api_host_beside_a_kubeconfig_is_refused():
    (problem,) = connection_problems({**KUBECONFIG, "env_host": "https://api.other:6443"}, "prod-eu-1")
    assert problem.startswith("K8S_AUTH_HOST is set (https://api.other:6443) without a token")
    assert "whatever cluster its context names" in problem
