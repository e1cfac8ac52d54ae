"""Unit-test helpers: load repository scripts and collection code without an install."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Import the collection as ansible_collections.meshops.istio through the symlink that
# `make venv` places under .build/collections (the layout ansible-test also uses).
_COLLECTIONS = REPO / ".build" / "collections"
if str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))

# The local cluster's package (hack/local-cluster/localcluster), imported as cluster.py and dataplane.py import it.
LOCAL_CLUSTER_DIR = REPO / "hack" / "local-cluster"
if str(LOCAL_CLUSTER_DIR) not in sys.path:
    sys.path.insert(0, str(LOCAL_CLUSTER_DIR))


def load_script(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
