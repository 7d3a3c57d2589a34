"""paysched.inputs: the command line and the Python API refuse the same requests, each in its
own spelling; the command line's messages are the ones it always printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from paysched.errors import InvalidInput
from paysched.inputs import CLI_NAMES, PYTHON_NAMES, Names, payment_request

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def refusal(names: Names, **changes: Any) -> InvalidInput:
    request: dict[str, Any] = {
        "payer": "alice",
        "payee": "bob",
        "amount": "1.00",
        "currency": "USD",
        "at": None,
        "in_": None,
        "cron": None,
        "tz": None,
        "memo": "",
        "notify": None,
        "allow_past": False,
        "allow_private": False,
        "now": NOW,
        "names": names,
    }
    with pytest.raises(InvalidInput) as refused:
        payment_request(**(request | changes))
    return refused.value


def test_command_line_messages_are_unchanged() -> None:
    assert str(refusal(CLI_NAMES)) == (
        "schedule: give exactly one of --at, --in, --cron or --rrule / --every"
    )
    assert str(refusal(CLI_NAMES, in_="1s", tz="UTC")) == "tz: --tz applies to --cron schedules"
    past = refusal(CLI_NAMES, at="2020-01-01T00:00:00Z")
    assert (
        str(past) == "at: 2020-01-01T00:00:00Z is in the past; pass --allow-past to run it at once"
    )
    assert refusal(CLI_NAMES, in_="3000000d").field == "in"


def test_python_spelling() -> None:
    assert (
        str(refusal(PYTHON_NAMES)) == "schedule: give exactly one of at, in_, cron or rrule / every"
    )
    assert refusal(PYTHON_NAMES, in_=timedelta(days=4000)).field == "in_"
    past = refusal(PYTHON_NAMES, at=NOW - timedelta(seconds=1))
    assert past.field == "at" and "pass allow_past=True" in past.problem


@pytest.mark.parametrize("names", [CLI_NAMES, PYTHON_NAMES])
def test_same_checks_in_the_same_order(names: Names) -> None:
    # Several bad values: the first in the command line's order is named, in both spellings.
    first = refusal(names, amount="1.001", currency="usd", at="yesterday", notify=["fax:1"])
    assert first.field == "amount" and "decimals" in first.problem
    assert refusal(names, in_="1s", notify=["fax:1"], tz=None).field == "notify"
    assert refusal(names, cron="0 9 * * *", tz="Nowhere/Town").field == "tz"
    # An empty zone is refused, not read as UTC.
    assert refusal(names, cron="0 9 * * *", tz="").field == "tz"


def test_amount_types() -> None:
    assert "float" in refusal(PYTHON_NAMES, amount=1.5, in_="1s").problem
    assert refusal(PYTHON_NAMES, amount=2, in_="1s").field == "amount"
    ok = payment_request(
        payer="a",
        payee="b",
        amount=Decimal("1E+2"),
        currency="JPY",
        at=None,
        in_="1s",
        cron=None,
        tz=None,
        memo="",
        notify=None,
        allow_past=False,
        allow_private=False,
        now=NOW,
    )
    assert (ok.amount, ok.due_at) == (100, NOW + timedelta(seconds=1))
