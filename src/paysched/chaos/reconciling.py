"""The chaos run's last step: `paysched reconcile` over the run's period, as an operator would
run it, while the stand-in provider is still up. Whatever faults were injected, paysched's
occurrences, the provider's charges and the ledger must agree at the end: each discrepancy it
reports is a violation, but for an occurrence parked in needs_review (listed, as it must be,
for the person who settles it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Any

from paysched.chaos.invariants import Result

TIMEOUT_S = 300.0


def judge(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The report's items that are violations, and how many are parked for a person."""
    violations, parked = [], 0
    for item in items:
        if item["kind"] == "resolved":
            continue
        if item["kind"] == "unresolved" and item["detail"].get("state") == "needs_review":
            # Where paysched stops guessing (a job that kept killing its workers): parked for
            # a person, which reconcile rightly lists; the invariants all_due_final and
            # unknowns_resolved hold it to a reason, provider_charged_once to one charge.
            parked += 1
            continue
        violations.append(item)
    return violations, parked


def unexplained_exit(code: int, violations: list[dict[str, Any]], parked: int) -> bool:
    """A non-zero exit that no listed item accounts for: 1 says "discrepancies", which the
    violations or the occurrences parked for review are; anything else is a failed run."""
    return code != 0 and not violations and not (code == 1 and parked)


def reconcile_check(
    env: dict[str, str], start: datetime, end: datetime
) -> tuple[Result, dict[str, Any]]:
    """Run `paysched reconcile --from start --to end --json`; the invariant and, for the
    report, its exit code, counts and summary line."""
    result = Result(
        "reconcile_agrees",
        "`paysched reconcile` over the run's period finds no discrepancy between the "
        "occurrences, the provider's charges (or the ledger) and the ledger",
    )
    command = [
        sys.executable,
        "-m",
        "paysched",
        "reconcile",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--json",
    ]
    try:
        done = subprocess.run(
            command, env=os.environ | env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        result.violations.append({"problem": f"reconcile took longer than {TIMEOUT_S:g} s"})
        return result, {"exit": None}
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        result.violations.append(
            {"problem": f"reconcile exited {done.returncode}", "stderr": done.stderr[-2000:]}
        )
        return result, {"exit": done.returncode}
    report = doc["reconciliation"]
    violations, parked = judge(doc["items"])
    result.violations.extend(violations)
    if unexplained_exit(done.returncode, result.violations, parked):
        result.violations.append(
            {"problem": f"reconcile exited {done.returncode}", "report": report}
        )
    summary = {
        "exit": done.returncode,
        "state": report["state"],
        "counts": report["counts"],
        "discrepancies": report["discrepancies"],
        "parked_for_review": parked,
        "summary": report["summary"],
    }
    return result, summary
