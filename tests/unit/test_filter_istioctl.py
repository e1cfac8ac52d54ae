"""Filters in plugins/filter/istioctl.py, on what istioctl really printed (tests/unit/fixtures/istioctl/README.md)."""

import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.filter.istioctl import istioctl_findings, istioctl_program

FIXTURES = Path(__file__).parent / "fixtures" / "istioctl"


def captured(name: str) -> dict:
    """A fixture as meshops.istio.istioctl_run returns it."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    result = {"rc": data["rc"], "stdout": data["stdout"], "stderr": data["stderr"], "started": True}
    result["timed_out"] = data.get("timed_out", False)
    if result["timed_out"]:
        result["msg"] = f"istioctl did not finish within {data['timeout']} seconds and was stopped"
    else:
        result["msg"] = "" if data["rc"] == 0 else "non-zero return code"
    return result


def codes(findings: list) -> list:
    return [(f["code"], f["origin"]) for f in findings]


# --- istioctl analyze ---------------------------------------------------------------------------------------------


def test_analyze_errors_warnings_and_info_by_level_with_code_object_and_message():
    out = istioctl_findings(captured("analyze_live_errors"))
    assert out["ran"] and not out["passed"]
    assert codes(out["errors"]) == [
        ("IST0101", "VirtualService other/analyze-broken"),
        ("IST0101", "VirtualService shop/analyze-broken"),
    ]
    error = out["errors"][1]
    assert error["level"] == "Error" and error["namespace"] == "shop"
    assert error["message"] == 'Referenced gateway not found: "no-such-gateway"'
    assert (
        error["text"] == 'IST0101 (VirtualService shop/analyze-broken) Referenced gateway not found: "no-such-gateway"'
    )
    assert error["documentation_url"].startswith("https://istio.io/") and "/ist0101/" in error["documentation_url"]
    assert [f["code"] for f in out["warnings"]] == ["IST0103", "IST0103", "IST0132", "IST0132"]
    assert [f["code"] for f in out["info"]] == ["IST0102", "IST0102", "IST0118", "IST0118", "IST0118"]
    assert out["summary"] == (
        "istioctl analyze found 2 errors (IST0101 x2), 4 warnings (IST0103 x2, IST0132 x2), 5 info in the cluster."
    )


def test_analyze_exits_zero_with_errors_in_json_so_the_json_decides():
    result = captured("analyze_live_errors")
    assert result["rc"] == 0  # what istioctl does with --output=json: the filter must not trust the exit code
    assert not istioctl_findings(result)["passed"]


def test_analyze_scope_keeps_the_namespaces_given_and_counts_the_rest():
    out = istioctl_findings(captured("analyze_live_errors"), "analyze", ["shop", "istio-system"])
    assert codes(out["errors"]) == [("IST0101", "VirtualService shop/analyze-broken")]
    assert codes(out["warnings"]) == [
        ("IST0103", "Pod shop/web-bb75485bf-r24nn"),
        ("IST0132", "VirtualService shop/analyze-broken"),
    ]
    # The Namespace objects default and plain, and everything in other and plain, are out of scope.
    assert codes(out["info"]) == [("IST0118", "Service shop/web")]
    assert out["outside_scope"] == 7
    assert out["summary"] == (
        "istioctl analyze found 1 error (IST0101), 2 warnings (IST0103, IST0132), 1 info in namespaces shop, "
        "istio-system (7 more about other namespaces, not counted)."
    )
    assert out["failure"].startswith(
        "istioctl analyze found 1 error (IST0101) in namespaces shop, istio-system: IST0101 "
        '(VirtualService shop/analyze-broken) Referenced gateway not found: "no-such-gateway". Fix what each names'
    )
    assert "ist0101/" in out["failure"]


def test_analyze_errors_only_outside_the_scope_pass():
    out = istioctl_findings(captured("analyze_live_errors"), "analyze", ["plain"])
    assert out["passed"] and out["ran"] and out["errors"] == [] and out["failure"] == ""
    assert codes(out["info"]) == [("IST0102", "Namespace plain"), ("IST0118", "Service plain/web")]


def test_analyze_warnings_and_info_pass():
    out = istioctl_findings(captured("analyze_live_clean"), "analyze", ["shop", "istio-system"])
    assert out["passed"] and out["failure"] == ""
    assert codes(out["warnings"]) == [("IST0103", "Pod shop/web-bb75485bf-r24nn")]
    assert out["summary"].startswith("istioctl analyze found 1 warning (IST0103), 1 info in namespaces shop")


def test_analyze_of_files_offline_names_the_broken_references():
    out = istioctl_findings(captured("analyze_offline"))
    assert [(f["code"], f["message"]) for f in out["errors"]] == [
        ("IST0101", 'Referenced gateway not found: "no-such-gateway"'),
        ("IST0101", 'Referenced host+subset in destinationrule not found: "web+v9"'),
    ]
    assert [f["code"] for f in out["warnings"]] == ["IST0128", "IST0132"]


def test_analyze_that_found_nothing():
    out = istioctl_findings({"rc": 0, "stdout": "[]", "stderr": ""}, "analyze", ["shop"])
    assert out["ran"] and out["passed"]
    assert out["summary"] == "istioctl analyze found nothing to report in namespaces shop."


def test_analyze_that_could_not_reach_the_cluster_is_not_a_finding():
    out = istioctl_findings(captured("analyze_unreachable"), "analyze", ["shop"])
    assert not out["ran"] and not out["passed"]
    assert out["failure"] == out["summary"]
    assert out["failure"].startswith("istioctl analyze did not give a result (exit code 1; its last words: Error: Get")
    assert "connect: connection refused" in out["failure"]
    assert "not a finding about the mesh" in out["failure"]


def test_analyze_that_printed_nothing_with_exit_zero_did_not_run():
    # What this istioctl does when the kubeconfig's namespace does not exist: a line on stderr, exit 0.
    result = {"rc": 0, "stdout": "", "stderr": 'namespace "gone" not found'}
    out = istioctl_findings(result, "analyze")
    assert not out["passed"] and 'namespace "gone" not found' in out["failure"]


def test_output_that_is_not_istioctl_json_is_a_failure_with_credentials_redacted():
    result = {"rc": 1, "stdout": "Error: token=abc123 rejected", "stderr": "Authorization: Bearer abc123\nboom"}
    out = istioctl_findings(result, "analyze")
    assert not out["ran"] and not out["passed"]
    assert "abc123" not in out["failure"]
    assert "boom" in out["failure"]


def test_log_lines_before_the_json_are_passed_over():
    log = "2026-11-27T15:40:17.543110Z\terror\twatch error in cluster : failed to list *v1.HTTPRoute"
    result = captured("analyze_live_errors")
    result["stdout"] = log + "\n" + result["stdout"]
    out = istioctl_findings(result, "analyze", ["shop"])
    assert out["ran"] and codes(out["errors"]) == [("IST0101", "VirtualService shop/analyze-broken")]
    out = istioctl_findings({"rc": 0, "stdout": log + "\n[]", "stderr": ""}, "analyze")
    assert out["ran"] and out["passed"]


def test_a_run_that_was_stopped_is_not_a_finding_and_says_what_istioctl_waited_for():
    # istioctl analyze on a cluster whose HTTPRoute CRD serves v1alpha2 only: it logs watch errors on stdout and never
    # finishes; istioctl_run stopped it after 5 seconds.
    out = istioctl_findings(captured("analyze_stopped"), "analyze", ["shop"])
    assert not out["ran"] and not out["passed"]
    assert out["failure"].startswith(
        "istioctl analyze did not finish (istioctl did not finish within 5 seconds and was stopped). istioctl "
        "waits like this for a resource type the cluster does not serve"
    )
    assert out["failure"].count("failed to list *v1.HTTPRoute") == 1
    assert "not a finding about the mesh" in out["failure"]


def test_json_of_another_shape_is_a_failure():
    out = istioctl_findings({"rc": 0, "stdout": '[{"message": "no code"}]', "stderr": ""}, "analyze")
    assert not out["ran"] and not out["passed"]


def test_an_unknown_level_counts_as_a_warning():
    stdout = json.dumps([{"code": "IST9999", "level": "Notice", "origin": "Pod shop/a", "message": "m"}])
    out = istioctl_findings({"rc": 0, "stdout": stdout, "stderr": ""})
    assert out["passed"] and [f["level"] for f in out["warnings"]] == ["Notice"]


def test_a_skipped_task_passes_and_says_so():
    out = istioctl_findings({"skipped": True, "changed": False}, "analyze", ["shop"])
    assert out["passed"] and not out["ran"]
    assert out["summary"] == "istioctl analyze was not run."


# --- istioctl x precheck ------------------------------------------------------------------------------------------


def test_precheck_clean_prints_nothing_on_stdout():
    result = captured("precheck_clean")
    assert result["stdout"] == "" and "No issues found" in result["stderr"]
    out = istioctl_findings(result, "precheck")
    assert out["ran"] and out["passed"]
    assert out["summary"] == "istioctl x precheck found nothing to report in the cluster."


def test_precheck_errors_and_warnings_with_a_non_zero_exit():
    out = istioctl_findings(captured("precheck_gateway_api_v1alpha2"), "precheck")
    assert out["ran"] and not out["passed"]
    assert codes(out["errors"]) == [("IST0156", "CustomResourceDefinition httproutes.gateway.networking.k8s.io")]
    assert codes(out["warnings"]) == [("IST0172", "CustomResourceDefinition httproutes.gateway.networking.k8s.io")]
    assert out["errors"][0]["namespace"] == ""
    assert "The Gateway API CRD version v1alpha2 is lower than the minimum version: v1beta1" in out["failure"]


def test_precheck_warning_alone_passes_although_istioctl_exits_non_zero():
    result = captured("precheck_warning")
    assert result["rc"] == 1
    out = istioctl_findings(result, "precheck")
    assert out["passed"] and codes(out["warnings"])[0][0] == "IST0172"


def test_precheck_with_a_read_only_credential_names_each_missing_permission():
    out = istioctl_findings(captured("precheck_read_only"), "precheck", None)
    assert len(out["errors"]) == 11 and {f["origin"] for f in out["errors"]} == {"Cluster"}
    assert "IST0141 (Cluster) Missing required permission to create resource clusterroles" in out["failure"]
    assert out["summary"] == "istioctl x precheck found 11 errors (IST0141 x11) in the cluster."


def test_precheck_that_could_not_list_or_connect_did_not_run():
    for name, words in (
        ("precheck_unprivileged", "cannot list resource"),
        ("precheck_unreachable", "failed to get the Kubernetes version"),
    ):
        out = istioctl_findings(captured(name), "precheck")
        assert not out["ran"] and not out["passed"], name
        assert out["failure"].startswith("istioctl x precheck did not give a result (exit code 1"), name
        assert words in out["failure"], name


def test_precheck_that_printed_nothing_with_an_error_did_not_run():
    out = istioctl_findings({"rc": 1, "stdout": "", "stderr": "Error: boom"}, "precheck")
    assert not out["passed"] and "Error: boom" in out["failure"]


# --- input validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, args, words",
    [
        ("[]", (), "expected the registered result of the task that ran istioctl"),
        ({"stdout": "[]"}, (), "expected the registered result"),
        ({"rc": 0, "stdout": "[]"}, ("lint",), "command must be one of analyze, precheck, got 'lint'"),
        ({"rc": 0, "stdout": "[]"}, ("analyze", "shop"), "namespaces must be a list of namespace names"),
        ({"rc": 0, "stdout": "[]"}, ("analyze", ["shop", ""]), "namespaces must be a list of namespace names"),
    ],
)
def test_findings_input_is_checked(value, args, words):
    with pytest.raises(AnsibleFilterError, match=r"^istioctl_findings: ") as err:
        istioctl_findings(value, *args)
    assert words in str(err.value)


# --- istioctl_program ---------------------------------------------------------------------------------------------


def test_program_that_runs_with_a_kubeconfig_is_usable():
    out = istioctl_program(captured("version"), "/opt/istioctl", "istio_install_minimal_istioctl_binary", "/k/config")
    assert out == {"program": "/opt/istioctl", "version": "1.31.1", "usable": True, "problem": ""}


def test_program_without_a_kubeconfig_is_not_usable():
    out = istioctl_program(captured("version"), "istioctl", "istio_install_minimal_istioctl_binary", "")
    assert not out["usable"] and out["version"] == "1.31.1"
    assert "istioctl reads only a kubeconfig" in out["problem"] and "meshops_kubeconfig" in out["problem"]


@pytest.mark.parametrize(
    "result",
    [
        # ansible-core 2.19: the command module could not start the program (errno 2 as rc).
        {"rc": 2, "stdout": "", "stderr": "", "msg": "Error executing command."},
        # ansible-core 2.16.
        {"rc": 2, "stdout": "", "stderr": "", "msg": "[Errno 2] No such file or directory: b'/opt/none/istioctl'"},
    ],
)
def test_missing_program_names_the_option(result):
    out = istioctl_program(result, "/opt/none/istioctl", "istio_install_minimal_istioctl_binary", "/k")
    assert not out["usable"] and out["version"] == ""
    assert out["problem"].startswith(
        "istioctl was not found: '/opt/none/istioctl' (istio_install_minimal_istioctl_binary)"
    )
    assert "point istio_install_minimal_istioctl_binary at it" in out["problem"]


def test_program_that_cannot_start_or_fails():
    out = istioctl_program({"rc": 13, "stdout": "", "stderr": "", "msg": "Error executing command."}, "/x", "src", "/k")
    assert "could not be started on the controller (Error executing command.)" in out["problem"]
    out = istioctl_program({"rc": 1, "stdout": "", "stderr": "exec format error", "msg": "non-zero return code"}, "/x")
    assert "fails on the controller (exit code 1: exec format error)" in out["problem"]


def test_version_answer_without_a_version_still_runs():
    out = istioctl_program({"rc": 0, "stdout": "{}", "stderr": ""}, "istioctl", "src", "/k")
    assert out["usable"] and out["version"] == "unknown"


@pytest.mark.parametrize(
    "value, program, words",
    [
        ("1.31.1", "istioctl", "expected the registered result"),
        ({"skipped": True}, "istioctl", "was skipped"),
        ({"rc": 0, "stdout": "{}"}, "", "program must be the istioctl path or name"),
    ],
)
def test_program_input_is_checked(value, program, words):
    with pytest.raises(AnsibleFilterError, match=r"^istioctl_program: ") as err:
        istioctl_program(value, program)
    assert words in str(err.value)
