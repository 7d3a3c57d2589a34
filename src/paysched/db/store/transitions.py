"""How an occurrence changes state: a compare-and-set in SQL, recorded in history.

Every change of state goes through `apply` but two, each a statement of its own whose
history `record` writes:
- an occurrence is born in its first state by an INSERT that skips an existing key
  (materialize, skip-next);
- `mark_queued` moves a batch scheduled -> queued in one unlocked
  ``UPDATE ... WHERE state = 'scheduled' RETURNING``: it follows every enqueue, and a row that
  moved on meanwhile is simply past queued, not a lost race, so it neither locks first nor
  raises LostRace.
The unknown-outcome bookkeeping in execution.py (`lease_unknowns`, `recheck_later`) also
updates occurrences directly, but leaves the state as it is, so it records no history.

`apply` writes a batch of changes with ONE statement,
``UPDATE occurrences SET ... WHERE id = ? AND state = ? AND fence = ?``, executed once per
change (on PostgreSQL one UPDATE ... FROM unnest(arrays) for the batch, with its history),
and checks that every change matched its row. Callers read (and row-lock) the
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

from sqlalchemy import Connection, bindparam, insert, select, text, update

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
            state=bindparam("b_state"),
            attempts=bindparam("b_attempts"),
            fence=bindparam("b_fence"),
            reason=bindparam("b_reason"),
            started_at=bindparam("b_started"),
            finished_at=bindparam("b_finished"),
            takeovers=bindparam("b_takeovers"),
            reference=bindparam("b_reference"),
            resolve_at=bindparam("b_resolve_at"),
            resolve_checks=bindparam("b_checks"),
            updated_at=bindparam("b_now"),
        )
    )


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


# PostgreSQL: the compare-and-sets and their history in ONE statement, the changes passed as
# arrays. psycopg 3 runs an executemany as a pipeline of one UPDATE (and one INSERT) per row,
# each executed by the server and its result read back by Python: that loop was ~45 % of the
# CPU of claims and settles in batches of 50 (py-spy). The INSERT takes only the rows the
# UPDATE matched, so its row count is the number of compare-and-sets that held.
_CAS_AND_RECORD_PG = text("""
WITH v AS (
  SELECT * FROM unnest(
    CAST(:ids AS integer[]), CAST(:state_was AS varchar[]), CAST(:fence_was AS integer[]),
    CAST(:state AS varchar[]), CAST(:attempts AS integer[]), CAST(:fence AS integer[]),
    CAST(:reason AS text[]), CAST(:started AS timestamptz[]), CAST(:finished AS timestamptz[]),
    CAST(:takeovers AS integer[]), CAST(:reference AS text[]),
    CAST(:resolve_at AS timestamptz[]), CAST(:checks AS integer[]), CAST(:note AS text[])
  ) WITH ORDINALITY AS v(id, state_was, fence_was, state, attempts, fence, reason, started_at,
                         finished_at, takeovers, reference, resolve_at, resolve_checks, note,
                         ord)
), u AS (
  UPDATE occurrences AS o
  SET state = v.state, attempts = v.attempts, fence = v.fence, reason = v.reason,
      started_at = v.started_at, finished_at = v.finished_at, takeovers = v.takeovers,
      reference = v.reference, resolve_at = v.resolve_at, resolve_checks = v.resolve_checks,
      updated_at = CAST(:now AS timestamptz)
  FROM v
  WHERE o.id = v.id AND o.state = v.state_was AND o.fence = v.fence_was
  RETURNING o.id
)
INSERT INTO transitions (occurrence_id, at, from_state, to_state, attempt, reason)
SELECT v.id, CAST(:now AS timestamptz), v.state_was, v.state, v.attempts, v.note
FROM v JOIN u ON u.id = v.id
ORDER BY v.ord
""")


def _aware(value: datetime | None) -> datetime | None:
    """What UTCDateTime binds, for the raw statement above (which bypasses the column types)."""
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} cannot be stored")
    return value


def _note(c: Change) -> str | None:
    return (c.note if c.note is not None else c.after.reason) or None


def _apply_pg(conn: Connection, changes: Sequence[Change], now: datetime) -> int:
    after = [c.after for c in changes]
    return int(
        conn.execute(
            _CAS_AND_RECORD_PG,
            {
                "ids": [a.id for a in after],
                "state_was": [c.before.state.value for c in changes],
                "fence_was": [c.before.fence for c in changes],
                "state": [a.state.value for a in after],
                "attempts": [a.attempts for a in after],
                "fence": [a.fence for a in after],
                "reason": [a.reason for a in after],
                "started": [_aware(a.started_at) for a in after],
                "finished": [_aware(a.finished_at) for a in after],
                "takeovers": [a.takeovers for a in after],
                "reference": [a.reference for a in after],
                "resolve_at": [_aware(a.resolve_at) for a in after],
                "checks": [a.resolve_checks for a in after],
                "note": [_note(c) for c in changes],
                "now": _aware(now),
            },
        ).rowcount
    )


def apply(conn: Connection, changes: Sequence[Change], now: datetime) -> None:
    """Compare-and-set every change and record it in history, or raise LostRace."""
    if not changes:
        return
    # One statement on PostgreSQL, unless an occurrence changes twice in the batch (a claim
    # taken over within its own batch): one UPDATE sees each row once, as it was before the
    # statement, so the second change must see the first, one execution after the other.
    if conn.dialect.name == "postgresql" and len({c.after.id for c in changes}) == len(changes):
        matched = _apply_pg(conn, changes, now)
        if matched != len(changes):
            raise LostRace(
                f"{len(changes) - matched} of {len(changes)} occurrence(s) changed under a "
                "compare-and-set; nothing was written"
            )
        return
    params = [
        {
            "b_id": c.after.id,
            "b_state_was": c.before.state.value,
            "b_fence_was": c.before.fence,
            "b_state": c.after.state.value,
            "b_attempts": c.after.attempts,
            "b_fence": c.after.fence,
            "b_reason": c.after.reason,
            "b_started": c.after.started_at,
            "b_finished": c.after.finished_at,
            "b_takeovers": c.after.takeovers,
            "b_reference": c.after.reference,
            "b_resolve_at": c.after.resolve_at,
            "b_checks": c.after.resolve_checks,
            "b_now": now,
        }
        for c in changes
    ]
    matched = conn.execute(_cas(), params).rowcount
    if matched != len(changes):
        raise LostRace(
            f"{len(changes) - matched} of {len(changes)} occurrence(s) changed under a "
            "compare-and-set; nothing was written"
        )
    record(
        conn,
        [
            history(c.after.id, now, c.before.state, c.after.state, c.after.attempts, _note(c))
            for c in changes
        ],
    )


def record(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Append rows (see `history`) to the transitions table: the one place that writes it."""
    if rows:
        conn.execute(insert(t.transitions), rows)


def history(
    occurrence_id: int,
    now: datetime,
    source: OccurrenceState | None,
    target: OccurrenceState,
    attempt: int,
    reason: str | None,
) -> dict[str, Any]:
    """A transitions row."""
    return dict(
        occurrence_id=occurrence_id,
        at=now,
        from_state=source.value if source else None,
        to_state=target.value,
        attempt=attempt,
        reason=reason,
    )
