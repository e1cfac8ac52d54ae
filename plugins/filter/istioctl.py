# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Reading istioctl's answers: whether the istioctl program runs, and the findings of `istioctl analyze` and
`istioctl x precheck` printed with `--output=json`.

Both commands print a JSON list of messages, each with `code` (IST0101), `level` (Error, Warning, Info), `origin`
(the object: `Kind namespace/name`, `Kind name` for cluster-scoped ones, `Cluster` for precheck's cluster-wide
checks) and `message`. The exit code does not tell a finding from a failure: precheck exits non-zero for any
warning, and other istioctl versions may do the same for analyze. So the JSON decides: a list on stdout is a result
(whatever the exit code), anything else is istioctl failing to run, which the gates report as such.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.redact import redact

# istioctl's command line for each command, for messages.
COMMANDS = {"analyze": "istioctl analyze", "precheck": "istioctl x precheck"}
LEVELS = {"Error": "errors", "Warning": "warnings", "Info": "info"}
DOCS = "https://istio.io/latest/docs/reference/config/analysis/"
# The time stamp istioctl's log lines start with (2026-11-27T15:40:17.543110Z<TAB>error<TAB>...).
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\dT[0-9:.]+Z\s+")


def _command_result(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not ("rc" in value or value.get("skipped")):
        raise AnsibleFilterError(
            f"{name}: expected the registered result of the task that ran istioctl (meshops.istio.istioctl_run or "
            f"ansible.builtin.command: rc, stdout, stderr), got {type(value).__name__}: register the result and pass "
            "it as it is."
        )
    return value


def _started(result: Mapping[str, Any]) -> bool:
    """Whether the program started. istioctl_run says so; ansible.builtin.command reports a program it could not
    start with a message of its own and the error number as rc (ENOENT 2), and "non-zero return code" otherwise."""
    if "started" in result:
        return bool(result["started"])
    msg = str(result.get("msg") or "")
    return msg in ("", "non-zero return code") or bool(result.get("stdout") or result.get("stderr"))


def _output_tail(result: Mapping[str, Any], lines: int = 3) -> str:
    """The last distinct lines istioctl wrote about a failure (its log goes to stdout, its errors to stderr; else the
    message of the task), redacted, on one line."""
    text = "\n".join(str(result.get(key) or "").strip() for key in ("stdout", "stderr")).strip()
    text = text or str(result.get("msg") or "").strip()
    tail: List[str] = []
    for line in reversed([" ".join(_LOG_TIME.sub("", line).split()) for line in text.splitlines() if line.strip()]):
        if line not in tail:
            tail.insert(0, line)
        if len(tail) == lines:
            break
    return redact(" / ".join(tail)) if tail else "none"


def _json_list(text: str) -> Any:
    """The JSON list istioctl printed: all of stdout, or from the line that opens it when istioctl's log (which
    goes to stdout too) came first. None when there is none."""
    lines = text.splitlines()
    for start in [0] + [i for i, line in enumerate(lines) if line.strip() in ("[", "[]")]:
        try:
            value = json.loads("\n".join(lines[start:]))
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    return None


def istioctl_program(
    result: Any, program: str, source: str = "istio_install_minimal_istioctl_binary", kubeconfig: str = ""
) -> Dict[str, Any]:
    """Whether istioctl can run the cluster checks, from the result of ``<program> version --remote=false -o json``.

    ``source`` names the option that chose the program, ``kubeconfig`` is the kubeconfig the checks would pass
    (istioctl reads no K8S_AUTH_HOST/K8S_AUTH_API_KEY). Returns ``program``, ``version`` (``''`` when it did not run,
    ``'unknown'`` when its answer had none), ``usable`` and ``problem`` (a sentence; ``''`` when usable).
    """
    name = "istioctl_program"
    result = _command_result(result, name)
    if result.get("skipped"):
        raise AnsibleFilterError(f"{name}: the istioctl version task was skipped; run it before asking this filter.")
    if not isinstance(program, str) or not program:
        raise AnsibleFilterError(f"{name}: program must be the istioctl path or name, got {program!r}.")
    out = {"program": program, "version": "", "usable": False, "problem": ""}
    rc = result.get("rc")
    if rc != 0:
        msg = str(result.get("msg") or "")
        if not _started(result) and (rc == 2 or "No such file" in msg):
            out["problem"] = (
                f"istioctl was not found: {program!r} ({source}) does not exist on the controller. Install istioctl "
                f"there (under AWX, in the execution environment) or point {source} at it."
            )
        elif not _started(result):
            out["problem"] = (
                f"{program} ({source}) could not be started on the controller ({redact(msg)}): make it an "
                f"executable istioctl built for this machine, or point {source} at one."
            )
        else:
            out["problem"] = (
                f"{program} ({source}) fails on the controller (exit code {rc}: {_output_tail(result, lines=1)}): "
                f"point {source} at a working istioctl."
            )
        return out
    try:
        version = json.loads(result.get("stdout") or "")["clientVersion"]["version"]
    except (ValueError, KeyError, TypeError):
        version = "unknown"
    out["version"] = str(version)
    if not str(kubeconfig or "").strip():
        out["problem"] = (
            "istioctl reads only a kubeconfig, and this run has none (only K8S_AUTH_HOST and K8S_AUTH_API_KEY): give "
            "the job a kubeconfig (meshops_kubeconfig, K8S_AUTH_KUBECONFIG or KUBECONFIG)."
        )
        return out
    out["usable"] = True
    return out


def _namespace(origin: str) -> Optional[str]:
    """The namespace an origin (`Kind namespace/name`, `Namespace name`) is in; None for cluster-wide ones."""
    kind, _space, ref = origin.partition(" ")
    if "/" in ref:
        return ref.split("/", 1)[0]
    if kind == "Namespace" and ref:
        return ref
    return None


def _finding(raw: Any) -> Optional[Dict[str, Any]]:
    if not isinstance(raw, Mapping) or not raw.get("code") or not raw.get("level"):
        return None
    origin = str(raw.get("origin") or "")
    finding = {
        "code": str(raw["code"]),
        "level": str(raw["level"]),
        "origin": origin,
        "namespace": _namespace(origin) or "",
        "message": str(raw.get("message") or ""),
        "documentation_url": str(raw.get("documentationUrl") or DOCS + str(raw["code"]).lower() + "/"),
    }
    finding["text"] = f"{finding['code']} ({origin or 'no object'}) {finding['message']}".replace(" ()", "")
    return finding


def _count(findings: Sequence[Mapping[str, Any]], singular: str, plural: str) -> str:
    codes: Dict[str, int] = {}
    for item in findings:
        codes[item["code"]] = codes.get(item["code"], 0) + 1
    listed = ", ".join(code + (f" x{n}" if n > 1 else "") for code, n in sorted(codes.items()))
    return f"{len(findings)} {singular if len(findings) == 1 else plural} ({listed})"


def istioctl_findings(result: Any, command: str = "analyze", namespaces: Optional[Sequence[str]] = None) -> Dict:
    """The findings of ``istioctl <command> --output=json`` from its registered command result.

    ``namespaces``, when given, is the scope: findings about objects in other namespaces (and about other
    Namespace objects) are left out and only counted; findings about cluster-wide objects are kept.
    """
    name = "istioctl_findings"
    result = _command_result(result, name)
    if command not in COMMANDS:
        raise AnsibleFilterError(f"{name}: command must be one of {', '.join(COMMANDS)}, got {command!r}.")
    if namespaces is not None and (
        isinstance(namespaces, (str, bytes)) or not all(isinstance(n, str) and n for n in namespaces)
    ):
        raise AnsibleFilterError(f"{name}: namespaces must be a list of namespace names, got {namespaces!r}.")
    label = COMMANDS[command]
    scope = f"namespaces {', '.join(namespaces)}" if namespaces is not None else "the cluster"
    out: Dict[str, Any] = {
        "ran": False,
        "passed": True,
        "errors": [],
        "warnings": [],
        "info": [],
        "outside_scope": 0,
        "failure": "",
    }
    if result.get("skipped"):
        out["summary"] = f"{label} was not run."
        return out

    rc = result.get("rc")
    text = str(result.get("stdout") or "").strip()
    raw = _json_list(text) if text else None
    if not text and command == "precheck" and rc == 0:
        raw = []  # precheck prints nothing on stdout when it finds nothing
    findings = [_finding(item) for item in raw] if isinstance(raw, list) and not result.get("timed_out") else [None]
    if any(item is None for item in findings):
        out["passed"] = False
        if result.get("timed_out"):
            out["failure"] = (
                f"{label} did not finish ({result.get('msg') or 'it was stopped'}). istioctl waits like this for a "
                "resource type the cluster does not serve, for example Gateway API CRDs older than the ones it "
                f"reads; its last words: {_output_tail(result, 2)}. This is not a finding about the mesh: fix what "
                "istioctl waits for, then rerun."
            )
        else:
            out["failure"] = (
                f"{label} did not give a result (exit code {rc}; its last words: {_output_tail(result)}). This is "
                "istioctl failing to run or to reach the cluster, not a finding about the mesh: check the "
                "kubeconfig and that its credentials may read the cluster, then rerun."
            )
        out["summary"] = out["failure"]
        return out

    out["ran"] = True
    for item in findings:
        if namespaces is not None and item["namespace"] and item["namespace"] not in namespaces:
            out["outside_scope"] += 1
            continue
        out[LEVELS.get(item["level"], "warnings")].append(item)
    counts = [
        _count(out[key], singular, plural)
        for key, singular, plural in (("errors", "error", "errors"), ("warnings", "warning", "warnings"))
        if out[key]
    ]
    if out["info"]:
        counts.append(f"{len(out['info'])} info")
    elsewhere = f" ({out['outside_scope']} more about other namespaces, not counted)" if out["outside_scope"] else ""
    out["summary"] = f"{label} found {', '.join(counts) if counts else 'nothing to report'} in {scope}{elsewhere}."
    if out["errors"]:
        out["passed"] = False
        docs = " ".join(sorted({item["documentation_url"].split("?")[0] for item in out["errors"]}))
        out["failure"] = (
            f"{label} found {_count(out['errors'], 'error', 'errors')} in {scope}: "
            + "; ".join(item["text"] for item in out["errors"])
            + f". Fix what each names (Istio explains each code: {docs})."
        )
    return out


class FilterModule:
    def filters(self):
        return {"istioctl_program": istioctl_program, "istioctl_findings": istioctl_findings}
