"""The chaos run's reconcile step: what of its report is a violation."""

from __future__ import annotations

from typing import Any

from paysched.chaos.reconciling import judge, unexplained_exit


def item(kind: str, state: str) -> dict[str, Any]:
    return {"kind": kind, "occurrence_key": f"pay-{kind}-{state}", "detail": {"state": state}}


def test_parked_for_review_is_listed_not_a_violation_and_the_rest_are() -> None:
    parked = item("unresolved", "needs_review")  # a person settles it: reconcile lists it
    unknown = item("unresolved", "unknown")  # asked and never answered by the run's end
    charged = item("charged_not_succeeded", "failed")
    missing = item("succeeded_not_charged", "succeeded")
    resolved = item("resolved", "succeeded")
    violations, count = judge([parked, unknown, charged, missing, resolved])
    assert violations == [unknown, charged, missing] and count == 1
    assert judge([]) == ([], 0)


def test_exit_1_for_parked_occurrences_alone_is_explained() -> None:
    """reconcile exits 1 for any discrepancy, parked ones included: that exit is no failure
    of the run; a 1 with nothing listed, or any other code, is."""
    assert not unexplained_exit(0, [], 0)
    assert not unexplained_exit(1, [], 1)  # one parked for review: listed, explained
    assert not unexplained_exit(1, [{"kind": "duplicate_charge"}], 0)  # a violation says it
    assert unexplained_exit(1, [], 0)
    assert unexplained_exit(5, [], 1)  # the listing failed
