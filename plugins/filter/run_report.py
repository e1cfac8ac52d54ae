# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The record of one rollout, upgrade or drift run, as the report renderers (report_html, report_markdown) read it."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional


def _bake(result: Mapping[str, Any]) -> Dict[str, Any]:
    """One wave_analysis bake result, reduced to what the report shows."""
    analyses = []
    for one in result.get("analyses") or []:
        row = {key: one.get(key) for key in ("elapsed_s", "passed", "problems", "inconclusive")}
        row.update(one.get("figures") or {})
        analyses.append(row)
    return {
        "namespaces": list(result.get("namespaces") or []),
        "passed": bool(result.get("passed")),
        "thresholds": dict(result.get("thresholds") or {}),
        "analyses": analyses,
        "problems": list(result.get("problems") or []) + list(result.get("inconclusive") or []),
    }


def _wave(
    wave: Mapping[str, Any], step: str, bakes: List[Dict[str, Any]], done: List[str], stopped: Mapping[str, Any]
) -> Dict[str, Any]:
    names = set(wave.get("namespaces") or [])
    mine = [b for b in bakes if names & set(b["namespaces"])]
    bake = mine[-1] if mine else None
    failed_here = stopped.get("step") == step
    if bake and bake["passed"] and not failed_here:
        decision = "passed"
    elif bake and not bake["passed"]:  # labeled, baked, failed: rolled back unless rollback is off
        decision = "failed, rolled back" if stopped.get("rolled_back", True) else "failed"
    elif failed_here:  # refused before its label, or a gate after its bake
        decision = "failed"
    elif step in done:
        decision = "done, no bake"
    else:
        decision = "not started"
    problems = (bake or {}).get("problems") or ([stopped.get("msg", "")] if failed_here and not bake else [])
    return {
        "name": wave.get("name", step),
        "namespaces": sorted(names),
        "decision": decision,
        "thresholds": (bake or {}).get("thresholds", {}),
        "analyses": (bake or {}).get("analyses", []),
        "problems": [p for p in problems if p],
    }


def _coverage(reads: List[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The latest sidecar_status read of each namespace (later reads win)."""
    latest: Dict[str, Mapping[str, Any]] = {}
    for read in reads or []:
        for ns in (read or {}).get("namespaces") or []:
            if ns.get("namespace"):
                latest[ns["namespace"]] = ns
    return [
        {
            "namespace": name,
            "pods": ns.get("eligible", ns.get("total", 0)),
            "with_sidecar": ns.get("with_proxy", 0),
            "complete": bool(ns.get("complete")),
        }
        for name, ns in sorted(latest.items())
    ]


def run_report(
    kind: str,
    cluster: str,
    started: str = "",
    finished: str = "",
    steps: Optional[List[str]] = None,
    done: Optional[List[str]] = None,
    stopped: Optional[Mapping[str, Any]] = None,
    waves: Optional[List[Mapping[str, Any]]] = None,
    bakes: Optional[List[Mapping[str, Any]]] = None,
    coverage: Optional[List[Mapping[str, Any]]] = None,
    drift: Optional[List[Mapping[str, Any]]] = None,
    control_plane: Optional[Mapping[str, Any]] = None,
    check_mode: bool = False,
    message: str = "",
    wave_step: str = "wave ",
) -> Dict[str, Any]:
    """The run's record: its steps, each wave's decision and bake, the mesh coverage, the drift found.

    A wave's step (in ``done`` and ``stopped.step``) is its name after ``wave_step``: the rollout's ``wave payments``,
    the upgrade's groups by name alone (``wave_step=''``).
    """
    done, stopped = list(done or []), dict(stopped or {})
    baked = [_bake(b) for b in bakes or []]
    wave_rows = [_wave(w, f"{wave_step}{w.get('name')}", baked, done, stopped) for w in waves or []]
    if kind == "drift":
        outcome = "drift" if drift else "no drift"
    elif stopped:
        outcome = "stopped"
    else:
        outcome = "complete"
    step_rows = [
        {"name": s, "status": "done" if s in done else "failed" if s == stopped.get("step") else "not run"}
        for s in steps or []
    ]
    return {
        "kind": kind,
        "cluster": cluster,
        "started": started,
        "finished": finished,
        "check_mode": bool(check_mode),
        "outcome": outcome,
        "message": stopped.get("msg") or message,
        "steps": step_rows,
        "waves": wave_rows,
        "coverage": _coverage(list(coverage or [])),
        "drift": list(drift or []),
        "control_plane": dict(control_plane or {}),
    }


class FilterModule:
    def filters(self):
        return {"run_report": run_report}
