# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""GET through the API server's service proxy: an in-cluster HTTP API (Prometheus) with no port-forward.

:class:`ServiceProxy` is a part of :class:`client.Kube`; it uses the Kube's ``client`` and ``host``.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import (
    ApiException,
    KubeError,
    api_message,
    explain,
)


class ServiceProxy:
    """Kube.service_proxy_get."""

    client: Any
    host: str

    def service_proxy_get(self, namespace: str, service: str, port: int, path: str, params: Dict[str, str]) -> bytes:
        """GET through the API server's service proxy (an in-cluster HTTP API, no port-forward)."""
        what = f"Service {namespace}/{service}:{port} through the API server's service proxy"
        try:
            resp = self.client.client.call_api(
                f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}",
                "GET",
                query_params=list(params.items()),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
            return resp.data
        except ApiException as exc:
            if exc.status in (502, 503, 404):
                raise KubeError(f"{what} answered HTTP {exc.status}: {api_message(exc)}") from None
            raise explain(exc, self.host, "GET", what) from None
        except Exception as exc:
            raise explain(exc, self.host, "GET", what) from None
