"""Benchmark step 1 on the local cluster: converge, no-op rerun and check mode, per method.

Usage (after `make venv cluster-build`):  .venv/bin/python bench/step1_install.py [--runs N]

For each method (helm, istioctl) it starts from a fresh local cluster, then times: the
first converge of istio_install_minimal (install + readiness gate), a no-op rerun and a
check-mode run, N times each for the reruns. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from conftest import CLUSTER, cluster_paths, local_install_vars, run_playbook


def timed(label, options, tmp, runs, check=False):
    seconds = []
    for _run in range(runs):
        result = run_playbook("install_minimal.yml", options, tmp, check=check)
        if result.rc != 0:
            raise SystemExit(f"{label} failed:\n{result.out[-3000:]}")
        seconds.append(result.seconds)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for method in ("helm", "istioctl"):
        subprocess.run([*CLUSTER, "down"], check=True, capture_output=True)
        subprocess.run([*CLUSTER, "up"], check=True, capture_output=True)
        paths = cluster_paths()
        options = local_install_vars(paths, istio_install_minimal_method=method)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            rows.append((method, "converge (install + gate)", timed(method, options, tmp, 1)))
            rows.append((method, "no-op rerun", timed(method, options, tmp, args.runs)))
            rows.append((method, "check mode (converged)", timed(method, options, tmp, args.runs, check=True)))
    subprocess.run([*CLUSTER, "down"], check=True, capture_output=True)
    print(f"{'method':9} {'run':28} {'n':>2} {'median s':>9} {'min s':>7} {'max s':>7}")
    for method, label, secs in rows:
        print(
            f"{method:9} {label:28} {len(secs):>2} {statistics.median(secs):>9.1f} {min(secs):>7.1f} {max(secs):>7.1f}"
        )


if __name__ == "__main__":
    main()
