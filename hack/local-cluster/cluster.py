"""Build and run a real Kubernetes control plane with no container engine.

Usage: cluster.py build | up | down | status | paths | charts | revision-values | istiod-supervise

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
  pilot-discovery per istiod revision.

This file is the command line only; the package ``localcluster`` beside it does the work: ``common``
(directories, versions.env, kubectl, pidfiles), ``build`` (``build``), ``sources`` (``charts``, ``paths``),
``lifecycle`` (``up``, ``down``, ``status``), ``istiod`` (``istiod-supervise``) and ``prometheus`` (the loopback
Prometheus and the Istio-shaped series it serves).

Only the Python standard library is used, so this runs before any virtualenv.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The package beside this file, whichever directory runs it (Make, Molecule, the supervisor `up` starts) and when
# the unit tests load it by path.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from localcluster.build import cmd_build  # noqa: E402
from localcluster.istiod import cmd_istiod_supervise, cmd_revision_values  # noqa: E402
from localcluster.lifecycle import cmd_down, cmd_status, cmd_up  # noqa: E402
from localcluster.sources import cmd_charts, cmd_paths  # noqa: E402

COMMANDS = {
    "build": cmd_build,
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "paths": cmd_paths,
    "charts": cmd_charts,
    "revision-values": cmd_revision_values,
    "istiod-supervise": cmd_istiod_supervise,
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
