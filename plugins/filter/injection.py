# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Namespace guards for sidecar injection."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import DATAPLANE_MODE_LABEL
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

ambient_mode = module_utils("ambient")
analysis = module_utils("analysis")
sidecars = module_utils("sidecars")


def protected_problem(report: Mapping[str, Any], protected_label: str, remedy: str) -> List[str]:
    """The sentence for a namespace labeled protected, or none."""
    if str((report.get("labels") or {}).get(protected_label, "")).lower() != "true":
        return []
    return [f"Namespace {report.get('namespace')} is labeled {protected_label}=true (protected): {remedy}"]


def injection_label_problems(
    reports: Sequence[Mapping[str, Any]], protected_label: str, other_labels: Union[str, Sequence[str]]
) -> List[str]:
    """Sentences for namespaces that must not be labeled: protected, explicitly disabled, labeled the other way, or
    in the other data plane mode (a report of sidecar_status in ambient mode is judged for ambient enrollment)."""
    if not isinstance(reports, (list, tuple)):
        raise AnsibleFilterError(
            f"injection_label_problems: expected the namespaces list from sidecar_status, got {type(reports).__name__}"
        )
    others = [other_labels] if isinstance(other_labels, str) else list(other_labels)
    out = []
    for report in reports:
        name = report.get("namespace")
        labels = report.get("labels") or {}
        state = report.get("label") or {}
        out.extend(
            protected_problem(
                report,
                protected_label,
                "remove the label if it really should be in the mesh, or drop it from the list.",
            )
        )
        if report.get("dataplane_mode") == "ambient":
            if state.get("injects"):
                found = ", ".join(f"{k}={labels[k]}" for k in others if k in labels)
                out.append(
                    f"Namespace {name} is in sidecar mode ({found}): moving it to ambient mode is a migration "
                    "(injection removed, its workloads restarted), not this step; leave it out of the list."
                )
        elif state.get("mode") == "conflict":
            out.append(f"Namespace {name} carries both istio-injection and istio.io/rev: remove one of them first.")
        elif state.get("mode") == "disabled":
            out.append(
                f"Namespace {name} is labeled istio-injection={state.get('istio_injection')} (explicitly off): "
                "remove that label first if injection is wanted."
            )
        elif labels.get(DATAPLANE_MODE_LABEL) == "ambient" and DATAPLANE_MODE_LABEL in others:
            out.append(
                f"Namespace {name} is in ambient mode ({DATAPLANE_MODE_LABEL}=ambient): a namespace has one data "
                "plane; leave it out of the list, or set namespace_injection_dataplane_mode (meshops_dataplane_mode) "
                "to ambient."
            )
        else:
            out.extend(
                f"Namespace {name} already carries {other}={labels[other]}: a namespace never gets both injection "
                "labels; remove it or run with the matching namespace_injection_revision."
                for other in others
                if other in labels and other != DATAPLANE_MODE_LABEL
            )
    return out


def injection_unconfirmed(reports: Sequence[Mapping[str, Any]], names: Sequence[str], pending: str) -> List[str]:
    """Of ``names``, the namespaces whose injection no gate has confirmed: the ones a failed run may roll back.

    A namespace is confirmed when it carries an injection label and not the ``pending`` annotation, which the role
    sets with the label and removes once the gate passes (so a run killed in between leaves it pending). A
    namespace missing from the reports (it does not exist yet) is unconfirmed.
    """
    if not isinstance(reports, (list, tuple)) or isinstance(names, str):
        raise AnsibleFilterError(
            "injection_unconfirmed: expected the namespaces list from sidecar_status and a list of names"
        )
    confirmed = {
        r.get("namespace")
        for r in reports
        if (r.get("label") or {}).get("enabled") and pending not in (r.get("annotations") or {})
    }
    return [name for name in names if name not in confirmed]


def injection_labels_applied(
    reports: Sequence[Mapping[str, Any]], names: Sequence[str], label: Mapping[str, str], manager: str
) -> bool:
    """Whether every namespace of ``names`` carries ``label`` and ``manager``'s server-side apply owns exactly those
    labels (no pending annotation, nothing else): applying them again would change nothing."""
    if not isinstance(reports, (list, tuple)) or isinstance(names, str) or not isinstance(label, Mapping):
        raise AnsibleFilterError(
            "injection_labels_applied: expected the namespaces list from sidecar_status, a list of names and the label"
        )
    by_name = {r.get("namespace"): r for r in reports}
    owned = sorted(f"labels.{key}" for key in label)
    for name in names:
        report = by_name.get(name)
        if report is None or any((report.get("labels") or {}).get(k) != v for k, v in label.items()):
            return False
        if (report.get("applied") or {}).get(manager) != owned:
            return False
    return True


def injected_namespaces(namespaces: Sequence[Mapping[str, Any]], ambient: bool = False) -> List[str]:
    """Names of the namespaces whose new pods Istio injects (module_utils/sidecars.py decides), and with ``ambient``
    those labeled for ambient mode too."""
    names = set(sidecars.injected_names(list(namespaces)))
    if ambient:
        names.update(ambient_mode.labeled_names(namespaces))
    return sorted(names)


def workload_refs(workloads: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """kind, namespace, name of workload objects (the input of meshops.istio.workload_restart)."""
    return [
        {
            "kind": w.get("kind"),
            "namespace": (w.get("metadata") or {}).get("namespace"),
            "name": (w.get("metadata") or {}).get("name"),
        }
        for w in workloads
    ]


def sidecar_coverage_of(status: Mapping[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """A meshops.istio.sidecar_status result narrowed to some of its namespaces, as a read of those alone returns it."""
    if not isinstance(status, Mapping) or not isinstance(status.get("namespaces"), (list, tuple)):
        raise AnsibleFilterError("sidecar_coverage_of: expected a meshops.istio.sidecar_status result")
    if isinstance(names, str):
        raise AnsibleFilterError("sidecar_coverage_of: expected a list of namespace names")
    return sidecars.coverage_of(status["namespaces"], list(names), require_labeled=False)


def migration_problems(reports: Sequence[Mapping[str, Any]], to: str, protected_label: str, mark: str) -> List[str]:
    """Sentences for namespaces a move to data plane mode ``to`` must not touch: protected ones, and ones in neither
    mode (nothing to move; the rollout enrolls them). A namespace with the move's mark is a killed run's, and goes on.
    ``reports`` are sidecar_status's namespaces read in mode ``to``."""
    if to not in ("ambient", "sidecar"):
        raise AnsibleFilterError(f"migration_problems: the mode must be ambient or sidecar, not {to!r}")
    out = []
    for report in reports:
        name = report.get("namespace")
        labels = report.get("labels") or {}
        state = report.get("label") or {}
        protected = protected_problem(report, protected_label, "drop it from the list.")
        if protected:
            out.extend(protected)
            continue
        if mark in (report.get("annotations") or {}):
            continue
        sidecar = state.get("injects") if to == "ambient" else state.get("enabled")
        ambient = labels.get(DATAPLANE_MODE_LABEL) == "ambient"
        if not (sidecar or ambient):
            out.append(
                f"Namespace {name} is in neither mode (no istio-injection=enabled, istio.io/rev or "
                f"{DATAPLANE_MODE_LABEL}=ambient label): there is nothing to move; the rollout's step 2 or a wave "
                "enrolls it."
            )
    return out


def last_analyses(namespaces: List[Mapping[str, Any]], annotation: Optional[str] = None) -> List[str]:
    """module_utils analysis.last_analyses (the annotation defaults to the record's own)."""
    return analysis.last_analyses(namespaces, *([annotation] if annotation else []))


class FilterModule:
    def filters(self):
        return {
            "injection_label_problems": injection_label_problems,
            "migration_problems": migration_problems,
            "injection_labels_applied": injection_labels_applied,
            "injected_namespaces": injected_namespaces,
            "injection_unconfirmed": injection_unconfirmed,
            "last_analyses": last_analyses,
            "sidecar_coverage_of": sidecar_coverage_of,
            "workload_refs": workload_refs,
        }
