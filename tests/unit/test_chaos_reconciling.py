"""The chaos run's reconcile step: what of its report is a violation."""

from __future__ import annotations

from typing import Any

from paysched.chaos.reconciling import judge


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
