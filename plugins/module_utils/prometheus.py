# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Instant queries against a Prometheus HTTP API: the one Prometheus client of meshops.istio.

Prometheus is reached either at a URL the controller can open (an external Prometheus, or
a port-forward) or, for the in-cluster addon, through the Kubernetes API server's service
proxy with the same connection settings as every other call (module_utils/k8s/proxy.py). Errors
are :class:`PrometheusError` with a message that names the URL and the remedy; a bearer
token never appears in them.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional
from urllib.parse import urlencode, urlsplit

from ansible_collections.meshops.istio.plugins.module_utils.redact import first_line, redact

PROMETHEUS_ARG_SPEC: Dict[str, Any] = {
    "prometheus_url": {"type": "str", "default": ""},
    "prometheus_service": {
        "type": "dict",
        "options": {
            "namespace": {"type": "str", "default": "istio-system"},
            "name": {"type": "str", "default": "prometheus"},
            "port": {"type": "int", "default": 9090},
        },
    },
    "prometheus_timeout": {"type": "int", "default": 10},
    "prometheus_validate_certs": {"type": "bool", "default": True},
    "prometheus_ca_path": {"type": "path"},
    "prometheus_bearer_token": {"type": "str", "no_log": True},
}


def hide_url_password(module: Any) -> None:
    """Make Ansible mask the password of a prometheus_url with userinfo (https://user:password@host) everywhere in
    the module's output, its logged arguments (-vvv, AWX job events) included, as it masks no_log options."""
    password = urlsplit(module.params.get("prometheus_url") or "").password
    if password:
        module.no_log_values.add(password)


class PrometheusError(Exception):
    """Prometheus could not be asked, or refused the query."""


def parse_vector(body: Any, where: str) -> List[Dict[str, Any]]:
    """The samples of an instant-query answer as [{'labels': {...}, 'value': float}]."""
    try:
        data = json.loads(body) if isinstance(body, (str, bytes)) else body
    except ValueError:
        raise PrometheusError(f"{where} did not answer with Prometheus JSON: is this a Prometheus API URL?") from None
    if not isinstance(data, dict) or data.get("status") != "success":
        error = data.get("error") if isinstance(data, dict) else None
        raise PrometheusError(f"{where} refused the query: {error or 'unexpected answer'}")
    result = (data.get("data") or {}).get("result") or []
    samples = []
    for item in result:
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        samples.append({"labels": dict(item.get("metric") or {}), "value": value})
    return samples


class Prometheus:
    """Instant queries, at a URL or through the API server's service proxy."""

    def __init__(self, params: Dict[str, Any], kube: Any = None) -> None:
        self.url = (params.get("prometheus_url") or "").rstrip("/")
        self.service = params.get("prometheus_service")
        self.timeout = params.get("prometheus_timeout") or 10
        self.validate_certs = params.get("prometheus_validate_certs", True)
        self.ca_path = params.get("prometheus_ca_path")
        self.token = params.get("prometheus_bearer_token")
        self.kube = kube
        if not self.url and not self.service:
            raise PrometheusError(
                "no Prometheus given: set prometheus_url (reachable from the controller) or prometheus_service "
                "(namespace, name, port of the in-cluster Service, reached through the API server)."
            )

    @property
    def where(self) -> str:
        if self.url:
            return f"Prometheus at {redact(self.url)}"
        svc = self.service
        return f"Prometheus Service {svc['namespace']}/{svc['name']}:{svc['port']} (through the API server)"

    def query(self, promql: str) -> List[Dict[str, Any]]:
        if self.url:
            return parse_vector(self._get_url("/api/v1/query", {"query": promql}), self.where)
        return parse_vector(self._get_proxy("api/v1/query", {"query": promql}), self.where)

    def _get_url(self, path: str, params: Dict[str, str]) -> bytes:
        from ansible.module_utils.urls import open_url

        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        try:
            resp = open_url(
                f"{self.url}{path}?{urlencode(params)}",
                headers=headers,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
            )
            return resp.read()
        except Exception as exc:  # urllib's HTTPError, URLError, socket and TLS errors
            status = getattr(exc, "code", None)
            if status in (401, 403):
                raise PrometheusError(
                    f"{self.where} refused the credentials (HTTP {status}): set prometheus_bearer_token "
                    "to a token it accepts."
                ) from None
            if status == 400:
                body = exc.read() if hasattr(exc, "read") else b""
                return body
            reason = getattr(exc, "reason", None) or exc
            raise PrometheusError(
                f"cannot reach {self.where}: {first_line(reason)}. Check that Prometheus is running and that "
                "the URL is reachable from the Ansible controller (prometheus_url)."
            ) from None

    def _get_proxy(self, path: str, params: Dict[str, str]) -> bytes:
        svc = self.service
        try:
            return self.kube.service_proxy_get(svc["namespace"], svc["name"], svc["port"], path, params)
        except Exception as exc:
            raise PrometheusError(
                f"cannot reach {self.where}: {first_line(exc)}. Check that the Prometheus Deployment is "
                "running, or give prometheus_url."
            ) from None


def sum_by(samples: List[Dict[str, Any]], label: str) -> Dict[str, float]:
    """{label value: sum of sample values}; samples without the label are left out."""
    out: Dict[str, float] = {}
    for sample in samples:
        key = sample["labels"].get(label)
        if key:
            out[key] = out.get(key, 0.0) + sample["value"]
    return out


def window(seconds: Optional[int]) -> str:
    """A PromQL range from seconds (at least 1m, so rate() sees two scrapes)."""
    return f"{max(int(seconds or 0), 60)}s"
