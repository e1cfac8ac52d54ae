"""The action plugin istioctl_run: real processes on this machine, read with the filters that read its results."""

import sys
import time

import pytest
from ansible.errors import AnsibleActionFail
from ansible_collections.meshops.istio.plugins.action.istioctl_run import checked, run
from ansible_collections.meshops.istio.plugins.filter.istioctl import istioctl_findings, istioctl_program

PY = sys.executable


def test_output_and_exit_code_are_returned_without_the_trailing_newline():
    out = run([PY, "-c", "import sys; print('[]'); print('warned', file=sys.stderr); sys.exit(3)"], 30)
    assert (out["rc"], out["stdout"], out["stderr"], out["started"], out["timed_out"]) == (
        3,
        "[]",
        "warned",
        True,
        False,
    )
    assert out["msg"] == "non-zero return code"
    # precheck's way: findings on stdout, a non-zero exit for a warning; the JSON decides.
    assert istioctl_findings(out, "precheck")["passed"]


def test_a_missing_program_did_not_start_and_is_named_not_found(tmp_path):
    missing = str(tmp_path / "istioctl")
    out = run([missing, "version"], 30)
    assert out["rc"] is None and out["started"] is False and "No such file or directory" in out["msg"]
    program = istioctl_program(out, missing, "istio_install_minimal_istioctl_binary", "/k")
    assert program["problem"].startswith(f"istioctl was not found: {missing!r}")


def test_a_file_that_is_not_executable_did_not_start(tmp_path):
    path = tmp_path / "istioctl"
    path.write_text("not a program")
    out = run([str(path), "version"], 30)
    assert out["started"] is False and "Permission denied" in out["msg"]
    problem = istioctl_program(out, str(path), "istio_install_minimal_istioctl_binary", "/k")["problem"]
    assert "could not be started on the controller" in problem


def test_a_program_that_outlives_the_timeout_is_stopped_with_what_it_printed():
    script = "import time; print('watch error in cluster', flush=True); time.sleep(60)"
    start = time.monotonic()
    out = run([PY, "-c", script], 1)
    assert time.monotonic() - start < 10
    assert out["timed_out"] is True and out["rc"] is None
    assert out["msg"] == f"{PY} did not finish within 1 seconds and was stopped"
    assert "watch error in cluster" in out["stdout"]
    failure = istioctl_findings(out, "analyze")["failure"]
    assert failure.startswith("istioctl analyze did not finish") and "watch error in cluster" in failure


@pytest.mark.parametrize(
    "args, words",
    [
        ({"argv": []}, "argv must be a list of strings"),
        ({"argv": "istioctl version"}, "argv must be a list of strings"),
        ({"argv": ["istioctl", ""]}, "argv must be a list of strings"),
        ({"argv": ["istioctl", 3]}, "argv must be a list of strings"),
        ({"argv": ["istioctl"], "timeout": 0}, "timeout must be a number of seconds above 0, got 0"),
        ({"argv": ["istioctl"], "timeout": "soon"}, "timeout must be a number of seconds above 0, got 'soon'"),
    ],
)
def test_the_action_refuses_invalid_arguments(args, words):
    with pytest.raises(AnsibleActionFail, match="^istioctl_run: " + words):
        checked(args)


def test_the_action_takes_a_templated_timeout():
    assert checked({"argv": ["istioctl", "version"], "timeout": "300"}) == (["istioctl", "version"], 300)
