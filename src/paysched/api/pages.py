"""Cursor pagination: `limit` and an opaque `cursor` in, `{data, has_more, next_cursor}` out.

A cursor is the position the last page ended at (keyset pagination), so a page is stable
while rows are added and costs one index range scan however deep the client has paged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import Query

from paysched.api.problems import Problem
from paysched.cursors import encode, is_id, is_int
from paysched.domain import normalise_name
from paysched.errors import InvalidInput

T = TypeVar("T")
__all__ = ["encode", "is_id", "is_int"]  # the API's modules take them from here

Limit = Query(50, ge=1, le=1000, description="Page size.")
Cursor = Query(None, max_length=200, description="`next_cursor` of the previous page.")


def decode(cursor: str | None, check: Callable[[Any], bool]) -> Any:
    """The position in `cursor`, or None for the first page; 422 naming `cursor` if it is not
    one this API made."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        if check(position):
            return position
    except (ValueError, TypeError):
        pass
    raise Problem(422, "invalid_cursor", "cursor: not a cursor from this API", "cursor")


def page(
    rows: Sequence[T],
    limit: int,
    views: Callable[[Sequence[T]], list[Any]],
    position: Callable[[T], Any],
) -> dict[str, Any]:
    """`rows` were fetched with limit + 1: the extra one only says there is more. `views`
    sees the shown rows at once (a page may need one more query for all of them)."""
    shown = list(rows[:limit])
    more = len(rows) > limit
    return {
        "data": views(shown),
        "has_more": more,
        "next_cursor": encode(position(shown[-1])) if more and shown else None,
    }


def each(view: Callable[[T], Any]) -> Callable[[Sequence[T]], list[Any]]:
    """`views` for a page whose rows are seen one by one."""
    return lambda rows: [view(r) for r in rows]


def is_name(value: Any) -> bool:
    """An account name as stored: no other (a NUL, a lone surrogate) may reach SQL."""
    try:
        return isinstance(value, str) and normalise_name(value) == value
    except InvalidInput:
        return False
