# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one error the pure decisions raise for input they refuse, and its hand-over to a plugin's own error type.

module_utils stays free of ansible.errors (modules and filters both import it); a filter turns a refusal into
AnsibleFilterError with ``with raised_as(AnsibleFilterError):`` around the call, keeping the message as it is.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Type


class InvalidInput(ValueError):
    """Input a decision refuses; the message names the value and says what to do, as the user reads it."""


@contextlib.contextmanager
def raised_as(error: Type[Exception]) -> Iterator[None]:
    """Inside the block, an InvalidInput is raised again as ``error`` with the same message."""
    try:
        yield
    except InvalidInput as exc:
        raise error(str(exc)) from None
