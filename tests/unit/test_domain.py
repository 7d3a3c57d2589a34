from __future__ import annotations

import itertools

import pytest

from paysched.domain import (
    FINAL_STATES,
    OccurrenceState,
    can_transition,
    format_amount,
    parse_amount,
    parse_currency,
    parse_positive_amount,
)
from paysched.errors import InvalidInput

S = OccurrenceState


# Written out here, not taken from domain.py's table (what these tests check): the tests ask
# `can_transition` about these states, so a wrong entry in the table shows as a failure.
FINAL = [S.SUCCEEDED, S.FAILED, S.CANCELLED, S.SKIPPED, S.MISSED]
NOT_FINAL = [
    S.SCHEDULED,
    S.QUEUED,
    S.EXECUTING,
    S.RETRYING,
    S.UNKNOWN,
    S.NEEDS_REVIEW,
    S.AWAITING_APPROVAL,
]


def test_every_state_is_named_here() -> None:
    assert set(FINAL) | set(NOT_FINAL) == set(OccurrenceState)
    assert frozenset(FINAL) == FINAL_STATES  # what the rest of paysched calls final


def test_happy_path_is_allowed() -> None:
    path = [S.SCHEDULED, S.QUEUED, S.EXECUTING, S.RETRYING, S.EXECUTING, S.SUCCEEDED]
    for source, target in itertools.pairwise(path):
        assert can_transition(source, target), (source, target)


@pytest.mark.parametrize("final", FINAL)
def test_final_states_never_change(final: OccurrenceState) -> None:
    assert [t for t in OccurrenceState if can_transition(final, t)] == []


@pytest.mark.parametrize("source", NOT_FINAL)
def test_every_unfinished_state_can_still_end(source: OccurrenceState) -> None:
    """No state traps an occurrence: from each, some path of allowed steps reaches a final
    state (else a payment could hang for ever)."""
    seen, frontier = {source}, [source]
    while frontier:
        state = frontier.pop()
        for target in OccurrenceState:
            if can_transition(state, target) and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen & set(FINAL), source


@pytest.mark.parametrize("source", [S.SCHEDULED, S.QUEUED, S.RETRYING])
def test_cancel_and_skip_before_anything_started(source: OccurrenceState) -> None:
    assert can_transition(source, S.CANCELLED)
    assert can_transition(source, S.SKIPPED)


@pytest.mark.parametrize("source", [S.EXECUTING, S.UNKNOWN, S.NEEDS_REVIEW])
def test_nothing_in_flight_is_cancelled(source: OccurrenceState) -> None:
    """Money may be on its way: an executing or unknown occurrence finishes or is resolved."""
    assert not can_transition(source, S.CANCELLED)
    assert not can_transition(source, S.SKIPPED)


def test_awaiting_approval_never_starts_by_itself() -> None:
    """An occurrence waiting for approval is never claimed: it only becomes scheduled (by an
    approval) or ends without running."""
    assert not can_transition(S.AWAITING_APPROVAL, S.EXECUTING)
    assert not can_transition(S.AWAITING_APPROVAL, S.QUEUED)
    assert can_transition(S.AWAITING_APPROVAL, S.SCHEDULED)
    for ended in (S.CANCELLED, S.SKIPPED, S.FAILED):
        assert can_transition(S.AWAITING_APPROVAL, ended)


def test_no_shortcuts_to_success() -> None:
    sources = {s for s in OccurrenceState if can_transition(s, S.SUCCEEDED)}
    # Only an execution, or the resolution of an execution whose outcome was unknown.
    assert sources == {S.EXECUTING, S.UNKNOWN, S.NEEDS_REVIEW}
    assert not can_transition(S.QUEUED, S.RETRYING)
    assert not can_transition(S.RETRYING, S.FAILED)
    assert not can_transition(S.UNKNOWN, S.EXECUTING)  # never re-sent without asking first
    assert can_transition(S.EXECUTING, S.EXECUTING)  # a takeover by a new claim


@pytest.mark.parametrize("code", ["XYZ", "ABC", "XAU", "XDR"])
def test_currencies_are_real_and_payable(code: str) -> None:
    with pytest.raises(InvalidInput, match="currency"):
        parse_currency(code)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "USD", 1234),
        ("0.01", "USD", 1),
        ("100", "JPY", 100),
        ("1.005", "KWD", 1005),
        (" 7.5 ", "EUR", 750),
        ("10000000000000.00", "USD", 10**15),
    ],
)
def test_amounts_parse_exactly(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "1.001",
        "nan",
        "inf",
        "",
        "1,5",
        "1e2",
        "1e309",
        "10^20",
        "١٢٣",
        "１２",
        "1" * 5000,
        "10000000000000.01",
        "92233720368547758.07",
        "0x10",
        "1_000",
        "+-1",
        "+5",
        "+0.01",
        # More decimals than USD has, even as zeros.
        "1.000",
        "1.0000",
        "0.000",
    ],
)
def test_bad_amounts_name_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_amount(text, "USD")
    assert info.value.field == "amount"


@pytest.mark.parametrize(
    ("text", "currency"), [("12.0", "JPY"), ("12.50", "JPY"), ("1.0000", "KWD"), ("7.500", "EUR")]
)
def test_decimals_are_counted_as_written(text: str, currency: str) -> None:
    with pytest.raises(InvalidInput, match=f"decimals for {currency}") as info:
        parse_amount(text, currency)
    assert info.value.field == "amount"


def test_amount_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="greater than zero"):
        parse_positive_amount("0", "USD")
    with pytest.raises(InvalidInput):
        parse_positive_amount("-1.00", "USD")


def test_format_amount_round_trips() -> None:
    assert format_amount(1234, "USD") == "12.34"
    assert format_amount(5, "USD") == "0.05"
    assert format_amount(100, "JPY") == "100"
    assert format_amount(-250, "EUR") == "-2.50"
    assert parse_amount(format_amount(987654321, "USD"), "USD") == 987654321


def test_currency_codes() -> None:
    assert parse_currency("usd") == "USD"
    with pytest.raises(InvalidInput, match="3-letter"):
        parse_currency("US")


def test_the_payment_state_filter_names_every_state() -> None:
    from paysched.domain import payment_state_filter

    assert payment_state_filter(None) is None
    assert payment_state_filter("paused") == "paused"
    with pytest.raises(InvalidInput, match="active, paused, done, cancelled") as exc:
        payment_state_filter("bogus")
    assert exc.value.field == "state"
