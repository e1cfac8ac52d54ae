# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The collection's module_utils, imported by the filter plugins when a filter first uses them.

Why not at the top of each filter file: Ansible runs every task in a worker process forked for that task, and a
worker that templates any meshops.istio filter loads the collection's filter files one after another until it finds
the filter's name. Ansible's collection loader compiles module_utils from source on every import (it writes and
reads no bytecode for them), so importing every filter file's module_utils at load time cost each such worker about
0.1 s, repeated in every task: 1.5 to 2 s of a no-op drift (docs/scale.md, "Per-cluster cost (issue 31, item 9)").
With :func:`module_utils`, a worker compiles only the module_utils of the filters its task calls. A filter file must
therefore read nothing from these stand-ins at load time (FilterModule.filters() included): wrap such a function in
one of the file's own (tests/unit/test_filter_imports.py checks this).
"""

from __future__ import annotations

import importlib
from types import ModuleType

PACKAGE = "ansible_collections.meshops.istio.plugins.module_utils"


class _Deferred:
    """Stands for module_utils.NAME; the first attribute read imports it (later reads find it in sys.modules)."""

    def __init__(self, name: str) -> None:
        self._module_name = f"{PACKAGE}.{name}"

    def _module(self) -> ModuleType:
        return importlib.import_module(self._module_name)

    def __getattr__(self, attribute: str):
        return getattr(self._module(), attribute)

    def __repr__(self) -> str:
        return f"<module {self._module_name}, imported at first use>"


def module_utils(name: str) -> _Deferred:
    """module_utils.NAME of meshops.istio (NAME: a module of plugins/module_utils, e.g. ``report``), imported when a
    filter first reads one of its attributes."""
    return _Deferred(name)
