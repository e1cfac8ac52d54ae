# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Server-side apply exactly as kubernetes.core.k8s (apply: true, server_side_apply) does it.

This is the one place that drives kubernetes.core's own service (K8sService and perform_action),
so that an apply here and one by kubernetes.core.k8s compute the same change and diff.

:class:`ServerSideApply` is a part of :class:`client.Kube`; it uses the Kube's ``module``,
``client``, ``host`` and ``_resource`` (discovery, resource.Resources).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import apply_error

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import perform_action
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService
except ImportError:  # pragma: no cover - kubernetes.core is a declared dependency (client.new_module says so)
    perform_action = None
    K8sService = None

# Dry runs in flight at once in Kube.apply (the kubernetes client keeps 5 connections per CPU in its pool).
DRY_RUN_WORKERS = 6


class _ServiceModule:
    """The module as kubernetes.core's service sees it during one Kube.apply.

    K8sService reads its field manager from ``module.params["server_side_apply"]``, an option of
    kubernetes.core.k8s that our modules do not have. This view adds it to a copy of the module's
    parameters; everything else (check_mode, _diff, warn, ...) is the module's own. The module's
    parameters stay as the task gave them.
    """

    def __init__(self, module: Any, field_manager: str, force_conflicts: bool) -> None:
        self._module = module
        self.params = dict(
            module.params, server_side_apply={"field_manager": field_manager, "force_conflicts": force_conflicts}
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class ServerSideApply:
    """Kube.apply: server-side apply of a list of objects with one field manager."""

    module: Any
    client: Any
    host: str
    _resource: Any  # resource.Resources._resource

    def apply(self, objects: List[Dict[str, Any]], field_manager: str, force_conflicts: bool) -> List[Dict[str, Any]]:
        """Server-side apply of each object with one field manager, exactly as kubernetes.core.k8s (apply: true,
        server_side_apply) does it, through its own service: in check mode a server-side dry run. One result per
        object in kubernetes.core.k8s's shape (changed, method, result, and diff when the task has diff on), in the
        order given.

        Real applies go one after the other, in order. Dry runs write nothing, so their order cannot matter: they go
        side by side (DRY_RUN_WORKERS at a time), which is what keeps a drift run over hundreds of objects close to
        `kubectl diff`. Each kind is looked up once before, because the client's discovery cache is not shared
        safely between threads. An error names the first object, in the order given, that failed."""
        service = K8sService(self.client, _ServiceModule(self.module, field_manager, force_conflicts))
        params = {"state": "present", "apply": True}

        def one(definition: Dict[str, Any]) -> Dict[str, Any]:
            try:
                return perform_action(service, copy.deepcopy(definition), params)
            except Exception as exc:
                raise apply_error(definition, exc, self.host) from None

        if not self.module.check_mode or len(objects) < 2:
            return [one(definition) for definition in objects]
        for api_version, kind in sorted({(d.get("apiVersion", ""), d.get("kind", "")) for d in objects}):
            self._resource(api_version, kind)
        with ThreadPoolExecutor(max_workers=DRY_RUN_WORKERS) as pool:
            return list(pool.map(one, objects))
