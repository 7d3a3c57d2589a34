"""Cursor positions, encoded and checked: shared by the API's pages and the views that hand
out a cursor (a payment's detail, for the rest of its occurrences) without importing the API.

A cursor is the position the last page ended at (keyset pagination), as URL-safe base64 of
its JSON; what it holds is checked before it reaches SQL.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from paysched.domain import MAX_ID, Occurrence


def encode(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_id(value: Any) -> bool:
    """A row id: no larger one exists (nor reaches SQL, where it is out of range)."""
    return is_int(value, 1, MAX_ID)


def due_of(value: Any) -> datetime | None:
    """A position's due time: ISO 8601 with an offset, to the microsecond, as stored (in
    milliseconds the next page began with the row the last one ended at); None if not one."""
    if not isinstance(value, str):
        return None
    try:
        due = datetime.fromisoformat(value)
        return due.astimezone(UTC) if due.utcoffset() is not None else None
    except (ValueError, OverflowError):  # not a time, or its offset leaves datetime's range
        return None


def is_occurrence_position(value: Any) -> bool:
    """[due time, id]: an old position in milliseconds is refused, not read as another."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and due_of(value[0]) is not None
        and is_id(value[1])
    )


def occurrence_position(occ: Occurrence) -> list[Any]:
    """Where a page of occurrences ended: [ISO due time to the microsecond, id]."""
    return [occ.due_at.isoformat(), occ.id]


def occurrence_after(position: Any) -> tuple[datetime, int] | None:
    """A checked position (is_occurrence_position) as the store takes it; None for none."""
    if position is None:
        return None
    due = due_of(position[0])
    assert due is not None  # checked by is_occurrence_position
    return due, int(position[1])
