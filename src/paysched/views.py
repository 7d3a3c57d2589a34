"""Plain-data views of domain objects for the CLI's --json output and its tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from paysched.domain import (
    FINAL_STATES,
    UNRESOLVED_STATES,
    Account,
    Notification,
    Occurrence,
    OccurrenceState,
    Payment,
    PaymentState,
    Transition,
    format_amount,
)
from paysched.redaction import redact

if TYPE_CHECKING:
    from paysched.db.store.reads import Attention

S = OccurrenceState


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def account_view(account: Account) -> dict[str, Any]:
    view = {
        "name": account.name,
        "currency": account.currency,
        "balance": format_amount(account.balance, account.currency),
        "remind": seconds(account.remind),
    }
    if account.approval_above is not None:  # the rule, shown only where there is one
        view["approval_above"] = format_amount(account.approval_above, account.currency)
    return view


def seconds(value: timedelta | None) -> str | None:
    return None if value is None else f"{int(value.total_seconds())}s"


def payment_view(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "state": payment.state.value,
        "from": payment.payer,
        "to": payment.payee,
        "amount": format_amount(payment.amount, payment.currency),
        "currency": payment.currency,
        "due_at": iso(payment.due_at),
        "cron": payment.cron,
        "recurrence": recurrence_view(payment.recurrence),
        "schedule": schedule_text(payment),
        "catchup": payment.catchup,
        "catchup_window": None
        if payment.catchup_window is None
        else f"{int(payment.catchup_window.total_seconds())}s",
        "remind": seconds(payment.remind),
        "timezone": payment.timezone,
        "next_due_at": iso(payment.next_due_at),
        "memo": payment.memo,
        # A webhook URL may carry a password: shown masked, as everywhere else.
        "notify": [redact(target) for target in payment.notify],
        "created_at": iso(payment.created_at),
        **approval_view(payment),
    }


def approval_view(payment: Payment) -> dict[str, Any]:
    timeout = payment.approval_timeout
    return {
        "approval": payment.approval,
        "approval_timeout": None if timeout is None else f"{int(timeout.total_seconds())}s",
        "on_timeout": payment.approval_on_timeout,
    }


def recurrence_view(stored: str | None) -> dict[str, Any] | None:
    if stored is None:
        return None
    from paysched.recurrence import Recurrence

    rec = Recurrence.from_json(stored)
    return {
        "rrule": rec.rule,
        "start": rec.start.isoformat(timespec="minutes"),
        "timezone": rec.timezone,
        "business_day": rec.business_day,
        "calendar": rec.calendar,
    }


def schedule_text(payment: Payment) -> str | None:
    """The schedule for people: None for a one-time payment."""
    if payment.recurrence is not None:
        from paysched.recurrence import Recurrence, describe

        return describe(Recurrence.from_json(payment.recurrence))
    if payment.cron is not None:
        return f"cron {payment.cron} ({payment.timezone or 'UTC'})"
    return None


def due_view(due: Any) -> dict[str, Any]:
    """One upcoming occurrence: when it runs, and its rule's own date when moved off it."""
    return {"due_at": iso(due.due), "nominal_at": iso(due.nominal)}


def notification_view(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "payment_id": n.payment_id,
        "event": n.event,
        "channel": n.channel,
        "target": redact(n.target),
        "state": n.state,
        "attempts": n.attempts,
        "last_error": redact(n.last_error) if n.last_error else None,
        "created_at": iso(n.created_at),
        "sent_at": iso(n.sent_at),
        "dedup_key": n.dedup_key,
    }


def payment_status(payment: Payment, states: Sequence[OccurrenceState]) -> str:
    """One word for people: cancelled, paused, scheduled (more to come), pending (created, not
    final yet), or the outcome of the last occurrence (by due time) once all are final.
    `payment.state` says where the series is: a one-time payment is `done` as soon as its one
    occurrence exists, long before it is paid."""
    return status_of(
        payment, states[-1] if states else None, any(s not in FINAL_STATES for s in states)
    )


def status_of(payment: Payment, last: OccurrenceState | None, unfinished: bool) -> str:
    """payment_status from what it needs of the occurrences: the state of the last one by due
    time (None if there is none) and whether any is not final; a detail reads those two
    without reading every occurrence."""
    if payment.state in (PaymentState.CANCELLED, PaymentState.PAUSED):
        return payment.state.value
    if payment.state == PaymentState.ACTIVE or last is None:
        return "scheduled"
    if unfinished:
        return "pending"
    return last.value


# A payment whose due occurrence has not started this long after its due time is shown late:
# a worker normally starts it within milliseconds, so a few seconds already mean trouble
# (workers down or saturated), without flagging the one being started right now.
LATE_AFTER = timedelta(seconds=5)


def attention_view(payment: Payment, found: Sequence[Attention], now: datetime) -> dict[str, Any]:
    """What a list of payments says beside its status: `late_ms` (how long past due its
    oldest due occurrence is, not started yet; None if none is), `unresolved` (needs_review
    or unknown, the worse of its occurrences'; None if none is) and `resolve_at` (when the
    resolver next asks the provider about its unknown occurrence)."""
    unresolved = [a for a in found if a.state in UNRESOLVED_STATES]
    # A paused payment's due occurrences are held on purpose: not late.
    waiting = payment.state in (PaymentState.ACTIVE, PaymentState.DONE)
    late = [a for a in found if a.state not in UNRESOLVED_STATES and waiting]
    states = {a.state for a in unresolved}
    worst = next((s.value for s in (S.NEEDS_REVIEW, S.UNKNOWN) if s in states), None)
    lookups = [a.resolve_at for a in unresolved if a.state == S.UNKNOWN and a.resolve_at]
    return {
        "late_ms": round((now - late[0].due_at).total_seconds() * 1000) if late else None,
        "unresolved": worst,
        "resolve_at": iso(min(lookups)) if lookups else None,
    }


def duration_text(ms: int) -> str:
    """ "45s", "2m 03s", "3h 05m", "2d 04h": short, to the unit that matters."""
    s = max(0, ms) // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def marker(row: dict[str, Any]) -> str:
    """One word (or two) for a payment row: needs_review or unknown first, then "late 2m 03s",
    else its status."""
    if row.get("unresolved"):
        return str(row["unresolved"])
    if row.get("late_ms") is not None:
        return f"late {duration_text(row['late_ms'])}"
    return str(row["status"])


def lateness_ms(occ: Occurrence) -> int | None:
    if occ.started_at is None:
        return None
    return round((occ.started_at - occ.due_at).total_seconds() * 1000)


def attempts_view(history: list[Transition]) -> list[dict[str, Any]]:
    """Attempts derived from the transition history: each entry into `executing` starts one,
    the next transition out of it ends it."""
    attempts: list[dict[str, Any]] = []
    for tr in history:
        if tr.to_state == OccurrenceState.EXECUTING:
            attempts.append(
                {
                    "number": tr.attempt,
                    "started_at": iso(tr.at),
                    "finished_at": None,
                    "outcome": None,
                    "reason": tr.reason,
                }
            )
        elif attempts and tr.from_state == OccurrenceState.EXECUTING:
            current = attempts[-1]
            current.update(finished_at=iso(tr.at), outcome=tr.to_state.value, reason=tr.reason)
    return attempts


def occurrence_view(occ: Occurrence, history: list[Transition]) -> dict[str, Any]:
    return {
        "id": occ.id,
        "payment_id": occ.payment_id,
        "key": occ.key,
        "due_at": iso(occ.due_at),
        "nominal_at": iso(occ.nominal_at or occ.due_at),
        "state": occ.state.value,
        "reason": occ.reason,
        "reference": occ.reference,
        "lateness_ms": lateness_ms(occ),
        "approval_deadline": iso(occ.approval_deadline)
        if occ.state == OccurrenceState.AWAITING_APPROVAL
        else None,
        "next_check_at": iso(occ.resolve_at) if occ.state == OccurrenceState.UNKNOWN else None,
        "finished_at": iso(occ.finished_at),
        "attempts": attempts_view(history),
        "history": [
            {
                "at": iso(tr.at),
                "from": tr.from_state.value if tr.from_state else None,
                "to": tr.to_state.value,
                "attempt": tr.attempt,
                "reason": tr.reason,
            }
            for tr in history
        ],
    }
