# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Reads, writes and dry runs of single objects, as plain dicts, and the Istio reads built on them.

:class:`Resources` is a part of :class:`client.Kube`; it uses the Kube's ``client`` (kubernetes.core's
API client) and ``host``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import REVISION_LABEL, TAG_LABEL
from ansible_collections.meshops.istio.plugins.module_utils.k8s.errors import (
    ApiException,
    DynamicApiError,
    KubeError,
    KubeRefused,
    NotFoundError,
    ResourceNotFoundError,
    api_message,
    explain,
    object_ref,
    write_error,
)


class Resources:
    """get/list/patch/create/replace/delete and server-side dry-run create of one object or kind."""

    client: Any
    host: str

    def _resource(self, api_version: str, kind: str):
        """The client's API resource for a kind (discovery), None when the server does not serve it."""
        try:
            return self.client.resource(kind, api_version)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise explain(exc, self.host, "discover the API for", f"{kind} ({api_version})") from None

    # ------------------------------------------------------------------ reads

    def server_version(self) -> Dict[str, Any]:
        try:
            return dict(self.client.client.version["kubernetes"])
        except Exception as exc:
            raise explain(exc, self.host, "read", "the server version (/version)") from None

    def get(self, api_version: str, kind: str, name: str, namespace: Optional[str] = None) -> Optional[Dict]:
        """One object as a dict, or None when it (or its kind) does not exist."""
        resource = self._resource(api_version, kind)
        if resource is None:
            return None
        try:
            return resource.get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None
        except Exception as exc:
            raise explain(exc, self.host, "read", object_ref(kind, name, namespace)) from None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: Optional[str] = None,
        label_selector: Optional[str] = None,
        field_selector: Optional[str] = None,
    ) -> List[Dict]:
        """Objects as dicts; an empty list when the kind is not served."""
        resource = self._resource(api_version, kind)
        if resource is None:
            return []
        params: Dict[str, Any] = {}
        if namespace:
            params["namespace"] = namespace
        if label_selector:
            params["label_selector"] = label_selector
        if field_selector:
            params["field_selector"] = field_selector
        try:
            return list(resource.get(**params).to_dict().get("items", []))
        except NotFoundError:
            return []
        except Exception as exc:
            raise explain(exc, self.host, "list", object_ref(kind, None, namespace)) from None

    # ------------------------------------------------------------------ Istio reads

    def revision_tags(self) -> Dict[str, str]:
        """Istio's revision tags: each tag's name and the revision it points at, from the tag webhooks (the
        MutatingWebhookConfigurations labeled istio.io/tag, as istioctl tag and the collection's upgrade write)."""
        tags = {}
        hooks = self.list("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", label_selector=TAG_LABEL)
        for hook in hooks:
            labels = (hook.get("metadata") or {}).get("labels") or {}
            tags[labels[TAG_LABEL]] = labels.get(REVISION_LABEL) or "default"
        return tags

    def namespace_contents(self, names: List[str]) -> List[Dict[str, Any]]:
        """Per namespace name: the Namespace (None when it does not exist), its Pods and its ReplicaSets (the reads
        sidecar coverage is computed from, module_utils/sidecars.py)."""
        out = []
        for name in names:
            namespace = self.get("v1", "Namespace", name)
            present = namespace is not None
            out.append(
                {
                    "name": name,
                    "namespace": namespace,
                    "pods": self.list("v1", "Pod", namespace=name) if present else [],
                    "replicasets": self.list("apps/v1", "ReplicaSet", namespace=name) if present else [],
                }
            )
        return out

    # ------------------------------------------------------------------ writes

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: Optional[str],
        body: Dict[str, Any],
        dry_run: bool = False,
    ) -> Dict[str, Any]:
        """Strategic-merge patch of one object; server-side dry run when asked."""
        resource = self._served(api_version, kind)
        params: Dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "body": body,
            "content_type": "application/strategic-merge-patch+json",
        }
        if dry_run:
            params["dry_run"] = "All"
        try:
            return resource.patch(**params).to_dict()
        except NotFoundError:
            raise KubeError(
                f"{object_ref(kind, name, namespace)} does not exist: check the name and namespace."
            ) from None
        except Exception as exc:
            raise explain(exc, self.host, "patch", object_ref(kind, name, namespace)) from None

    def _served(self, api_version: str, kind: str):
        resource = self._resource(api_version, kind)
        if resource is None:
            raise KubeError(f"the API server does not serve {kind} ({api_version}).")
        return resource

    def create(
        self, api_version: str, kind: str, body: Dict[str, Any], namespace: Optional[str] = None
    ) -> Dict[str, Any]:
        """Create one object. KubeConflict when it already exists, KubeNotFound when its namespace does not."""
        resource = self._served(api_version, kind)
        what = object_ref(kind, (body.get("metadata") or {}).get("name"), namespace)
        try:
            return resource.create(body=body, namespace=namespace).to_dict()
        except Exception as exc:
            raise write_error(exc, self.host, "create", what, f"the namespace {namespace} does not exist") from None

    def replace(
        self, api_version: str, kind: str, body: Dict[str, Any], namespace: Optional[str] = None
    ) -> Dict[str, Any]:
        """Replace one object. With metadata.resourceVersion in body the write is conditional: KubeConflict
        when the object changed since it was read, KubeNotFound when it was deleted."""
        resource = self._served(api_version, kind)
        what = object_ref(kind, (body.get("metadata") or {}).get("name"), namespace)
        try:
            return resource.replace(body=body, namespace=namespace).to_dict()
        except Exception as exc:
            raise write_error(exc, self.host, "replace", what, "it does not exist (any more)") from None

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: Optional[str] = None,
        resource_version: Optional[str] = None,
    ) -> bool:
        """Delete one object: True when deleted, False when it (or its namespace) did not exist.

        With resource_version the delete is conditional (a precondition): KubeConflict when the
        object changed since it was read.
        """
        resource = self._served(api_version, kind)
        params: Dict[str, Any] = {"name": name, "namespace": namespace}
        if resource_version:
            params["body"] = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": str(resource_version)},
            }
        try:
            resource.delete(**params)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise write_error(
                exc, self.host, "delete", object_ref(kind, name, namespace), "it does not exist"
            ) from None
        return True

    # ------------------------------------------------------------------ dry runs

    def dry_run_create(self, definition: Dict[str, Any]) -> Dict[str, Any]:
        """Server-side dry-run create: runs admission (webhooks included), persists nothing."""
        kind = definition.get("kind", "object")
        meta = definition.get("metadata", {})
        resource = self._served(definition["apiVersion"], kind)
        try:
            return resource.create(body=definition, namespace=meta.get("namespace"), dry_run="All").to_dict()
        except (ApiException, DynamicApiError) as exc:
            status = getattr(exc, "status", None)
            if status in (401, 403) or not status:
                raise explain(
                    exc, self.host, "dry-run create", object_ref(kind, meta.get("name"), meta.get("namespace"))
                ) from None
            if status in (400, 422):
                raise KubeRefused(api_message(exc)) from None
            raise KubeError(api_message(exc)) from None
        except Exception as exc:
            raise explain(
                exc,
                self.host,
                "dry-run create",
                object_ref(kind, meta.get("name") or meta.get("generateName"), meta.get("namespace")),
            ) from None
