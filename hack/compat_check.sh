#!/usr/bin/env bash
# `make compat`: the unit tests and the playbooks' syntax checks on the oldest ansible-core the
# collection claims (meta/runtime.yml requires_ansible), from .venv-compat (requirements-compat.txt).
# The syntax checks run again with .venv's pinned ansible-core, so a failure says which core it is on.
#
#   hack/compat_check.sh COMPAT_BIN MAIN_BIN      (the Makefile passes .venv-compat/bin and .venv/bin)
#
# Collections come from a tree of their own, .build/compat-collections, with exactly what galaxy.yml
# declares: meshops.istio (a symlink to this checkout) and kubernetes.core, a symlink to the copy that
# .venv's pinned `ansible` package bundles (ansible==12.3.0: kubernetes.core 6.2.0). That is the simplest
# source that needs nothing installed by hand: no Galaxy here, kubernetes.core is not on PyPI by itself,
# and ansible 9.x (the package line for core 2.16) bundles kubernetes.core 2.4.2, older than the >=5.0.0
# galaxy.yml requires. Whether that kubernetes.core supports this core is checked below, not assumed.
set -euo pipefail

compat_bin=$(realpath "$1")
main_bin=$(realpath "$2")
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tree="$repo/.build/compat-collections"
k8s_core=$("$main_bin/python" -c \
  'import ansible_collections.kubernetes as k; print(list(k.__path__)[0])')/core
mkdir -p "$tree/ansible_collections/meshops" "$tree/ansible_collections/kubernetes"
ln -sfn "$repo" "$tree/ansible_collections/meshops/istio"
ln -sfn "$k8s_core" "$tree/ansible_collections/kubernetes/core"
export ANSIBLE_COLLECTIONS_PATH="$tree"
# ansible-* started by a test resolve to the old core first; other tools (ansible-builder) to .venv's.
export PATH="$compat_bin:$PATH"

# The venv must hold the oldest claimed core line (a requires_ansible bump without a new
# requirements-compat.txt fails here), and both collections must accept that core.
"$compat_bin/python" - "$repo/meta/runtime.yml" "$k8s_core/meta/runtime.yml" <<'EOF'
import sys

import yaml
from ansible.release import __version__
from packaging.specifiers import SpecifierSet
from packaging.version import Version

core = Version(__version__)
problems = []
for name, path in (("meshops.istio", sys.argv[1]), ("kubernetes.core", sys.argv[2])):
    with open(path) as f:
        claim = SpecifierSet(yaml.safe_load(f)["requires_ansible"])
    if core not in claim:
        problems.append(f"{name} requires_ansible {claim} ({path}) excludes ansible-core {core}")
    if name == "meshops.istio":
        oldest = min(Version(s.version) for s in claim if s.operator in (">=", "=="))
        if oldest.release[:2] != core.release[:2]:
            problems.append(
                f"meshops.istio claims ansible-core {claim}: requirements-compat.txt pins {core},"
                f" not the oldest claimed line {oldest.major}.{oldest.minor}"
            )
for problem in problems:
    print(f"compat: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

core_of() { "$1/python" -c 'from ansible.release import __version__; print("ansible-core", __version__)'; }
compat_core=$(core_of "$compat_bin")
main_core=$(core_of "$main_bin")
echo "== unit tests on the oldest claimed core: $compat_core (.venv-compat)"
# PYTHONPATH: the tests import kubernetes.core's module_utils as plain Python (module_utils/k8s/), which
# .venv finds in its own site-packages (the ansible package) and .venv-compat only through the tree.
# No cache provider: .pytest_cache stays the one `make unit` (.venv's core) writes.
PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}" "$compat_bin/python" -m pytest -q -p no:cacheprovider tests/unit

# The inventory `make demo` and the integration tests use, so the playbooks' group exists.
failed=()
for bin in "$compat_bin" "$main_bin"; do
  core=$(core_of "$bin")
  echo "== ansible-playbook --syntax-check on $core ($(basename "$(dirname "$bin")"))"
  for playbook in playbooks/*.yml; do
    if out=$("$bin/ansible-playbook" --syntax-check -i hack/local-cluster/hosts.yml "$playbook" 2>&1); then
      echo "  ok      $playbook"
    else
      echo "  FAILED  $playbook"
      sed 's/^/    /' <<<"$out"
      failed+=("$playbook on $core")
    fi
  done
done
if ((${#failed[@]})); then
  printf 'compat: syntax check failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "== compat: unit tests on $compat_core; syntax checks on $compat_core and $main_core"
