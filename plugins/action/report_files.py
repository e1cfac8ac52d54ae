# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Write report files on the Ansible controller, without starting a module process (see the module's docs)."""

from __future__ import annotations

import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase


def _write(path: str, data: bytes, mode: int) -> bool:
    """Write data to path atomically (a temporary file in the same directory, then a rename); False when the file
    already holds exactly that."""
    try:
        with open(path, "rb") as current:
            if current.read() == data:
                if os.stat(path).st_mode & 0o777 != mode:
                    os.chmod(path, mode)
                    return True
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".report-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dir", "files"))
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        directory = self._task.args.get("dir")
        files = self._task.args.get("files")
        if not isinstance(directory, str) or not directory:
            raise AnsibleActionFail("report_files: dir must be the path of the report directory on the controller.")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and "name" in f for f in files):
            raise AnsibleActionFail("report_files: files must be a list of {name, content}, one per file.")
        names = [f["name"] for f in files]
        bad = [str(n) for n in names if not isinstance(n, str) or not n or "/" in n or n in (".", "..")]
        if bad:
            raise AnsibleActionFail(f"report_files: file names must be plain names inside dir, not {', '.join(bad)}.")
        directory = os.path.abspath(os.path.expanduser(directory))
        try:
            created = not os.path.isdir(directory)
            os.makedirs(directory, mode=0o755, exist_ok=True)
            paths = [os.path.join(directory, name) for name in names]
            written = [
                path
                for path, item in zip(paths, files)
                if _write(path, to_bytes(to_text(item.get("content", ""), nonstring="simplerepr")), 0o644)
            ]
        except OSError as exc:
            raise AnsibleActionFail(f"report_files: cannot write the report in {directory}: {exc}") from None
        result.update(changed=created or bool(written), paths=paths, written=written)
        return result
