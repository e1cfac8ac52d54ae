#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: report_files
short_description: Write report files on the Ansible controller
version_added: 0.2.0
description:
  - Writes each of O(files) into O(dir) on the Ansible controller (created when missing, mode C(0755);
    files mode C(0644)), atomically (a temporary file in the same directory, then a rename), so a reader never
    sees half a report.
  - An action plugin that starts no module process, where M(ansible.builtin.file) and a loop of
    M(ansible.builtin.copy) delegated to localhost would start one per file. The drift playbook writes its JSON
    and Markdown reports with it.
  - A report is the product of a check-mode run, so the files are written in check mode too.
author:
  - meshops.istio developers (@meshops)
attributes:
  check_mode:
    support: full
    description: Writes the files in check mode as well (they are the run's report, not a change to a cluster).
  diff_mode:
    support: none
    description: No diff is shown.
  idempotent:
    support: full
    description: A file that already holds the content is left alone and not reported as changed.
options:
  dir:
    description: The report directory on the controller.
    type: path
    required: true
  files:
    description: The files to write.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The file's name, a plain name inside O(dir).
        type: str
        required: true
      content:
        description: What the file holds.
        type: str
        default: ""
"""

EXAMPLES = r"""
- name: Write the report for people and for machines
  meshops.istio.report_files:
    dir: "{{ playbook_dir }}/reports"
    files:
      - name: "{{ inventory_hostname }}.json"
        content: "{{ findings | to_nice_json }}"
      - name: "{{ inventory_hostname }}.md"
        content: "{{ findings | meshops.istio.drift_markdown }}"
"""

RETURN = r"""
paths:
  description: The path of every file of O(files).
  returned: success
  type: list
  elements: str
written:
  description: The files whose content changed (or that were created).
  returned: success
  type: list
  elements: str
"""
