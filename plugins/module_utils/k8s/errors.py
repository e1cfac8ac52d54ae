# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What a failure talking to the API server is called, and what the operator is told.

Client exceptions become :class:`KubeError` (or a subclass) whose message names the object,
what failed and what to do. The API server's own words are redacted: credentials never
appear in those messages.

The kubernetes client's exceptions are imported here once, with stand-ins when the client is
missing (AnsibleK8SModule's requires() reports that), for the rest of the layer to catch.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

from ansible_collections.meshops.istio.plugins.module_utils.redact import first_line, redact

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


# Ours, and the kubernetes client's exceptions (or their stand-ins) that resource.py and proxy.py catch.
__all__ = [
    "ApiException",
    "DynamicApiError",
    "KubeConflict",
    "KubeError",
    "KubeNotFound",
    "KubeRefused",
    "NotFoundError",
    "ResourceNotFoundError",
    "Urllib3HTTPError",
    "api_message",
    "apply_error",
    "explain",
    "is_connection_error",
    "object_ref",
    "write_error",
]


class KubeError(Exception):
    """A failure talking to the API server, with a message fit for an operator."""


class KubeConflict(KubeError):
    """409 Conflict on a write: the object changed, or was created, since it was read. Read it again."""


class KubeNotFound(KubeError):
    """404 Not Found on a write: the object, or the namespace it is written into, does not exist."""


class KubeRefused(KubeError):
    """Admission refused the object (Pod Security, a quota, a denying webhook, validation; not RBAC)."""


# How RBAC words a denial: 'User "x" cannot create resource "pods" in API group "" in the namespace "y"'.
_RBAC_DENIAL = re.compile(r"cannot \S+ (resource|path)")


def object_ref(kind: str, name: Optional[str], namespace: Optional[str]) -> str:
    """How a message names an object, or the objects of a kind: ``Pod shop/web``, ``Pod objects in namespace shop``."""
    if name and namespace:
        return f"{kind} {namespace}/{name}"
    if name:
        return f"{kind} {name}"
    if namespace:
        return f"{kind} objects in namespace {namespace}"
    return f"{kind} objects"


def explain(exc: Exception, host: str, action: str, what: str) -> KubeError:
    """A client exception raised while trying to ``action`` ``what`` against ``host``, as a KubeError."""
    status = getattr(exc, "status", None)
    reason = api_message(exc)
    if status == 401:
        return KubeError(
            f"the API server at {host} rejected the credentials (401 Unauthorized) while trying to "
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
            f"cannot reach the Kubernetes API server at {host} to {action} {what}: {first_line(exc)}. "
            "Check that the API server is running and that host/kubeconfig/context point at it."
        )
    return KubeError(f"failed to {action} {what}: HTTP {status} {reason}")


def write_error(exc: Exception, host: str, action: str, what: str, missing: str) -> KubeError:
    """As explain(), with 409 as KubeConflict and 404 as KubeNotFound (``missing`` says what does not exist)."""
    status = getattr(exc, "status", None)
    if status == 409:
        return KubeConflict(
            f"cannot {action} {what}: it changed or exists since it was read (HTTP 409 "
            f"{api_message(exc)}). Read it again and retry."
        )
    if status == 404:
        return KubeNotFound(f"cannot {action} {what}: {missing} (HTTP 404 {api_message(exc)}).")
    return explain(exc, host, action, what)


def apply_error(definition: Dict[str, Any], exc: Exception, host: str) -> KubeError:
    """What kubernetes.core's service raised applying ``definition`` (the API error is its cause), as a KubeError."""
    meta = definition.get("metadata") or {}
    what = object_ref(definition.get("kind", "object"), meta.get("name"), meta.get("namespace"))
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    status = getattr(cause, "status", None)
    if status in (400, 422):
        return KubeRefused(f"the API server refused {what}: {api_message(cause)}")
    if status or isinstance(cause, (Urllib3HTTPError, OSError)):
        return explain(cause, host, "apply", what)
    return KubeError(f"cannot apply {what}: {redact(first_line(exc))}")


def is_connection_error(exc: Optional[BaseException]) -> bool:
    """Whether exc, or an exception it was raised from, says the API server could not be reached."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (Urllib3HTTPError, ConnectionError, TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def api_message(exc: Exception) -> str:
    """The API server's reason, redacted (a webhook's refusal may quote the object sent, env values included)."""
    return redact(_raw_api_message(exc))


def _raw_api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
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
