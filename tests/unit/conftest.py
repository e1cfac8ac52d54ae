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


def filter_error(call) -> str:
    """The message of the AnsibleFilterError that ``call()`` raises (a filter handing on a refusal)."""
    from ansible.errors import AnsibleFilterError

    try:
        call()
    except AnsibleFilterError as exc:
        return str(exc)
    raise AssertionError("no AnsibleFilterError was raised")


def assert_registered(plugin, count: int) -> None:
    """The filter plugin module registers ``count`` filters, each the module's function of that name, each with
    its documentation (name.yml) beside it."""
    filters = plugin.FilterModule().filters()
    assert len(filters) == count
    for name, function in filters.items():
        assert getattr(plugin, name) is function, name
        assert (Path(plugin.__file__).parent / f"{name}.yml").is_file(), name
