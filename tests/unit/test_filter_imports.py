"""The filter plugins import their module_utils at first use (plugins/plugin_utils/lazy.py).

Ansible forks a worker for every task, and a worker that templates a meshops.istio filter loads the filter files until
it finds the name; the collection loader compiles each module_utils from source. These tests run Ansible's own
loader in a fresh interpreter, as a worker does.
"""

import json
import subprocess
import sys

from conftest import REPO

# What loading every filter file may import: the small module_utils used at definition time.
AT_LOAD = ["errors", "istio_labels", "redact"]

LOADER = """
import json, sys
from ansible.plugins.loader import filter_loader, init_plugin_loader
init_plugin_loader([sys.argv[1]])
def imported():
    prefix = "ansible_collections.meshops.istio.plugins.module_utils."
    return sorted(m[len(prefix):] for m in sys.modules if m.startswith(prefix))
# versions.py is the last file in name order: finding its filter loads every filter file.
loaded = filter_loader.get("meshops.istio.istio_kubernetes_compatibility")
after_load = imported()
drift = filter_loader.get("meshops.istio.drift_changes")
change = {"changed": True, "diff": {"before": {"spec": {"a": 1}}, "after": {"spec": {"a": 2}}}}
drift.j2_function({"traffic": [{"kind": "VirtualService", "name": "v", "namespace": "n", **change}]}, [])
print(json.dumps({"found": loaded is not None, "load": after_load, "call": imported()}))
"""


def run_loader() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(REPO / ".build" / "collections")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loading_every_filter_file_imports_only_the_small_module_utils_and_a_call_imports_what_it_uses():
    seen = run_loader()
    assert seen["found"] is True
    assert seen["load"] == AT_LOAD, seen
    # drift_changes flattens the diff with module_utils objects: that comes with the call, and nothing else does
    # (analysis, which drift.py's other filters use, stays unimported).
    assert seen["call"] == sorted([*AT_LOAD, "objects"]), seen


def test_the_stand_in_imports_its_module_at_the_first_attribute_read():
    from ansible_collections.meshops.istio.plugins.module_utils import objects
    from ansible_collections.meshops.istio.plugins.plugin_utils.lazy import module_utils

    deferred = module_utils("objects")
    assert deferred.flatten is objects.flatten
    assert "imported at first use" in repr(deferred)
