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
    type: int
    default: 300
"""
