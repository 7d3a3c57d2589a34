"""The one way an occurrence changes state: a compare-and-set in SQL, recorded in history.

`apply` writes a batch of changes with ONE statement,
``UPDATE occurrences SET ... WHERE id = ? AND state = ? AND fence = ?``, executed once per
change, and checks that every change matched its row. Callers read (and row-lock) the
occurrences first to decide what to write; that makes conflicts rare and batches fast, but it
is not what makes a transition correct: if a row changed meanwhile, its compare-and-set matches
nothing, `apply` raises LostRace and the whole transaction rolls back.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from paysched.db import tables as t
from paysched.db.store.base import LostRace
from paysched.db.store.rows import occurrence_from
from paysched.domain import Occurrence, OccurrenceState, can_transition


@dataclass(frozen=True, slots=True)
class Change:
    """`before` as read (its state and fence are the compare), `after` as it is to be."""

    before: Occurrence
    after: Occurrence
    # The reason recorded in history; None: the occurrence's new reason; "": none.
    note: str | None = None

    def __post_init__(self) -> None:
        if self.before.id != self.after.id:
            raise ValueError("a change must keep the occurrence id")
        if not can_transition(self.before.state, self.after.state):
            raise ValueError(
                f"{self.before.state.value} -> {self.after.state.value} is not allowed"
            )


@functools.cache
def _cas() -> Any:
    occ = t.occurrences.c
    return (
        update(t.occurrences)
        .where(occ.id == bindparam("b_id"))
        .where(occ.state == bindparam("b_state_was"))
        .where(occ.fence == bindparam("b_fence_was"))
        .values(
            state=bindparam("b_state"), attempts=bindparam("b_attempts"),
            fence=bindparam("b_fence"), reason=bindparam("b_reason"),
            started_at=bindparam("b_started"), finished_at=bindparam("b_finished"),
            takeovers=bindparam("b_takeovers"), reference=bindparam("b_reference"),
            resolve_at=bindparam("b_resolve_at"), resolve_checks=bindparam("b_checks"),
            updated_at=bindparam("b_now"),
        )
    )  # fmt: skip


@functools.cache
def _locked() -> Any:
    occ = t.occurrences.c
    return (
        select(t.occurrences)
        .where(occ.id.in_(bindparam("ids", expanding=True)))
        .order_by(occ.id)  # one lock order everywhere: batches cannot deadlock on occurrences
        .with_for_update()
    )


def lock(conn: Connection, ids: Sequence[int] | set[int]) -> dict[int, Occurrence]:
    """The occurrences, row-locked until the transaction ends (SQLite: BEGIN IMMEDIATE's lock)."""
    if not ids:
        return {}
    rows = conn.execute(_locked(), {"ids": sorted(set(ids))})
    return {row.id: occurrence_from(row) for row in rows}


def apply(conn: Connection, changes: Sequence[Change], now: datetime) -> None:
    """Compare-and-set every change and record it in history, or raise LostRace."""
    if not changes:
        return
    params = [
        {
            "b_id": c.after.id, "b_state_was": c.before.state.value,
            "b_fence_was": c.before.fence, "b_state": c.after.state.value,
            "b_attempts": c.after.attempts, "b_fence": c.after.fence,
            "b_reason": c.after.reason, "b_started": c.after.started_at,
            "b_finished": c.after.finished_at, "b_takeovers": c.after.takeovers,
            "b_reference": c.after.reference, "b_resolve_at": c.after.resolve_at,
            "b_checks": c.after.resolve_checks, "b_now": now,
        }
        for c in changes
    ]  # fmt: skip
    matched = conn.execute(_cas(), params).rowcount
    if matched != len(changes):
        raise LostRace(
            f"{len(changes) - matched} of {len(changes)} occurrence(s) changed under a "
            "compare-and-set; nothing was written"
        )
    record(conn, [
        history(c.after.id, now, c.before.state, c.after.state, c.after.attempts,
                (c.note if c.note is not None else c.after.reason) or None)
        for c in changes
    ])  # fmt: skip


def record(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Append rows (see `history`) to the transitions table: the one place that writes it."""
    if rows:
        conn.execute(insert(t.transitions), rows)


def history(
    occurrence_id: int, now: datetime, source: OccurrenceState | None, target: OccurrenceState,
    attempt: int, reason: str | None,
) -> dict[str, Any]:  # fmt: skip
    """A transitions row."""
    return dict(occurrence_id=occurrence_id, at=now, from_state=source.value if source else None,
                to_state=target.value, attempt=attempt, reason=reason)  # fmt: skip
