# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one Kubernetes access layer of meshops.istio.

Every module of this collection talks to the API server through :class:`Kube`. It is
built on kubernetes.core's client and authentication options, so connection details
(kubeconfig, context, host, api_key, validate_certs, ... and the ``K8S_AUTH_*``
environment) are configured once for our modules and kubernetes.core's alike, through
the ``group/meshops.istio.k8s`` action group.

The layer turns client exceptions into :class:`KubeError` whose message names the
object, what failed and what to do. Credentials never appear in those messages.
"""

from __future__ import annotations

import copy
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import REVISION_LABEL, TAG_LABEL
from ansible_collections.meshops.istio.plugins.module_utils.redact import first_line, redact

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

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import perform_action
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService
except ImportError:  # pragma: no cover - as above
    perform_action = None
    K8sService = None

try:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError as Urllib3HTTPError
except ImportError:  # pragma: no cover - reported by AnsibleK8SModule's requires()

    class ApiException(Exception):  # type: ignore[no-redef]
        status = 0

    class DynamicApiError(Exception):  # type: ignore[no-redef]
        status = 0

    class NotFoundError(Exception):  # type: ignore[no-redef]
        pass

    class ResourceNotFoundError(Exception):  # type: ignore[no-redef]
        pass

    class Urllib3HTTPError(Exception):  # type: ignore[no-redef]
        pass


# Dry runs in flight at once in Kube.apply (the kubernetes client keeps 5 connections per CPU in its pool).
DRY_RUN_WORKERS = 6

# Modules of this collection whose extra options are added with argument_spec().
WAIT_ARG_SPEC: Dict[str, Any] = {
    "wait": {"type": "bool", "default": False},
    "wait_timeout": {"type": "int", "default": 300},
}


class KubeError(Exception):
    """A failure talking to the API server, with a message fit for an operator."""


class KubeConflict(KubeError):
    """409 Conflict on a write: the object changed, or was created, since it was read. Read it again."""


class KubeNotFound(KubeError):
    """404 Not Found on a write: the object, or the namespace it is written into, does not exist."""


class KubeRefused(KubeError):
    """Admission refused the object (Pod Security, a quota, a denying webhook, validation; not RBAC)."""


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


def _ref(kind: str, name: Optional[str], namespace: Optional[str]) -> str:
    if name and namespace:
        return f"{kind} {namespace}/{name}"
    if name:
        return f"{kind} {name}"
    if namespace:
        return f"{kind} objects in namespace {namespace}"
    return f"{kind} objects"


class Kube:
    """Reads and dry-runs against one cluster. Returns plain dicts."""

    def __init__(self, module: Any) -> None:
        self.module = module
        try:
            self.client = get_api_client(module)
        except Exception as exc:  # kubeconfig missing, context unknown, bad file, or API down
            if _is_connection_error(exc):
                raise KubeError(
                    f"cannot reach the Kubernetes API server at {_configured_host()}: {first_line(exc)}. "
                    "Check that the API server is running and that host/kubeconfig/context point at it."
                ) from None
            raise KubeError(
                f"cannot load the Kubernetes connection settings: {first_line(exc)}. "
                "Check the kubeconfig path and context (options kubeconfig/context or K8S_AUTH_KUBECONFIG/"
                "K8S_AUTH_CONTEXT), or give host with api_key."
            ) from None

    @property
    def host(self) -> str:
        return str(getattr(self.client.configuration, "host", "") or "the API server")

    # ------------------------------------------------------------------ errors

    def _explain(self, exc: Exception, action: str, what: str) -> KubeError:
        status = getattr(exc, "status", None)
        reason = _api_message(exc)
        if status == 401:
            return KubeError(
                f"the API server at {self.host} rejected the credentials (401 Unauthorized) while trying to "
                f"{action} {what}. Check the token, client certificate or kubeconfig user in use."
            )
        if status == 403 and _RBAC_DENIAL.search(reason):
            return KubeError(
                f"forbidden to {action} {what} ({reason}). Grant the user in use the RBAC permission, "
                "or run with credentials that have it."
            )
        if status == 403:
            # Not RBAC: admission (Pod Security, ResourceQuota, a webhook) or a namespace being terminated.
            return KubeRefused(f"the API server refused to {action} {what}: {reason}")
        if isinstance(exc, (Urllib3HTTPError, OSError)) or status in (None, 0):
            return KubeError(
                f"cannot reach the Kubernetes API server at {self.host} to {action} {what}: {first_line(exc)}. "
                "Check that the API server is running and that host/kubeconfig/context point at it."
            )
        return KubeError(f"failed to {action} {what}: HTTP {status} {reason}")

    def _resource(self, api_version: str, kind: str):
        try:
            return self.client.resource(kind, api_version)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise self._explain(exc, "discover the API for", f"{kind} ({api_version})") from None

    # ------------------------------------------------------------------ reads

    def server_version(self) -> Dict[str, Any]:
        try:
            return dict(self.client.client.version["kubernetes"])
        except Exception as exc:
            raise self._explain(exc, "read", "the server version (/version)") from None

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
            raise self._explain(exc, "read", _ref(kind, name, namespace)) from None

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
            raise self._explain(exc, "list", _ref(kind, None, namespace)) from None

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
        resource = self._resource(api_version, kind)
        if resource is None:
            raise KubeError(f"the API server does not serve {kind} ({api_version}).")
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
            raise KubeError(f"{_ref(kind, name, namespace)} does not exist: check the name and namespace.") from None
        except Exception as exc:
            raise self._explain(exc, "patch", _ref(kind, name, namespace)) from None

    # ------------------------------------------------------------------ writes

    def _served(self, api_version: str, kind: str):
        resource = self._resource(api_version, kind)
        if resource is None:
            raise KubeError(f"the API server does not serve {kind} ({api_version}).")
        return resource

    def _write_error(self, exc: Exception, action: str, what: str, missing: str) -> KubeError:
        status = getattr(exc, "status", None)
        if status == 409:
            return KubeConflict(
                f"cannot {action} {what}: it changed or exists since it was read (HTTP 409 "
                f"{_api_message(exc)}). Read it again and retry."
            )
        if status == 404:
            return KubeNotFound(f"cannot {action} {what}: {missing} (HTTP 404 {_api_message(exc)}).")
        return self._explain(exc, action, what)

    def create(
        self, api_version: str, kind: str, body: Dict[str, Any], namespace: Optional[str] = None
    ) -> Dict[str, Any]:
        """Create one object. KubeConflict when it already exists, KubeNotFound when its namespace does not."""
        resource = self._served(api_version, kind)
        what = _ref(kind, (body.get("metadata") or {}).get("name"), namespace)
        try:
            return resource.create(body=body, namespace=namespace).to_dict()
        except Exception as exc:
            raise self._write_error(exc, "create", what, f"the namespace {namespace} does not exist") from None

    def replace(
        self, api_version: str, kind: str, body: Dict[str, Any], namespace: Optional[str] = None
    ) -> Dict[str, Any]:
        """Replace one object. With metadata.resourceVersion in body the write is conditional: KubeConflict
        when the object changed since it was read, KubeNotFound when it was deleted."""
        resource = self._served(api_version, kind)
        what = _ref(kind, (body.get("metadata") or {}).get("name"), namespace)
        try:
            return resource.replace(body=body, namespace=namespace).to_dict()
        except Exception as exc:
            raise self._write_error(exc, "replace", what, "it does not exist (any more)") from None

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
            raise self._write_error(exc, "delete", _ref(kind, name, namespace), "it does not exist") from None
        return True

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
                raise KubeError(f"{what} answered HTTP {exc.status}: {_api_message(exc)}") from None
            raise self._explain(exc, "GET", what) from None
        except Exception as exc:
            raise self._explain(exc, "GET", what) from None

    def apply(self, objects: List[Dict[str, Any]], field_manager: str, force_conflicts: bool) -> List[Dict[str, Any]]:
        """Server-side apply of each object with one field manager, exactly as kubernetes.core.k8s (apply: true,
        server_side_apply) does it, through its own service: in check mode a server-side dry run. One result per
        object in kubernetes.core.k8s's shape (changed, method, result, and diff when the task has diff on), in the
        order given.

        Real applies go one after the other, in order. Dry runs write nothing, so their order cannot matter: they go
        side by side (DRY_RUN_WORKERS at a time), which is what keeps a drift run over hundreds of objects close to
        `kubectl diff`. Each kind is looked up once before, because the client's discovery cache is not shared
        safely between threads. An error names the first object, in the order given, that failed."""
        # kubernetes.core's service reads the field manager from the module's parameters.
        self.module.params["server_side_apply"] = {"field_manager": field_manager, "force_conflicts": force_conflicts}
        service = K8sService(self.client, self.module)
        params = {"state": "present", "apply": True}

        def one(definition: Dict[str, Any]) -> Dict[str, Any]:
            try:
                return perform_action(service, copy.deepcopy(definition), params)
            except Exception as exc:
                raise self._apply_error(definition, exc) from None

        if not self.module.check_mode or len(objects) < 2:
            return [one(definition) for definition in objects]
        for api_version, kind in sorted({(d.get("apiVersion", ""), d.get("kind", "")) for d in objects}):
            self._resource(api_version, kind)
        with ThreadPoolExecutor(max_workers=DRY_RUN_WORKERS) as pool:
            return list(pool.map(one, objects))

    def _apply_error(self, definition: Dict[str, Any], exc: Exception) -> KubeError:
        meta = definition.get("metadata") or {}
        what = _ref(definition.get("kind", "object"), meta.get("name"), meta.get("namespace"))
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        status = getattr(cause, "status", None)
        if status in (400, 422):
            return KubeRefused(f"the API server refused {what}: {_api_message(cause)}")
        if status or isinstance(cause, (Urllib3HTTPError, OSError)):
            return self._explain(cause, "apply", what)
        return KubeError(f"cannot apply {what}: {redact(first_line(exc))}")

    def dry_run_create(self, definition: Dict[str, Any]) -> Dict[str, Any]:
        """Server-side dry-run create: runs admission (webhooks included), persists nothing."""
        kind = definition.get("kind", "object")
        meta = definition.get("metadata", {})
        resource = self._resource(definition["apiVersion"], kind)
        if resource is None:
            raise KubeError(f"the API server does not serve {kind} ({definition['apiVersion']}).")
        try:
            return resource.create(body=definition, namespace=meta.get("namespace"), dry_run="All").to_dict()
        except (ApiException, DynamicApiError) as exc:
            status = getattr(exc, "status", None)
            if status in (401, 403) or not status:
                raise self._explain(
                    exc, "dry-run create", _ref(kind, meta.get("name"), meta.get("namespace"))
                ) from None
            if status in (400, 422):
                raise KubeRefused(_api_message(exc)) from None
            raise KubeError(_api_message(exc)) from None
        except Exception as exc:
            raise self._explain(
                exc, "dry-run create", _ref(kind, meta.get("name") or meta.get("generateName"), meta.get("namespace"))
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


def _is_connection_error(exc: Exception) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (Urllib3HTTPError, ConnectionError, TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _configured_host() -> str:
    """The API server URL the client configuration was loaded with (kubeconfig or options)."""
    try:
        import kubernetes.client

        return str(kubernetes.client.Configuration.get_default_copy().host)
    except Exception:  # pragma: no cover - defensive
        return "the configured API server"


# How RBAC words a denial: 'User "x" cannot create resource "pods" in API group "" in the namespace "y"'.
_RBAC_DENIAL = re.compile(r"cannot \S+ (resource|path)")


def _api_message(exc: Exception) -> str:
    """The API server's reason, redacted (a webhook's refusal may quote the object sent, env values included)."""
    return redact(_raw_api_message(exc))


def _raw_api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            import json

            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (TypeError, ValueError):
            pass
    summary = getattr(exc, "summary", None)
    if callable(summary):
        try:
            return str(summary())
        except Exception:  # pragma: no cover - defensive
            pass
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    text = str(exc)
    return text.splitlines()[0] if text else exc.__class__.__name__


def wait_until(
    probe: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float,
    initial_delay: float = 0.5,
    max_delay: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call probe() until done(result) or the timeout; short polling with backoff.

    Returns the last result either way; the caller decides what a timeout means.
    """
    deadline = clock() + timeout
    delay = initial_delay
    result = probe()
    while not done(result) and clock() < deadline:
        sleep(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 2, max_delay)
        result = probe()
    return result


def gather_report(module: Any, gather: Callable[[Kube], Dict[str, Any]], done_key: str) -> Dict[str, Any]:
    """Run a read-only module's gather(kube) once, or until report[done_key] when wait is true.

    Connection and permission errors fail the module with the layer's explanation.
    """
    params = module.params
    try:
        kube = Kube(module)
        if params.get("wait"):
            return wait_until(lambda: gather(kube), lambda r: r[done_key], params["wait_timeout"])
        return gather(kube)
    except KubeError as exc:
        module.fail_json(msg=str(exc), problems=[str(exc)], **{done_key: False})
        raise  # unreachable: fail_json exits
