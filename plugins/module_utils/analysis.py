# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Wave analysis decisions: are a wave's applications still healthy now that their pods have sidecars?

Pure logic, unit-tested: the settings and their validation (one home, used by the wave_analysis module and by the
rollout's preflight through the rollout_plan filter), the PromQL the analysis asks, how the answers become per-workload
figures, how figures are judged against absolute thresholds and the baseline read before labeling, and the bake loop
with its failure limit. The module does the I/O.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from ansible_collections.meshops.istio.plugins.module_utils.durations import duration_seconds

# The settings of one wave's analysis and their defaults (in the spirit of Flagger's canary analysis). Durations are
# strings read by durations.duration_seconds; budgets are Kubernetes quantities; an empty budget is no budget.
DEFAULTS: Dict[str, Any] = {
    "enabled": True,
    "bake_time": "5m",
    "interval": "1m",
    "window": "",
    "baseline_window": "10m",
    "failure_limit": 2,
    "success_rate": 99.0,
    "p99_ms": 500.0,
    "p99_ratio": 1.5,
    "latency_tolerance_ms": 10.0,
    "sidecar_cpu": "",
    "sidecar_memory": "",
    "allow_no_data": False,
    "reporter": "source",
    "checks": [],
}
REPORTERS = ("source", "destination")
# Where the rollout keeps each namespace's last bake analysis (record()), for verify and drift to show.
RECORD_ANNOTATION = "meshops.istio/last-analysis"
CHECK_KEYS = {"name", "query", "max", "min"}

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_UNITS = {
    None: 1,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


class AnalysisError(Exception):
    """The analysis cannot run as configured (a bad setting, or a query Prometheus refuses)."""


def quantity(value: Any) -> Optional[float]:
    """A Kubernetes quantity ('500m', '1', '256Mi', '1G') as a number (cores or bytes); None when malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    match = _QUANTITY.match(str(value or "").strip())
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def settings_problems(settings: Any, where: str, names: Optional[Mapping[str, str]] = None) -> List[str]:
    """Sentences for every bad analysis setting, each naming the variable and the remedy.

    A setting is named ``where.key``, or ``names[key]`` when given (the rollout's flat variables, such as
    rollout_bake_time, that are every wave's defaults).
    """
    if not isinstance(settings, Mapping):
        return [f"{where} must be a mapping of analysis settings, got {type(settings).__name__}."]

    def var(key: str) -> str:
        return (names or {}).get(key) or f"{where}.{key}"

    problems = []
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        problems.append(f"{where} has unknown key(s) {', '.join(unknown)}: the settings are {', '.join(DEFAULTS)}.")
    s = {**DEFAULTS, **settings}
    for key in ("bake_time", "interval", "window", "baseline_window"):
        if key == "window" and s[key] in ("", None):
            continue
        seconds = duration_seconds(s[key])
        if seconds is None:
            problems.append(f"{var(key)} is {s[key]!r}, not a duration: write it like 30s, 5m or 1h30m.")
        elif key != "bake_time" and seconds <= 0:
            problems.append(f"{var(key)} must be longer than 0s.")
    bake, interval = duration_seconds(s["bake_time"]), duration_seconds(s["interval"])
    if bake and interval and interval > bake:
        problems.append(
            f"{var('interval')} ({s['interval']}) is longer than {var('bake_time')} ({s['bake_time']}): the bake would "
            "end before its first analysis. Shorten the interval or lengthen the bake time."
        )
    limit = s["failure_limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        problems.append(f"{var('failure_limit')} is {limit!r}: give a whole number of failed analyses, 1 or more.")
    rate = _number(s["success_rate"])
    if rate is None or not 0 <= rate <= 100:
        problems.append(f"{var('success_rate')} is {s['success_rate']!r}: give a percentage from 0 to 100.")
    p99 = _number(s["p99_ms"])
    if p99 is None or p99 <= 0:
        problems.append(f"{var('p99_ms')} is {s['p99_ms']!r}: give a latency in milliseconds greater than 0.")
    ratio = _number(s["p99_ratio"])
    if ratio is None or ratio < 1:
        problems.append(
            f"{var('p99_ratio')} is {s['p99_ratio']!r}: give how many times the baseline p99 is allowed, 1 or more "
            "(for example 1.5)."
        )
    tolerance = _number(s["latency_tolerance_ms"])
    if tolerance is None or tolerance < 0:
        problems.append(f"{var('latency_tolerance_ms')} is {s['latency_tolerance_ms']!r}: give 0 or more milliseconds.")
    for key, example in (("sidecar_cpu", "500m or 1"), ("sidecar_memory", "256Mi or 1Gi")):
        if s[key] not in ("", None) and not quantity(s[key]):
            problems.append(f"{var(key)} is {s[key]!r}: give a Kubernetes quantity like {example}, or '' for none.")
    for key in ("enabled", "allow_no_data"):
        if not isinstance(s[key], bool):
            problems.append(f"{var(key)} is {s[key]!r}: give true or false.")
    if s["reporter"] not in REPORTERS:
        problems.append(f"{var('reporter')} is {s['reporter']!r}: give source or destination.")
    problems.extend(_check_problems(s["checks"], var("checks")))
    return problems


def _check_problems(checks: Any, where: str) -> List[str]:
    if not isinstance(checks, list):
        return [f"{where} must be a list of checks like [{{name: errors, query: '...', max: 0.01}}]."]
    problems, names = [], set()
    for index, check in enumerate(checks, start=1):
        here = f"{where}[{index}]"
        if not isinstance(check, Mapping):
            problems.append(f"{here} must be a mapping with name, query and max or min.")
            continue
        name = check.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{here} has no name: name each check (it names the check in messages).")
        elif name in names:
            problems.append(f"{where} has two checks named {name!r}.")
        names.add(name)
        unknown = sorted(set(check) - CHECK_KEYS)
        if unknown:
            problems.append(f"{here} has unknown key(s) {', '.join(unknown)}: a check has name, query and max or min.")
        if not isinstance(check.get("query"), str) or not check["query"].strip():
            problems.append(f"{here} has no query: give the PromQL whose every sample is compared.")
        bounds = [k for k in ("max", "min") if k in check]
        if len(bounds) != 1:
            problems.append(f"{here} needs exactly one of max (fails above) or min (fails below).")
        elif _number(check[bounds[0]]) is None:
            problems.append(f"{here}.{bounds[0]} is {check[bounds[0]]!r}: give a number.")
    return problems


def resolve(settings: Optional[Mapping[str, Any]], where: str) -> Dict[str, Any]:
    """The settings with defaults filled in and durations/budgets as numbers; AnalysisError when any is bad."""
    problems = settings_problems(settings or {}, where)
    if problems:
        raise AnalysisError(" ".join(problems))
    s = {**DEFAULTS, **(settings or {})}
    out = dict(s)
    for key in ("bake_time", "interval", "baseline_window"):
        out[key + "_s"] = duration_seconds(s[key])
    out["window_s"] = duration_seconds(s["window"]) if s["window"] not in ("", None) else out["interval_s"]
    out["sidecar_cpu_cores"] = quantity(s["sidecar_cpu"]) if s["sidecar_cpu"] not in ("", None) else None
    out["sidecar_memory_bytes"] = quantity(s["sidecar_memory"]) if s["sidecar_memory"] not in ("", None) else None
    for key in ("success_rate", "p99_ms", "p99_ratio", "latency_tolerance_ms"):
        out[key] = float(s[key])
    return out


def promql_range(seconds: float) -> str:
    """A PromQL range from seconds (at least 2s, whole seconds)."""
    return f"{max(round(seconds), 2)}s"


def queries(namespaces: List[str], reporter: str, seconds: float) -> Dict[str, str]:
    """The PromQL of one analysis: per destination workload (as the reporter sees it) and per istio-proxy container."""
    spread = "|".join(sorted(set(namespaces)))
    span = promql_range(seconds)
    side = f'reporter="{reporter}",destination_workload_namespace=~"{spread}"'
    requests = f"istio_requests_total{{{side}}}"
    errors = f'istio_requests_total{{{side},response_code=~"5.."}}'
    buckets = f"istio_request_duration_milliseconds_bucket{{{side}}}"
    by = "destination_workload_namespace, destination_workload"
    proxy = f'container="istio-proxy",namespace=~"{spread}"'
    return {
        "requests": f"sum by ({by}) (rate({requests}[{span}]))",
        "errors": f"sum by ({by}) (rate({errors}[{span}]))",
        "p99": f"histogram_quantile(0.99, sum by ({by}, le) (rate({buckets}[{span}])))",
        "cpu": f"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{proxy}}}[{span}]))",
        "memory": f"max by (namespace, pod) (max_over_time(container_memory_working_set_bytes{{{proxy}}}[{span}]))",
    }


def _by(samples: List[Mapping[str, Any]], *labels: str) -> Dict[tuple, float]:
    out: Dict[tuple, float] = {}
    for sample in samples or []:
        key = tuple((sample.get("labels") or {}).get(label) or "" for label in labels)
        value = _number(sample.get("value"))
        if all(key) and value is not None:
            out[key] = out.get(key, 0.0) + value
    return out


def observe(answers: Mapping[str, List[Mapping[str, Any]]], window: str) -> Dict[str, Any]:
    """Per-workload and per-sidecar figures from the answers to queries(); check answers pass through."""
    wl = ("destination_workload_namespace", "destination_workload")
    requests, errors = _by(answers.get("requests"), *wl), _by(answers.get("errors"), *wl)
    p99 = _by(answers.get("p99"), *wl)
    workloads = []
    for (namespace, workload), rate in sorted(requests.items()):
        workloads.append(
            {
                "namespace": namespace,
                "workload": workload,
                "request_rate": round(rate, 4),
                "success_rate": round(100.0 * (1 - errors.get((namespace, workload), 0.0) / rate), 3) if rate else None,
                "p99_ms": round(p99[(namespace, workload)], 3) if (namespace, workload) in p99 else None,
            }
        )
    cpu, memory = _by(answers.get("cpu"), "namespace", "pod"), _by(answers.get("memory"), "namespace", "pod")
    sidecars = [
        {"namespace": ns, "pod": pod, "cpu": cpu.get((ns, pod)), "memory": memory.get((ns, pod))}
        for ns, pod in sorted(set(cpu) | set(memory))
    ]
    checks = [
        {"name": name[len("check:") :], "samples": list(samples)}
        for name, samples in answers.items()
        if name.startswith("check:")
    ]
    return {"window": window, "workloads": workloads, "sidecars": sidecars, "checks": checks}


def _pct(value: float) -> str:
    return f"{value:.2f} %"


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def _labels(labels: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") + "}"


def evaluate(
    observed: Mapping[str, Any],
    settings: Mapping[str, Any],
    namespaces: List[str],
    baseline: Optional[Mapping[str, Any]] = None,
    stage: str = "bake",
) -> Dict[str, Any]:
    """Judge one analysis: ``{passed, problems, inconclusive}``.

    ``stage`` is ``baseline`` for the read before labeling (absolute thresholds and checks only: no sidecar exists
    yet) or ``bake`` (everything, relative thresholds against ``baseline`` when given). No requests for a namespace,
    or for a workload that had them in the baseline, is inconclusive; inconclusive fails unless allow_no_data.
    """
    problems: List[str] = []
    inconclusive: List[str] = []
    window = observed.get("window", "")
    seen = f"in the last {window} (istio_requests_total reported by the {settings['reporter']})"
    current = {(w["namespace"], w["workload"]): w for w in observed.get("workloads") or [] if w.get("request_rate")}
    before = {(w["namespace"], w["workload"]): w for w in (baseline or {}).get("workloads") or []}
    served = {key[0] for key in current}
    for namespace in namespaces:
        if namespace not in served:
            inconclusive.append(
                f"no requests to any workload of namespace {namespace} {seen}: nothing shows whether its "
                "applications are healthy. Send traffic through meshed callers, add a custom check, or set "
                "allow_no_data for this wave."
            )
    for key, base in sorted(before.items()):
        if key[0] in namespaces and base.get("request_rate") and key not in current and key[0] in served:
            inconclusive.append(
                f"{key[0]}/{key[1]} had {base['request_rate']:g} requests/s in the baseline and none {seen}."
            )
    for (namespace, workload), w in sorted(current.items()):
        if namespace not in namespaces:
            continue
        name, base = f"{namespace}/{workload}", before.get((namespace, workload)) or {}
        was = f" (baseline {_pct(base['success_rate'])})" if base.get("success_rate") is not None else ""
        if w["success_rate"] is not None and w["success_rate"] < settings["success_rate"]:
            problems.append(
                f"{name}: success rate {_pct(w['success_rate'])} is below the threshold "
                f"{_pct(settings['success_rate'])}{was}, {w['request_rate']:g} requests/s {seen}."
            )
        p99 = w.get("p99_ms")
        if p99 is None:
            continue
        was = f" (baseline {_ms(base['p99_ms'])})" if base.get("p99_ms") is not None else ""
        if p99 > settings["p99_ms"]:
            problems.append(f"{name}: p99 latency {_ms(p99)} is above the threshold {_ms(settings['p99_ms'])}{was}.")
        elif (
            stage == "bake"
            and base.get("p99_ms") is not None
            and p99 > settings["p99_ratio"] * base["p99_ms"]
            and p99 - base["p99_ms"] > settings["latency_tolerance_ms"]
        ):
            problems.append(
                f"{name}: p99 latency {_ms(p99)} is more than {settings['p99_ratio']:g}x the baseline "
                f"{_ms(base['p99_ms'])} (threshold {_ms(settings['p99_ratio'] * base['p99_ms'])})."
            )
    if stage == "bake":
        problems.extend(_sidecar_problems(observed, settings, namespaces, inconclusive))
    problems.extend(_custom_problems(observed, settings, inconclusive, window))
    passed = not problems and (not inconclusive or settings["allow_no_data"])
    return {"passed": passed, "problems": problems, "inconclusive": inconclusive}


def _sidecar_problems(observed, settings, namespaces, inconclusive) -> List[str]:
    cpu_budget, memory_budget = settings.get("sidecar_cpu_cores"), settings.get("sidecar_memory_bytes")
    if cpu_budget is None and memory_budget is None:
        return []
    problems = []
    sidecars = [s for s in observed.get("sidecars") or [] if s["namespace"] in namespaces]
    for namespace in namespaces:
        if not any(s["namespace"] == namespace for s in sidecars):
            inconclusive.append(
                f"no istio-proxy container CPU or memory series for namespace {namespace} (cAdvisor's "
                "container_cpu_usage_seconds_total and container_memory_working_set_bytes): the sidecar budget "
                "cannot be checked."
            )
    for s in sidecars:
        name = f"{s['namespace']}/{s['pod']}"
        if cpu_budget is not None and s.get("cpu") is not None and s["cpu"] > cpu_budget:
            problems.append(
                f"{name}: the sidecar uses {s['cpu'] * 1000:.0f}m CPU, above the budget sidecar_cpu "
                f"{settings['sidecar_cpu']}."
            )
        if memory_budget is not None and s.get("memory") is not None and s["memory"] > memory_budget:
            problems.append(
                f"{name}: the sidecar uses {s['memory'] / 2**20:.0f}Mi memory, above the budget sidecar_memory "
                f"{settings['sidecar_memory']}."
            )
    return problems


def _custom_problems(observed, settings, inconclusive, window) -> List[str]:
    answers = {c["name"]: c["samples"] for c in observed.get("checks") or []}
    problems = []
    for check in settings.get("checks") or []:
        samples = answers.get(check["name"]) or []
        if not samples:
            inconclusive.append(f"check {check['name']} returned no samples in the last {window}.")
        bound = "max" if "max" in check else "min"
        limit = float(check[bound])
        for sample in samples:
            value = _number(sample.get("value"))
            if value is None:
                continue
            if (bound == "max" and value > limit) or (bound == "min" and value < limit):
                problems.append(
                    f"check {check['name']}{_labels(sample.get('labels') or {})}: {value:g} is "
                    f"{'above the max' if bound == 'max' else 'below the min'} {limit:g}."
                )
    return problems


def bake_rounds(settings: Mapping[str, Any]) -> int:
    """How many analyses a bake takes at most: one per interval (the last one at the bake time), one when it is 0."""
    bake_s, interval_s = settings["bake_time_s"], settings["interval_s"]
    return max(1, math.ceil(bake_s / interval_s)) if bake_s > 0 else 1


def bake(
    analyze: Callable[[], Dict[str, Any]],
    settings: Mapping[str, Any],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    taken: Optional[Callable[[int, Dict[str, Any], int], None]] = None,
) -> Dict[str, Any]:
    """Analyse every interval for the bake time; stop at the failure limit.

    A bake time of 0 is one analysis now, which must pass. Otherwise the first analysis comes one interval after the
    start (the restarted pods need that long to show in the metrics) and the wave passes when fewer analyses than
    failure_limit failed. ``taken(number, analysis, failures so far)`` hears of each analysis as it is taken (the
    progress lines). Returns ``{passed, failures, analyses: [...], last}``.
    """
    bake_s, interval_s, limit = settings["bake_time_s"], settings["interval_s"], settings["failure_limit"]
    rounds = bake_rounds(settings)
    start = clock()
    analyses: List[Dict[str, Any]] = []
    failures = 0
    for index in range(1, rounds + 1):
        if bake_s > 0:
            sleep(max(0.0, start + min(index * interval_s, bake_s) - clock()))
        result = analyze()
        result["elapsed_s"] = round(clock() - start, 1)
        analyses.append(result)
        failures += 0 if result["passed"] else 1
        if taken:
            taken(index, result, failures)
        if failures >= limit or (bake_s <= 0 and failures):
            break
    passed = failures == 0 if bake_s <= 0 else failures < limit
    return {"passed": passed, "failures": failures, "analyses": analyses, "last": analyses[-1]}


def figures(observed: Mapping[str, Any], namespaces: List[str]) -> Dict[str, Optional[float]]:
    """The analysis at a glance, for progress lines and the report's charts: the namespaces' total request rate, the
    worst workload's error rate (percent of 5xx) and p99, the highest sidecar memory and CPU. None where no series."""
    wanted = set(namespaces)
    workloads = [w for w in observed.get("workloads") or [] if w.get("namespace") in wanted and w.get("request_rate")]
    sidecars = [s for s in observed.get("sidecars") or [] if s.get("namespace") in wanted]

    def worst(values: List[Optional[float]]) -> Optional[float]:
        present = [v for v in values if v is not None]
        return round(max(present), 3) if present else None

    return {
        "request_rate": round(sum(w["request_rate"] for w in workloads), 3) if workloads else None,
        "error_rate": worst([None if w.get("success_rate") is None else 100.0 - w["success_rate"] for w in workloads]),
        "p99_ms": worst([w.get("p99_ms") for w in workloads]),
        "sidecar_memory_bytes": worst([s.get("memory") for s in sidecars]),
        "sidecar_cpu": worst([s.get("cpu") for s in sidecars]),
    }


def thresholds(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """What a bake is judged against (resolved settings), for the report and the progress lines."""
    keys = ("success_rate", "p99_ms", "sidecar_memory_bytes", "sidecar_cpu_cores", "bake_time_s", "interval_s")
    return {**{key: settings.get(key) for key in keys}, "failure_limit": settings.get("failure_limit")}


def _against(value: Optional[float], shown: Callable[[float], str], limit: Optional[float], word: str) -> str:
    now = "no data" if value is None else shown(value)
    return now if limit is None else f"{now} ({word} {shown(limit)})"


def progress_line(label: str, index: int, result: Mapping[str, Any], settings: Mapping[str, Any], failures: int) -> str:
    """One line per bake analysis as it is taken: where the bake is, each figure against its threshold, the verdict."""
    bake_s, rounds = settings["bake_time_s"], bake_rounds(settings)
    f = result.get("figures") or {}
    success = None if f.get("error_rate") is None else 100.0 - f["error_rate"]
    memory = settings.get("sidecar_memory_bytes")
    parts = [
        "no requests" if f.get("request_rate") is None else f"{f['request_rate']:g} requests/s",
        "success rate " + _against(success, _pct, settings["success_rate"], "min"),
        "p99 " + _against(f.get("p99_ms"), _ms, settings["p99_ms"], "max"),
        "sidecar memory " + _against(f.get("sidecar_memory_bytes"), lambda b: f"{b / 2**20:.0f}Mi", memory, "budget"),
    ]
    if result.get("passed"):
        verdict = "passed"
    else:
        why = (list(result.get("problems") or []) + list(result.get("inconclusive") or []))[:1]
        verdict = f"FAILED ({failures} of the failure limit {settings['failure_limit']}): {' '.join(why)}"
    return (
        f"Bake of {label}: analysis {index}/{rounds} at {result.get('elapsed_s', 0):g}s of {bake_s:g}s - "
        f"{'; '.join(parts)} - {verdict}"
    )


def record(
    report: Mapping[str, Any], stage: str, namespaces: List[str], now: Optional[datetime.datetime] = None
) -> str:
    """A compact JSON summary of an analysis, small enough for a namespace annotation."""
    at = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    summary = {
        "at": at,
        "stage": stage,
        "namespaces": sorted(namespaces),
        "passed": bool(report.get("passed")),
        "failures": report.get("failures", 0),
        "analyses": len(report.get("analyses") or []),
        "window": (report.get("observed") or {}).get("window", ""),
        "problems": list(report.get("problems") or [])[:10],
        "inconclusive": list(report.get("inconclusive") or [])[:10],
    }
    return json.dumps(summary, sort_keys=True)


def last_analyses(namespaces: List[Mapping[str, Any]], annotation: str = RECORD_ANNOTATION) -> List[str]:
    """One sentence per namespace that carries a record: when, passed or failed, and why it failed."""
    out = []
    for report in namespaces or []:
        raw = (report.get("annotations") or {}).get(annotation)
        if not raw:
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            out.append(f"{report.get('namespace')}: unreadable {annotation} annotation")
            continue
        if rec.get("passed"):
            out.append(f"{report.get('namespace')}: passed at {rec.get('at')} ({rec.get('analyses')} analyses)")
        else:
            why = " ".join((rec.get("problems") or []) + (rec.get("inconclusive") or [])) or "no reason recorded"
            out.append(f"{report.get('namespace')}: FAILED at {rec.get('at')} and was rolled back: {why}")
    return out
