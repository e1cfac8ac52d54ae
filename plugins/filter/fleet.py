# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One run over a fleet of clusters: each cluster's record, the fleet's summary, and its Markdown."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

STATUSES = ("failed", "drift", "corrected", "ok", "not touched")


def _istio(reads: Optional[List[Any]]) -> Dict[str, List[str]]:
    """Versions and revisions from the newest istio_readiness result of ``reads`` (newest first) that has them."""
    for read in reads or []:
        if isinstance(read, Mapping) and "versions" in read:
            return {"versions": list(read.get("versions") or []), "revisions": list(read.get("revisions") or [])}
    return {"versions": [], "revisions": []}


def fleet_record(
    kind: str,
    cluster: str,
    run: Optional[Mapping[str, Any]] = None,
    failure: Optional[Mapping[str, Any]] = None,
    istio: Optional[List[Any]] = None,
    gates: Optional[Mapping[str, Any]] = None,
    corrected: bool = False,
    reports: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """What one cluster's run adds to the fleet report.

    ``run`` is the cluster's run record (filter run_report; for verify, none), ``failure`` the task and message it
    failed with (empty when it did not), ``istio`` the cluster's istio_readiness results newest first, ``gates``
    verify's gates by name (true when passed), ``corrected`` whether a drift run restored what it found.
    """
    run, failure = dict(run or {}), dict(failure or {})
    drift = [d for d in run.get("drift") or [] if isinstance(d, Mapping)]
    if failure:
        status = "failed"
    elif drift and corrected:
        status = "corrected"
    elif drift:
        status = "drift"
    else:
        status = "ok"
    steps = run.get("steps") or []
    return {
        "cluster": cluster,
        "kind": kind,
        "status": status,
        "istio": _istio(istio),
        "steps_done": [s["name"] for s in steps if s.get("status") == "done"],
        "stopped_at": next((s["name"] for s in steps if s.get("status") == "failed"), ""),
        "waves": [{"name": w.get("name"), "decision": w.get("decision")} for w in run.get("waves") or []],
        "drift": [{key: d.get(key, "") for key in ("kind", "namespace", "name", "field")} for d in drift],
        "gates": {name: bool(passed) for name, passed in (gates or {}).items()},
        "failure": {"task": str(failure.get("task") or ""), "message": str(failure.get("message") or "")}
        if failure
        else {},
        "reports": list(reports or []),
    }


def fleet_report(records: List[Mapping[str, Any]], hosts: List[str], kind: str) -> Dict[str, Any]:
    """The fleet's summary: every host of the play in order, its record or "not touched" when it has none yet.

    ``records`` are the fleet_record rows so far (hosts of later cluster waves, and those a stopped fleet never
    reached, have none).
    """
    by_cluster = {r.get("cluster"): r for r in records or [] if isinstance(r, Mapping)}
    clusters = []
    for host in hosts:
        record = by_cluster.get(host)
        if isinstance(record, Mapping) and record.get("kind") == kind:
            clusters.append(dict(record))
        else:
            clusters.append({"cluster": host, "kind": kind, "status": "not touched"})
    by_status = {status: [c["cluster"] for c in clusters if c["status"] == status] for status in STATUSES}
    return {
        "kind": kind,
        "ok": not by_status["failed"] and not by_status["drift"] and not by_status["not touched"],
        "counts": {status: len(names) for status, names in by_status.items()},
        "failed": by_status["failed"],
        "drifted": [c["cluster"] for c in clusters if c.get("drift")],
        "not_touched": by_status["not touched"],
        "clusters": clusters,
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fleet_markdown(summary: Mapping[str, Any]) -> str:
    """The fleet summary as Markdown: a line of counts, a table of clusters, then each failure in full."""
    counts = summary.get("counts") or {}
    lines = [
        f"# Fleet {summary.get('kind', '')}: {len(summary.get('clusters') or [])} cluster(s)",
        "",
        ", ".join(f"{status}: {counts[status]}" for status in STATUSES if counts.get(status)) or "no clusters",
        "",
        "| cluster | status | Istio | revisions | steps done | waves | drift | failed at |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in summary.get("clusters") or []:
        istio = c.get("istio") or {}
        waves = "; ".join(f"{w.get('name')}: {w.get('decision')}" for w in c.get("waves") or [])
        drift = "; ".join(" ".join(filter(None, (d["kind"], d["name"], d["field"]))) for d in c.get("drift") or [])
        failure = c.get("failure") or {}
        gates = [name for name, passed in (c.get("gates") or {}).items() if not passed]
        failed_at = c.get("stopped_at") or failure.get("task") or ""
        if gates:
            failed_at = " ".join(filter(None, (failed_at, "gates not passed: " + ", ".join(gates))))
        row = [
            c["cluster"],
            c["status"],
            ", ".join(istio.get("versions") or []) or "-",
            ", ".join(istio.get("revisions") or []) or "-",
            ", ".join(c.get("steps_done") or []) or "-",
            waves or "-",
            drift or "-",
            failed_at or "-",
        ]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    failures = [c for c in summary.get("clusters") or [] if c.get("failure")]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- **{c['cluster']}** ({c['failure']['task']}): {c['failure']['message']}" for c in failures]
    if summary.get("not_touched"):
        lines += ["", "Not touched: " + ", ".join(summary["not_touched"])]
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {"fleet_record": fleet_record, "fleet_report": fleet_report, "fleet_markdown": fleet_markdown}
