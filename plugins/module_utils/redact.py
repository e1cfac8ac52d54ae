# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one home of secret redaction for messages: every error text that quotes an exception or a URL goes through
here before it reaches a module result (module_utils/k8s/errors.py for the Kubernetes API, module_utils/prometheus.py
for Prometheus). No I/O.

Credentials passed as module options are also marked ``no_log``, which makes Ansible mask their values anywhere in
the output; this covers what no_log cannot: a token inside a library's exception text, and a password written into
a URL (``https://user:password@host``).
"""

from __future__ import annotations

import re
from typing import Any

# "Bearer abc", "Authorization: Basic abc", "token=abc", "password: abc", "client_secret=abc", "X-Api-Key: abc", ...
# up to the next space, quote, comma, semicolon, ampersand or brace.
_SECRET = re.compile(
    r"(?i)(bearer\s+[\"']?|authorization:\s*basic\s+|"
    r"(?:access_|api_|bearer_|id_|refresh_)?token[\"']?\s*[=:]\s*[\"']?|"
    r"(?:password|passwd|client_secret|secret|api_key|x-api-key)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&}]+"
)
# The password of URL userinfo: scheme://user:password@host (up to the last @ before the path: a password may hold
# an unencoded @).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s]*@")


def redact(text: Any) -> str:
    """``text`` with every credential-looking value replaced by ``<redacted>``."""
    out = _USERINFO.sub(r"\1<redacted>@", str(text))
    return _SECRET.sub(lambda m: m.group(1) + "<redacted>", out)


def first_line(exc: Any) -> str:
    """An exception's (or a text's) first line, redacted: what error messages quote."""
    text = str(exc)
    line = text.splitlines()[0] if text.strip() else type(exc).__name__
    return redact(line)
