"""In-process events: what happened to an occurrence, for logs, notifications and tests."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from paysched.logs import payment_fields

log = logging.getLogger("paysched.events")


class EventKind(StrEnum):
    PROGRESS = "progress"
    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    # The executor could not tell whether money moved; the resolver will ask the provider.
    UNKNOWN = "unknown"
    RESOLVED = "resolved"  # an unknown outcome became known (detail: outcome, by)
    NEEDS_REVIEW = "needs_review"  # a person must decide what happened
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: datetime
    occurrence_key: str
    payment_id: int | None = None
    attempt: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out to subscribers. A failing subscriber is logged and never breaks the payment."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %s %s", event.kind, event.occurrence_key)


def log_subscriber(event: Event) -> None:
    """The seed's log lines, one per event."""
    key, pid = event.occurrence_key, event.payment_id
    out = logging.LoggerAdapter(log, payment_fields(key, pid, event.attempt))
    if event.kind is EventKind.COMPLETED:
        out.info("job %s completed: payment #%s (attempt %s)", key, pid, event.attempt)
    elif event.kind is EventKind.FAILED:
        out.warning(
            "job %s failed after %s attempt(s): payment #%s: %s",
            key,
            event.attempt,
            pid,
            event.detail.get("reason"),
        )
    elif event.kind is EventKind.RETRYING:
        out.warning(
            "job %s attempt %s failed, retrying in %sms: %s",
            key,
            event.attempt,
            event.detail.get("delay_ms"),
            event.detail.get("reason"),
        )
    elif event.kind is EventKind.UNKNOWN:
        out.warning(
            "job %s outcome unknown (payment #%s): %s; asking the provider again later",
            key,
            pid,
            event.detail.get("reason"),
        )
    elif event.kind is EventKind.RESOLVED:
        out.info("job %s resolved as %s: payment #%s", key, event.detail.get("outcome"), pid)
    elif event.kind is EventKind.NEEDS_REVIEW:
        out.error(
            "job %s NEEDS REVIEW (payment #%s): %s; settle it with `paysched resolve`",
            key,
            pid,
            event.detail.get("reason"),
        )
    elif event.kind is EventKind.ERROR:
        out.error("job %s error: %s", key, event.detail.get("error"))
    else:
        out.debug("job %s progress %s%%", key, event.detail.get("progress"))
