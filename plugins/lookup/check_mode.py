# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one home of "is this run in check mode?" for every role of the collection."""

from __future__ import annotations

DOCUMENTATION = r"""
name: check_mode
author: meshops.istio developers (@meshops)
version_added: 0.2.0
short_description: Whether the running task is in check mode, as the collection's roles decide it
description:
  - Returns V(true) when the play runs in check mode (C(--check), C(ansible_check_mode)) or when the caller set
    C(meshops_check_mode) (the drift entry point sets it to V(true) for the block it runs in check mode with the
    C(check_mode) keyword, which C(ansible_check_mode) does not reflect).
  - C(meshops_check_mode), when set, wins over C(ansible_check_mode).
  - Every role of the collection asks this lookup rather than writing the expression out, so that the answer has one
    home.
options: {}
notes:
  - Takes no terms.
"""

EXAMPLES = r"""
- name: Wait for the gate only when the run really changed something
  meshops.istio.sidecar_status:
    namespaces: [shop]
    wait: true
  when: not lookup('meshops.istio.check_mode')
"""

RETURN = r"""
_raw:
  description: One boolean, V(true) in check mode.
  type: list
  elements: bool
"""

from ansible.errors import AnsibleLookupError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("lookup meshops.istio.check_mode takes no terms")
        variables = variables or {}
        value = variables.get("meshops_check_mode")
        if value is None:
            value = variables.get("ansible_check_mode", False)
        if isinstance(value, str):
            value = self._templar.template(value)
        try:
            return [boolean(value, strict=True)]
        except TypeError as exc:
            raise AnsibleLookupError(f"meshops_check_mode is {value!r}: set it to true or false.") from exc
