# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The rollout's namespace plan: the pilot namespaces and the waves, parsed and cross-checked once.

Every playbook that needs "the pilot namespaces plus every wave's" (rollout, drift, verify, uninstall) reads it
from :func:`rollout_plan`, so an AWX survey answer (``rollout_waves_json``) means the same thing everywhere, and a
bad declaration is refused before anything changes, with the variable (survey field) to fix named.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Sequence

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

analysis = module_utils("analysis")

# A namespace name is a DNS-1123 label.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_EXAMPLE = '[{"name": "first", "namespaces": ["shop"]}, {"name": "second", "namespaces": ["cart", "pay"]}]'
# The rollout's flat variables (AWX survey fields) that are every wave's analysis defaults; a wave's own
# ``analysis`` mapping overrides any setting.
ANALYSIS_VARIABLES = {
    "enabled": "rollout_analysis",
    "bake_time": "rollout_bake_time",
    "interval": "rollout_analysis_interval",
    "baseline_window": "rollout_baseline_window",
    "failure_limit": "rollout_failure_limit",
    "success_rate": "rollout_success_rate",
    "p99_ms": "rollout_p99_ms",
    "p99_ratio": "rollout_p99_ratio",
    "sidecar_cpu": "rollout_sidecar_cpu",
    "sidecar_memory": "rollout_sidecar_memory",
}


def _fail(problems: List[str]) -> None:
    raise AnsibleFilterError("The rollout's namespaces are not valid: " + " ".join(problems) + " Nothing was changed.")


def _namespace_problems(names: Any, where: str) -> List[str]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        return [f"{where} must be a list of namespace names, got {names!r}."]
    bad = [n for n in names if not isinstance(n, str) or len(n) > 63 or not _NAMESPACE.match(n)]
    if bad:
        return [
            f"{where} lists {', '.join(repr(n) for n in bad)}, which {'is' if len(bad) == 1 else 'are'} not a "
            "namespace name (lower-case letters, digits and '-', at most 63 characters)."
        ]
    return []


def _parse_waves(waves: Any, waves_json: str) -> tuple:
    if waves_json and str(waves_json).strip():
        source = "rollout_waves_json"
        try:
            waves = json.loads(waves_json)
        except ValueError as exc:
            _fail([f"rollout_waves_json (the survey answer) is not valid JSON ({exc}): give a list like {_EXAMPLE}."])
    else:
        source = "rollout_waves"
    if waves is None:
        waves = []
    if isinstance(waves, (str, Mapping)) or not isinstance(waves, Sequence):
        _fail([f"{source} must be a list of waves like {_EXAMPLE}, got {type(waves).__name__}."])
    return source, list(waves)


def rollout_plan(pilot: Any, waves: Any = None, waves_json: str = "", analysis_defaults: Any = None) -> Dict[str, Any]:
    """The pilot namespaces, the waves (from rollout_waves_json when given, else rollout_waves) and every namespace.

    Returns ``{pilot, waves: [{name, namespaces, analysis}], checks, namespaces, origins: {namespace: variable}}``,
    ``checks`` every wave's custom analysis checks named ``wave/check``, each
    wave's ``analysis`` the defaults (``analysis_defaults``, from the rollout_* variables of ANALYSIS_VARIABLES)
    with the wave's own ``analysis`` over them; raises an error naming the variable for a malformed or
    contradictory plan or analysis setting.
    """
    if pilot is None:
        pilot = []
    problems = _namespace_problems(pilot, "rollout_pilot_namespaces")
    defaults = dict(analysis_defaults or {})
    defaults_bad = analysis.settings_problems(defaults, "rollout analysis defaults", ANALYSIS_VARIABLES)
    problems.extend(defaults_bad)
    source, wave_list = _parse_waves(waves, waves_json)
    origins: Dict[str, str] = {}
    for name in pilot if not problems else []:
        if name in origins:
            problems.append(f"rollout_pilot_namespaces lists {name} twice.")
        origins[name] = "rollout_pilot_namespaces"

    parsed = []
    seen_names: Dict[str, int] = {}
    for index, wave in enumerate(wave_list, start=1):
        where = f"{source} wave {index}"
        if not isinstance(wave, Mapping):
            problems.append(f"{where} must be a mapping with name and namespaces, got {wave!r}.")
            continue
        name = wave.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where} has no name: give each wave a name (used in messages and to resume).")
            name = f"#{index}"
        else:
            where = f"{source} wave {name!r}"
            if name in seen_names:
                problems.append(f"{source} has two waves named {name!r} (waves {seen_names[name]} and {index}).")
            seen_names[name] = index
        unknown = sorted(set(wave) - {"name", "namespaces", "analysis"})
        if unknown:
            problems.append(
                f"{where} has unknown key(s) {', '.join(unknown)}: a wave has name, namespaces and analysis."
            )
        own = wave.get("analysis") or {}
        if not isinstance(own, Mapping):
            problems.append(f"{where} analysis must be a mapping of analysis settings, got {own!r}.")
            own = {}
        elif not defaults_bad:
            names = {k: v for k, v in ANALYSIS_VARIABLES.items() if k not in own}
            problems.extend(analysis.settings_problems({**defaults, **own}, f"{where} analysis", names))
        namespaces = wave.get("namespaces")
        if not namespaces:
            problems.append(f"{where} has no namespaces: list them, or remove the wave.")
            continue
        found = _namespace_problems(namespaces, f"{where} namespaces")
        if found:
            problems.extend(found)
            continue
        for ns in namespaces:
            if ns in origins:
                problems.append(
                    f"{ns} is in {where} and already in {origins[ns]}: a namespace belongs to the pilot or to one "
                    "wave, once."
                )
            else:
                origins[ns] = where
        parsed.append({"name": name, "namespaces": list(namespaces), "analysis": {**defaults, **own}})
    if problems:
        _fail(problems)
    # Every wave's custom checks, named by wave: the preflight runs each once, so a query Prometheus refuses is
    # named before the first change.
    checks = [
        {**check, "name": f"{wave['name']}/{check['name']}"}
        for wave in parsed
        if wave["analysis"].get("enabled", True)
        for check in wave["analysis"].get("checks") or []
    ]
    return {
        "pilot": list(pilot),
        "waves": parsed,
        "checks": checks,
        "namespaces": list(origins),
        "origins": origins,
    }


class FilterModule:
    def filters(self):
        return {"rollout_plan": rollout_plan}
