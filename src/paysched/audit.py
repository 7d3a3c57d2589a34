"""The whole audit log's filters as a person types them (GET /v1/actions, `paysched actions`,
the dashboard's actions page): each bad one is InvalidInput naming its field."""

from __future__ import annotations

import re

from paysched.db.actions import ACTIONS, ActionFilter
from paysched.domain import parse_id
from paysched.errors import InvalidInput
from paysched.finding import _due as instant_or_day

# An actor: an API key's id (`3` or `#3`, as the log shows `key #3`), or a kind that has no
# key (the command line, the Python API: their users are not told apart, as they are names).
_KEY = re.compile(r"\A#?([0-9]{1,12})\Z")
KINDS = ("cli", "python")


def _actor(value: str | None) -> tuple[str | None, int | None]:
    """(kind, API key id): (None, None) for any actor."""
    raw = (value or "").strip()
    if not raw:
        return None, None
    key = _KEY.match(raw)
    if key is not None:
        return None, parse_id(key.group(1), "actor")
    if raw in KINDS:
        return raw, None
    raise InvalidInput("actor", f"expected an API key id (3 or #3), cli or python, got {raw!r}")


def action_filter(
    *,
    actor: str | None = None,
    action: str | None = None,
    payment_id: str | None = None,
    since: str | None = None,
    before: str | None = None,
    payment_field: str = "payment_id",
) -> ActionFilter:
    """The filters as typed: an empty one is no filter (a form sends every field)."""
    kind, key_id = _actor(actor)
    what = (action or "").strip() or None
    if what is not None and what not in ACTIONS:
        raise InvalidInput("action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")
    pid = (payment_id or "").strip().removeprefix("#")
    start, end = instant_or_day(since, "since"), instant_or_day(before, "before")
    if start is not None and end is not None and end <= start:
        raise InvalidInput("before", "must be later than since")
    return ActionFilter(
        actor_kind=kind,
        api_key_id=key_id,
        action=what,
        payment_id=parse_id(pid, payment_field) if pid else None,
        since=start,
        before=end,
    )
