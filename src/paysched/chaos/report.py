"""The run report: payments, faults by kind, invariants, recovery times; JSON and a summary."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from paysched.chaos.faults import InjectedFault
from paysched.chaos.invariants import Result
from paysched.chaos.model import (
    INJECTED_DB_ERROR,
    CancelRecord,
    PauseRecord,
    ProviderView,
    SkipRecord,
)
from paysched.domain import FINAL_STATES, Occurrence, OccurrenceState, Transition

S = OccurrenceState


def _summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": round(ordered[0], 3),
        "mean": round(statistics.fmean(ordered), 3),
        "p50": round(ordered[len(ordered) // 2], 3),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "max": round(ordered[-1], 3),
    }


def recovery(faults: Sequence[InjectedFault], occurrences: Sequence[Occurrence]) -> dict[str, Any]:
    """Per fault kind: seconds from the fault to the first payment that completed (succeeded or
    failed) after the fault was over (after the restart, the end of the outage, the promotion
    of a replica)."""
    done = sorted(
        o.finished_at.timestamp()
        for o in occurrences
        if o.finished_at is not None and o.state in (S.SUCCEEDED, S.FAILED)
    )
    per_kind: dict[str, list[float]] = defaultdict(list)
    for fault in faults:
        # A failover is over when the promoted server answers, not when the old primary is
        # back as its replica (the fault's end, seconds later).
        over = fault.detail.get("promoted_at", fault.ended)
        after = next((ts for ts in done if ts > over), None)
        if after is not None:
            per_kind[fault.kind].append(after - fault.started)
    return {kind: _summary(values) for kind, values in sorted(per_kind.items())}


def payment_stats(
    occurrences: Sequence[Occurrence], transitions: Sequence[Transition], planned: int
) -> dict[str, Any]:
    states = Counter(o.state.value for o in occurrences)
    reasons: Counter[str] = Counter()
    for o in occurrences:
        if o.state == S.FAILED:
            text = o.reason or ""
            if "insufficient funds" in text or "insufficient balance" in text:
                reasons["insufficient funds"] += 1
            elif "declined by stand-in" in text:
                reasons["declined by the provider"] += 1
            elif "after" in text and "attempts" in text:
                reasons["retries exhausted"] += 1
            elif "gave up" in text:
                reasons["gave up (workers kept dying)"] += 1
            else:
                reasons[text[:60]] += 1
    review = Counter(
        (o.reason or "")[:80] for o in occurrences if o.state == S.NEEDS_REVIEW
    )  # what was left to a person, and why
    lateness = [
        (o.started_at - o.due_at).total_seconds() * 1000 for o in occurrences if o.started_at
    ]
    return {
        "planned": planned,
        "occurrences": len(occurrences),
        "states": dict(sorted(states.items())),
        "failed_by_reason": dict(reasons),
        "needs_review_by_reason": dict(review),
        "retries": sum(1 for tr in transitions if tr.to_state == S.RETRYING),
        # Injected database errors that hit an attempt and released it (not counted).
        "released_after_db_error": sum(
            1 for tr in transitions if INJECTED_DB_ERROR in (tr.reason or "")
        ),
        "takeovers": sum(
            1 for tr in transitions if tr.from_state == S.EXECUTING and tr.to_state == S.EXECUTING
        ),
        "start_lateness_ms": _summary(lateness),
    }


def unknown_resolution(transitions: Sequence[Transition]) -> dict[str, Any]:
    """Seconds from an occurrence's first `unknown` to the final state it was resolved to (a
    resend in between included): what an unknown outcome costs before it is known."""
    first_unknown: dict[int, datetime] = {}
    took: list[float] = []
    for tr in sorted(transitions, key=lambda tr: tr.at):
        if tr.to_state == S.UNKNOWN:
            first_unknown.setdefault(tr.occurrence_id, tr.at)
        elif tr.to_state in FINAL_STATES and tr.occurrence_id in first_unknown:
            took.append((tr.at - first_unknown.pop(tr.occurrence_id)).total_seconds())
    return {**_summary(took), "unresolved": len(first_unknown)}


def cancel_stats(
    faults: Sequence[InjectedFault], records: Sequence[CancelRecord]
) -> dict[str, Any]:
    by_target: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for f in faults:
        if f.kind == "cancel":
            by_target[str(f.detail.get("target"))] += 1
            outcomes[str(f.detail.get("outcome", "")).split(":")[0]] += 1
    return {
        "issued": sum(by_target.values()),
        "by_target": dict(sorted(by_target.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "committed": len(records),  # the end-of-run cancels of recurring payments included
        "in_flight_at_cancel": sum(len(r.in_flight) for r in records),
        "occurrences_cancelled": sum(len(r.cancelled) for r in records),
    }


def pause_stats(
    faults: Sequence[InjectedFault],
    records: Sequence[PauseRecord],
    occurrences: Sequence[Occurrence],
) -> dict[str, Any]:
    """The pauses the harness made, how they ended, and what was missed (by a resume, or by
    a scheduler's catch-up after one, or after paysched's own downtime)."""
    outcomes: Counter[str] = Counter()
    for f in faults:
        if f.kind == "pause":
            outcomes[str(f.detail.get("outcome", "")).split(":")[0]] += 1
    held = [
        (r.resume_called_at - r.paused_at).total_seconds()
        for r in records
        if r.resume_called_at is not None
    ]
    return {
        "issued": sum(outcomes.values()),
        "paused": len(records),
        "outcomes": dict(sorted(Counter(r.outcome for r in records).items())),
        "fault_outcomes": dict(sorted(outcomes.items())),
        "held_s": _summary(held),
        "held_occurrences": sum(len(r.held) for r in records),
        "missed_at_resume": sum(len(r.missed) for r in records),
        "missed": sum(1 for o in occurrences if o.state == S.MISSED),
    }


def skip_stats(faults: Sequence[InjectedFault], records: Sequence[SkipRecord]) -> dict[str, Any]:
    """The skips the harness asked for and how each ended (skipped, refused: nothing left)."""
    outcomes = Counter(
        str(f.detail.get("outcome", "")).split(":")[0] for f in faults if f.kind == "skip"
    )
    return {
        "issued": sum(outcomes.values()),
        "skipped": len(records),
        "outcomes": dict(sorted(outcomes.items())),
    }


def provider_stats(view: ProviderView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {
        "faults_drawn": view.drawn,
        "charges": dict(sorted(Counter(str(c["status"]) for c in view.charges).items())),
    }


def run_report(
    *,
    seed: int,
    database: str,
    executor: str,
    duration: float,
    payments: dict[str, Any],
    faults: Sequence[InjectedFault],
    results: Sequence[Result],
    recovery_times: dict[str, Any],
    drain_s: float,
    unexpected_exits: dict[str, list[int]],
    started: datetime,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "seed": seed,
        "database": database,
        "executor": executor,
        "duration_s": duration,
        "started": started.isoformat(),
        "payments": payments,
        "faults": dict(sorted(Counter(f.kind for f in faults).items())),
        "fault_log": [
            {
                "kind": f.kind,
                "at": round(f.started, 3),
                "took_s": round(f.ended - f.started, 3),
                **f.detail,
            }
            for f in faults
        ],
        "invariants": {r.name: r.as_dict() for r in results},
        "violations": sum(len(r.violations) for r in results),
        "recovery_s": recovery_times,
        "drain_s": round(drain_s, 2),
        "unexpected_exits": unexpected_exits,
        **extra,
    }


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    states: Counter[str] = Counter()
    pauses = 0
    for run in runs:
        faults.update(run["faults"])
        states.update(run["payments"]["states"])
        pauses += (run.get("pauses") or {}).get("paused", 0)
    recov: dict[str, list[float]] = defaultdict(list)
    drawn: Counter[str] = Counter()
    unknown_max: list[float] = []
    unknown_p50: list[float] = []
    for run in runs:
        for kind, summary in run["recovery_s"].items():
            if summary.get("n"):
                recov[kind].append(summary["max"])
        drawn.update((run.get("provider") or {}).get("faults_drawn", {}))
        if run.get("unknown_to_resolved_s", {}).get("n"):
            unknown_max.append(run["unknown_to_resolved_s"]["max"])
            unknown_p50.append(run["unknown_to_resolved_s"]["p50"])
    return {
        "runs": len(runs),
        "seeds": [r["seed"] for r in runs],
        "total_duration_s": sum(r["duration_s"] for r in runs),
        "payments": sum(r["payments"]["planned"] for r in runs),
        "states": dict(sorted(states.items())),
        "faults": dict(sorted(faults.items())),
        "pauses": pauses,
        "violations": sum(r["violations"] for r in runs),
        # The end step's `paysched reconcile`: each discrepancy is also a violation, but for
        # the occurrences parked in needs_review, which it lists for a person (counted apart).
        "reconcile_discrepancies": sum(
            ((r.get("reconcile") or {}).get("discrepancies") or 0)
            - ((r.get("reconcile") or {}).get("parked_for_review") or 0)
            for r in runs
        ),
        "reconcile_parked_for_review": sum(
            (r.get("reconcile") or {}).get("parked_for_review") or 0 for r in runs
        ),
        "worst_recovery_s": {k: round(max(v), 3) for k, v in sorted(recov.items())},
        "provider_faults_drawn": dict(sorted(drawn.items())),
        "unknown_to_resolved_s": {
            "p50_of_runs": round(statistics.median(unknown_p50), 3) if unknown_p50 else None,
            "max": round(max(unknown_max), 3) if unknown_max else None,
            "resolved": sum(r.get("unknown_to_resolved_s", {}).get("n", 0) for r in runs),
        },
    }


def text(run: dict[str, Any]) -> str:
    p = run["payments"]
    lines = [
        f"seed {run['seed']} ({run['database']}, {run['executor']}, {run['duration_s']:.0f}s): "
        f"{p['planned']} payments -> {p['states']}, failed by reason {p['failed_by_reason']}, "
        f"{p['retries']} retries, {p['takeovers']} takeovers, drained in {run['drain_s']}s",
        f"  faults: {run['faults']}",
        "  invariants: "
        + ", ".join(
            f"{name} {'ok' if r['ok'] else 'VIOLATED x' + str(r['violations'])}"
            for name, r in run["invariants"].items()
        ),
        "  recovery (s, fault -> next completed payment): "
        + ", ".join(
            f"{k} p50 {v['p50']} max {v['max']}" for k, v in run["recovery_s"].items() if v.get("n")
        ),
    ]
    if run.get("provider"):
        lines.append(f"  provider: {run['provider']}")
    if run.get("unknown_to_resolved_s", {}).get("n"):
        u = run["unknown_to_resolved_s"]
        lines.append(f"  unknown -> resolved: {u['n']} (p50 {u['p50']}s, max {u['max']}s)")
    if run.get("reconcile"):
        lines.append(f"  reconcile: {run['reconcile'].get('summary') or run['reconcile']}")
    if run.get("cancels"):
        lines.append(f"  cancels: {run['cancels']}")
    if run.get("pauses"):
        lines.append(f"  pauses: {run['pauses']}")
    if run["unexpected_exits"]:
        lines.append(f"  processes that exited on their own: {run['unexpected_exits']}")
    return "\n".join(lines)
