# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Run reports for people, thin over plugins/module_utils/report.py: a self-contained HTML page and a Markdown summary
of a rollout, upgrade or drift run's report dict."""

from __future__ import annotations

from typing import Any, Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

report = module_utils("report")


def _checked(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AnsibleFilterError(
            f"{name}: expected the run's report (a mapping with kind, cluster, outcome, waves, ...), "
            f"got {type(value).__name__}"
        )
    return value


def report_html(value: Any) -> str:
    """The report as one HTML page: inline CSS, the waves' charts as inline SVG, no script, no URL."""
    return report.render_html(_checked("report_html", value))


def report_markdown(value: Any) -> str:
    """The report's facts as Markdown tables, for terminals and pull requests."""
    return report.render_markdown(_checked("report_markdown", value))


class FilterModule:
    def filters(self):
        return {"report_html": report_html, "report_markdown": report_markdown}
