"""Build and run a real Kubernetes control plane with no container engine.

Usage: cluster.py build | up | down | status | paths | charts | revision-values | istiod-supervise | restart

``cluster.py --name NAME COMMAND`` acts on the cluster NAME (default: $MESHOPS_CLUSTER_NAME, else ``meshops``).
Several clusters run side by side, each on host ports of its own (localcluster/ports.py).

* ``build`` compiles etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
  kwok, kwokctl, helm, istioctl, pilot-discovery and pilot-agent from their Go modules at the
  versions pinned in ``versions.env`` and caches them outside the repository
  (``$MESHOPS_CACHE_DIR``, default ``~/.cache/meshops-istio``), keyed by version.
  A second run builds nothing. ``build --previous`` also builds the previous Istio
  (``ISTIO_PREVIOUS_VERSION``) beside it, for revision-upgrade tests.
* ``up`` starts the cluster with kwokctl's binary runtime and the cached binaries,
  creates fake nodes, writes a kubeconfig and returns once the API answers and
  every node is Ready. ``down`` stops every process and removes the cluster state.
  Both are idempotent.
* ``status`` and ``paths`` print JSON (versions, and the kubeconfig, binary, chart and addon paths the playbooks
  read; ``status`` also the istiod revisions served on the host); ``charts [--previous]`` packages Istio's charts and
  addon manifests from the module source; ``revision-values REVISION SLOT`` prints the install values that give an
  istiod revision host ports of its own; ``istiod-supervise`` is the host process ``up`` starts to run one
  pilot-discovery per istiod revision, and starts kube-controller-manager, kube-scheduler and kwok-controller again
  when they exit; ``restart COMPONENT [DOWN_SECONDS]`` stops a control-plane process (SIGKILL), keeps it down that
  long and starts it again (``restart kube-apiserver 20``: an API server that restarts, for fault tests).

This file is the command line only; the package ``localcluster`` beside it does the work: ``common``
(directories, versions.env, kubectl, pidfiles), ``ports`` (every host port, by port block), ``build`` (``build``),
``sources`` (``charts``, ``paths``), ``lifecycle`` (``up``, ``down``, ``status``), ``istiod`` (``istiod-supervise``),
``components`` (the control plane's processes kept running, ``restart``)
and ``prometheus`` (the loopback Prometheus and the Istio-shaped series it serves).

Only the Python standard library is used, so this runs before any virtualenv.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

# The package beside this file, whichever directory runs it (Make, Molecule, the supervisor `up` starts) and when
# the unit tests load it by path.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Command -> (module of localcluster, function). The module is imported once --name has set MESHOPS_CLUSTER_NAME,
# which localcluster.common reads at import.
COMMANDS = {
    "build": ("build", "cmd_build"),
    "up": ("lifecycle", "cmd_up"),
    "down": ("lifecycle", "cmd_down"),
    "status": ("lifecycle", "cmd_status"),
    "paths": ("sources", "cmd_paths"),
    "charts": ("sources", "cmd_charts"),
    "revision-values": ("istiod", "cmd_revision_values"),
    "istiod-supervise": ("istiod", "cmd_istiod_supervise"),
    "restart": ("components", "cmd_restart"),
}
# kwokctl names its cluster's directory and kubeconfig context after it.
CLUSTER_NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def take_name_option(argv: list[str]) -> list[str]:
    """Apply a leading ``--name NAME`` (or ``--name=NAME``) to MESHOPS_CLUSTER_NAME; return the rest."""
    if argv and argv[0].startswith("--name="):
        os.environ["MESHOPS_CLUSTER_NAME"] = argv[0].partition("=")[2]
        argv = argv[1:]
    elif argv and argv[0] == "--name" and len(argv) > 1:
        os.environ["MESHOPS_CLUSTER_NAME"] = argv[1]
        argv = argv[2:]
    name = os.environ.get("MESHOPS_CLUSTER_NAME", "meshops")
    if not CLUSTER_NAME_PATTERN.fullmatch(name):
        raise SystemExit(f"cluster name {name!r}: use lower-case letters, digits and '-' (at most 63)")
    return argv


def main(argv: list[str]) -> None:
    argv = take_name_option(argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    module, function = COMMANDS[argv[0]]
    getattr(importlib.import_module(f"localcluster.{module}"), function)(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
