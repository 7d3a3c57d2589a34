"""What people are told: outbox rows built from an occurrence's event. Pure functions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from paysched.domain import Occurrence, OutboxMessage, Payment, format_amount
from paysched.notify.targets import split_target


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    events: frozenset[str]  # which events notify
    default_targets: tuple[str, ...]  # used when a payment names none


def local_time(when: datetime, tz: str | None) -> str:
    """A time for people: in the payment's zone when it has one, UTC otherwise."""
    zone = ZoneInfo(tz) if tz else UTC
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def render(
    event: str,
    payment: Payment,
    occurrence: Occurrence,
    attempt: int,
    at: datetime,
    reason: str | None,
    next_attempt_at: datetime | None,
) -> str:
    money = f"{format_amount(payment.amount, payment.currency)} {payment.currency}"
    head = f"Payment #{payment.id}: {money} from {payment.payer} to {payment.payee}"
    if event == "succeeded":
        return f"✅ {head} succeeded at {local_time(at, payment.timezone)}."
    if event == "failed":
        return f"❌ {head} failed after {attempt} attempt(s): {reason}. No money was moved."
    if event == "missed":
        return (
            f"⏭️ {head} due {local_time(occurrence.due_at, payment.timezone)} was not run: {reason}."
        )
    if event == "needs_review":
        return (
            f"⚠️ {head}: its outcome is unknown ({reason}). It will not be retried or paid "
            "again until a person checks with the payment provider."
        )
    nxt = local_time(next_attempt_at, payment.timezone) if next_attempt_at else "soon"
    return f"⏳ {head}: attempt {attempt} failed ({reason}); next attempt at {nxt}."


def outbox_for(
    policy: NotifyPolicy,
    event: str,
    payment: Payment,
    occurrence: Occurrence,
    attempt: int,
    at: datetime,
    reason: str | None = None,
    next_attempt_at: datetime | None = None,
) -> list[OutboxMessage]:
    """One outbox row per target, each with a dedup key unique to (event, attempt, target)."""
    if event not in policy.events:
        return []
    targets: Sequence[str] = payment.notify or policy.default_targets
    text = render(event, payment, occurrence, attempt, at, reason, next_attempt_at)
    event_id = f"{occurrence.key}:{event}" + _repeat(event, occurrence, attempt)
    body = {
        "id": event_id,
        "event": f"payment.{event}",
        "payment_id": payment.id,
        "occurrence": occurrence.key,
        "amount": format_amount(payment.amount, payment.currency),
        "currency": payment.currency,
        "from": payment.payer,
        "to": payment.payee,
        "attempt": attempt,
        "reason": reason,
        "at": at.isoformat(timespec="milliseconds"),
        "next_attempt_at": next_attempt_at.isoformat(timespec="milliseconds")
        if next_attempt_at
        else None,
        "text": text,
    }
    rows = []
    for spec in targets:
        channel, target = split_target(spec)
        rows.append(
            OutboxMessage(
                dedup_key=f"{event_id}:{channel}:{_digest(target)}",
                payment_id=payment.id,
                occurrence_id=occurrence.id,
                event=event,
                channel=channel,
                target=target,
                payload=json.dumps(body, ensure_ascii=False),
            )
        )
    return rows


def _repeat(event: str, occurrence: Occurrence, attempt: int) -> str:
    """What tells apart two events of one kind of one occurrence (empty when it happens once):
    retrying happens once per attempt; needs_review once per claim that ends there, and a
    person's retry that ends in needs_review again is a new claim (the fence) to announce.
    The final events happen once."""
    if event == "retrying":
        return f":{attempt}"
    if event == "needs_review":
        return f":{occurrence.fence}"
    return ""


def _digest(target: str) -> str:
    # Keeps dedup keys short and fixed-size whatever the URL's length.
    return hashlib.sha256(target.encode()).hexdigest()[:16] if target else "-"


def reconciliation_outbox(
    targets: Sequence[str],
    reconciliation_id: int,
    period_from: datetime,
    period_to: datetime,
    counts: dict[str, object],
    at: datetime,
) -> list[OutboxMessage]:
    """The `reconciliation` event of a report that found discrepancies: one row per target,
    of no one payment (payment_id NULL)."""
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if kind in _KINDS and n)
    period = f"{period_from.isoformat()} .. {period_to.isoformat()}"
    text = (
        f"⚠️ Reconciliation #{reconciliation_id} ({period}) found "
        f"{counts.get('discrepancies')} discrepancies: {found}."
    )
    event_id = f"reconciliation:{reconciliation_id}"
    body = {
        "id": event_id,
        "event": "reconciliation",
        "reconciliation_id": reconciliation_id,
        "period_from": period_from.isoformat(),
        "period_to": period_to.isoformat(),
        "counts": {k: v for k, v in counts.items() if k in _KINDS or k == "discrepancies"},
        "at": at.isoformat(timespec="milliseconds"),
        "text": text,
    }
    rows = []
    for spec in targets:
        channel, target = split_target(spec)
        rows.append(
            OutboxMessage(
                dedup_key=f"{event_id}:{channel}:{_digest(target)}",
                payment_id=None,
                occurrence_id=None,
                event="reconciliation",
                channel=channel,
                target=target,
                payload=json.dumps(body, ensure_ascii=False),
            )
        )
    return rows


# The discrepancy kinds of paysched.reconcile (not imported: this module stays pure and light).
_KINDS = frozenset(
    {
        "charged_not_succeeded",
        "succeeded_not_charged",
        "amount_mismatch",
        "duplicate_charge",
        "unresolved",
        "ledger_without_occurrence",
    }
)
