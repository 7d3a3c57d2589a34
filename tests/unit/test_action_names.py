"""The action names GET /v1/actions, `paysched actions` and the dashboard accept are every one
the code records: a new `Acting(actor, "<name>", ...)` without its name in ACTIONS could be
recorded but never asked for."""

from __future__ import annotations

import re
from pathlib import Path

import paysched
from paysched.db.actions import ACTIONS, PAST


def test_every_recorded_action_can_be_filtered_and_read() -> None:
    source = Path(paysched.__file__).parent
    recorded = {
        m.group(1)
        for path in source.rglob("*.py")
        for m in re.finditer(r'Acting\(\s*[\w.()]+,\s*"(\w+)"', path.read_text())
    }
    assert recorded == set(ACTIONS)
    assert set(PAST) == set(ACTIONS)  # each has its words in a summary
