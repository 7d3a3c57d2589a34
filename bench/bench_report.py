"""The report: the table of medians, the lateness chart, the JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script, bench/ is on sys.path: the helpers live next to this file.
from bench_harness import TARGETS  # isort: skip


# -- report ---------------------------------------------------------------------------------------


def _row(
    name: str, db: str, value: Any, unit: str, target: str = "", ok: bool | None = None
) -> dict[str, Any]:
    return {
        "measurement": name,
        "database": db,
        "median": value,
        "unit": unit,
        "target": target,
        "met": ok,
    }


def summary_rows(all_results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    results = {k: v for k, v in all_results.items() if "error" not in v}
    for name, failed in all_results.items():
        if "error" in failed:
            rows.append(_row(f"{name}: FAILED {failed['error'][:60]}", "-", None, ""))
    for db, r in results.get("lateness", {}).items():
        m = r["median_ms"]
        for p in ("p50", "p95", "p99", "max"):
            target = TARGETS["lateness_p99_ms"] if p == "p99" else None
            rows.append(
                _row(
                    f"lateness {p}",
                    db,
                    m[p],
                    "ms",
                    f"<= {target:g} ms" if target else "",
                    None if target is None or m[p] is None else m[p] <= target,
                )
            )
    for r in results.get("throughput", {}).values():
        rows.append(
            _row(
                f"throughput {r['executor']} c={r['concurrency']}",
                r["database"],
                r["median_payments_per_s"],
                "payments/s",
            )
        )
    for db, r in results.get("burst", {}).items():
        v = r["median_all_succeeded_s"]
        target = TARGETS["burst_all_succeeded_s"]
        rows.append(
            _row(
                f"burst {r['payments']:,}: all succeeded",
                db,
                v,
                "s",
                f"<= {target:g} s",
                None if v is None else v <= target,
            )
        )
        rows.append(_row("burst lateness p50", db, r["median_lateness_p50_ms"], "ms"))
        rows.append(_row("burst lateness p99", db, r["median_lateness_p99_ms"], "ms"))
        rows.append(
            _row(
                "on-time payments behind the burst: lateness p50",
                db,
                r.get("median_ontime_lateness_p50_ms"),
                "ms",
            )
        )
        rows.append(
            _row(
                "on-time payments behind the burst: lateness p99",
                db,
                r.get("median_ontime_lateness_p99_ms"),
                "ms",
            )
        )
    for r in results.get("http", {}).values():
        rows.append(
            _row(
                f"http executor, provider 50 ms, c={r['concurrency']}",
                r["database"],
                r["median_payments_per_s"],
                "payments/s",
            )
        )
        rows.append(
            _row("  share of concurrency / 50 ms", r["database"], r["median_of_ceiling"], "x")
        )
    for r in results.get("processes", {}).values():
        db = r["database"]
        for k, by in r["by_processes"].items():
            how = f"worker --processes {k}" if k.isdigit() else f"{k} worker"
            rows.append(
                _row(
                    f"burst {r['payments']:,} {r['executor']}, {how}",
                    db,
                    by["median_all_succeeded_s"],
                    "s",
                )
            )
            rows.append(
                _row(
                    "  payments/s, vs one process",
                    db,
                    by["vs_one_process"],
                    "x",
                    ">= 1.6 (2 processes)" if k == "2" else "",
                    None
                    if k != "2" or by["vs_one_process"] is None
                    else by["vs_one_process"] >= 1.6,
                )
            )
    for db, r in results.get("scale", {}).items():
        v = r["median_tick_ms"]
        target = TARGETS["tick_ms_1m"]
        rows.append(
            _row(
                f"tick, {r['future_payments']:,} future payments",
                db,
                v,
                "ms",
                f"<= {target:g} ms",
                None if v is None else v <= target,
            )
        )
    fp = results.get("footprint")
    if fp:
        db = fp["database"]
        rows.append(_row("worker RSS idle", db, fp["median_worker_rss_idle_mib"], "MiB"))
        rows.append(_row("worker RSS peak (c=50)", db, fp["median_worker_rss_peak_mib"], "MiB"))
        rows.append(_row("Redis per delayed job", "-", fp["median_bytes_per_delayed_job"], "B"))
        rows.append(_row("Redis per completed job", db, fp["median_bytes_per_completed_job"], "B"))
        rows.append(
            _row("Redis keys per completed job", db, fp["median_keys_per_completed_job"], "keys")
        )
    for db, r in results.get("overhead", {}).items():
        rows.append(_row("bare BullMQ no-op c=50", "-", r["median_bare_jobs_per_s"], "jobs/s"))
        rows.append(_row("paysched no-op c=50", db, r["median_noop_payments_per_s"], "payments/s"))
        v = r["median_ratio"]
        target = TARGETS["noop_vs_bullmq"]
        rows.append(
            _row(
                "paysched no-op / bare BullMQ",
                db,
                v,
                "ratio",
                f">= {target:g}",
                None if v is None else v >= target,
            )
        )
    for db, r in results.get("cli", {}).items():
        for name, c in r["commands"].items():
            target = c["target_s"]
            rows.append(
                _row(
                    f"paysched {name} (p90 {c['p90_s']:g} s)",
                    db,
                    c["median_s"],
                    "s",
                    f"<= {target:g} s" if target is not None else "",
                    c["met"],
                )
            )
    rows.extend(api_rows(results.get("api", {})))
    for db, r in results.get("idle", {}).items():
        v = r["median_redis_commands_per_s"]
        target = TARGETS["idle_redis_commands_per_s"]
        rows.append(
            _row(
                "idle: Redis commands",
                db,
                v,
                "per s",
                f"< {target:g}/s",
                None if v is None else v < target,
            )
        )
        v = r["median_write_transactions_per_s"]
        target = TARGETS["idle_write_transactions_per_s"]
        rows.append(
            _row(
                "idle: write transactions",
                db,
                v,
                "per s",
                f"<= {target:g}/s",
                None if v is None else v <= target,
            )
        )
        rows.append(_row("idle: SQL statements", db, r["median_sql_statements_per_s"], "per s"))
    for db, r in results.get("export", {}).items():
        for name, label in (
            ("reference", "psql COPY"),
            ("cli", "paysched export"),
            ("http", "GET /v1/exports"),
        ):
            v = r[name]
            rows.append(_row(f"export {r['occurrences']:,}: {label}", db, v["median_s"], "s"))
            rows.append(_row("  rows/s", db, v["median_rows_per_s"], "rows/s"))
            rows.append(_row("  peak RSS", db, v["median_peak_mib"], "MiB"))
            if name != "reference":
                rows.append(_row("  time vs psql COPY", db, v["median_vs_reference"], "x"))
    return rows


API_ROWS = (  # (label, median key, unit) of each database's results["api"]
    ("API GET /healthz seq p50", "healthz_seq_p50_ms", "ms"),
    ("API create seq", "create_seq_per_s", "payments/s"),
    ("API create seq p99", "create_seq_p99_ms", "ms"),
    ("API create c=10", "create_c10_per_s", "payments/s"),
    ("API create c=10 p99", "create_c10_p99_ms", "ms"),
    ("CLI schedule p50 (per command)", "cli_schedule_p50_ms", "ms"),
    ("CLI schedule p99 (per command)", "cli_schedule_p99_ms", "ms"),
    ("CLI schedule 1,000 (extrapolated)", "cli_schedule_1000_extrapolated_s", "s"),
    ("API GET /payments/{id} c=50", "read_get_per_s", "req/s"),
    ("API GET /payments/{id} c=50 p99", "read_get_p99_ms", "ms"),
    ("API GET /payments/{id} c=50 errors", "read_get_errors", "requests"),
    ("API GET /payments c=50", "read_list_per_s", "req/s"),
    ("API GET /payments c=50 p99", "read_list_p99_ms", "ms"),
    ("API GET /payments c=50 errors", "read_list_errors", "requests"),
    ("CLI show p50", "cli_show_p50_ms", "ms"),
    ("CLI show p99", "cli_show_p99_ms", "ms"),
    ("CLI list p50", "cli_list_p50_ms", "ms"),
    ("CLI list p99", "cli_list_p99_ms", "ms"),
)


def api_rows(api: dict[str, Any]) -> list[dict[str, Any]]:
    """bench/measure_api.py's medians (load generator and server share the machine's cores)."""
    return [
        _row(label, db, r.get(f"median_{key}"), unit)
        for db, r in api.items()
        for label, key, unit in API_ROWS
    ]


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    header = f"{'measurement':<38} {'database':<11} {'median':>12} {'unit':<11} {'target':<11} met"
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        value = "-" if r["median"] is None else f"{r['median']:g}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        print(
            f"{r['measurement']:<38} {r['database']:<11} {value:>12} {r['unit']:<11} "
            f"{r['target']:<11} {met}"
        )


def lateness_chart(results: dict[str, Any], path: Path) -> bool:
    """Histogram and CDF of start lateness, all runs pooled, one series per database."""
    data = {
        db: [v for run in r["runs"] for v in run.get("lateness_values_ms", [])]
        for db, r in results.get("lateness", {}).items()
    }
    data = {db: sorted(v) for db, v in data.items() if v}
    if not data:
        return False
    try:
        import matplotlib
    except ModuleNotFoundError:  # the [bench] extra is not installed: the numbers still stand
        print("lateness chart skipped: matplotlib missing (bash scripts/bootstrap.sh '[bench]')")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = max(max(v) for v in data.values())
    bins = range(0, int(top) + 2)
    for db, values in data.items():
        hist.hist(
            values, bins=bins, histtype="step", linewidth=1.5, label=f"{db} (n={len(values)})"
        )
        ys = [(i + 1) / len(values) for i in range(len(values))]
        cdf.plot(values, ys, label=db)
    hist.set_yscale("log")
    hist.set_xlabel("start lateness (ms)")
    hist.set_ylabel("payments")
    hist.set_title("start lateness, all runs")
    hist.axvline(
        TARGETS["lateness_p99_ms"], color="red", linestyle="--", linewidth=1, label="p99 target"
    )
    hist.legend()
    cdf.set_xlim(0, max(top * 1.05, TARGETS["lateness_p99_ms"] * 1.1))
    cdf.set_xlabel("start lateness (ms)")
    cdf.set_ylabel("fraction started within")
    cdf.set_title("cumulative")
    for q in (0.5, 0.95, 0.99):
        cdf.axhline(q, color="grey", linestyle=":", linewidth=0.8)
    cdf.axvline(TARGETS["lateness_p99_ms"], color="red", linestyle="--", linewidth=1)
    cdf.legend(loc="lower right")
    fig.suptitle("paysched start lateness (started_at - due_at)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def strip_values(results: dict[str, Any]) -> None:
    for r in results.get("lateness", {}).values():
        for run in r["runs"]:
            run.pop("lateness_values_ms", None)
