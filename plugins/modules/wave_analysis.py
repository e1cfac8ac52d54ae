#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: wave_analysis
short_description: Judge whether a wave's applications stay healthy once their pods have sidecars
version_added: 0.3.0
description:
  - Read-only gate for the sixth step of the staged rollout. For the workloads of O(namespaces) it asks Prometheus
    for the request rate, the success rate (the share of responses that are not 5xx) and the p99 latency, and for
    each pod's C(istio-proxy) container its CPU and memory; then judges them against absolute thresholds and, with
    O(baseline), against the figures read before the namespaces were labeled.
  - Requests are Istio's standard C(istio_requests_total) and C(istio_request_duration_milliseconds_bucket) as the
    O(settings.reporter) reports them. The default, C(source), is what meshed callers report, so a namespace's
    traffic is visible before its own pods have sidecars and the baseline and the bake compare like with like.
  - Sidecar figures are cAdvisor's C(container_cpu_usage_seconds_total) and C(container_memory_working_set_bytes)
    for the container C(istio-proxy).
  - O(settings.checks) adds PromQL of your own (ingress controller or application metrics, for services with no
    meshed caller); every sample it returns is compared with its C(max) or C(min).
  - With O(stage=bake) and a O(settings.bake_time) above 0 it analyses every O(settings.interval) for the bake time
    and fails the wave when O(settings.failure_limit) analyses failed. No data (no requests for a namespace, or for a
    workload that had them in the baseline) is inconclusive, and inconclusive fails unless
    O(settings.allow_no_data).
  - The bake runs in the module's action plugin on the controller, one module run per analysis, so that each
    analysis is printed as it is taken (the analysis number, elapsed and total bake time, requests per second,
    success rate, p99 and the highest sidecar memory, each against its threshold, and the verdict). A module run
    takes one analysis.
  - With O(stage=baseline) it reads once over O(settings.baseline_window), judges the absolute thresholds only (so a
    wave that is already unhealthy is refused before any change) and runs every custom check once, so a query
    Prometheus refuses fails before anything is labeled.
  - With O(stage=validate) it only runs each custom check once and fails naming the first one Prometheus refuses (the
    rollout's preflight does this for every wave before its first change).
author:
  - meshops.istio developers (@meshops)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - meshops.istio.prometheus
  - meshops.istio.read_only
options:
  namespaces:
    description: The wave's namespaces.
    type: list
    elements: str
    required: true
  stage:
    description:
      - C(baseline) - one read before labeling, absolute thresholds and checks only.
      - C(bake) - after the restart, every interval for the bake time, with the sidecar budget and the thresholds
        relative to O(baseline).
      - C(validate) - each custom check once, nothing judged.
    type: str
    choices: [baseline, bake, validate]
    default: bake
  baseline:
    description: The RV(observed) of the baseline read, for the thresholds relative to it.
    type: dict
  settings:
    description:
      - The analysis settings; every one has a default.
    type: dict
    default: {}
    suboptions:
      enabled:
        description: Analyse at all. When false the module returns RV(passed=true) without asking Prometheus.
        type: bool
        default: true
      bake_time:
        description: How long the bake lasts (C(30s), C(5m), C(1h)); C(0) is one analysis now.
        type: str
        default: 5m
      interval:
        description: Time between analyses during the bake.
        type: str
        default: 1m
      window:
        description: The range each bake analysis's queries look back over; empty means O(settings.interval).
        type: str
        default: ""
      baseline_window:
        description: The range the baseline read looks back over.
        type: str
        default: 10m
      failure_limit:
        description: Failed analyses that fail the bake.
        type: int
        default: 2
      success_rate:
        description: Lowest success rate (percent of responses that are not 5xx) a workload may show.
        type: float
        default: 99
      p99_ms:
        description: Highest p99 latency a workload may show, in milliseconds.
        type: float
        default: 500
      p99_ratio:
        description: Highest p99 latency as a multiple of the workload's baseline p99.
        type: float
        default: 1.5
      latency_tolerance_ms:
        description:
          - A p99 increase over the baseline smaller than this never fails the relative threshold (a sidecar adds a
            few milliseconds; a 2 ms baseline should not fail at 4 ms).
        type: float
        default: 10
      sidecar_cpu:
        description: Highest CPU one pod's C(istio-proxy) may use, as a Kubernetes quantity (C(500m)); empty for none.
        type: str
        default: ""
      sidecar_memory:
        description: Highest memory one pod's C(istio-proxy) may use (C(256Mi)); empty for none.
        type: str
        default: ""
      allow_no_data:
        description: Let an analysis without data pass (a wave whose services get no traffic in the window).
        type: bool
        default: false
      reporter:
        description: Which side's Istio metrics to read (C(source) sees a namespace's traffic before it is meshed).
        type: str
        choices: [source, destination]
        default: source
      checks:
        description: Custom PromQL checks, each C(name), C(query) and either C(max) or C(min).
        type: list
        elements: dict
        default: []
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Baseline, before labeling
  meshops.istio.wave_analysis:
    namespaces: [shop, cart]
    stage: baseline
    prometheus_url: https://prometheus.example.com
  register: baseline

- name: Bake for 10 minutes after the restart, p99 at most 1.5x the baseline
  meshops.istio.wave_analysis:
    namespaces: [shop, cart]
    baseline: "{{ baseline.observed }}"
    settings:
      bake_time: 10m
      interval: 1m
      sidecar_memory: 256Mi
      checks:
        - name: ingress-5xx-share
          query: >-
            sum(rate(nginx_ingress_controller_requests{exported_namespace="shop",status=~"5.."}[1m]))
            / sum(rate(nginx_ingress_controller_requests{exported_namespace="shop"}[1m]))
          max: 0.01
    prometheus_url: https://prometheus.example.com
  register: analysis
"""

RETURN = r"""
passed:
  description: True when the analysis (or the bake) passed.
  returned: always
  type: bool
problems:
  description: Sentences naming workload or pod, metric, observed value, threshold and baseline, from the last analysis.
  returned: always
  type: list
  elements: str
inconclusive:
  description: What had no data in the last analysis, one sentence each.
  returned: always
  type: list
  elements: str
observed:
  description:
    - The last analysis's figures - C(window), C(workloads) (C(namespace), C(workload), C(request_rate) per second,
      C(success_rate) percent, C(p99_ms)), C(sidecars) (C(namespace), C(pod), C(cpu) cores, C(memory) bytes) and
      C(checks) (C(name), C(samples)).
  returned: always
  type: dict
analyses:
  description:
    - Every analysis of the bake, each C(passed), C(problems), C(inconclusive), C(elapsed_s) and C(figures) (the
      namespaces' total C(request_rate) per second, the worst workload's C(error_rate) percent and C(p99_ms), the
      highest C(sidecar_memory_bytes) and C(sidecar_cpu) cores; null where Prometheus had no series).
  returned: always
  type: list
  elements: dict
thresholds:
  description:
    - What the bake was judged against, from the resolved O(settings) - C(success_rate), C(p99_ms),
      C(sidecar_memory_bytes), C(sidecar_cpu_cores) (null when no budget), C(bake_time_s), C(interval_s),
      C(failure_limit).
  returned: when the analysis ran
  type: dict
failures:
  description: How many analyses failed.
  returned: always
  type: int
stage:
  description: The O(stage) that ran.
  returned: always
  type: str
record:
  description:
    - A compact JSON summary for keeping on the namespaces (the rollout writes it to the annotation
      C(meshops.istio/last-analysis)) - C(at), C(stage), C(namespaces), C(passed), C(failures), C(analyses),
      C(window), C(problems), C(inconclusive).
  returned: when the analysis ran
  type: str
prometheus:
  description: C(where) (the URL or Service asked).
  returned: always
  type: dict
"""

from ansible_collections.meshops.istio.plugins.module_utils import analysis
from ansible_collections.meshops.istio.plugins.module_utils.k8s.client import Kube, argument_spec, new_module
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError
from ansible_collections.meshops.istio.plugins.module_utils.prometheus import (
    PROMETHEUS_ARG_SPEC,
    Prometheus,
    PrometheusError,
    hide_url_password,
)


def run_checks(prom, checks):
    """Each custom check's answer, by "check:<name>"; AnalysisError names the first check Prometheus refuses."""
    answers = {}
    for check in checks:
        try:
            answers["check:" + check["name"]] = prom.query(check["query"])
        except PrometheusError as exc:
            raise analysis.AnalysisError(f"custom check {check['name']!r}: {exc} Fix its query.") from None
    return answers


def ask(prom, namespaces, settings, seconds):
    """One round of queries: the figures of every workload, then the custom checks."""
    answers = {
        name: prom.query(promql) for name, promql in analysis.queries(namespaces, settings["reporter"], seconds).items()
    }
    answers.update(run_checks(prom, settings["checks"]))
    return analysis.observe(answers, analysis.promql_range(seconds))


def validate(prom, settings):
    """Each custom check once: Prometheus must accept the query (the answers are not judged)."""
    run_checks(prom, settings["checks"])
    return {"passed": True, "problems": [], "inconclusive": [], "observed": {}, "analyses": [], "failures": 0}


def run(prom, params, settings):
    namespaces = params["namespaces"]
    if params["stage"] == "validate":
        return validate(prom, settings)
    if params["stage"] == "baseline":
        observed = ask(prom, namespaces, settings, settings["baseline_window_s"])
        verdict = analysis.evaluate(observed, settings, namespaces, stage="baseline")
        verdict.update(observed=observed, analyses=[dict(verdict)], failures=0 if verdict["passed"] else 1)
        return verdict
    # One analysis of the bake; the action plugin takes one every interval (analysis.bake) and prints each.
    try:
        observed = ask(prom, namespaces, settings, settings["window_s"])
    except PrometheusError as exc:
        # A Prometheus that stops answering during the bake fails this analysis, not the module: the failure
        # limit decides, and a failed bake rolls the wave back.
        observed, verdict = {}, {"passed": False, "problems": [str(exc)], "inconclusive": []}
    else:
        verdict = analysis.evaluate(observed, settings, namespaces, params.get("baseline"), stage="bake")
    verdict["figures"] = analysis.figures(observed, namespaces)
    return {**verdict, "observed": observed, "analyses": [dict(verdict)], "failures": 0 if verdict["passed"] else 1}


def main():
    spec = argument_spec(
        namespaces={"type": "list", "elements": "str", "required": True},
        stage={"type": "str", "choices": ["baseline", "bake", "validate"], "default": "bake"},
        baseline={"type": "dict"},
        settings={"type": "dict", "default": {}},
        **PROMETHEUS_ARG_SPEC,
    )
    module = new_module(argument_spec=spec, supports_check_mode=True)
    hide_url_password(module)
    params = module.params
    empty = {
        "observed": {},
        "analyses": [],
        "failures": 0,
        "problems": [],
        "inconclusive": [],
        "prometheus": {},
        "stage": params["stage"],
    }
    try:
        settings = analysis.resolve(params["settings"], "settings")
    except analysis.AnalysisError as exc:
        module.fail_json(msg=str(exc), **{**empty, "passed": False, "problems": [str(exc)]})
    if not settings["enabled"]:
        module.exit_json(changed=False, passed=True, **empty)
    try:
        kube = None if params["prometheus_url"] else Kube(module)
        prom = Prometheus(params, kube)
        report = run(prom, params, settings)
    except (analysis.AnalysisError, PrometheusError, KubeError) as exc:
        module.fail_json(msg=str(exc), **{**empty, "passed": False, "problems": [str(exc)]})
    report["prometheus"] = {"where": prom.where}
    report["thresholds"] = analysis.thresholds(settings)
    report["stage"] = params["stage"]
    report["record"] = analysis.record(report, params["stage"], params["namespaces"])
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
