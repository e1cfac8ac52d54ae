"""Pure helpers of the Kubernetes access layer."""

from ansible_collections.meshops.istio.plugins.module_utils import k8s


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
    out = k8s.wait_until(lambda: next(results), bool, timeout=60, clock=clock.time, sleep=clock.sleep)
    assert out is True
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_wait_until_returns_last_result_on_timeout():
    clock = Clock()
    out = k8s.wait_until(lambda: "pending", lambda r: r == "done", timeout=10, clock=clock.time, sleep=clock.sleep)
    assert out == "pending"
    assert sum(clock.sleeps) <= 10.0 + 1e-9
    assert max(clock.sleeps) <= 5.0


def test_argument_spec_keeps_secrets_no_log():
    spec = k8s.argument_spec(namespace={"type": "str"})
    assert spec["api_key"]["no_log"] is True
    assert spec["kubeconfig"]["no_log"] is True
    assert spec["namespace"] == {"type": "str"}
