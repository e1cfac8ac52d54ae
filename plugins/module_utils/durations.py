# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Durations as the collection's options are written: one grammar, one parser, for every option that takes one.

The wave analysis settings (bake_time, interval, window, baseline_window) and the traffic baseline's timeouts
(timeout, retries.per_try_timeout, outlier_detection.interval and base_ejection_time) both read durations here.
What a caller adds on top (the traffic baseline's "a string, at least 1ms" for Istio) is the caller's rule.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Optional

# Hours, minutes, seconds and milliseconds in that order, each at most once, each a whole or decimal number:
# 1h30m, 2m30s, 1.5m, 500ms, 0.5s. The m of minutes is not the m of ms.
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_DURATION = re.compile(rf"^(?:{_NUMBER}h)?(?:{_NUMBER}m(?!s))?(?:{_NUMBER}s)?(?:{_NUMBER}ms)?$")
_UNIT_SECONDS = (Decimal(3600), Decimal(60), Decimal(1), Decimal("0.001"))


def duration_seconds(value: Any) -> Optional[float]:
    """'1h30m', '1.5m', '90s', '500ms', '0' or a number of seconds as seconds; None when malformed or negative.

    Strings are read with surrounding whitespace removed; a bare number in a string other than '0' is malformed
    (is '10' seconds or minutes?).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    text = str(value or "").strip()
    if text == "0":
        return 0.0
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        return None
    total = sum(Decimal(part) * unit for part, unit in zip(match.groups(), _UNIT_SECONDS) if part)
    return float(total)
