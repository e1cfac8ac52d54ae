# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Deciding whether an Istio control plane is ready: pure functions over API objects.

Nothing here does I/O. Modules fetch objects with module_utils.k8s and hand plain dicts
(as the API server returns them) to these functions; unit tests feed recorded objects.
Every problem is a sentence naming the object and what to do.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from ansible_collections.meshops.istio.plugins.module_utils.istio_labels import REVISION_LABEL
from ansible_collections.meshops.istio.plugins.module_utils.objects import condition, proxy_container, workload_status
from ansible_collections.meshops.istio.plugins.module_utils.objects import labels as _labels
from ansible_collections.meshops.istio.plugins.module_utils.objects import meta as _meta

# The CRDs that Istio's base chart installs and that the minimal profile relies on.
ISTIO_CORE_CRDS = (
    "authorizationpolicies.security.istio.io",
    "destinationrules.networking.istio.io",
    "envoyfilters.networking.istio.io",
    "gateways.networking.istio.io",
    "peerauthentications.security.istio.io",
    "proxyconfigs.networking.istio.io",
    "requestauthentications.security.istio.io",
    "serviceentries.networking.istio.io",
    "sidecars.networking.istio.io",
    "telemetries.telemetry.istio.io",
    "virtualservices.networking.istio.io",
    "wasmplugins.extensions.istio.io",
    "workloadentries.networking.istio.io",
    "workloadgroups.networking.istio.io",
)

INJECTOR_WEBHOOK_PREFIX = "istio-sidecar-injector"
VALIDATOR_WEBHOOK_PREFIXES = ("istio-validator", "istiod-default-validator")


def revision_of(obj: Dict[str, Any]) -> str:
    """The Istio revision an object belongs to; "default" when unlabelled."""
    rev = _labels(obj).get(REVISION_LABEL) or "default"
    return rev


def is_istio_crd(crd: Dict[str, Any]) -> bool:
    return _meta(crd).get("name", "").endswith(".istio.io")


def crd_report(crds: Iterable[Dict[str, Any]], required: Iterable[str] = ISTIO_CORE_CRDS) -> Dict[str, Any]:
    """Each Istio CRD found, whether it is Established, and the required ones missing."""
    found: Dict[str, Dict[str, Any]] = {}
    for crd in crds:
        if not is_istio_crd(crd):
            continue
        name = _meta(crd)["name"]
        est = condition(crd, "Established")
        found[name] = {
            "name": name,
            "established": bool(est and est.get("status") == "True"),
            "message": (est or {}).get("message", ""),
        }
    missing = sorted(set(required) - set(found))
    problems = []
    if missing and len(missing) == len(tuple(required)):
        problems.append(
            "no Istio CRDs are installed (for example virtualservices.networking.istio.io): "
            "install Istio's base chart (role meshops.istio.istio_install_minimal)."
        )
    elif missing:
        problems.append(
            f"CustomResourceDefinitions {', '.join(missing)} are missing: rerun the Istio base chart install "
            "for the pinned version."
        )
    for item in sorted(found.values(), key=lambda i: i["name"]):
        if not item["established"]:
            detail = f" ({item['message']})" if item["message"] else ""
            problems.append(
                f"CustomResourceDefinition {item['name']} is not Established{detail}: "
                f"check `kubectl describe crd {item['name']}`."
            )
    return {"items": sorted(found.values(), key=lambda i: i["name"]), "missing": missing, "problems": problems}


# Ambient mode: the node agents Istio's cni and ztunnel charts run (DaemonSets in the Istio namespace), and the
# GatewayClass only an istiod running with PILOT_ENABLE_AMBIENT creates and accepts.
AMBIENT_DAEMONSETS = ("istio-cni-node", "ztunnel")
WAYPOINT_CLASS = "istio-waypoint"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_BUNDLE = "gateway.networking.k8s.io/bundle-version"
GATEWAY_API_CHANNEL = "gateway.networking.k8s.io/channel"


def gateway_api_report(crds: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """The Gateway API CRDs installed: their bundle version and channel (as on the Gateway CRD, else any of the
    group's), and the names, for the preflight's guard and drift."""
    found = [c for c in crds if _meta(c).get("name", "").endswith("." + GATEWAY_API_GROUP)]
    names = sorted(_meta(c)["name"] for c in found)
    gateway = next((c for c in found if _meta(c)["name"] == f"gateways.{GATEWAY_API_GROUP}"), found[0] if found else {})
    annotations = _meta(gateway).get("annotations") or {}
    return {
        "installed": bool(found),
        "bundle_version": str(annotations.get(GATEWAY_API_BUNDLE) or ""),
        "channel": str(annotations.get(GATEWAY_API_CHANNEL) or ""),
        "crds": names,
    }


def gateway_api_problems(report: Dict[str, Any], version: str) -> List[str]:
    """Why the Gateway API CRDs found may not be replaced by the standard channel at ``version`` (x.y.z)."""
    if not report.get("installed"):
        return []
    want = "v" + version.lstrip("v")
    found, channel = report.get("bundle_version") or "(no bundle-version annotation)", report.get("channel") or ""
    if found == want and channel in ("", "standard"):
        return []
    return [
        f"Gateway API CRDs {found}{' (' + channel + ' channel)' if channel else ''} are installed "
        f"({', '.join(report.get('crds') or [])}), not {want} (standard channel): they may be another tool's, and "
        "replacing them could break its routes. Set istio_install_minimal_gateway_api_version to the installed "
        "version if Istio supports it, or change them yourself first."
    ]


def daemonset_report(daemonsets: Iterable[Dict[str, Any]], names: Iterable[str] = AMBIENT_DAEMONSETS) -> Dict[str, Any]:
    """Each named DaemonSet: scheduled on its nodes, every pod updated and ready, at its current generation."""
    by_name = {_meta(d).get("name"): d for d in daemonsets}
    items, problems = [], []
    for name in names:
        ds = by_name.get(name)
        if ds is None:
            items.append({"name": name, "found": False, "ready": False})
            problems.append(
                f"DaemonSet {name} is missing: install its chart (ambient mode installs istio-cni and ztunnel)."
            )
            continue
        status, meta = ds.get("status") or {}, _meta(ds)
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        current = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        ok = current and desired > 0 and ready == desired and updated == desired
        items.append(
            {
                "name": name,
                "namespace": meta.get("namespace", ""),
                "found": True,
                "ready": ok,
                "desired": desired,
                "pods_ready": ready,
                "updated": updated,
            }
        )
        if not ok:
            problems.append(
                f"DaemonSet {meta.get('namespace', '')}/{name} has {ready} of {desired} pods ready "
                f"({updated} updated{'' if current else ', its controller has not seen the latest change'}): every "
                f"node needs one. Check `kubectl -n {meta.get('namespace', '')} describe daemonset {name}`."
            )
    return {"items": items, "problems": problems}


def waypoint_class_report(classes: Iterable[Dict[str, Any]], gateway_api: Dict[str, Any]) -> Dict[str, Any]:
    """Whether istiod accepted the GatewayClass istio-waypoint: it creates that class only with ambient on, so this
    is the running istiod's own answer that it serves ambient mode."""
    if not gateway_api.get("installed"):
        return {
            "accepted": False,
            "problems": [
                "the Gateway API CRDs are not installed, so istiod cannot create GatewayClass istio-waypoint: "
                "ambient mode installs them (istio_install_minimal_gateway_api_url)."
            ],
        }
    klass = next((c for c in classes if _meta(c).get("name") == WAYPOINT_CLASS), None)
    accepted = condition(klass, "Accepted") if klass else None
    if klass is not None and accepted and accepted.get("status") == "True":
        return {"accepted": True, "problems": []}
    why = (
        "does not exist yet"
        if klass is None
        else f"is not Accepted ({(accepted or {}).get('message') or 'no status from istiod yet'})"
    )
    return {
        "accepted": False,
        "problems": [
            f"GatewayClass {WAYPOINT_CLASS} {why}: istiod creates and accepts it only when it runs in ambient mode "
            "(PILOT_ENABLE_AMBIENT, the istiod chart's profile=ambient). Check istiod's logs and its Deployment's env."
        ],
    }


def version_from_image(image: str) -> Optional[str]:
    """'docker.io/istio/pilot:1.30.3-distroless' -> '1.30.3'; None when there is no tag."""
    if not image:
        return None
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail:
        tail = tail.split("@", 1)[0]
    if ":" not in tail:
        return None
    tag = tail.split(":", 1)[1]
    for suffix in ("-distroless", "-debug"):
        if tag.endswith(suffix):
            tag = tag[: -len(suffix)]
    return tag or None


def install_method(obj: Dict[str, Any]) -> str:
    """How an object was installed: helm, istioctl (as applied by this collection), or unknown."""
    annotations = _meta(obj).get("annotations") or {}
    labels = _labels(obj)
    if labels.get("meshops.istio/install-method"):
        return labels["meshops.istio/install-method"]
    if annotations.get("meta.helm.sh/release-name") or labels.get("app.kubernetes.io/managed-by") == "Helm":
        return "helm"
    if labels.get("install.operator.istio.io/owning-resource", "unknown") != "unknown":
        return "istioctl"
    return "unknown"


def istiod_report(deployments: Iterable[Dict[str, Any]], namespace: str) -> Dict[str, Any]:
    items = []
    problems = []
    for dep in deployments:
        meta = _meta(dep)
        containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        image = next((c.get("image", "") for c in containers if c.get("name") == "discovery"), "")
        if not image and containers:
            image = containers[0].get("image", "")
        st = workload_status(dep, "Deployment")
        item = {
            "name": meta.get("name"),
            "namespace": meta.get("namespace", namespace),
            "revision": revision_of(dep),
            "version": version_from_image(image) or _labels(dep).get("app.kubernetes.io/version"),
            "image": image,
            "install_method": install_method(dep),
            "available": st["ready"],
            "reasons": st["reasons"],
        }
        items.append(item)
        if not st["ready"]:
            problems.append(
                f"Deployment {item['namespace']}/{item['name']} is not ready: {'; '.join(st['reasons'])}. "
                f"Check `kubectl -n {item['namespace']} describe deployment {item['name']}` and its pods' events."
            )
    if not items:
        problems.append(
            f"no istiod Deployment (label app=istiod) in namespace {namespace}: install istiod "
            "(role meshops.istio.istio_install_minimal) or set the namespace option to where it runs."
        )
    return {"items": sorted(items, key=lambda i: i["name"] or ""), "problems": problems}


def _target(client_config: Dict[str, Any]) -> str:
    if client_config.get("url"):
        return client_config["url"]
    svc = client_config.get("service") or {}
    port = svc.get("port", 443)
    return f"service {svc.get('namespace')}/{svc.get('name')}:{port}{svc.get('path', '')}"


def webhook_report(
    mutating: Iterable[Dict[str, Any]],
    validating: Iterable[Dict[str, Any]],
    revision: Optional[str] = None,
) -> Dict[str, Any]:
    """Istio's injector and validator webhook configurations: CA bundle, failure policy, target."""
    items = []
    problems = []
    for kind, objs, prefixes in (
        ("MutatingWebhookConfiguration", mutating, (INJECTOR_WEBHOOK_PREFIX,)),
        ("ValidatingWebhookConfiguration", validating, VALIDATOR_WEBHOOK_PREFIXES),
    ):
        for obj in objs:
            name = _meta(obj).get("name", "")
            if not name.startswith(prefixes):
                continue
            rev = revision_of(obj)
            if revision and rev != revision and not name.startswith("istiod-default-validator"):
                continue
            hooks = []
            for hook in obj.get("webhooks") or []:
                cc = hook.get("clientConfig") or {}
                hooks.append(
                    {
                        "name": hook.get("name"),
                        "failure_policy": hook.get("failurePolicy", "Fail"),
                        "has_ca_bundle": bool(cc.get("caBundle")),
                        "target": _target(cc),
                    }
                )
            missing_ca = [h["name"] for h in hooks if not h["has_ca_bundle"]]
            if missing_ca:
                problems.append(
                    f"{kind} {name} has no CA bundle on {', '.join(missing_ca)}: istiod patches it once it runs; "
                    f"check that istiod is running and allowed to update {kind} {name}, or set the CA bundle in "
                    "the install values."
                )
            items.append({"kind": kind, "name": name, "revision": rev, "webhooks": hooks})
    if not any(i["kind"] == "MutatingWebhookConfiguration" for i in items):
        problems.append(
            "no sidecar injector MutatingWebhookConfiguration (istio-sidecar-injector*) found: "
            "install istiod with the role meshops.istio.istio_install_minimal."
        )
    if not any(i["kind"] == "ValidatingWebhookConfiguration" for i in items):
        problems.append(
            "no Istio ValidatingWebhookConfiguration (istio-validator* or istiod-default-validator) found: "
            "install istiod with configValidation enabled."
        )
    return {"items": sorted(items, key=lambda i: (i["kind"], i["name"])), "problems": problems}


# Every webhook of Istio's injector is named <something>.sidecar-injector.istio.io; a failed call names it.
INJECTOR_WEBHOOK = "sidecar-injector.istio.io"
# Containers only the injector adds to a pod.
INJECTED_CONTAINERS = ('"istio-proxy"', '"istio-init"', '"istio-validation"')


def probe_pod(namespace: str, revision: Optional[str] = None) -> Dict[str, Any]:
    """A pod for a server-side dry-run create that the injector webhook selects."""
    labels = {"app": "meshops-injection-probe"}
    if revision and revision != "default":
        labels[REVISION_LABEL] = revision
    else:
        labels["sidecar.istio.io/inject"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "meshops-injection-probe-", "namespace": namespace, "labels": labels},
        # Passes Pod Security "restricted" by itself, so that a refusal names what the injector added.
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.k8s.io/pause:3.10",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def injection_probe_result(
    namespace: str, dry_run_pod: Optional[Dict[str, Any]], error: Optional[str], refused: bool = False
) -> Dict[str, Any]:
    """Did the injector answer the dry-run create and add the proxy container?

    ``refused``: admission refused the pod (Pod Security, a quota, a denying webhook; not RBAC, not an unreachable
    webhook). Unless the injector's own webhook did, the injector answered and admission then refused the injected
    pod: ``admitted`` is false, and it is not counted as an injector problem (the caller reports it with the
    namespace's admission check).
    """
    if error is not None:
        # Evidence that the injector ran: admission's reason names a container only the injector adds.
        answered = refused and INJECTOR_WEBHOOK not in error and any(c in error for c in INJECTED_CONTAINERS)
        return {
            "namespace": namespace,
            "answered": answered,
            "injected": answered,
            "admitted": False,
            "message": f"the injector answered, but admission refused the injected pod: {error}" if answered else error,
        }
    injected = proxy_container(dry_run_pod or {}) is not None
    return {
        "namespace": namespace,
        "answered": injected,
        "injected": injected,
        "admitted": True,
        "message": "the injector added istio-proxy"
        if injected
        else "the pod was admitted without an istio-proxy container (the injector did not mutate it)",
    }


def injection_problem(probe: Dict[str, Any], webhooks: Dict[str, Any]) -> Optional[str]:
    if probe["injected"]:
        return None
    names = [i["name"] for i in webhooks["items"] if i["kind"] == "MutatingWebhookConfiguration"]
    targets = [
        h["target"] for i in webhooks["items"] if i["kind"] == "MutatingWebhookConfiguration" for h in i["webhooks"]
    ]
    which = f"MutatingWebhookConfiguration {', '.join(names)}" if names else "the sidecar injector webhook"
    where = f" at {targets[0]}" if targets else ""
    return (
        f"{which} does not answer: a dry-run pod in namespace {probe['namespace']} was not injected "
        f"({probe['message']}). Check that istiod is running and reachable{where}."
    )


def validation_probe_result(error: Optional[str], webhook_names: List[str]) -> Dict[str, Any]:
    """A deliberately invalid object must be denied by Istio's validation webhook."""
    denied_by_istio = bool(error) and "denied the request" in error and "validation.istio.io" in error
    return {
        "answered": denied_by_istio,
        "message": error or "an invalid VirtualService was accepted: the validation webhook did not reject it",
        "webhooks": webhook_names,
    }


def validation_problem(probe: Dict[str, Any], webhooks: Dict[str, Any]) -> Optional[str]:
    if probe["answered"]:
        return None
    names = [i["name"] for i in webhooks["items"] if i["kind"] == "ValidatingWebhookConfiguration"]
    which = f"ValidatingWebhookConfiguration {', '.join(names)}" if names else "Istio's validation webhook"
    return (
        f"{which} does not answer: a dry-run of an invalid VirtualService was not denied by istiod "
        f"({probe['message']}). Check that istiod is running and reachable."
    )


def versions_and_revisions(istiod: Dict[str, Any], webhooks: Dict[str, Any]) -> Dict[str, List[str]]:
    versions = sorted({i["version"] for i in istiod["items"] if i.get("version")})
    revisions = sorted({i["revision"] for i in istiod["items"]} | {i["revision"] for i in webhooks["items"]})
    return {"versions": versions, "revisions": revisions}


def summarize(*sections: Dict[str, Any], extra_problems: Iterable[Optional[str]] = ()) -> Dict[str, Any]:
    problems: List[str] = []
    for section in sections:
        problems.extend(section.get("problems", []))
    problems.extend(p for p in extra_problems if p)
    return {"ready": not problems, "problems": problems}
