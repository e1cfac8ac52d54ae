"""``istiod-supervise``: the host istiod supervisor, one pilot-discovery per istiod revision.

It also keeps the control plane's controllers running as a kubelet would (``components.Keeper``).

kwok only simulates pods, so an istiod Deployment's pod serves nothing. The local cluster therefore runs the real
pilot-discovery on the host for every istiod revision the cluster has: a Deployment in istio-system labeled
app=istiod (``istiod``, or ``istiod-<rev>``; the revision is its ``istio.io/rev`` label, "default" without one)
with replicas > 0 whose injector ConfigMap (``istio-sidecar-injector`` or ``istio-sidecar-injector-<rev>``)
exists. Scale a Deployment to 0 (or delete it) and that revision's process stops, exactly as the webhooks would see
dead istiod pods.

Each revision serves on its own slot of loopback ports (``ports.slot_ports``): slot 0 is webhooks 15017, xDS 15010
and 15012, monitoring 15014, HTTP 15080; slot k adds k to the webhook port and 100*k to the others (a cluster of port
block b adds 1000*b to all of them). A revision's slot is the one its injection webhook calls
(``clientConfig.url: https://localhost:<15017+k>/inject``, set by the install values: ``revision_install_values``),
else the lowest free one, the default revision first. The container image's tag picks the Istio build that runs it
(the default build, or the previous one once ``build --previous`` made it). The variables of DEPLOYMENT_ENV (ambient
mode's PILOT_ENABLE_AMBIENT) are taken from the Deployment's discovery container, as its pod would get them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from .cni import CniAgentStandIn
from .common import (
    CLUSTER_NAME,
    LOCAL_CLUSTER_DIR,
    bin_dir,
    cache_dir,
    find_kubectl,
    istio_release,
    kubectl,
    log,
    pid_alive,
    read_versions,
    state_dir,
    stop_pidfile,
)
from .components import Keeper
from .ports import SLOTS, cluster_block, slot_of_webhook_port, slot_ports, webhook_urls

ISTIOD_NAMESPACE = "istio-system"

# The environment variables of the istiod Deployment's discovery container that reach the host pilot-discovery
# (literal values only, not valueFrom); the rest of its environment is start_pilot_discovery's own. Each is read once
# at start, so a change restarts the revision (Revision.env). PILOT_ENABLE_AMBIENT is ambient mode's switch, which
# the istiod chart's profile=ambient sets (pilot.env): without it istiod builds no ambient index and no waypoints.
DEPLOYMENT_ENV = ("PILOT_ENABLE_AMBIENT",)


def revision_install_values(revision: str, slot: int, block: int = 0) -> dict:
    """The install values that make ``revision``'s webhooks call the host istiod serving ``slot`` (of the cluster
    whose port block is ``block``).

    Merge them over group_vars/all.yml's ``istio_install_minimal_values`` (the hub, telemetry and mesh settings of
    every local install). Both of the revision's own webhooks move: its injector (istio-sidecar-injector-<rev>,
    and any revision tag made from it) and its per-revision validator (istio-validator-<rev>-istio-system, which
    only validates objects labeled istio.io/rev=<rev>). The base chart's default validator is not part of an istiod
    release, so it stays where the default revision's install put it.
    """
    urls = webhook_urls(slot, block)
    return {
        "revision": revision,
        "istiodRemote": {"injectionURL": urls["injection"]},
        "base": {"validationURL": urls["validation"]},
    }


def cmd_revision_values(args: list[str]) -> None:
    """``revision-values REVISION SLOT``: print revision_install_values as JSON (for playbooks and shells)."""
    if len(args) != 2 or not args[1].isdigit() or int(args[1]) >= SLOTS:
        raise SystemExit(f"usage: cluster.py revision-values REVISION SLOT (SLOT 0-{SLOTS - 1}; 0 is the default's)")
    print(json.dumps(revision_install_values(args[0], int(args[1]), cluster_block())))


@dataclass(frozen=True)
class Revision:
    """One pilot-discovery the supervisor runs: a change of any field restarts it."""

    name: str
    slot: int
    version: str  # the Istio build that runs it
    binary: str
    block: int = 0  # the cluster's port block
    env: tuple[tuple[str, str], ...] = ()  # the Deployment's DEPLOYMENT_ENV variables that it sets, in that order

    @property
    def ports(self) -> dict[str, int]:
        return slot_ports(self.slot, self.block)

    @property
    def log_name(self) -> str:
        return "pilot-discovery.log" if self.name == "default" else f"pilot-discovery-{self.name}.log"


def revision_of(obj: dict) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get("istio.io/rev") or "default"


def injector_name(revision: str) -> str:
    """The name of a revision's injector ConfigMap and MutatingWebhookConfiguration."""
    return "istio-sidecar-injector" if revision == "default" else f"istio-sidecar-injector-{revision}"


def webhook_port(mwc: dict | None) -> int | None:
    """The loopback port a MutatingWebhookConfiguration's webhooks call (https://localhost:PORT/...), if any."""
    for hook in (mwc or {}).get("webhooks") or []:
        url = urllib.parse.urlsplit((hook.get("clientConfig") or {}).get("url") or "")
        if url.scheme == "https" and url.hostname in ("localhost", "127.0.0.1") and url.port:
            return url.port
    return None


def discovery_container(deployment: dict) -> dict:
    """An istiod Deployment's pilot-discovery container: the one named discovery, else the first."""
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return next((c for c in containers if c.get("name") == "discovery"), containers[0] if containers else {})


def image_version(deployment: dict) -> str:
    """The Istio version of an istiod Deployment's image tag (docker.io/istio/pilot:1.30.4-distroless -> 1.30.4)."""
    last = (discovery_container(deployment).get("image") or "").split("@")[0].rsplit("/", 1)[-1]
    return last.partition(":")[2].split("-")[0]


def deployment_env(deployment: dict) -> tuple[tuple[str, str], ...]:
    """The DEPLOYMENT_ENV variables an istiod Deployment's discovery container sets to a value, in that order.

    A variable given twice counts as the container would get it (the last one); one from valueFrom is left out,
    since the host process has no pod to resolve it against.
    """
    values = {}
    for item in discovery_container(deployment).get("env") or []:
        if item.get("name") in DEPLOYMENT_ENV:
            if "value" in item and "valueFrom" not in item:
                values[item["name"]] = str(item["value"])
            else:
                values.pop(item["name"], None)
    return tuple((name, values[name]) for name in DEPLOYMENT_ENV if name in values)


def istio_builds(v: dict[str, str]) -> dict[str, Path]:
    """pilot-discovery of each Istio build, by version: the default (cache/current/) and the previous one."""
    return {
        istio_release(v, "previous")["version"]: bin_dir(istio_release(v, "previous")["key"]) / "pilot-discovery",
        v["ISTIO_VERSION"]: cache_dir() / "current" / "pilot-discovery",
    }


def plan_revisions(
    deployments: list[dict],
    configmaps: list[dict],
    webhooks: list[dict],
    builds: dict[str, Path],
    default_version: str,
    block: int = 0,
) -> tuple[dict[str, Revision], list[str]]:
    """The revisions to serve and what to tell the user about them, from the cluster's objects.

    ``deployments``: istiod Deployments of istio-system; ``configmaps`` and ``webhooks``: its ConfigMaps and the
    MutatingWebhookConfigurations (only names are read of the ConfigMaps); ``builds``: pilot-discovery by Istio
    version, for the builds that exist; ``block``: the cluster's port block. A revision whose image tag has no build
    runs ``default_version``'s. Each revision runs with its Deployment's DEPLOYMENT_ENV variables (deployment_env).
    """
    notes: list[str] = []
    configmap_names = {(cm.get("metadata") or {}).get("name") for cm in configmaps}
    mwcs = {(m.get("metadata") or {}).get("name"): m for m in webhooks}

    def order(dep: dict) -> tuple:
        meta = dep.get("metadata") or {}
        return (revision_of(dep) != "default", meta.get("creationTimestamp") or "", meta.get("name") or "")

    installed: dict[str, dict] = {}
    for dep in sorted(deployments, key=order):
        rev = revision_of(dep)
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        if replicas == 0 or injector_name(rev) not in configmap_names or rev in installed:
            continue
        installed[rev] = dep
    slots: dict[str, int] = {}
    for rev in installed:
        port = webhook_port(mwcs.get(injector_name(rev)))
        if port is None:
            continue
        slot = slot_of_webhook_port(port, block)
        holder = next((r for r, s in slots.items() if s == slot), None)
        if slot is None:
            first, last = slot_ports(0, block)["https"], slot_ports(SLOTS - 1, block)["https"]
            notes.append(
                f"revision {rev}'s injection webhook calls port {port}, not one of the host istiod webhook ports "
                f"{first}-{last}: nothing on the host answers it; "
                f"install it with `cluster.py revision-values {rev} SLOT`"
            )
        elif holder:
            notes.append(
                f"revisions {holder} and {rev} both call https://localhost:{port}; serving {holder} there and {rev} "
                f"on a free port: install {rev} with `cluster.py revision-values {rev} SLOT` for a port of its own"
            )
        else:
            slots[rev] = slot
    for rev in installed:
        if rev not in slots:
            free = [s for s in range(SLOTS) if s not in slots.values()]
            if not free:
                notes.append(f"revision {rev} is not served: all {SLOTS} host istiod slots are taken")
                continue
            slots[rev] = free[0]
    revisions: dict[str, Revision] = {}
    if default_version not in builds:
        notes.append(f"no pilot-discovery {default_version} is built: run `cluster.py build`")
        return revisions, notes
    for rev, slot in slots.items():
        version = image_version(installed[rev])
        if version not in builds:
            notes.append(
                f"revision {rev} runs image tag {version or '(none)'}, which the local cluster has not built "
                f"(built: {', '.join(sorted(builds))}): pilot-discovery {default_version} serves it instead"
            )
            version = default_version
        revisions[rev] = Revision(rev, slot, version, str(builds[version]), block, deployment_env(installed[rev]))
    return revisions, notes


def supervisor_pidfile() -> Path:
    return state_dir() / "istiod-supervisor.pid"


def revisions_file() -> Path:
    """What the supervisor serves now, for `cluster.py status` and tests: revision -> slot, ports, build, env, pid,
    log."""
    return state_dir() / "istiod-revisions.json"


class ApiClient:
    """Minimal stdlib HTTPS client for the supervisor, from `kubectl config view --raw`."""

    def __init__(self) -> None:
        import base64
        import ssl

        raw = kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
        cfg = json.loads(raw)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        ctx = ssl.create_default_context()
        certs = state_dir() / "supervisor-certs"
        certs.mkdir(mode=0o700, parents=True, exist_ok=True)

        def materialize(data_key: str, file_key: str, name: str, src: dict) -> str | None:
            if src.get(data_key):
                path = certs / name
                path.write_bytes(base64.b64decode(src[data_key]))
                path.chmod(0o600)
                return str(path)
            return src.get(file_key)

        ca = materialize("certificate-authority-data", "certificate-authority", "ca.crt", cluster)
        if ca:
            ctx.load_verify_locations(ca)
        elif cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = materialize("client-certificate-data", "client-certificate", "client.crt", user)
        key = materialize("client-key-data", "client-key", "client.key", user)
        if cert and key:
            ctx.load_cert_chain(cert, key)
        self.token = user.get("token")
        self.ctx = ctx

    def get(self, path: str, metadata_only: bool = False) -> dict | None:
        """GET a path of the API as JSON (None for 404); ``metadata_only`` asks a list for names and labels only."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.server + path)
        if metadata_only:
            req.add_header("Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def merge_patch(self, path: str, body: dict) -> None:
        """A JSON merge patch of one object (a 404: the object is gone, nothing to do)."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.server + path, data=json.dumps(body).encode(), method="PATCH")
        req.add_header("Content-Type", "application/merge-patch+json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


def read_cluster(api: ApiClient) -> tuple[list[dict], list[dict], list[dict]]:
    """istiod Deployments, ConfigMap names (metadata only) and Istio's MutatingWebhookConfigurations."""
    namespace = f"/namespaces/{ISTIOD_NAMESPACE}"
    deployments = api.get(f"/apis/apps/v1{namespace}/deployments?labelSelector=app%3Distiod") or {}
    configmaps = api.get(f"/api/v1{namespace}/configmaps", metadata_only=True) or {}
    mwcs = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    webhooks = api.get(f"{mwcs}?labelSelector=istio.io%2Frev")
    return deployments.get("items") or [], configmaps.get("items") or [], (webhooks or {}).get("items") or []


def start_pilot_discovery(revision: Revision) -> subprocess.Popen:
    logdir = state_dir() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    workdir = state_dir() / "istiod" / revision.name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ports = revision.ports
    # The Deployment decides the DEPLOYMENT_ENV variables (one it does not set is unset here too); the settings below
    # are the host process's own and win over it.
    env = {name: value for name, value in os.environ.items() if name not in DEPLOYMENT_ENV}
    env.update(revision.env)
    env.update(
        {
            "KUBECONFIG": str(state_dir() / "kubeconfig"),
            "POD_NAMESPACE": ISTIOD_NAMESPACE,
            "POD_NAME": f"istiod-{revision.name}-host",
            "REVISION": revision.name,
            "ISTIOD_CUSTOM_HOST": "localhost",
            "PILOT_ENABLE_ANALYSIS": "false",
            "CLUSTER_ID": "Kubernetes",
            "ENABLE_CA_SERVER": "true",
            # The local data plane (dataplane.py) runs upstream Envoy, which rejects the two Istio-only HTTP
            # filters these add. Real clusters keep Istio's defaults; only this host istiod changes them.
            "PILOT_ENABLE_METADATA_EXCHANGE": "false",
            "PILOT_ENABLE_ALPN_FILTER": "false",
        }
    )
    log_file = open(logdir / revision.log_name, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            revision.binary,
            "discovery",
            f"--kubeconfig={state_dir() / 'kubeconfig'}",
            f"--kubectl={find_kubectl()}",
            f"--httpsAddr=127.0.0.1:{ports['https']}",
            f"--httpAddr=127.0.0.1:{ports['http']}",
            f"--grpcAddr=127.0.0.1:{ports['grpc']}",
            f"--secureGRPCAddr=127.0.0.1:{ports['secure_grpc']}",
            f"--monitoringAddr=127.0.0.1:{ports['monitoring']}",
            f"--ctrlz_port={ports['ctrlz']}",
            "--keepaliveMaxServerConnectionAge=30m",
            "--log_output_level=default:info",
        ],
        cwd=workdir,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def describe(revision: Revision) -> str:
    ports = revision.ports
    env = "".join(f", {name}={value}" for name, value in revision.env)
    return (
        f"revision {revision.name}: pilot-discovery {revision.version}, webhooks https://localhost:{ports['https']}, "
        f"xDS {ports['grpc']}/{ports['secure_grpc']}, monitoring {ports['monitoring']}{env} "
        f"(log: {state_dir() / 'logs' / revision.log_name})"
    )


def write_revisions(running: dict[str, tuple[Revision, subprocess.Popen]]) -> None:
    status = {
        rev: {
            **asdict(spec),
            "env": dict(spec.env),
            "ports": spec.ports,
            "pid": proc.pid,
            "log": str(state_dir() / "logs" / spec.log_name),
        }
        for rev, (spec, proc) in sorted(running.items())
    }
    tmp = revisions_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    tmp.replace(revisions_file())


def cmd_istiod_supervise(args: list[str]) -> None:
    """Foreground loop (run detached by `up`): keep one pilot-discovery per istiod revision in step with the cluster."""
    import signal

    api = ApiClient()
    v = read_versions()
    block = cluster_block()
    running: dict[str, tuple[Revision, subprocess.Popen]] = {}
    told: set[str] = set()
    stopping = False

    def stop(*_a: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failures = 0
    write_revisions(running)
    keeper = Keeper()
    cni = CniAgentStandIn(api)
    while not stopping:
        try:
            keeper.tick()
        except OSError as exc:
            log(f"supervisor: cannot check the control plane's processes ({exc})")
        try:
            for change in cni.tick():
                log(f"supervisor: istio-cni stand-in: pod {change}")
        except Exception as exc:  # API briefly unavailable: the next tick tries again
            log(f"supervisor: istio-cni stand-in: cannot read or annotate pods ({exc})")
        try:
            builds = {ver: path for ver, path in istio_builds(v).items() if path.is_file()}
            wanted, notes = plan_revisions(*read_cluster(api), builds, v["ISTIO_VERSION"], block)
            failures = 0
            for note in notes:
                if note not in told:
                    log(f"supervisor: {note}")
            told = set(notes)
        except Exception as exc:  # API briefly unavailable: keep the current state
            failures += 1
            log(f"supervisor: cannot read the cluster ({exc}); keeping istiod as it is")
            wanted = {rev: spec for rev, (spec, proc) in running.items() if proc.poll() is None}
        before = {rev: proc.pid for rev, (spec, proc) in running.items()}
        for rev, (spec, proc) in list(running.items()):
            if proc.poll() is not None:
                log(f"supervisor: revision {rev}'s pilot-discovery exited with {proc.returncode}; restarting it")
            elif rev not in wanted:
                log(f"supervisor: revision {rev} is scaled to 0 or uninstalled; stopping its pilot-discovery")
                stop_process(proc)
            elif wanted[rev] != spec:
                log(
                    f"supervisor: revision {rev}'s port slot, Istio build or environment ({', '.join(DEPLOYMENT_ENV)}) "
                    "changed; restarting its pilot-discovery"
                )
                stop_process(proc)
            else:
                continue
            del running[rev]
        for rev, spec in wanted.items():
            if rev in running:
                continue
            log(f"supervisor: istiod {describe(spec)}: starting it on the host")
            try:
                running[rev] = (spec, start_pilot_discovery(spec))
            except OSError as exc:
                log(f"supervisor: cannot start pilot-discovery for revision {rev} ({exc}); retrying")
        if {rev: proc.pid for rev, (spec, proc) in running.items()} != before:
            write_revisions(running)
        time.sleep(1 if failures == 0 else min(10, failures))
    for spec, proc in running.values():
        if proc.poll() is None:
            log(f"supervisor: stopping revision {spec.name}'s pilot-discovery")
            stop_process(proc)
    revisions_file().unlink(missing_ok=True)


def start_supervisor() -> None:
    pidfile = supervisor_pidfile()
    if pid_alive(pidfile):
        return
    logdir = state_dir() / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log_file = open(logdir / "istiod-supervisor.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, str(LOCAL_CLUSTER_DIR / "cluster.py"), "istiod-supervise"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, MESHOPS_CLUSTER_NAME=CLUSTER_NAME),
    )
    pidfile.write_text(str(proc.pid))
    log(f"host istiod supervisor started (pid {proc.pid}); one pilot-discovery runs per installed istiod revision")


def own_pilot_discoveries() -> list[int]:
    """The pids of this cluster's pilot-discovery processes, of either Istio build: those started with its
    kubeconfig (start_pilot_discovery's first flag), so another cluster's on the same host are left alone."""
    binaries = {str(path) for path in istio_builds(read_versions()).values()}
    flag = f"--kubeconfig={state_dir() / 'kubeconfig'}"
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # it exited meanwhile
            continue
        if argv[0] in binaries and argv[1:3] == ["discovery", flag]:
            pids.append(int(proc.name))
    return pids


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop_supervisor() -> None:
    import signal

    stop_pidfile(supervisor_pidfile())
    # pilot-discovery processes left behind by a killed supervisor: SIGTERM, then SIGKILL after 20 s.
    pids = own_pilot_discoveries()
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = set(own_pilot_discoveries())
        pids = [pid for pid in pids if pid in alive]
    signal_all(pids, signal.SIGKILL)


def served_revisions() -> dict:
    """What the supervisor serves now (revisions_file), empty when it runs nothing."""
    if not pid_alive(supervisor_pidfile()):
        return {}
    try:
        return json.loads(revisions_file().read_text())
    except (OSError, ValueError):
        return {}
