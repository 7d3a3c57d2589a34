"""Prometheus metrics of this process: what its workers did, and how long its executor took.

Counters and histograms are fed in-process (from the event bus and the worker), so they count
what this process's workers did; `paysched run --api` serves them beside the API. The gauges
(queue depth, occurrences per state, the oldest due occurrence) describe the whole deployment
and are read from Redis and the database at scrape time by the API's /metrics.
Names follow Prometheus conventions: `_total` counters, base units (seconds), no per-account
or per-payment labels (unbounded label sets would grow the time series without limit).
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from paysched.events import Event, EventKind

OUTCOMES = Counter(
    "paysched_occurrence_outcomes",
    "Occurrence outcomes recorded by this process's workers and resolver.",
    ["outcome"],
)
START_LATENESS = Histogram(
    "paysched_start_lateness_seconds",
    "How late an occurrence's first attempt started after its due time.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
EXECUTOR_DURATION = Histogram(
    "paysched_executor_request_duration_seconds",
    "Duration of calls to the payment executor (a provider's API for the http executor).",
    ["executor", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Deployment-wide readings: in a group of processes (paysched.supervisor), the latest one
# written by any of them is the value, not one series per process.
_READING: Final = "mostrecent"
QUEUE_JOBS = Gauge(
    "paysched_queue_jobs",
    "Jobs in the Redis queue, by state.",
    ["state"],
    multiprocess_mode=_READING,
)
OCCURRENCES = Gauge(
    "paysched_occurrences",
    "Occurrences in the database, by state.",
    ["state"],
    multiprocess_mode=_READING,
)
NOTIFICATIONS = Gauge(
    "paysched_notifications",
    "Notifications in the outbox, by state.",
    ["state"],
    multiprocess_mode=_READING,
)
PROCESSES = Gauge(
    "paysched_processes",
    "paysched process roles by heartbeat: up, down or stopped.",
    ["role", "state"],
    multiprocess_mode=_READING,
)
OLDEST_DUE_AGE = Gauge(
    "paysched_oldest_due_occurrence_age_seconds",
    "Age of the oldest occurrence that is due and not yet final or unresolved (0 if none).",
    multiprocess_mode=_READING,
)

_OUTCOME_OF = {
    EventKind.COMPLETED: "succeeded",
    EventKind.FAILED: "failed",
    EventKind.RETRYING: "retrying",
    EventKind.UNKNOWN: "unknown",
    EventKind.NEEDS_REVIEW: "needs_review",
}


def on_event(event: Event) -> None:
    """Event-bus subscriber: outcome counters and start lateness."""
    if event.kind in _OUTCOME_OF:
        OUTCOMES.labels(_OUTCOME_OF[event.kind]).inc()
    elif event.kind is EventKind.RESOLVED:
        OUTCOMES.labels(f"resolved_{event.detail.get('outcome', 'unknown')}").inc()
    elif event.kind is EventKind.PROGRESS and "lateness_ms" in event.detail:
        START_LATENESS.observe(max(0.0, event.detail["lateness_ms"] / 1000))


def exposition() -> bytes:
    """The Prometheus text of this process, or of its whole group when it is one of a
    supervised group's processes (prometheus-client's multiprocess mode, set up by the
    supervisor through PROMETHEUS_MULTIPROC_DIR)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def observe_executor(executor: str, operation: str, seconds: float) -> None:
    EXECUTOR_DURATION.labels(executor, operation).observe(seconds)
