# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""How meshops.istio's modules reach Prometheus."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  prometheus_url:
    description:
      - Base URL of a Prometheus HTTP API reachable from the Ansible controller, for example
        C(https://prometheus.example.com) or C(http://127.0.0.1:9090) behind a port-forward.
      - When empty, Prometheus is reached through the Kubernetes API server's service proxy at O(prometheus_service),
        with the same connection settings as the Kubernetes calls.
    type: str
    default: ""
  prometheus_service:
    description: The in-cluster Prometheus Service, used when O(prometheus_url) is empty.
    type: dict
    suboptions:
      namespace:
        description: Namespace of the Service.
        type: str
        default: istio-system
      name:
        description: Name of the Service.
        type: str
        default: prometheus
      port:
        description: Service port of the HTTP API.
        type: int
        default: 9090
  prometheus_timeout:
    description: Seconds to wait for one Prometheus answer.
    type: int
    default: 10
  prometheus_validate_certs:
    description: Verify the TLS certificate of O(prometheus_url). Turning this off is not recommended.
    type: bool
    default: true
  prometheus_ca_path:
    description: CA bundle to verify O(prometheus_url) with.
    type: path
  prometheus_bearer_token:
    description: Bearer token sent to O(prometheus_url). Never logged.
    type: str
"""
