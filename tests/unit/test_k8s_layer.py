"""Pure helpers of the Kubernetes access layer."""

import contextlib

from ansible_collections.meshops.istio.plugins.module_utils.k8s import client, errors, waiter


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_until_backs_off_and_stops_when_done():
    clock = Clock()
    results = iter([False, False, False, True])
    out = waiter.wait_until(lambda: next(results), bool, timeout=60, clock=clock.time, sleep=clock.sleep)
    assert out is True
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_wait_until_returns_last_result_on_timeout():
    clock = Clock()
    out = waiter.wait_until(lambda: "pending", lambda r: r == "done", timeout=10, clock=clock.time, sleep=clock.sleep)
    assert out == "pending"
    assert sum(clock.sleeps) <= 10.0 + 1e-9
    assert max(clock.sleeps) <= 5.0


class Exited(Exception):
    pass


class GateModule:
    """What exit_gate uses of an AnsibleModule: its params, and how it ends."""

    def __init__(self, **params):
        self.params = {"wait": True, "wait_timeout": 15, "waited": 30, **params}
        self.ended = None

    def fail_json(self, **result):
        self.ended = ("fail", result)
        raise Exited

    def exit_json(self, **result):
        self.ended = ("exit", result)
        raise Exited


def test_a_gate_that_waited_in_vain_fails_with_the_whole_wait_and_every_problem():
    module = GateModule()
    with contextlib.suppress(Exited):
        waiter.exit_gate(module, {"ready": False, "problems": ["a is late.", "b is late."]}, "the x gate did not pass")
    how, result = module.ended
    assert how == "fail"
    assert result["msg"] == "the x gate did not pass after 45s: a is late. b is late."
    assert (result["changed"], result["waited_s"], result["ready"]) == (False, 45, False)


def test_a_gate_that_passed_or_did_not_wait_returns_its_report():
    for params, report in (
        ({}, {"ready": True, "problems": []}),
        ({"wait": False}, {"ready": False, "problems": ["x"]}),
    ):
        module = GateModule(**params)
        with contextlib.suppress(Exited):
            waiter.exit_gate(module, report, "the x gate did not pass")
        assert module.ended == ("exit", {"changed": False, **report})


def test_argument_spec_keeps_secrets_no_log():
    spec = client.argument_spec(namespace={"type": "str"})
    assert spec["api_key"]["no_log"] is True
    assert spec["kubeconfig"]["no_log"] is True
    assert spec["namespace"] == {"type": "str"}


class _Forbidden(Exception):
    status = 403

    def __init__(self, message):
        super().__init__(message)
        self.body = '{"kind": "Status", "message": ' + __import__("json").dumps(message) + "}"


def test_a_403_is_explained_as_rbac_only_when_rbac_denied_it():
    host = "https://api:6443"
    rbac = errors.explain(
        _Forbidden('pods is forbidden: User "system:serviceaccount:a:b" cannot create resource "pods" in API group ""'),
        host,
        "dry-run create",
        "Pod shop/x",
    )
    assert "Grant the user in use the RBAC permission" in str(rbac)
    assert 'User "system:serviceaccount:a:b"' in str(rbac)
    admission = errors.explain(
        _Forbidden('pods "x" is forbidden: violates PodSecurity "restricted:latest": unrestricted capabilities'),
        host,
        "dry-run create",
        "Pod shop/x",
    )
    assert "RBAC" not in str(admission)
    assert str(admission) == (
        "the API server refused to dry-run create Pod shop/x: "
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": unrestricted capabilities'
    )
    terminating = errors.explain(
        _Forbidden("unable to create new content in namespace x because it is being terminated"),
        host,
        "create",
        "Lease x/l",
    )
    assert "being terminated" in str(terminating) and "RBAC" not in str(terminating)
