"""Pure helpers of the Kubernetes access layer."""

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
