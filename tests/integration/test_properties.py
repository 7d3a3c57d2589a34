"""Property-based tests of the boundary: whatever a user types into the CLI or the
configuration, paysched answers with an exit code from the documented set and, when it refuses,
one line naming the field; never a traceback; and a refused command changes no balance and no
row. Run on SQLite and PostgreSQL (the CLI in-process, against the real databases and Redis).

Exit codes (README): 0 ok, 2 bad input or configuration, 3 not found, 4 conflict.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from paysched.cli import cli
from paysched.config import KNOWN_VARIABLES, Settings
from paysched.db.store import Store
from paysched.errors import ConfigError

EXAMPLES = 150
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Anything a keyboard, a paste or a script can produce (no surrogates: not valid in argv).
any_text = st.text(st.characters(codec="utf-8"), max_size=40)  # no surrogates: not in argv
DIGITS: list[Literal["Nd"]] = ["Nd"]
digits_any_script = st.text(st.characters(categories=DIGITS), min_size=1, max_size=6)
numberish = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**25), 10**25).map(str),
    st.floats().map(repr),
    st.from_regex(r"\A-?[0-9]{1,22}(\.[0-9]{0,4})?\Z"),
    digits_any_script,
)
amounts = st.one_of(numberish, any_text)
ids = st.one_of(st.integers(-(10**25), 10**25).map(str), digits_any_script, any_text)
instants = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?([+-][0-9]{2}:[0-9]{2}|Z)?\Z"
    ),
    any_text,
)
durations = st.one_of(
    st.from_regex(r"\A[0-9]{1,14}(\.[0-9]{1,3})?(ms|s|m|h|d)\Z"),
    st.builds(lambda n, u: f"{n}{u}", digits_any_script, st.sampled_from(["s", "m", "d"])),
    any_text,
)
cron_field = st.one_of(
    st.sampled_from(["*", "*/5", "0", "30", "1-5", "MON", "JAN", "L", "?"]),
    st.integers(-5, 100).map(str),
)
crons = st.one_of(
    st.lists(cron_field, min_size=4, max_size=7).map(" ".join),
    any_text,
    st.text(alphabet="*/0123456789 ,-", max_size=200),
)
name_parts = st.sampled_from([*string.ascii_letters, *" @\t\n\x1b.é", "e\u0301"])
names = st.one_of(any_text, st.lists(name_parts, max_size=12).map("".join))
hosts = st.sampled_from(
    [
        "example.com",
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "[::1]",
        "localhost",
        "hooks.example.org",
        "",
        "a b",
        "0.0.0.0",
    ]
)
urls = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
        st.sampled_from(["http", "https", "ftp", "javascript", ""]),
        hosts,
        st.one_of(st.just(""), st.integers(-5, 100_000).map(lambda p: f":{p}")),
        any_text,
    ),
    any_text,
)


@pytest.fixture
def runner(env: dict[str, str]) -> Iterator[tuple[CliRunner, dict[str, str], Store]]:
    store = Store.connect(env["DATABASE_URL"])
    store.migrate()
    run = CliRunner()
    for name in ("alice", "bob"):
        assert run.invoke(cli, ["accounts", "create", name], env=env).exit_code == 0
    yield run, env, store
    store.close()


@pytest.fixture
def payments(runner: Any) -> list[int]:
    """Three scheduled payments, so the ids the properties try can name real rows."""
    run, env, store = runner
    for amount in ("1.00", "2.00", "3.00"):
        args = ["schedule", "--from", "alice", "--to", "bob", "--amount", amount, "--in", "1h"]
        assert run.invoke(cli, args, env=env).exit_code == 0
    ids = sorted(p.id for p in store.payments.list_payments(10))
    assert len(ids) == 3
    return ids


# The README's rule, written out here rather than asked of paysched: ASCII digits, at most one
# dot with at most USD's 2 decimals, around it only whitespace, no sign.
USD_AMOUNT = re.compile(r"\A([0-9]{1,20})(?:\.([0-9]{1,2}))?\Z")
MAX_DEPOSIT = 10**15  # README: 10,000,000,000,000 per deposit, in minor units
MAX_BALANCE = 10**17  # README: per balance, in minor units


def usd_cents(text: str) -> int | None:
    """`text` in US cents if it is a valid USD amount, else None."""
    match = USD_AMOUNT.match(text.strip())
    if match is None:
        return None
    whole, fraction = match.group(1), match.group(2) or ""
    return int(whole) * 100 + int(fraction.ljust(2, "0"))


def test_the_usd_oracle() -> None:
    valid = {"12.34": 1234, " 7 ": 700, "0.5": 50, "1.05": 105}
    assert {text: usd_cents(text) for text in valid} == valid
    invalid = ["1.000", "1.", ".5", "1e2", "-1", "+3", "\u0661\u0662", "1,5", ""]
    assert [usd_cents(text) for text in invalid] == [None] * len(invalid)


def invoke(runner: CliRunner, env: dict[str, str], args: list[str]) -> Result:
    result = runner.invoke(cli, args, env=env)
    # Never a traceback: the only exception allowed is the CLI's own exit.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
        result.stdout,
        result.stderr,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def refused_with(result: Result, codes: set[int], *fields: str, value: str = "") -> None:
    """A refusal: an exit code from `codes`, one 'error:' line naming one of `fields`.

    A value that is itself option syntax ("--json", "--") may instead get the command line's
    own usage error (exit 2, its usage and the problem), as any CLI would."""
    assert result.exit_code in codes, (result.exit_code, result.stderr)
    if value.startswith("-") and result.exit_code == 2 and "Usage:" in result.stderr:
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if result.exit_code == 2:
        assert any(lines[0].startswith(f"error: {f}:") for f in fields), lines[0]


def state(store: Store) -> tuple[Any, ...]:
    """Everything a refused command must leave as it was."""
    accounts = tuple((a.name, a.balance) for a in store.accounts.list_accounts())
    return (
        accounts,
        len(store.payments.list_payments(10**6)),
        store.accounts.ledger_report().balanced,
    )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@PROPERTY
@given(amount=amounts)
def test_deposit_amounts(runner: Any, amount: str) -> None:
    run, env, store = runner
    before = store.accounts.get_account("alice").balance
    total = state(store)
    cents = usd_cents(amount)
    result = invoke(run, env, ["accounts", "deposit", "alice", amount])
    if cents is not None and 0 < cents <= MAX_DEPOSIT and before + cents <= MAX_BALANCE:
        assert result.exit_code == 0, (amount, result.stderr)  # a valid amount is taken
    if result.exit_code == 0:
        assert cents is not None and 0 < cents <= MAX_DEPOSIT, amount
        assert store.accounts.get_account("alice").balance == before + cents
    else:
        refused_with(result, {2}, "amount", value=amount)
        assert state(store) == total


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@PROPERTY
@given(
    amount=amounts,
    when=st.one_of(
        instants.map(lambda t: ["--at", t]),
        durations.map(lambda d: ["--in", d]),
        crons.map(lambda c: ["--cron", c]),
    ),
)
def test_schedule_amounts_and_times(runner: Any, amount: str, when: list[str]) -> None:
    run, env, store = runner
    total = state(store)
    args = ["schedule", "--from", "alice", "--to", "bob", "--amount", amount, *when]
    result = invoke(run, env, args)
    if result.exit_code == 0:
        assert len(store.payments.list_payments(10**6)) == total[1] + 1
    else:
        refused_with(
            result,
            {2},
            "amount",
            "at",
            "in",
            "cron",
            "schedule",
            value=min(amount, when[1], key=lambda v: not v.startswith("-")),
        )
        assert state(store) == total


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@PROPERTY
@given(
    ref=st.one_of(
        ids,
        st.builds(lambda n, pad: f"{pad}{n}{pad}", st.integers(0, 6), st.sampled_from(["", " "])),
    )
)
@example(ref="1").via("the first payment")
@example(ref=" 3 ").via("the last payment, padded")
@example(ref="4").via("one past the last")
def test_ids(runner: Any, payments: list[int], ref: str) -> None:
    run, env, store = runner
    total = state(store)
    text = ref.strip()
    number = int(text) if re.fullmatch(r"[0-9]+", text) else 0
    show = invoke(run, env, ["show", ref])
    cancel = invoke(run, env, ["cancel", ref])
    if number in payments:
        assert show.exit_code == 0, show.stderr
        assert show.stdout.startswith(f"payment {number} "), show.stdout
        # Cancelled now, or by an earlier example (a conflict: it is final already).
        assert cancel.exit_code in (0, 4), cancel.stderr
        assert store.payments.get_payment(number).state == "cancelled"
    elif 0 < number < 10**12:  # a positive id naming no row: not found
        for result in (show, cancel):
            assert result.exit_code == 3, (ref, result.stderr)
            refused_with(result, {3}, "id", value=ref)
    else:
        for result in (show, cancel):
            refused_with(result, {2, 3}, "id", value=ref)
    assert state(store)[0] == total[0]
    assert sorted(p.id for p in store.payments.list_payments(10)) == payments  # none made or lost


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@PROPERTY
@given(
    name=names, currency=st.one_of(st.sampled_from(["USD", "eur", "JPY", "XYZ", "XAU"]), any_text)
)
def test_account_names_and_currencies(runner: Any, name: str, currency: str) -> None:
    run, env, store = runner
    total = state(store)
    result = invoke(run, env, ["accounts", "create", name, "--currency", currency])
    if result.exit_code == 0:
        created = result.stdout.removeprefix("created account ").rsplit(" (", 1)[0]
        assert created == created.strip() and created.isprintable()
        assert store.accounts.get_account(name).name == created  # found again as typed
    else:
        refused_with(
            result,
            {2, 4},
            "name",
            "currency",
            value=min(name, currency, key=lambda v: not v.startswith("-")),
        )
        assert state(store) == total


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@PROPERTY
@given(url=urls)
def test_webhook_targets(runner: Any, url: str) -> None:
    run, env, store = runner
    total = state(store)
    args = [
        "schedule",
        "--from",
        "alice",
        "--to",
        "bob",
        "--amount",
        "1",
        "--in",
        "1h",
        "--notify",
        f"webhook:{url}",
    ]
    result = invoke(run, env, args)
    if result.exit_code == 0:
        (payment,) = store.payments.list_payments(1)
        (target,) = payment.notify
        host = target.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        assert host and not host.startswith(("127.", "10.", "169.254.", "[::1]", "localhost"))
        assert target.isascii() and target.isprintable() and " " not in target
    else:
        refused_with(result, {2}, "notify")
        assert state(store) == total


@PROPERTY
@given(
    variable=st.sampled_from(sorted(KNOWN_VARIABLES)),
    value=st.one_of(any_text, numberish, durations, urls, crons),
)
def test_configuration_values(variable: str, value: str, tmp_path_factory: Any) -> None:
    env = {"PAYSCHED_DATA_DIR": str(tmp_path_factory.mktemp("data")), variable: value}
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        assert exc.variable == variable and str(exc).startswith(f"{variable}: ")
