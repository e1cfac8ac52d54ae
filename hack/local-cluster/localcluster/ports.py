"""Every host port of a local cluster, worked out in one place: its port block, its istiod slots, its Prometheus.

Several clusters can run side by side (``cluster.py --name NAME``). Each has a **port block**: the default cluster
``meshops`` always has block 0, the ports of a single cluster; any other cluster takes, at ``up``, the lowest block
from 1 that no other cluster's state directory records, and records it in its own (``ports.json``) until ``down``.

Block b adds 1000 * b to every istiod port and 100 * b to the Prometheus ports. No two ports of any blocks and slots
are equal: within a block every kind of port keeps its own last two digits (webhooks 17-26, xDS 10 and 12,
monitoring 14, HTTP 80, ControlZ 76, Prometheus 90 and its metrics source 91), and the offsets (100 * slot, 1000 *
block, 100 * block for Prometheus) never reach another port of the same kind. The highest port of the last block
stays below 21000, where the data plane's sidecar ports begin (dataplane.py), and far below kwokctl's (32766 down).

The functions above the line are pure; those below it read and write the state directories.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .common import CLUSTER_NAME, cache_dir, die, state_dir

DEFAULT_CLUSTER = "meshops"
BLOCKS = 6
ISTIOD_BLOCK_STEP = 1000
PROMETHEUS_BLOCK_STEP = 100

# Slot 0 of block 0: the ports of a single istiod, which the default cluster's webhooks and data plane use.
SLOT_0_PORTS = {"https": 15017, "grpc": 15010, "secure_grpc": 15012, "monitoring": 15014, "http": 15080, "ctrlz": 9876}
SLOTS = 10
# Block 0's loopback Prometheus and the Istio-shaped series it scrapes, and the variables that move them (block 0
# only: a variable exported for the default cluster must not put a named one on the same port).
PROMETHEUS_PORTS = {"prometheus": 19090, "metrics_source": 19091}
PROMETHEUS_PORT_VARIABLES = {"prometheus": "MESHOPS_PROMETHEUS_PORT", "metrics_source": "MESHOPS_METRICS_SOURCE_PORT"}


def check_block(block: int) -> None:
    if not 0 <= block < BLOCKS:
        raise ValueError(f"port block {block} is not between 0 and {BLOCKS - 1}")


def slot_ports(slot: int, block: int = 0) -> dict[str, int]:
    """The loopback ports of one istiod slot: the webhook port plus ``slot``, every other port plus 100 * ``slot``;
    all of them plus 1000 * ``block``."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot} is not between 0 and {SLOTS - 1}")
    check_block(block)
    return {
        name: port + (slot if name == "https" else 100 * slot) + ISTIOD_BLOCK_STEP * block
        for name, port in SLOT_0_PORTS.items()
    }


def slot_of_webhook_port(port: int, block: int = 0) -> int | None:
    """The slot of ``block`` whose webhooks listen on ``port``, or None when no slot of that block does."""
    slot = port - slot_ports(0, block)["https"]
    return slot if 0 <= slot < SLOTS else None


def webhook_urls(slot: int = 0, block: int = 0) -> dict[str, str]:
    """The injection and validation webhook URLs of the istiod that serves ``slot`` of ``block``."""
    port = slot_ports(slot, block)["https"]
    return {"injection": f"https://localhost:{port}/inject", "validation": f"https://localhost:{port}/validate"}


def prometheus_ports(block: int, environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The loopback Prometheus port and its metrics source port of ``block``; ``environ``'s
    MESHOPS_PROMETHEUS_PORT and MESHOPS_METRICS_SOURCE_PORT move block 0's."""
    check_block(block)
    ports = {name: port + PROMETHEUS_BLOCK_STEP * block for name, port in PROMETHEUS_PORTS.items()}
    if block == 0:
        for name, variable in PROMETHEUS_PORT_VARIABLES.items():
            if (environ or {}).get(variable):
                ports[name] = int(environ[variable])
    return ports


def choose_block(name: str, taken: set[int]) -> int | None:
    """The block of cluster ``name``: 0 for the default cluster, else the lowest from 1 not in ``taken`` (None when
    every block is taken)."""
    if name == DEFAULT_CLUSTER:
        return 0
    return next((block for block in range(1, BLOCKS) if block not in taken), None)


# ---------------------------------------------------------------------------------------- the recorded blocks


def ports_file(directory: Path | None = None) -> Path:
    """Where a cluster's state directory records its block (the current cluster's by default)."""
    return (directory or state_dir()) / "ports.json"


def recorded_block(directory: Path) -> int | None:
    try:
        return int(json.loads(ports_file(directory).read_text())["block"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def blocks_of_other_clusters() -> dict[int, str]:
    """Block -> cluster name, for every other cluster whose state directory records one."""
    taken: dict[int, str] = {}
    clusters = cache_dir() / "clusters"
    for directory in sorted(clusters.iterdir()) if clusters.is_dir() else []:
        block = recorded_block(directory)
        if directory.name != CLUSTER_NAME and block is not None:
            taken.setdefault(block, directory.name)
    return taken


def cluster_block() -> int:
    """This cluster's block: the recorded one, else the one ``up`` would take now."""
    recorded = None if CLUSTER_NAME == DEFAULT_CLUSTER else recorded_block(state_dir())
    if recorded is not None:
        return recorded
    taken = blocks_of_other_clusters()
    block = choose_block(CLUSTER_NAME, set(taken))
    if block is None:
        holders = ", ".join(f"{name} (block {b})" for b, name in sorted(taken.items()))
        die(f"no port block is free for cluster {CLUSTER_NAME!r}: {holders} hold them; bring one down")
    return block


def claim_block() -> int:
    """``up``: record this cluster's block in its state directory (hold ``host_lock`` around it)."""
    block = cluster_block()
    if CLUSTER_NAME != DEFAULT_CLUSTER and recorded_block(state_dir()) is None:
        state_dir().mkdir(parents=True, exist_ok=True)
        ports_file().write_text(json.dumps({"block": block}) + "\n")
    return block


def istiod_ports(slot: int = 0) -> dict[str, int]:
    """This cluster's istiod ports of ``slot``."""
    return slot_ports(slot, cluster_block())


def cluster_prometheus_ports() -> dict[str, int]:
    """This cluster's loopback Prometheus and metrics source ports."""
    return prometheus_ports(cluster_block(), os.environ)


@contextmanager
def host_lock() -> Iterator[None]:
    """One cluster at a time chooses ports on this host: its block here, and kwokctl its components' (kwokctl takes
    the first ports from 32766 down that nothing listens on, so two creations at once could pick the same)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "clusters.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
