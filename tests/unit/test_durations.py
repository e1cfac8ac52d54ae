"""The one duration parser (plugins/module_utils/durations.py), read by the wave analysis settings and the traffic
baseline alike: everything either of the two parsers it replaced accepted, it accepts."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils.durations import duration_seconds


@pytest.mark.parametrize(
    "text, seconds",
    [
        # What the wave analysis accepted: compound whole units, '0', numbers of seconds.
        ("5m", 300),
        ("90s", 90),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("0", 0),
        (45, 45),
        (2.5, 2.5),
        ("2m30s", 150),
        ("1m500ms", 60.5),
        ("0s", 0),
        (" 10m ", 600),
        # What the traffic baseline accepted: one unit, whole or decimal.
        ("1.5m", 90),
        ("0.5s", 0.5),
        ("1.5ms", 0.0015),
        ("0.25h", 900),
        ("3s", 3),
        # Both at once.
        ("1h0.5m", 3630),
    ],
)
def test_durations(text, seconds):
    assert duration_seconds(text) == pytest.approx(seconds)


def test_units_add_up_exactly():
    assert duration_seconds("300ms") == duration_seconds("0.3s") == 0.3
    assert duration_seconds("1s1ms") == 1.001


@pytest.mark.parametrize(
    "text",
    ["", None, "5", "10", "5 m", "m", "-1", "-1s", "1d", True, False, -3, "5mm", "30m1h", "1h1h", ".5s", "1.s", "1,5m"],
)
def test_malformed_durations(text):
    assert duration_seconds(text) is None
