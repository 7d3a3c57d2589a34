"""Exports and statements on SQLite and PostgreSQL: the store's pages, the encodings, the
period's bounds, and the command line as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paysched.db.store import Store
from paysched.domain import format_amount
from paysched.exports import COLUMNS, chunks, decimal_string, encode, export_request
from tests.export_seed import SECRET, seed


def exported(store: Store, kind: str, fmt: str, page: int) -> tuple[str, list[dict[str, Any]]]:
    """The whole export's text, and its rows as dicts of text (CSV) or JSON values."""
    request = export_request(kind, fmt, "2027-01-01", "2027-02-01T00:00:00+00:00")
    text = "".join(c.text for c in chunks(store, request, page))
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        assert tuple(header) == COLUMNS[kind]
        return text, [dict(zip(header, row, strict=True)) for row in reader]
    rows = [json.loads(line) for line in text.splitlines()]
    assert all(tuple(r) == COLUMNS[kind] for r in rows)
    return text, rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("kind", ["payments", "occurrences", "ledger"])
def test_export_of_each_kind_holds_the_period_in_pages(store: Store, kind: str, fmt: str) -> None:
    expected = seed(store.engine)
    text, rows = exported(store, kind, fmt, page=2)  # several pages, the last one short
    # --from inclusive, --to exclusive, to the microsecond; in id order.
    assert [int(r["id"]) for r in rows] == expected[kind]
    assert exported(store, kind, fmt, page=1000)[0] == text  # pages change nothing
    if fmt == "csv":
        assert text.startswith("id,") and "\nid," not in text  # one header, not one a page
    for row in rows:
        for name, value in row.items():
            if name.endswith("_at") and value:
                assert value.endswith("Z")
                assert datetime.fromisoformat(value).tzinfo == UTC
    # No secret: notification targets are not exported, an occurrence's reason is redacted.
    assert SECRET not in text and "hooks.example" not in text and "notify" not in text


def test_amounts_are_decimal_strings_by_the_currency_exponent(store: Store) -> None:
    seed(store.engine)
    for fmt in ("csv", "jsonl"):
        _, rows = exported(store, "payments", fmt, page=1)
        assert [(r["amount"], r["currency"]) for r in rows] == [("100", "JPY"), ("1.005", "KWD")]
        assert [(r["payer"], r["payee"]) for r in rows] == [("taro", "hanako"), ("kw1", "kw2")]
        assert rows[0]["memo"] == 'memo, with "quotes" 2'
    _, ledger = exported(store, "ledger", "jsonl", page=3)
    assert [(r["account"], r["amount"], r["counterparty"]) for r in ledger] == [
        ("alice", "-12.34", "bob"),
        ("bob", "12.34", "alice"),
        ("alice", "-10.00", "bob"),
        ("bob", "10.00", "alice"),
    ]
    assert {r["kind"] for r in ledger} == {"payment"} and ledger[0]["payment_id"] == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_decimal_string_is_format_amount_for_every_exponent(database_url: str) -> None:
    for currency in ("EUR", "JPY", "KWD"):
        for minor in (0, 1, 5, 99, 100, 1005, 123456789, 10**15, -1, -1005, -(10**17)):
            assert decimal_string(minor, currency) == format_amount(minor, currency)


def test_statement_balances_across_months(store: Store) -> None:
    seed(store.engine)
    from paysched.exports import parse_month, statement_view

    def month(name: str, text: str) -> dict[str, Any]:
        return statement_view(store.exports.statement(name, *parse_month(text)), text)

    dec, jan, feb = (month("alice", m) for m in ("2026-12", "2027-01", "2027-02"))
    assert (dec["opening_balance"], dec["closing_balance"]) == ("0.00", "100.00")
    assert [(e["amount"], e["kind"], e["counterparty"]) for e in dec["entries"]] == [
        ("100.00", "deposit", "@external:EUR")
    ]
    # Entries at the month's first instant and a microsecond before its end are in it; the
    # one at the next month's first instant is not.
    assert jan["opening_balance"] == "100.00" and jan["closing_balance"] == "77.66"
    assert [(e["at"], e["amount"], e["balance"], e["payment_id"]) for e in jan["entries"]] == [
        ("2027-01-01T00:00:00.000000Z", "-12.34", "87.66", 1),
        ("2027-01-31T23:59:59.999999Z", "-10.00", "77.66", 1),
    ]
    assert jan["total"] == "-22.34" and jan["from"] == "2027-01-01T00:00:00.000000Z"
    assert feb["opening_balance"] == "77.66" and feb["closing_balance"] == "72.66"
    bob = month("bob", "2027-01")
    assert (bob["opening_balance"], bob["closing_balance"]) == ("0.00", "22.34")
    assert [e["counterparty"] for e in bob["entries"]] == ["alice", "alice"]
    empty = month("taro", "2027-01")
    assert empty["entries"] == [] and empty["opening_balance"] == empty["closing_balance"] == "0"


# -- the command line ----------------------------------------------------------------------------


def paysched(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paysched", *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_export_and_statement(env: dict[str, str], store: Store, tmp_path: Path) -> None:
    expected = seed(store.engine)
    out = tmp_path / "occ.csv"
    done = paysched(
        env,
        "export",
        "occurrences",
        "--from",
        "2027-01-01",
        "--to",
        "2027-02-01",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "occ.csv.part").exists()
    rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    assert [int(r["id"]) for r in rows] == expected["occurrences"]
    done = paysched(
        env,
        "export",
        "ledger",
        "--from",
        "2027-01-01T01:00:00+01:00",
        "--to",
        "2027-02-01",
        "--format",
        "jsonl",
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == expected["ledger"]
    done = paysched(env, "statement", "alice", "--month", "2027-01", "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert (view["opening_balance"], view["closing_balance"]) == ("100.00", "77.66")
    text = paysched(env, "statement", "alice", "--month", "2027-01").stdout
    assert "opening balance" in text and "77.66" in text and "payment #1 to bob" in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["export", "refunds", "--from", "2027-01-01", "--to", "2027-02-01"], 2, "kind:"),
        (["export", "ledger", "--from", "2027-02-30", "--to", "2027-03-01"], 2, "from:"),
        (["export", "ledger", "--from", "2027-01-01T00:00", "--to", "2027-03-01"], 2, "from:"),
        (["export", "ledger", "--from", "2027-01-01"], 2, "to: required"),
        (["export", "ledger", "--from", "2027-02-01", "--to", "2027-02-01"], 2, "to: must be"),
        (
            ["export", "ledger", "--from", "2027-01-01", "--to", "2027-02-01", "--format", "xml"],
            2,
            "format:",
        ),
        (["statement", "nobody", "--month", "2027-01"], 3, "no account named 'nobody'"),
        (["statement", "alice", "--month", "2027-13"], 2, "month:"),
        (["statement", "alice"], 2, "month:"),
    ],
)
def test_cli_bad_input_names_the_field(
    env: dict[str, str], store: Store, args: list[str], code: int, needle: str
) -> None:
    seed(store.engine)
    done = paysched(env, *args)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("error: ") and needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text() -> None:
    """A memo or an account name is whoever typed it: in CSV a cell starting =, +, -, @ is
    made text with a leading ' (JSON Lines keeps it as it is); a negative amount stays a
    number."""
    names = COLUMNS["ledger"]
    typed = {
        '=HYPERLINK("http://x")': '\'=HYPERLINK("http://x")',
        "+1+2": "'+1+2",
        "-2+3": "'-2+3",
        "@SUM(A1)": "'@SUM(A1)",
        "-12.34": "-12.34",
        "12.34": "12.34",
        "plain": "plain",
    }
    rows = [tuple(value if n == "counterparty" else "x" for n in names) for value in typed]
    got = list(csv.reader(io.StringIO(encode("ledger", "csv", rows, header=False))))
    at = names.index("counterparty")
    assert [row[at] for row in got] == list(typed.values())
    lines = encode("ledger", "jsonl", rows, header=False).splitlines()
    assert [json.loads(line)["counterparty"] for line in lines] == list(typed)
