"""The run lock: lease rules (pure), the Kube write methods, and the module's take/release loop on a fake API."""

import copy
import datetime
import json
import os

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import lease, lease_lock, lease_renewer, processes
from ansible_collections.meshops.istio.plugins.module_utils.k8s import errors
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import api_exception

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 26, 17, 41, 54, 123456, tzinfo=UTC)


def me_(run="rollout", host="ctl", pid=1234, start="987654", note="", **extra):
    return lease.identity(run, note, "root", host, pid, start, extra.get("boot_id", "b1"), extra.get("pid_ns", "ns1"))


def at(seconds):
    return T0 + datetime.timedelta(seconds=seconds)


def held_lease(holder, now=T0, duration=120, rv="7"):
    body = lease.lease_body("meshops-istio-run", "istio-system", holder, duration, now)
    body["metadata"]["resourceVersion"] = rv
    return body


# ---------------------------------------------------------------------- MicroTime and expiry


def test_microtime_round_trip():
    text = lease.format_microtime(T0)
    assert text == "2026-11-26T17:41:54.123456Z"
    assert lease.parse_microtime(text) == T0


def test_microtime_formats_other_zones_and_naive_as_utc():
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert lease.format_microtime(T0.astimezone(cet)) == "2026-11-26T17:41:54.123456Z"
    assert lease.format_microtime(T0.replace(tzinfo=None)) == "2026-11-26T17:41:54.123456Z"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-26T17:41:54Z", T0.replace(microsecond=0)),
        ("2026-11-26T17:41:54.1Z", T0.replace(microsecond=100000)),
        ("2026-11-26T17:41:54.123456789Z", T0),  # nanoseconds truncated
        ("2026-11-26T18:41:54.123456+01:00", T0),
    ],
)
def test_parse_microtime_variants(text, expected):
    assert lease.parse_microtime(text) == expected


@pytest.mark.parametrize("text", [None, "", "yesterday", "2026-11-26T17:41:54", "2026-11-26T17:41:54.Z", 42])
def test_parse_microtime_rejects_malformed_and_zoneless(text):
    assert lease.parse_microtime(text) is None


def test_expiry_uses_renew_time_then_acquire_time():
    spec = {"acquireTime": "2026-11-26T17:41:54.123456Z", "leaseDurationSeconds": 60}
    assert lease.expiry({"spec": spec}) == at(60)
    spec["renewTime"] = "2026-11-26T17:42:54.123456Z"
    assert lease.expiry({"spec": spec}) == at(120)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"renewTime": "2026-11-26T17:41:54.123456Z"},
        {"renewTime": "2026-11-26T17:41:54.123456Z", "leaseDurationSeconds": 0},
        {"renewTime": "2026-11-26T17:41:54.123456Z", "leaseDurationSeconds": True},
        {"renewTime": "garbage", "leaseDurationSeconds": 10},
    ],
)
def test_expiry_unknown(spec):
    assert lease.expiry({"spec": spec}) is None
    assert lease.expiry(None) is None


# ---------------------------------------------------------------------- identity


def test_holder_identity_is_readable():
    me = me_(note="AWX job 42")
    assert lease.holder_identity(me) == "rollout by root@ctl pid 1234 (AWX job 42) [1234/987654]"
    assert lease.holder_identity(me_()) == "rollout by root@ctl pid 1234 [1234/987654]"


def test_holder_identity_unique_per_run():
    base = lease.holder_identity(me_())
    assert lease.holder_identity(me_(start="987655")) != base  # same pid, reused by a later run
    assert lease.holder_identity(me_(pid=1235)) != base
    assert lease.holder_identity(me_(host="other")) != base


def test_holder_annotation_round_trip_and_malformed():
    me = me_(note="AWX job 42")
    body = held_lease(me)
    assert json.loads(body["metadata"]["annotations"][lease.HOLDER_ANNOTATION]) == me
    assert lease.holder_of(body) == me
    body["metadata"]["annotations"][lease.HOLDER_ANNOTATION] = "{not json"
    assert lease.holder_of(body) is None
    body["metadata"]["annotations"][lease.HOLDER_ANNOTATION] = json.dumps({"host": "ctl", "pid": "12"})
    assert lease.holder_of(body) is None


def test_is_ours_by_run_not_by_run_name():
    body = held_lease(me_(run="rollout"))
    assert lease.is_ours(body, me_(run="drift", note="other step"))  # same controller run: re-entrant
    assert not lease.is_ours(body, me_(start="1"))
    assert not lease.is_ours(body, me_(pid_ns="ns2"))
    assert not lease.is_ours(None, me_())


def test_is_ours_without_annotation_compares_holder_identity():
    body = held_lease(me_())
    del body["metadata"]["annotations"][lease.HOLDER_ANNOTATION]
    assert lease.is_ours(body, me_())
    assert not lease.is_ours(body, me_(run="drift"))
    body["spec"]["holderIdentity"] = ""
    assert not lease.is_ours(body, me_())


def test_same_process_space():
    me = me_()
    assert lease.same_process_space(me_(pid=1), me)
    assert not lease.same_process_space(me_(host="other"), me)
    assert not lease.same_process_space(me_(boot_id="b2"), me)  # rebooted since
    assert not lease.same_process_space(me_(pid_ns="ns2"), me)  # another container with the same hostname
    assert lease.same_process_space(me_(boot_id="", pid_ns=""), me)  # not recorded: the hostname decides
    assert not lease.same_process_space(None, me)


# ---------------------------------------------------------------------- the Lease body


def test_new_lease_body():
    me = me_(note="AWX job 42")
    body = lease.lease_body("run", "ns", me, 90, T0)
    assert body["apiVersion"] == "coordination.k8s.io/v1"
    assert body["kind"] == "Lease"
    assert body["metadata"]["name"] == "run"
    assert body["metadata"]["namespace"] == "ns"
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "meshops.istio"}
    assert body["spec"] == {
        "holderIdentity": lease.holder_identity(me),
        "leaseDurationSeconds": 90,
        "acquireTime": "2026-11-26T17:41:54.123456Z",
        "renewTime": "2026-11-26T17:41:54.123456Z",
        "leaseTransitions": 0,
    }
    assert "resourceVersion" not in body["metadata"]


def test_renewing_keeps_acquire_time_and_resource_version():
    me = me_()
    previous = held_lease(me, now=T0)
    previous["metadata"]["labels"]["team"] = "mesh"
    body = lease.lease_body("meshops-istio-run", "istio-system", me, 120, at(40), previous=previous)
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["metadata"]["labels"]["team"] == "mesh"
    assert body["spec"]["acquireTime"] == lease.format_microtime(T0)
    assert body["spec"]["renewTime"] == lease.format_microtime(at(40))
    assert body["spec"]["leaseTransitions"] == 0
    assert previous["spec"]["renewTime"] == lease.format_microtime(T0)  # input left alone


def test_taking_over_restarts_acquire_time_and_counts_the_transition():
    previous = held_lease(me_(host="other"), now=T0)
    previous["spec"]["leaseTransitions"] = 3
    mine = me_()
    body = lease.lease_body("meshops-istio-run", "istio-system", mine, 120, at(500), previous=previous)
    assert body["spec"]["holderIdentity"] == lease.holder_identity(mine)
    assert body["spec"]["acquireTime"] == lease.format_microtime(at(500))
    assert body["spec"]["leaseTransitions"] == 4
    assert lease.holder_of(body) == mine


def test_renewed_only_moves_renew_time():
    body = held_lease(me_())
    out = lease.renewed(body, at(40))
    assert out["spec"]["renewTime"] == lease.format_microtime(at(40))
    out["spec"]["renewTime"] = body["spec"]["renewTime"]
    assert out == body


# ---------------------------------------------------------------------- decide


def test_decide_acquire_when_no_lease():
    d = lease.decide(None, me_(), T0, True, False)
    assert d == {"action": lease.ACQUIRE, "reason": "no run holds the lock", "holder": ""}


def test_decide_take_over_released_lease():
    body = held_lease(me_(host="other"))
    body["spec"]["holderIdentity"] = ""
    d = lease.decide(body, me_(), T0, True, False)
    assert d["action"] == lease.TAKE_OVER
    assert "released" in d["reason"]


def test_decide_renew_ours_even_when_expired():
    body = held_lease(me_(run="rollout"), now=T0)
    d = lease.decide(body, me_(run="drift"), at(10_000), True, False)
    assert d["action"] == lease.RENEW
    assert d["holder"] == lease.holder_identity(me_(run="rollout"))


def test_decide_wait_for_live_other_run():
    other = me_(host="other", note="AWX job 7")
    d = lease.decide(held_lease(other), me_(), at(119), True, False)
    assert d["action"] == lease.WAIT
    assert d["holder"] == lease.holder_identity(other)
    assert lease.holder_identity(other) in d["reason"]


def test_decide_take_over_expired():
    other = me_(host="other")
    d = lease.decide(held_lease(other, duration=120), me_(), at(120), True, False)
    assert d["action"] == lease.TAKE_OVER
    assert d["reason"].startswith("the lock expired at 2026-11-26T17:43:54.123456Z")
    assert d["holder"] == lease.holder_identity(other)


def test_decide_take_over_without_valid_expiry():
    body = held_lease(me_(host="other"))
    del body["spec"]["leaseDurationSeconds"]
    d = lease.decide(body, me_(), T0, True, False)
    assert d["action"] == lease.TAKE_OVER
    assert "no valid" in d["reason"]


def test_decide_take_over_when_holder_process_gone():
    other = me_(pid=4321, start="11")
    d = lease.decide(held_lease(other), me_(), at(1), False, False)
    assert d["action"] == lease.TAKE_OVER
    assert d["reason"] == "the holder's controller process (pid 4321 on ctl) is gone"


def test_decide_break_lock_takes_over_a_live_holder():
    d = lease.decide(held_lease(me_(host="other")), me_(), at(1), True, True)
    assert d["action"] == lease.TAKE_OVER
    assert d["reason"] == "break_lock was requested"


def test_decide_break_lock_does_not_hide_the_real_reason():
    d = lease.decide(held_lease(me_(host="other")), me_(), at(500), True, True)
    assert "expired" in d["reason"]


# ---------------------------------------------------------------------- /proc parsing


def test_parse_proc_stat_with_awkward_command_name():
    fields = ["S", "42"] + [str(n) for n in range(5, 22)] + ["987654", "0", "0"]
    text = "1234 (a) (b c) " + " ".join(fields) + "\n"
    assert lease.parse_proc_stat(text) == {"state": "S", "ppid": 42, "start": "987654"}


@pytest.mark.parametrize("text", ["", "garbage", "1 (x) S 1 2"])
def test_parse_proc_stat_rejects_non_stat(text):
    assert lease.parse_proc_stat(text) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_parse_proc_stat_of_this_process():
    with open("/proc/self/stat") as handle:
        stat = lease.parse_proc_stat(handle.read())
    assert stat["ppid"] == os.getppid()
    assert stat["start"].isdigit()


def test_controller_is_the_topmost_ansible_playbook():
    py = "/venv/bin/python3"
    ancestors = [
        (300, ["/bin/sh", "-c", "python3 /root/.ansible/tmp/ansible-tmp-1/AnsiballZ_run_lock.py && sleep 0"]),
        (200, [py, "/venv/bin/ansible-playbook", "site.yml"]),  # worker fork
        (100, [py, "/venv/bin/ansible-playbook", "site.yml"]),  # controller
        (50, ["-bash"]),
    ]
    assert lease.controller_pid(ancestors) == 100
    assert lease.controller_pid(ancestors[:1] + ancestors[3:]) is None


def test_is_playbook_matches_the_program_not_any_argument():
    assert lease.is_playbook(["/usr/bin/ansible-playbook", "x.yml"])
    assert lease.is_playbook(["python3.11", "/usr/local/bin/ansible-playbook-3.11", "x.yml"])
    assert lease.is_playbook(["/usr/bin/python3", "-u", "/usr/bin/ansible-playbook", "x.yml"])
    assert not lease.is_playbook(["vim", "ansible-playbook.md"])
    assert not lease.is_playbook(["/usr/bin/ansible", "localhost", "-m", "ping"])
    assert not lease.is_playbook(["/bin/bash", "-c", "echo", "ansible-playbook"])
    assert not lease.is_playbook([])


# ---------------------------------------------------------------------- Kube write methods


def dyn_error(status, reason, message=""):
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"message": message or reason}).encode()
    exc.headers = {"Content-Type": "application/json"}
    return api_exception(exc)


class FakeResource:
    def __init__(self, error=None, answer=None):
        self.error = error
        self.answer = answer or {"metadata": {"name": "x", "resourceVersion": "8"}}
        self.calls = []

    def _do(self, verb, kwargs):
        self.calls.append((verb, kwargs))
        if self.error is not None:
            raise self.error
        answer = self.answer

        class Answer:
            def to_dict(self):
                return copy.deepcopy(answer)

        return Answer()

    def create(self, **kwargs):
        return self._do("create", kwargs)

    def replace(self, **kwargs):
        return self._do("replace", kwargs)

    def delete(self, **kwargs):
        return self._do("delete", kwargs)


class FakeClient:
    class configuration:
        host = "https://api.example:6443"

    def __init__(self, resource):
        self._resource = resource

    def resource(self, kind, api_version):
        return self._resource


def kube_with(resource):
    kube = Kube.__new__(Kube)
    kube.module = None
    kube.client = FakeClient(resource)
    return kube


BODY = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "run", "resourceVersion": "7"}}


def test_create_and_replace_return_the_written_object():
    res = FakeResource()
    kube = kube_with(res)
    assert kube.create("coordination.k8s.io/v1", "Lease", BODY, "ns")["metadata"]["resourceVersion"] == "8"
    assert kube.replace("coordination.k8s.io/v1", "Lease", BODY, "ns")["metadata"]["resourceVersion"] == "8"
    assert res.calls == [("create", {"body": BODY, "namespace": "ns"}), ("replace", {"body": BODY, "namespace": "ns"})]


def test_create_into_missing_namespace_is_not_found():
    kube = kube_with(FakeResource(error=dyn_error(404, "Not Found", 'namespaces "ns" not found')))
    with pytest.raises(errors.KubeNotFound) as err:
        kube.create("coordination.k8s.io/v1", "Lease", BODY, "ns")
    assert "the namespace ns does not exist" in str(err.value)
    assert "Lease ns/run" in str(err.value)


@pytest.mark.parametrize("verb", ["create", "replace"])
def test_conflicts_are_distinguishable(verb):
    kube = kube_with(FakeResource(error=dyn_error(409, "Conflict", "the object has been modified")))
    with pytest.raises(errors.KubeConflict) as err:
        getattr(kube, verb)("coordination.k8s.io/v1", "Lease", BODY, "ns")
    assert isinstance(err.value, errors.KubeError)
    assert "the object has been modified" in str(err.value)


def test_other_write_errors_are_plain_kube_errors():
    denial = 'leases.coordination.k8s.io "run" is forbidden: User "u" cannot update resource "leases" in API group'
    kube = kube_with(FakeResource(error=dyn_error(403, "Forbidden", denial)))
    with pytest.raises(errors.KubeError) as err:
        kube.replace("coordination.k8s.io/v1", "Lease", BODY, "ns")
    assert not isinstance(err.value, (errors.KubeConflict, errors.KubeNotFound))
    assert str(err.value).startswith("forbidden to replace Lease ns/run")


def test_delete_with_precondition():
    res = FakeResource()
    assert kube_with(res).delete("coordination.k8s.io/v1", "Lease", "run", "ns", resource_version="7") is True
    verb, kwargs = res.calls[0]
    assert verb == "delete"
    assert kwargs["name"] == "run"
    assert kwargs["namespace"] == "ns"
    assert kwargs["body"]["preconditions"] == {"resourceVersion": "7"}
    res2 = FakeResource()
    kube_with(res2).delete("coordination.k8s.io/v1", "Lease", "run", "ns")
    assert "body" not in res2.calls[0][1]


def test_delete_missing_is_false_and_changed_is_conflict():
    assert kube_with(FakeResource(error=dyn_error(404, "Not Found"))).delete("v", "Lease", "run", "ns") is False
    with pytest.raises(errors.KubeConflict):
        kube_with(FakeResource(error=dyn_error(409, "Conflict"))).delete("v", "Lease", "run", "ns", "7")


def test_write_to_unserved_kind():
    kube = kube_with(None)
    with pytest.raises(errors.KubeError, match="does not serve Lease"):
        kube.create("coordination.k8s.io/v1", "Lease", BODY, "ns")


# ---------------------------------------------------------------------- the module's take/release loop


class FakeKube:
    """An API server in memory with resourceVersion preconditions."""

    host = "https://fake:6443"

    def __init__(self, namespaces=("lock-ns",)):
        self.namespaces = set(namespaces)
        self.objects = {}
        self.rv = 0
        self.before_write = []  # callables run (and dropped) before the next write: another run racing
        self.writes = []

    def _race(self):
        if self.before_write:
            self.before_write.pop(0)(self)

    def _store(self, key, body):
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def get(self, api_version, kind, name, namespace=None):
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def create(self, api_version, kind, body, namespace=None):
        self._race()
        self.writes.append(("create", kind))
        if kind == "Namespace":
            if body["metadata"]["name"] in self.namespaces:
                raise errors.KubeConflict("exists")
            self.namespaces.add(body["metadata"]["name"])
            return body
        if namespace not in self.namespaces:
            raise errors.KubeNotFound("no namespace")
        key = (kind, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise errors.KubeConflict("exists")
        return self._store(key, body)

    def replace(self, api_version, kind, body, namespace=None):
        self._race()
        self.writes.append(("replace", kind))
        key = (kind, namespace, body["metadata"]["name"])
        if key not in self.objects:
            raise errors.KubeNotFound("gone")
        if body["metadata"].get("resourceVersion") != self.objects[key]["metadata"]["resourceVersion"]:
            raise errors.KubeConflict("modified")
        return self._store(key, body)

    def delete(self, api_version, kind, name, namespace=None, resource_version=None):
        self._race()
        self.writes.append(("delete", kind))
        key = (kind, namespace, name)
        if key not in self.objects:
            return False
        if resource_version and resource_version != self.objects[key]["metadata"]["resourceVersion"]:
            raise errors.KubeConflict("modified")
        del self.objects[key]
        return True


class Clock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds

    def now(self):
        return T0 + datetime.timedelta(seconds=self.t)


PARAMS = {
    "namespace": "lock-ns",
    "name": "meshops-istio-run",
    "duration": 120,
    "wait_timeout": 10,
    "break_lock": False,
    "create_namespace": True,
}


def take(kube, me, clock, alive=True, **params):
    return lease_lock.acquire(
        kube,
        dict(PARAMS, **params),
        me,
        alive=lambda current, who: alive,
        now=clock.now,
        clock=clock.monotonic,
        sleep=clock.sleep,
    )


def test_acquire_creates_the_lease():
    kube, clock = FakeKube(), Clock()
    out = take(kube, me_(), clock)
    assert out["acquired"] is True
    assert out["action"] == lease.ACQUIRE
    assert out["held_by"] == lease.holder_identity(me_())
    assert out["taken_over_from"] == ""
    assert out["waited"] == 0.0
    assert out["waited_for"] == ""
    assert out["expires"] == lease.format_microtime(at(120))
    assert out["namespace_created"] is False
    stored = kube.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns")
    assert stored["spec"]["holderIdentity"] == lease.holder_identity(me_())


def test_acquire_again_renews():
    kube, clock = FakeKube(), Clock()
    take(kube, me_(run="rollout"), clock)
    clock.t = 30
    out = take(kube, me_(run="drift"), clock)
    assert out["action"] == lease.RENEW
    stored = kube.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns")
    assert stored["spec"]["renewTime"] == lease.format_microtime(at(30))
    assert stored["spec"]["acquireTime"] == lease.format_microtime(T0)


def test_acquire_creates_a_missing_namespace():
    kube, clock = FakeKube(namespaces=()), Clock()
    out = take(kube, me_(), clock)
    assert out["namespace_created"] is True
    assert "lock-ns" in kube.namespaces
    assert kube.writes == [("create", "Lease"), ("create", "Namespace"), ("create", "Lease")]


def test_acquire_without_create_namespace_fails_clearly():
    kube, clock = FakeKube(namespaces=()), Clock()
    with pytest.raises(
        errors.KubeError, match=r"namespace lock-ns does not exist\. Create it, or set create_namespace=true"
    ):
        take(kube, me_(), clock, create_namespace=False)
    assert kube.namespaces == set()


def test_second_run_waits_then_fails_naming_the_holder():
    kube, clock = FakeKube(), Clock()
    first = me_(host="other", note="AWX job 42")
    take(kube, first, clock)
    clock.t = 5
    with pytest.raises(lease_lock.LockHeld) as held:
        take(kube, me_(), clock, wait_timeout=10)
    assert 10 <= held.value.waited <= 12
    assert clock.t - 5 == pytest.approx(10)
    msg = lease_lock.held_message(PARAMS, held.value.current, held.value.waited)
    assert lease.holder_identity(first) in msg
    assert "since 2026-11-26T17:41:54.123456Z" in msg
    assert "expires at 2026-11-26T17:43:54.123456Z" in msg
    assert "another meshops.istio run is changing this cluster" in msg
    assert "rollout_lock_break: true" in msg
    assert msg.endswith("Nothing was changed.")
    stored = kube.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns")
    assert stored["spec"]["holderIdentity"] == lease.holder_identity(first)


def test_wait_timeout_zero_tries_once():
    kube, clock = FakeKube(), Clock()
    take(kube, me_(host="other"), clock)
    with pytest.raises(lease_lock.LockHeld):
        take(kube, me_(), clock, wait_timeout=0)
    assert clock.t == 0


def test_waiting_run_gets_the_lock_when_the_holder_releases():
    kube, clock = FakeKube(), Clock()
    first = me_(host="other")
    take(kube, first, clock)
    original_sleep = clock.sleep

    def sleep_then_release(seconds):
        original_sleep(seconds)
        if clock.t >= 3:
            kube.objects.clear()

    clock.sleep = sleep_then_release
    out = take(kube, me_(), clock, wait_timeout=60)
    assert out["action"] == lease.ACQUIRE
    assert 3 <= out["waited"] < 6
    assert out["waited_for"] == lease.holder_identity(first)  # the rollout checks its plan again


def test_expired_lock_is_taken_over():
    kube, clock = FakeKube(), Clock()
    first = me_(host="other")
    take(kube, first, clock)
    clock.t = 121
    out = take(kube, me_(), clock)
    assert out["action"] == lease.TAKE_OVER
    assert out["taken_over_from"] == lease.holder_identity(first)
    assert "expired" in out["reason"]
    stored = kube.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns")
    assert stored["spec"]["leaseTransitions"] == 1


def test_dead_holder_on_this_host_is_taken_over_at_once():
    kube, clock = FakeKube(), Clock()
    take(kube, me_(pid=4321, start="5"), clock)
    out = take(kube, me_(), clock, alive=False)
    assert out["action"] == lease.TAKE_OVER
    assert "pid 4321" in out["reason"]
    assert out["waited"] == 0.0


def test_race_on_replace_reads_again():
    kube, clock = FakeKube(), Clock()
    first = me_(host="other")
    take(kube, first, clock)
    clock.t = 200  # expired: we and a third run both try to take it over

    third = me_(host="third")

    def third_run_wins(k):
        current = k.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns")
        k._store(
            ("Lease", "lock-ns", "meshops-istio-run"),
            lease.lease_body("meshops-istio-run", "lock-ns", third, 120, clock.now(), previous=current),
        )

    kube.before_write.append(third_run_wins)
    with pytest.raises(lease_lock.LockHeld) as held:
        take(kube, me_(), clock, wait_timeout=3)
    assert lease.holder_name(held.value.current) == lease.holder_identity(third)


def test_race_on_create_reads_again_and_renews_a_lock_of_the_same_run():
    kube, clock = FakeKube(), Clock()
    kube.before_write.append(
        lambda k: k._store(
            ("Lease", "lock-ns", "meshops-istio-run"),
            lease.lease_body("meshops-istio-run", "lock-ns", me_(run="other step"), 120, clock.now()),
        )
    )
    out = take(kube, me_(), clock)
    assert out["action"] == lease.RENEW
    assert kube.writes == [("create", "Lease"), ("replace", "Lease")]


def test_release_only_our_lock():
    kube, clock = FakeKube(), Clock()
    other = me_(host="other")
    take(kube, other, clock)
    released, held_by = lease_lock.release(kube, PARAMS, me_(), now=clock.now)
    assert (released, held_by) == (False, lease.holder_identity(other))
    clock.t = 121  # expired: still not ours to delete, and held by nobody
    assert lease_lock.release(kube, PARAMS, me_(), now=clock.now) == (False, "")
    assert kube.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns") is not None

    kube.objects.clear()
    take(kube, me_(), clock)
    assert lease_lock.release(kube, PARAMS, me_()) == (True, "")
    assert kube.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns") is None
    assert lease_lock.release(kube, PARAMS, me_()) == (False, "")  # nothing left: fine
    assert lease_lock.release(FakeKube(namespaces=()), PARAMS, me_()) == (False, "")


def test_release_retries_after_a_renewal_raced_the_delete():
    kube, clock = FakeKube(), Clock()
    take(kube, me_(), clock)

    def renewer_renews(k):
        current = k.get(lease.API_VERSION, lease.KIND, "meshops-istio-run", "lock-ns")
        k._store(("Lease", "lock-ns", "meshops-istio-run"), lease.renewed(current, at(40)))

    kube.before_write.append(renewer_renews)
    assert lease_lock.release(kube, PARAMS, me_()) == (True, "")
    assert kube.writes == [("create", "Lease"), ("delete", "Lease"), ("delete", "Lease")]


def test_live_holder_is_empty_for_a_free_or_expired_lock():
    now = datetime.datetime.now(UTC)
    other = me_(host="other")
    assert lease_lock.live_holder(None, me_()) == ""
    assert lease_lock.live_holder(held_lease(other, now=now), me_()) == lease.holder_identity(other)
    assert lease_lock.live_holder(held_lease(other, now=now - datetime.timedelta(seconds=300)), me_()) == ""


# ---------------------------------------------------------------------- processes


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_process_alive_checks_the_start_time():
    start = processes.proc_stat(os.getpid())["start"]
    assert processes.process_alive(os.getpid(), start)
    assert not processes.process_alive(os.getpid(), str(int(start) + 1))  # a reused pid
    assert not processes.process_alive(2**22 + 12345, "")  # beyond pid_max: no such process


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_holder_alive_on_this_host(monkeypatch):
    me, _how = processes.whoami("rollout", "")
    mine = dict(me, pid=os.getpid(), start=processes.proc_stat(os.getpid())["start"])
    assert processes.holder_alive(held_lease(mine), me) is True
    assert processes.holder_alive(held_lease(dict(mine, start="1")), me) is False
    assert processes.holder_alive(held_lease(dict(mine, host="elsewhere", start="1")), me) is True
    assert processes.holder_alive(None, me) is True


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_whoami_outside_ansible_playbook_falls_back_to_the_session():
    me, how = processes.whoami("rollout", "AWX job 1")
    if how == "ansible-playbook":  # pragma: no cover - pytest started from a playbook
        pytest.skip("running under ansible-playbook")
    assert how == "session"
    assert me["pid"] == os.getsid(0)
    assert me["host"]
    assert me["note"] == "AWX job 1"


def test_pid_file_is_per_run_cluster_and_lease():
    kube = FakeKube()
    a = lease_renewer.pid_file(kube, PARAMS, me_())
    assert a == lease_renewer.pid_file(kube, PARAMS, me_(run="drift"))
    assert a != lease_renewer.pid_file(kube, dict(PARAMS, namespace="other"), me_())
    assert a != lease_renewer.pid_file(kube, PARAMS, me_(start="1"))
    other_cluster = FakeKube()
    other_cluster.host = "https://other:6443"
    assert a != lease_renewer.pid_file(other_cluster, PARAMS, me_())


def test_renewer_pid_ignores_stale_files(tmp_path):
    path = tmp_path / "x.pid"
    assert lease_renewer.renewer_pid(str(path)) == 0
    path.write_text("garbage")
    assert lease_renewer.renewer_pid(str(path)) == 0
    if os.path.exists("/proc/self/stat"):
        start = processes.proc_stat(os.getpid())["start"]
        path.write_text(f"{os.getpid()} {start}\n")
        assert lease_renewer.renewer_pid(str(path)) == os.getpid()
        path.write_text(f"{os.getpid()} {int(start) + 1}\n")
        assert lease_renewer.renewer_pid(str(path)) == 0
