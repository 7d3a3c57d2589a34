"""Rows to domain objects, and the selects that several parts of the store read with."""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, bindparam, select

from paysched.db import tables as t
from paysched.domain import Account, Occurrence, OccurrenceState, Payment, PaymentState


@functools.cache  # built once (see claim_rows): callers refine it, which copies
def payment_select() -> Any:
    payer = t.accounts.alias("payer")
    payee = t.accounts.alias("payee")
    return select(
        t.payments, payer.c.name.label("payer_name"), payee.c.name.label("payee_name")
    ).select_from(
        t.payments.join(payer, payer.c.id == t.payments.c.payer_id).join(
            payee, payee.c.id == t.payments.c.payee_id
        )
    )


# Building a statement (aliases, labels, its cache key) cost more CPU than executing it: the
# profile of a busy worker had the claim's select alone at 2 % of the process. The hot-path
# statements are built once and take their ids as an expanding parameter.


@functools.cache
def claim_rows() -> Any:
    """Occurrences with their payments (payment columns prefixed p_), the occurrences
    row-locked, in id order."""
    payer = t.accounts.alias("payer")
    payee = t.accounts.alias("payee")
    return (
        select(
            t.occurrences,
            *(c.label(f"p_{c.name}") for c in t.payments.c),
            payer.c.name.label("p_payer_name"),
            payee.c.name.label("p_payee_name"),
        )
        .select_from(
            t.occurrences.join(t.payments, t.payments.c.id == t.occurrences.c.payment_id)
            .join(payer, payer.c.id == t.payments.c.payer_id)
            .join(payee, payee.c.id == t.payments.c.payee_id)
        )
        .where(t.occurrences.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(t.occurrences.c.id)
        .with_for_update(of=t.occurrences)
    )


def payment_from(row: Row[Any], prefix: str = "") -> Payment:
    m = row._mapping
    window = m[prefix + "catchup_window_s"]
    return Payment(
        id=m[prefix + "id"],
        payer=m[prefix + "payer_name"],
        payee=m[prefix + "payee_name"],
        amount=int(m[prefix + "amount"]),
        currency=m[prefix + "currency"],
        state=PaymentState(m[prefix + "state"]),
        due_at=m[prefix + "due_at"],
        cron=m[prefix + "cron"],
        timezone=m[prefix + "timezone"],
        next_due_at=m[prefix + "next_due_at"],
        memo=m[prefix + "memo"],
        created_at=m[prefix + "created_at"],
        notify=tuple(json.loads(m[prefix + "notify"] or "[]")),
        recurrence=m[prefix + "recurrence"],
        catchup=m[prefix + "catchup"],
        catchup_window=None if window is None else timedelta(seconds=window),
        next_nominal_at=m[prefix + "next_nominal_at"],
        remind=_seconds(m[prefix + "remind_s"]),
        approval=m.get(prefix + "approval") or "none",
        approval_timeout=_seconds(m.get(prefix + "approval_timeout_s")),
        approval_on_timeout=m.get(prefix + "approval_on_timeout"),
    )


def occurrence_from(row: Row[Any]) -> Occurrence:
    return Occurrence(
        id=row.id,
        payment_id=row.payment_id,
        key=row.key,
        due_at=row.due_at,
        state=OccurrenceState(row.state),
        attempts=row.attempts,
        fence=row.fence,
        reason=row.reason,
        started_at=row.started_at,
        finished_at=row.finished_at,
        takeovers=row.takeovers,
        reference=row.reference,
        resolve_at=row.resolve_at,
        resolve_checks=row.resolve_checks,
        nominal_at=row.nominal_at,
        approval_deadline=row._mapping.get("approval_deadline"),
    )


def account_from(row: Row[Any]) -> Account:
    above = row._mapping.get("approval_above")
    return Account(
        id=row.id,
        name=row.name,
        currency=row.currency,
        balance=int(row.balance),
        remind=_seconds(row._mapping.get("remind_s")),
        approval_above=None if above is None else int(above),
    )


def _seconds(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)
