# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The Kube client: how every module of meshops.istio connects to the API server.

:class:`Kube` is built on kubernetes.core's client and authentication options, so connection
details (kubeconfig, context, host, api_key, validate_certs, ... and the ``K8S_AUTH_*``
environment) are configured once for our modules and kubernetes.core's alike, through the
``group/meshops.istio.k8s`` action group. What a Kube does is in its parts: resource.Resources
(objects), apply.ServerSideApply (server-side apply) and proxy.ServiceProxy (service proxy).

Also here: the modules' argument spec (:func:`argument_spec`) and AnsibleModule (:func:`new_module`).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

from ansible_collections.meshops.istio.plugins.module_utils.k8s.apply import ServerSideApply
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import KubeError, is_connection_error
from ansible_collections.meshops.istio.plugins.module_utils.k8s.proxy import ServiceProxy
from ansible_collections.meshops.istio.plugins.module_utils.k8s.resource import Resources
from ansible_collections.meshops.istio.plugins.module_utils.redact import first_line

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
except ImportError as _import_error:  # pragma: no cover - kubernetes.core is a declared dependency
    AUTH_ARG_SPEC = {}
    get_api_client = None
    AnsibleK8SModule = None
    K8S_CORE_IMPORT_ERROR: Optional[ImportError] = _import_error
else:
    K8S_CORE_IMPORT_ERROR = None


def argument_spec(**extra: Dict[str, Any]) -> Dict[str, Any]:
    """kubernetes.core's connection options plus the module's own."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(copy.deepcopy(extra))
    return spec


def new_module(argument_spec: Dict[str, Any], supports_check_mode: bool = True, **kwargs: Any):
    """An AnsibleModule wrapper that knows kubernetes.core's client requirements."""
    if AnsibleK8SModule is None:  # pragma: no cover
        from ansible.module_utils.basic import AnsibleModule

        module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=supports_check_mode)
        module.fail_json(
            msg="meshops.istio needs the kubernetes.core collection (5.0 or later): "
            "install it with `ansible-galaxy collection install kubernetes.core` or the `ansible` package. "
            f"Import error: {K8S_CORE_IMPORT_ERROR}"
        )
    return AnsibleK8SModule(argument_spec=argument_spec, supports_check_mode=supports_check_mode, **kwargs)


class Kube(Resources, ServerSideApply, ServiceProxy):
    """Reads, writes and dry runs against one cluster. Returns plain dicts."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.client = connect(module)

    @property
    def host(self) -> str:
        return str(getattr(self.client.configuration, "host", "") or "the API server")


def connect(module: Any):
    """kubernetes.core's API client for the module's connection options; KubeError saying what to check."""
    try:
        return get_api_client(module)
    except Exception as exc:  # kubeconfig missing, context unknown, bad file, or API down
        if is_connection_error(exc):
            raise KubeError(
                f"cannot reach the Kubernetes API server at {_configured_host()}: {first_line(exc)}. "
                "Check that the API server is running and that host/kubeconfig/context point at it."
            ) from None
        raise KubeError(
            f"cannot load the Kubernetes connection settings: {first_line(exc)}. "
            "Check the kubeconfig path and context (options kubeconfig/context or K8S_AUTH_KUBECONFIG/"
            "K8S_AUTH_CONTEXT), or give host with api_key."
        ) from None


def forget_cached_clients() -> None:
    """Make the next Kube() build a new API client instead of reusing kubernetes.core's cached one.

    For a forked process (the run lock's renewer) that closed the sockets it inherited: the cached
    client's connection pool still refers to them.
    """
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as core_client
    except ImportError:  # pragma: no cover - kubernetes.core is a declared dependency
        return
    core_client._pool.clear()


def _configured_host() -> str:
    """The API server URL the client configuration was loaded with (kubeconfig or options)."""
    try:
        import kubernetes.client

        return str(kubernetes.client.Configuration.get_default_copy().host)
    except Exception:  # pragma: no cover - defensive
        return "the configured API server"
