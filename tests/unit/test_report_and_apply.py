"""The drift playbook's two list-taking plugins: apply_sets' input check and error mapping, report_files' writer."""

import os
import stat
import threading
import time

import pytest
from ansible_collections.meshops.istio.plugins.action import report_files
from ansible_collections.meshops.istio.plugins.module_utils.k8s import apply, errors
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube
from ansible_collections.meshops.istio.plugins.modules import apply_sets


def test_declared_sets_go_in_as_they_are_and_bad_ones_are_named():
    declared = {"step": "traffic", "field_manager": "m", "objects": [{"kind": "VirtualService"}], "delete": []}
    assert apply_sets.problems([declared]) == []
    wrong = apply_sets.problems([{"step": "", "field_manager": None, "objects": [{"metadata": {}}]}])
    assert wrong == [
        "sets[0] (no step): step must be a non-empty string",
        "sets[0] (no step): field_manager must be a non-empty string",
        "sets[0] (no step): objects must be a list of object definitions, each with a kind",
    ]
    assert apply_sets.problems([{"step": "mtls", "field_manager": "m", "objects": "x"}]) == [
        "sets[0] (mtls): objects must be a list of object definitions, each with a kind"
    ]


class _Refused(Exception):
    status = 400
    body = '{"message": "admission webhook \\"validation.istio.io\\" denied the request: bad host"}'


class _CoreFailure(Exception):
    """kubernetes.core's service wraps the API error: the cause carries the status."""


def _kube(action, check_mode=False, services=None):
    kube = Kube.__new__(Kube)
    kube.module = type("M", (), {"params": {}, "check_mode": check_mode})()
    kube.client = type("C", (), {"configuration": type("Cfg", (), {"host": "https://api:6443"})()})()
    apply.perform_action = action
    apply.K8sService = lambda client, module: (services if services is not None else []).append(module)
    return kube


def test_apply_names_the_refused_object_and_the_field_manager_reaches_the_service(monkeypatch):
    monkeypatch.setattr(apply, "perform_action", apply.perform_action)
    monkeypatch.setattr(apply, "K8sService", apply.K8sService)
    seen = []

    def refuse(service, definition, params):
        seen.append(params)
        if definition["metadata"]["name"] == "bad":
            raise _CoreFailure("Failed to apply object") from _Refused()
        return {"changed": False, "method": "apply", "result": definition}

    services = []
    kube = _kube(refuse, services=services)
    good = {"kind": "VirtualService", "metadata": {"name": "ok", "namespace": "shop"}}
    assert kube.apply([good], "meshops-istio-traffic", True)[0]["result"] == good
    assert services[0].params["server_side_apply"] == {
        "field_manager": "meshops-istio-traffic",
        "force_conflicts": True,
    }
    assert services[0].check_mode is False  # the rest is the module's own
    assert kube.module.params == {}  # a copy: the module's parameters stay as the task gave them
    assert seen == [{"state": "present", "apply": True}]
    with pytest.raises(errors.KubeRefused) as err:
        kube.apply([good, dict(good, metadata={"name": "bad", "namespace": "shop"})], "m", False)
    assert "VirtualService shop/bad" in str(err.value) and "bad host" in str(err.value)


def test_apply_reports_a_kind_the_server_does_not_serve_without_blaming_the_connection(monkeypatch):
    monkeypatch.setattr(apply, "perform_action", apply.perform_action)
    monkeypatch.setattr(apply, "K8sService", apply.K8sService)

    def unknown(service, definition, params):
        raise _CoreFailure("Failed to find exact match for example.io/v1.Gadget")

    with pytest.raises(errors.KubeError) as err:
        _kube(unknown).apply([{"kind": "Gadget", "metadata": {"name": "g"}}], "m", False)
    assert str(err.value) == "cannot apply Gadget g: Failed to find exact match for example.io/v1.Gadget"


def test_dry_runs_go_side_by_side_keep_their_order_and_name_the_first_refused_object(monkeypatch):
    monkeypatch.setattr(apply, "perform_action", apply.perform_action)
    monkeypatch.setattr(apply, "K8sService", apply.K8sService)
    threads, looked_up = set(), []

    def dry_run(service, definition, params):
        name = definition["metadata"]["name"]
        threads.add(threading.get_ident())
        time.sleep(0.02 if name.endswith("0") else 0.001)  # the first of each ten answers last
        if name in ("vs-7", "vs-12"):
            raise _CoreFailure("Failed to apply object") from _Refused()
        return {"changed": False, "method": "apply", "result": definition}

    objects = [{"apiVersion": "v1", "kind": "VirtualService", "metadata": {"name": f"vs-{i}"}} for i in range(20)]
    kube = _kube(dry_run, check_mode=True)
    kube._resource = lambda api_version, kind: looked_up.append((api_version, kind))
    good = [o for o in objects if o["metadata"]["name"] not in ("vs-7", "vs-12")]
    assert [r["result"] for r in kube.apply(good, "m", False)] == good
    assert len(threads) > 1, "dry runs ran one after the other"
    assert looked_up == [("v1", "VirtualService")], "each kind is discovered once, before the threads start"
    with pytest.raises(errors.KubeRefused) as err:
        kube.apply(objects, "m", False)
    assert "VirtualService vs-7" in str(err.value)

    # A real apply keeps going one object after the other, in order.
    threads.clear()
    applied = [r["result"] for r in _kube(dry_run).apply(good, "m", False)]
    assert applied == good and threads == {threading.get_ident()}


def test_report_files_are_written_atomically_and_left_alone_when_unchanged(tmp_path):
    target = tmp_path / "c.md"
    path = str(target)
    assert report_files._write(path, b"# report\n", 0o644) is True
    assert target.read_bytes() == b"# report\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert report_files._write(path, b"# report\n", 0o644) is False
    os.chmod(path, 0o600)
    assert report_files._write(path, b"# report\n", 0o644) is True
    assert report_files._write(path, b"# other\n", 0o644) is True
    assert target.read_bytes() == b"# other\n"
    assert sorted(os.listdir(tmp_path)) == ["c.md"]  # no temporary file left behind
