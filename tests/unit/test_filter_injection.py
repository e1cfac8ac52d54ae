"""Filter injection_label_problems."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.injection import injection_label_problems


def report(name, labels, mode):
    return {
        "namespace": name,
        "labels": labels,
        "label": {"mode": mode, "istio_injection": labels.get("istio-injection")},
    }


def test_clean_namespaces_pass():
    assert injection_label_problems([report("a", {}, "none")], "meshops.istio/protected", "istio.io/rev") == []
    already = report("b", {"istio-injection": "enabled"}, "istio-injection")
    assert injection_label_problems([already], "meshops.istio/protected", "istio.io/rev") == []


def test_each_refusal_names_namespace_and_remedy():
    out = injection_label_problems(
        [
            report("prot", {"meshops.istio/protected": "true"}, "none"),
            report("off", {"istio-injection": "disabled"}, "disabled"),
            report("both", {"istio-injection": "enabled", "istio.io/rev": "x"}, "conflict"),
            report("rev", {"istio.io/rev": "canary"}, "revision"),
        ],
        "meshops.istio/protected",
        "istio.io/rev",
    )
    assert len(out) == 4
    assert out[0].startswith("Namespace prot is labeled meshops.istio/protected=true")
    assert "explicitly off" in out[1]
    assert "carries both" in out[2]
    assert "already carries istio.io/rev=canary" in out[3]


def test_bad_input():
    with pytest.raises(AnsibleFilterError, match="injection_label_problems"):
        injection_label_problems("nope", "l", "o")


def test_injected_namespaces_and_workload_refs():
    from ansible_collections.meshops.istio.plugins.filter.injection import injected_namespaces, workload_refs

    def ns(name, **labels):
        return {"metadata": {"name": name, "labels": labels}}

    namespaces = [
        ns("a", **{"istio-injection": "enabled"}),
        ns("b", **{"istio.io/rev": "canary"}),
        ns("c", **{"istio-injection": "disabled"}),
        ns("d"),
        ns("e", **{"istio-injection": "enabled", "istio.io/rev": "x"}),
        ns("f", **{"istio-injection": "disabled", "istio.io/rev": "x"}),
    ]
    assert injected_namespaces(namespaces) == ["a", "b", "e"]
    deploy = {"kind": "Deployment", "metadata": {"namespace": "a", "name": "web", "labels": {}}}
    assert workload_refs([deploy]) == [{"kind": "Deployment", "namespace": "a", "name": "web"}]


def test_labels_applied_only_when_our_manager_owns_exactly_the_declared_labels():
    from ansible_collections.meshops.istio.plugins.filter.injection import injection_labels_applied

    label, manager = {"istio-injection": "enabled"}, "meshops-istio-injection"

    def report(name, labels, owned):
        return {"namespace": name, "labels": labels, "applied": {manager: owned, "other": ["labels.x"]}}

    done = report("a", {"istio-injection": "enabled", "x": "1"}, ["labels.istio-injection"])
    assert injection_labels_applied([done], ["a"], label, manager) is True
    # A namespace not read (missing), a label set by hand only, a pending mark, another value: apply.
    assert injection_labels_applied([done], ["a", "b"], label, manager) is False
    by_hand = dict(done, applied={"kubectl-label": ["labels.istio-injection"]})
    assert injection_labels_applied([by_hand], ["a"], label, manager) is False
    pending = report("a", done["labels"], ["annotations.meshops.istio/injection-pending", "labels.istio-injection"])
    assert injection_labels_applied([pending], ["a"], label, manager) is False
    disabled = report("a", {"istio-injection": "disabled"}, ["labels.istio-injection"])
    assert injection_labels_applied([disabled], ["a"], label, manager) is False
    with pytest.raises(AnsibleFilterError):
        injection_labels_applied("a", ["a"], label, manager)
