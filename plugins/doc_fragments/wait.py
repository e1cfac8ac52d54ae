# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Options shared by meshops.istio modules that can wait for a condition."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Wait until the condition the module reports on is met, polling with a short backoff (no fixed sleeps).
      - When the condition is still not met after O(wait_timeout) seconds, the module fails and lists the problems.
    type: bool
    default: false
  wait_timeout:
    description:
      - How many seconds to wait when O(wait=true).
      - The module's action plugin waits in slices of a few seconds, one module run each, and prints what is still
        missing after each, so that a long wait shows its progress; O(wait_timeout) is the whole wait.
    type: int
    default: 300
  waited:
    description:
      - Seconds an earlier run of the same wait has already waited (the action plugin's slices), counted in the
        failure message. Not for playbooks.
    type: int
    default: 0
"""
