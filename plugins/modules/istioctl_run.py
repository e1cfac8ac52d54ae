#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: istioctl_run
short_description: Run a read-only istioctl command on the Ansible controller, with a time limit
version_added: 0.3.0
description:
  - Runs O(argv) on the Ansible controller (or in the AWX execution environment), where the collection's other
    modules run too, and returns what it printed. The precheck of meshops.istio.istio_install_minimal and the
    analyze gate of meshops.istio.rollout run C(istioctl version), C(istioctl x precheck) and C(istioctl analyze)
    with it, and read the result with the filters meshops.istio.istioctl_program and meshops.istio.istioctl_findings.
  - A program that runs longer than O(timeout) is stopped (C(istioctl analyze) waits for ever for a resource type a
    CRD no longer serves, for example Gateway API CRDs older than the ones istioctl reads).
  - Never fails because of the program's own exit code, or because the program cannot start - the result says so
    (O(argv) commands are read-only checks whose output decides). Invalid arguments fail the task.
  - An action plugin that starts no module process.
  - Give only paths on the command line (a kubeconfig's path, never its contents), and set C(no_log) on the task
    when the output could quote a credential.
author:
  - meshops.istio developers (@meshops)
attributes:
  check_mode:
    support: full
    description: Runs in check mode as well; give it only commands that change nothing.
  diff_mode:
    support: none
    description: No diff is shown.
  idempotent:
    support: full
    description: Reports C(changed=false) always; the commands it is for change nothing.
options:
  argv:
    description: The command, the istioctl program first (a name on C(PATH) or a path).
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds after which the program is stopped.
    type: int
    default: 300
"""

EXAMPLES = r"""
- name: Run istioctl analyze over all namespaces, for at most five minutes
  meshops.istio.istioctl_run:
    argv: [istioctl, analyze, --all-namespaces, --output=json, --kubeconfig=/secure/kubeconfig]
    timeout: 300
  register: analyze_run
  no_log: true

- name: Fail on its errors
  ansible.builtin.assert:
    that: findings.passed
    fail_msg: "{{ findings.failure }}"
  vars:
    findings: "{{ analyze_run | meshops.istio.istioctl_findings('analyze') }}"
"""

RETURN = r"""
rc:
  description: The exit code; null when the program did not start or was stopped.
  returned: always
  type: int
stdout:
  description: What it printed on stdout (without the trailing newline).
  returned: always
  type: str
stderr:
  description: What it printed on stderr (without the trailing newline).
  returned: always
  type: str
started:
  description: Whether the program started; false when it does not exist or may not be executed (see RV(msg)).
  returned: always
  type: bool
timed_out:
  description: Whether it ran longer than O(timeout) and was stopped.
  returned: always
  type: bool
msg:
  description: Why it did not start or finish, C(non-zero return code), or empty.
  returned: always
  type: str
seconds:
  description: How long it ran.
  returned: always
  type: float
cmd:
  description: O(argv).
  returned: always
  type: list
  elements: str
"""
