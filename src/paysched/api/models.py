"""The API's request and response bodies: the OpenAPI document is generated from these.

Money is a decimal string plus an ISO 4217 currency, never a JSON number (a float cannot hold
12.34 exactly). Times are RFC 3339 with an offset; the API answers in UTC.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

T = TypeVar("T")

Amount = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{1,16}(\.[0-9]{1,4})?$",
        max_length=21,
        examples=["12.34"],
        description="A decimal string with at most the currency's decimals; never a number.",
    ),
]
Currency = Annotated[
    str,
    Field(pattern=r"^[A-Za-z]{3}$", examples=["USD"], description="ISO 4217 code."),
]
AccountName = Annotated[str, Field(min_length=1, max_length=100, examples=["alice"])]


def _ascii_digits(value: object) -> object:
    # An id in a path or query as the client wrote it: pydantic would also read "1.0", "+1",
    # " 1" or "1_0" as an integer, so /v1/payments/1.0 would be payment 1.
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("expected a positive integer id in ASCII digits")
    return value


Id = Annotated[int, BeforeValidator(_ascii_digits)]
Timestamp = Annotated[
    str,
    Field(json_schema_extra={"format": "date-time"}, examples=["2026-12-01T08:00:00.000+00:00"]),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# -- requests ----------------------------------------------------------------------------------


class AccountCreate(Strict):
    name: AccountName
    currency: Currency = "USD"
    remind: str | None = Field(
        None,
        max_length=32,
        examples=["24h"],
        description="The reminder default of the payments it pays (see a payment's `remind`).",
    )


class AccountChange(Strict):
    """Only the settings given change (at least one)."""

    remind: str | None = Field(
        None,
        max_length=32,
        examples=["24h"],
        description="The reminder default of its new payments: a duration, or null (off).",
    )
    approval_above: str | None = Field(
        None,
        max_length=32,
        examples=["500.00"],
        description="Its new payments above this amount (a decimal string in the account's "
        "currency) require approval; null or 'off': none do.",
    )


class Deposit(Strict):
    amount: Amount


class ChatLinkCreate(Strict):
    channel: str = Field(
        "telegram",
        description="The kind of chat: telegram (the only one so far).",
        examples=["telegram"],
    )
    role: Literal["holder", "approver"] = Field(
        "holder",
        description="What the chat may do: holder (see, be reminded, skip, pause) or "
        "approver (also approve or reject the account's payments awaiting approval).",
    )


class PaymentCreate(Strict):
    """One-time (`at` or `in`) or recurring (`cron`, optionally `timezone`)."""

    payer: AccountName = Field(alias="from", description="The paying account.")
    payee: AccountName = Field(alias="to", description="The receiving account.")
    amount: Amount
    currency: Currency | None = Field(
        None, description="ISO 4217 code; default: the paying account's currency."
    )
    at: Timestamp | None = Field(
        None, description="Due time, RFC 3339 with an offset; not in the past unless allow_past."
    )
    in_: str | None = Field(
        None,
        alias="in",
        max_length=32,
        examples=["30s"],
        description="Due after a delay from now: 250ms, 30s, 5m, 2h, 1d.",
    )
    cron: str | None = Field(
        None, max_length=120, examples=["0 9 * * 1"], description="Recurring: 5-field cron."
    )
    timezone: str | None = Field(
        None, max_length=64, examples=["Europe/Berlin"], description="IANA zone for `cron`."
    )
    rrule: str | None = Field(
        None,
        max_length=500,
        examples=["FREQ=MONTHLY;BYMONTHDAY=-1"],
        description="Recurring by calendar: an RFC 5545 rule (FREQ, INTERVAL, BYDAY, "
        "BYMONTHDAY incl. negative, BYMONTH, BYSETPOS, COUNT, UNTIL), with `start`.",
    )
    every: str | None = Field(
        None,
        max_length=32,
        examples=["2 weeks"],
        description="Recurring every interval from `start`: '2 weeks', '1 month', 'year'.",
    )
    start: str | None = Field(
        None,
        max_length=32,
        examples=["2026-12-01T09:00"],
        description="A rule's first local date and time of day, in `timezone`.",
    )
    count: int | None = Field(None, ge=1, le=100_000, description="A rule's occurrences.")
    until: str | None = Field(
        None, max_length=32, examples=["2027-12-31"], description="A rule's last local date."
    )
    business_day: str = Field(
        "none",
        pattern="^(none|following|modified_following|preceding)$",
        description="Move a rule's dates off weekends and `calendar`'s holidays.",
    )
    calendar: str | None = Field(
        None,
        max_length=32,
        examples=["DE"],
        description="Holidays: a country (DE, DE-BY, US-NY) or a market (NYSE).",
    )
    catchup: str = Field(
        "all",
        pattern="^(all|latest|none)$",
        description="Of what fell due while paysched was down or the payment paused: run all,"
        " the latest, or none (recorded as missed).",
    )
    catchup_window: str | None = Field(
        None,
        max_length=32,
        examples=["3d"],
        description="Older than this when found: missed, whatever `catchup` says.",
    )
    remind: str | None = Field(
        None,
        max_length=32,
        examples=["24h"],
        description="Remind the payer's linked chats this long before each occurrence (with "
        "Skip and Pause buttons); null: the payer account's default.",
    )
    memo: str = Field("", max_length=1000)
    notify: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list,
        max_length=20,
        description="telegram:CHAT_ID, webhook:URL or log; none: the deployment's default.",
    )
    allow_past: bool = Field(False, description="Accept an `at` in the past: run it at once.")
    approval: str = Field(
        "none",
        pattern="^(none|required)$",
        description="required: each occurrence waits until someone other than its creator "
        "approves it (POST /v1/occurrences/{ref}/approve). The paying account's approval_above "
        "may require it too.",
    )
    approval_timeout: str | None = Field(
        None,
        max_length=32,
        examples=["2h"],
        description="Unanswered this long after its due time, an occurrence is skipped or "
        "failed (`on_timeout`); none: it waits until someone decides.",
    )
    on_timeout: str | None = Field(
        None, pattern="^(skip|fail)$", description="With approval_timeout: skip (default) or fail."
    )


class Approve(Strict):
    reason: str = Field("", max_length=1000, description="Optional; kept in the actions log.")


class Reject(Strict):
    reason: str = Field(min_length=1, max_length=1000, description="Kept in the history.")


class Resolve(Strict):
    outcome: Annotated[str, Field(pattern="^(succeeded|failed|retry)$")] = Field(
        description="succeeded / failed: what the provider says happened; retry: send again "
        "with the same idempotency key."
    )
    reason: str = Field(min_length=1, max_length=1000, description="Kept in the history.")


class ReconciliationCreate(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(
        alias="from",
        min_length=1,
        max_length=40,
        examples=["2026-12-01"],
        description="First day (YYYY-MM-DD, UTC) or an RFC 3339 time.",
    )
    to: str = Field(
        min_length=1,
        max_length=40,
        examples=["2026-12-01"],
        description="Last day, included (YYYY-MM-DD), or the RFC 3339 end time (excluded).",
    )
    # Strict: a 0 or "yes" is refused, not taken for a bool (it changes occurrences).
    resolve: StrictBool = Field(
        False, description="Settle unknown occurrences from the provider's lookup answer."
    )


# -- responses ---------------------------------------------------------------------------------


class Account(Out):
    name: str
    currency: str
    balance: str = Field(description="Decimal string.")
    remind: str | None = Field(
        None, description="The reminder default of the payments it pays (e.g. 86400s)."
    )
    approval_above: str | None = Field(
        None, description="Its payments above this amount require approval; null: none do."
    )


class ChatLinkToken(Out):
    account: str
    channel: str
    url: str = Field(
        description="The one-time deep link (https://t.me/BOT?start=TOKEN): opened in a chat, "
        "it links that chat to the account. It works once, until `expires_at`.",
    )
    role: str = Field(description="What the chat linked by it may do: holder or approver.")
    expires_at: Timestamp


class ChatLink(Out):
    id: int
    account: str
    channel: str
    chat_id: str
    role: str = Field(description="holder or approver.")
    created_at: Timestamp


class Attempt(Out):
    number: int
    started_at: Timestamp | None
    finished_at: Timestamp | None
    outcome: str | None
    reason: str | None


class HistoryEntry(Out):
    at: Timestamp | None
    from_: str | None = Field(alias="from")
    to: str
    attempt: int
    reason: str | None


class Occurrence(Out):
    id: int
    payment_id: int
    key: str = Field(description="Its idempotency key at the payment provider.")
    due_at: Timestamp | None
    nominal_at: Timestamp | None = Field(
        description="The rule's own instant; differs from due_at when moved off a holiday."
    )
    state: str
    reason: str | None
    reference: str | None
    lateness_ms: int | None = Field(description="Start of the first attempt minus due time.")
    approval_deadline: Timestamp | None = Field(
        None, description="awaiting_approval: skipped or failed if not decided by then."
    )
    next_check_at: Timestamp | None
    finished_at: Timestamp | None
    attempts: list[Attempt]
    history: list[HistoryEntry]


class Notification(Out):
    id: int
    payment_id: int | None = Field(description="None: an event of no one payment.")
    event: str
    channel: str
    target: str
    state: str
    attempts: int
    last_error: str | None
    created_at: Timestamp | None
    sent_at: Timestamp | None
    dedup_key: str


class RecurrenceOut(Out):
    rrule: str
    start: str
    timezone: str
    business_day: str
    calendar: str | None


class Payment(Out):
    id: int
    state: str = Field(
        description="Where its series is: active (more occurrences to come), paused, done "
        "(every occurrence exists; `status` says what became of them) or cancelled."
    )
    payer: str = Field(alias="from")
    payee: str = Field(alias="to")
    amount: str = Field(description="Decimal string.")
    currency: str
    due_at: Timestamp | None
    cron: str | None
    recurrence: RecurrenceOut | None
    schedule: str | None = Field(description="The schedule for people; null when one-time.")
    catchup: str
    catchup_window: str | None
    remind: str | None = Field(
        description="How long before each occurrence its payer's "
        "linked chats are reminded (e.g. 86400s); null: never."
    )
    approval: str = Field("none", description="none, or required: occurrences await approval.")
    approval_timeout: str | None = None
    on_timeout: str | None = None
    timezone: str | None
    next_due_at: Timestamp | None
    memo: str
    notify: list[str]
    created_at: Timestamp | None


class PaymentSummary(Payment):
    status: str = Field(
        description="What became of it: scheduled (more to come), paused, pending (created, "
        "not final yet), cancelled, or the final state of its last occurrence (succeeded, "
        "failed, skipped, missed)."
    )


class ActorOut(Out):
    kind: str = Field(description="api_key, cli or python.")
    api_key_id: int | None = Field(description="The API key that acted (kind api_key).")
    name: str = Field(
        description="The key's name when it acted, or `cli (user)` / `python (user)`."
    )


class Action(Out):
    id: int
    at: Timestamp | None
    action: str = Field(
        description="create, cancel, pause, resume, skip_next, resolve, retry_notification "
        "(a payment's); create_account, deposit, create_api_key, revoke_api_key."
    )
    actor: ActorOut
    via: str = Field(description="api, dashboard, cli or python.")
    occurrence_id: int | None
    detail: dict[str, str | int] = Field(
        description="What else it said: a resolve's `outcome` and `reason`, a resent "
        "`notification`'s id."
    )
    summary: str = Field(description="For people: `cancelled by key #3 ops-alice via api`.")


class LoggedAction(Action):
    """An action of the whole log (GET /v1/actions): a payment's, or one tied to none."""

    payment_id: int | None = Field(
        description="The payment it was done to; null for an account created or funded, an "
        "API key created or revoked (`detail` names what)."
    )


class PaymentRow(PaymentSummary):
    """A payment as the list shows it: its status, and what needs attention beside it."""

    late_ms: int | None = Field(
        description="How long past due its oldest due occurrence is, not started yet (a "
        "worker starts one within milliseconds: workers down or saturated); null when none "
        "is more than 5 s past due, or the payment is paused or cancelled."
    )
    unresolved: str | None = Field(
        description="needs_review or unknown when an occurrence is (the first when both); "
        "null otherwise."
    )
    resolve_at: Timestamp | None = Field(
        description="When the resolver next asks the provider about its unknown occurrence."
    )


class PaymentDetail(PaymentSummary):
    occurrences: list[Occurrence] = Field(
        description="Its newest occurrences (at most 20), in due order (by due time, then "
        "id), as every occurrence was listed before there were pages. Older ones: "
        "`occurrences_next`."
    )
    occurrences_next_cursor: str | None = Field(
        description="Pass as `cursor` to GET /v1/payments/{id}/occurrences for the occurrences "
        "older than these; null when there are none."
    )
    occurrences_next: str | None = Field(
        description="That request's path and query (relative to the API's root); null when "
        "there are no older occurrences."
    )
    notifications: list[Notification]
    actions: list[Action] = Field(
        description="What people did to it (who, when, through what), newest first: the "
        "latest 20. Older ones: GET /v1/payments/{id}/actions with `cursor` = "
        "`actions_next_cursor`."
    )
    actions_next_cursor: str | None


class InFlight(Out):
    key: str
    state: str


class Cancelled(Out):
    id: int
    cancelled_occurrences: list[str] = Field(description="Keys that will never execute.")
    in_flight: list[InFlight] = Field(description="Executing now: they finish and are reported.")


class Resolved(Out):
    occurrence: str
    state: str


class Upcoming(Out):
    due_at: Timestamp | None
    nominal_at: Timestamp | None


class Held(Payment):
    held: list[str] = Field(default_factory=list, description="Occurrences held by a pause.")
    released: list[str] = Field(default_factory=list, description="Released by a resume.")
    missed: list[str] = Field(default_factory=list, description="Missed by the catch-up policy.")


class Skipped(Out):
    id: int
    skipped: str = Field(description="The key of the occurrence skipped.")
    due_at: Timestamp | None


class ProcessBeat(Out):
    role: str = Field(description="worker, scheduler, resolver, delivery or api.")
    host: str
    pid: int
    queue: str = Field(description="The queue it serves.")
    started_at: Timestamp | None
    last_seen: Timestamp
    seen_s_ago: float = Field(description="Seconds since its last heartbeat (every 5 s).")
    state: str = Field(
        description="up; down (no heartbeat for 3 beats: killed, hung or cut off); stopped "
        "(it stopped cleanly)."
    )


class Stats(Out):
    queue: dict[str, int] = Field(description="waiting, active, completed, failed, delayed, ...")
    occurrences: dict[str, int]
    notifications: dict[str, int]
    processes: list[ProcessBeat] = Field(
        default_factory=list,
        description="Every paysched process role of this queue seen within a day, by its "
        "heartbeat.",
    )


class Reconciliation(Out):
    id: int
    period_from: Timestamp
    period_to: Timestamp
    state: str = Field(description="running, done or failed.")
    trigger: str = Field(description="cli, api or schedule.")
    actor: str | None
    provider_listed: bool | None = Field(
        description="false: the provider cannot list; only unresolved occurrences were checked."
    )
    counts: dict[str, int | str] = Field(
        description="Discrepancies by kind, `discrepancies` in all, `resolved`, `occurrences`,"
        " `charges` and `compared_with` (provider, ledger or lookups)."
    )
    discrepancies: int
    error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None
    summary: str


class ReconciliationItem(Out):
    id: int
    kind: str = Field(
        description="charged_not_succeeded, succeeded_not_charged, amount_mismatch, "
        "duplicate_charge, unresolved, ledger_without_occurrence; resolved (not a discrepancy)."
    )
    occurrence_key: str | None
    reference: str | None = Field(description="The provider's charge id or ledger transfer.")
    detail: dict[str, object]


class ReconciliationDetail(Reconciliation):
    items: list[ReconciliationItem] = Field(description="One page of the discrepancies.")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page of items.")


class Page(Out, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class Health(Out):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class StatementEntry(Out):
    id: int
    at: Timestamp = Field(description="When the money moved (UTC).")
    amount: str = Field(description="Signed decimal string: negative leaves the account.")
    kind: str = Field(description="payment or deposit.")
    payment_id: int | None
    occurrence_key: str | None
    counterparty: str | None = Field(description="The other account of the transfer.")
    balance: str = Field(description="The account's balance after this entry.")


class Statement(Out):
    account: str
    currency: str
    month: str = Field(examples=["2027-01"])
    from_: Timestamp = Field(alias="from", description="The month's first instant (UTC).")
    to: Timestamp = Field(description="The next month's first instant (UTC), exclusive.")
    opening_balance: str = Field(description="Every entry before the month.")
    closing_balance: str = Field(description="Every entry before its end.")
    total: str = Field(description="closing_balance - opening_balance: the entries' sum.")
    entries: list[StatementEntry] = Field(description="By time, then id.")
