# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The connection guard's rules: how a run reaches one cluster, and whether it checks the API server's certificate.

Every playbook runs these rules on each cluster host before its first request (roles/rollout/tasks/connection.yml).
They refuse the configurations in which the Kubernetes client would silently do something else than the inventory
says: fall back to the job pod's in-cluster service account, skip certificate checks, or send every host of a
multi-cluster job to the one API server of a job-wide token (kubernetes.core uses K8S_AUTH_HOST + K8S_AUTH_API_KEY
and ignores any kubeconfig and context when both are set).

The filter sees only whether a token is set, never its value.
"""

from __future__ import annotations

from typing import Any, List, Mapping

# Ansible reads these as true; kubernetes.core reads only 0/false/no as false, so every other spelling would flip
# silently: anything but these counts as "verification off".
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")

_CREDENTIAL_ADVICE = (
    "For several clusters in one job, give the job one kubeconfig holding a context per cluster (the AWX credential "
    "type in docs/awx/credential_type.json injects it as K8S_AUTH_KUBECONFIG) and set meshops_context on each host."
)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _flag(value: Any) -> Any:
    """True, False, or None when not set; a value that is neither is returned as text for the message."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return str(value)


def connection_problems(settings: Mapping[str, Any], host: str = "this host", play_hosts: int = 1) -> List[str]:
    """Sentences explaining why the connection of ``host`` is refused; empty when it is accepted.

    ``settings`` holds the host's variables ``kubeconfig`` (meshops_kubeconfig), ``context`` (meshops_context),
    ``validate_certs`` (meshops_validate_certs), ``allow_insecure`` (meshops_allow_insecure_tls) and the
    environment: ``env_host`` (K8S_AUTH_HOST), ``env_credential`` (whether K8S_AUTH_API_KEY, or K8S_AUTH_CERT_FILE
    and K8S_AUTH_KEY_FILE, are set: a boolean), ``env_kubeconfig`` (K8S_AUTH_KUBECONFIG or KUBECONFIG),
    ``env_verify_ssl`` (K8S_AUTH_VERIFY_SSL). ``play_hosts`` is the number of cluster hosts the play targets.
    """
    problems: List[str] = []
    kubeconfig = _text(settings.get("kubeconfig"))
    context = _text(settings.get("context"))
    env_host = _text(settings.get("env_host"))
    job_token = bool(env_host) and bool(settings.get("env_credential"))
    env_kubeconfig = _text(settings.get("env_kubeconfig"))

    if not (kubeconfig or env_kubeconfig or job_token):
        problems.append(
            f"No cluster connection is configured for {host}: set meshops_kubeconfig (and meshops_context) on the "
            "host, or give the job a Kubernetes credential that sets K8S_AUTH_KUBECONFIG (the credential type in "
            'docs/awx/credential_type.json) or K8S_AUTH_HOST and K8S_AUTH_API_KEY (AWX credential type "OpenShift '
            'or Kubernetes API Bearer Token"), or KUBECONFIG. meshops.istio refuses to fall back to in-cluster '
            "credentials."
        )
    elif job_token and (kubeconfig or context):
        chosen = " and ".join(
            name for name, value in (("meshops_kubeconfig", kubeconfig), ("meshops_context", context)) if value
        )
        problems.append(
            f"{host} sets {chosen}, but the job also has a token for {env_host} (K8S_AUTH_HOST and K8S_AUTH_API_KEY, "
            "for example an AWX bearer token credential): kubernetes.core would use the token and ignore "
            f"{chosen}, so this host would silently reach {env_host}. Give the job one or the other. "
            + _CREDENTIAL_ADVICE
        )
    elif env_host and not job_token:
        problems.append(
            f"K8S_AUTH_HOST is set ({env_host}) without a token (K8S_AUTH_API_KEY, or K8S_AUTH_CERT_FILE and "
            f"K8S_AUTH_KEY_FILE): kubernetes.core would send {host}'s requests to {env_host} with the kubeconfig's "
            "credentials, whatever cluster its context names. Unset K8S_AUTH_HOST, or give the token with it."
        )
    elif job_token and play_hosts > 1:
        problems.append(
            f"The job has one token for {env_host} (K8S_AUTH_HOST and K8S_AUTH_API_KEY) and targets {play_hosts} "
            f"cluster hosts: every one of them would reach {env_host}. Limit the job to that cluster's host "
            "(meshops_target), or connect per host. " + _CREDENTIAL_ADVICE
        )

    allow_insecure = _flag(settings.get("allow_insecure")) is True
    validate = _flag(settings.get("validate_certs"))
    env_verify = _flag(settings.get("env_verify_ssl"))
    if allow_insecure:
        return problems
    if validate is not None:
        if validate is not True:
            problems.append(
                f"meshops_validate_certs is {settings.get('validate_certs')!r} for {host}, so the API server's "
                "certificate would not be checked: set it to true (or remove it), and give the connection the "
                "cluster's CA certificate unless a public CA signs the API server's certificate (set "
                "meshops_allow_insecure_tls: true only for a throwaway lab cluster)."
            )
    elif env_verify is not None and env_verify is not True:
        problems.append(
            f"K8S_AUTH_VERIFY_SSL is off ({settings.get('env_verify_ssl')!r}; anything but y, yes, t, true, on or 1 "
            "counts as off), so the API server's certificate would not be checked: give the credential the "
            "cluster's CA certificate, or, when a public CA signs the API server's certificate (AWX's bearer token "
            "credential without a CA certificate injects K8S_AUTH_VERIFY_SSL=False), set meshops_validate_certs: "
            "true on the host so the system's trusted CAs check it (meshops_allow_insecure_tls: true only for a "
            "throwaway lab cluster)."
        )
    return problems


class FilterModule:
    def filters(self):
        return {"connection_problems": connection_problems}
