"""The stand-in provider over real sockets: the contract, idempotency, faults, admin endpoints,
its ledger and its command line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from paysched.standin import ChargeRequest, Faults, Ledger, Mode, StandinProvider, parse_rates
from tests.conftest import wait_for_sync

TOKEN = "standin-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HANG_S = 0.6


def body(amount: str = "12.34", **overrides: Any) -> dict[str, Any]:
    base = {"amount": amount, "currency": "USD", "from": "alice", "to": "bob", "reference": "r"}
    base.update(overrides)
    return base


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[StandinProvider]:
    with StandinProvider(
        tmp_path / "standin.db", token=TOKEN, hang_s=HANG_S, slow_s=0.05, settle_s=0.3
    ) as p:
        yield p


@pytest.fixture
def http(provider: StandinProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=provider.url, headers=AUTH, timeout=10.0) as c:
        yield c


def pay(http: httpx.Client, key: str, **fields: Any) -> httpx.Response:
    return http.post("/payments", json=body(**fields), headers={"Idempotency-Key": key})


def in_background(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# -- the contract ----------------------------------------------------------------------------


def test_charge_and_read_back(provider: StandinProvider, http: httpx.Client) -> None:
    answer = pay(http, "k1", reference="k1")

    assert answer.status_code == 200
    charge = answer.json()
    assert charge["status"] == "succeeded"
    assert charge["id"].startswith("ch_")
    assert {k: charge[k] for k in ("amount", "currency", "from", "to", "reference")} == body(
        reference="k1"
    )
    assert http.get("/payments/k1").json() == charge
    [stored] = provider.charges()
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == UTC.utcoffset(None)


def test_unknown_key_is_404(http: httpx.Client) -> None:
    answer = http.get("/payments/never-sent")
    assert answer.status_code == 404
    assert answer.json()["reason"] == "no payment with this Idempotency-Key"


def test_idempotency_key_is_required(provider: StandinProvider, http: httpx.Client) -> None:
    answer = http.post("/payments", json=body())
    assert answer.status_code == 400
    assert answer.json()["reason"].startswith("Idempotency-Key")
    assert provider.charges() == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_token_is_required(provider: StandinProvider, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=provider.url, headers=headers) as c:
        post = c.post("/payments", json=body(), headers={"Idempotency-Key": "k"})
        get = c.get("/payments/k")
    assert (post.status_code, get.status_code) == (401, 401)
    assert TOKEN not in post.text
    assert provider.charges() == []


def test_no_token_configured_means_open(tmp_path: Path) -> None:
    with StandinProvider(tmp_path / "open.db") as p, httpx.Client(base_url=p.url) as c:
        assert c.post("/payments", json=body(), headers={"Idempotency-Key": "k"}).is_success


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**body(), "amount": 12.34}, "amount"),  # a JSON number: floats are refused
        (body(amount="-1.00"), "amount"),
        (body(amount="0.00"), "amount"),
        (body(amount="1e3"), "amount"),
        (body(amount="NaN"), "amount"),
        (body(currency="usd"), "currency"),
        ({k: v for k, v in body().items() if k != "from"}, "from"),
        (body(to=""), "to"),
        (body(reference=None), "reference"),
        ([body()], "body"),
        (b"{not json", "body"),
    ],
)
def test_bad_bodies_name_the_field(
    provider: StandinProvider, http: httpx.Client, payload: Any, field: str
) -> None:
    headers = {"Idempotency-Key": "k"}
    if isinstance(payload, bytes):
        answer = http.post("/payments", content=payload, headers=headers)
    else:
        answer = http.post("/payments", json=payload, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["reason"].startswith(f"{field}:")
    assert provider.charges() == []


def test_replay_returns_the_stored_charge(provider: StandinProvider, http: httpx.Client) -> None:
    first = pay(http, "k")
    second = pay(http, "k")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert len(provider.charges()) == 1


def test_same_key_other_body_is_422(provider: StandinProvider, http: httpx.Client) -> None:
    pay(http, "k", amount="12.34")
    answer = pay(http, "k", amount="12.35")
    assert answer.status_code == 422
    assert [c.amount for c in provider.charges()] == ["12.34"]


def test_same_key_in_flight_is_409(provider: StandinProvider, http: httpx.Client) -> None:
    provider.set_faults({"keys": {"k": "timeout_after"}})
    first: list[httpx.Response] = []
    thread = in_background(lambda: first.append(pay(http, "k")))
    wait_for_sync(lambda: "k" in provider.in_flight(), 5, "the first request")

    assert pay(http, "k").status_code == 409
    # Committed before the hang: a lookup already sees it.
    assert http.get("/payments/k").json()["status"] == "succeeded"
    thread.join(10)
    assert first[0].status_code == 200
    assert len(provider.charges()) == 1


def test_concurrent_posts_of_one_key_charge_once(
    provider: StandinProvider, http: httpx.Client
) -> None:
    provider.set_faults({"slow": 1.0})
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        answer = pay(http, "k")  # httpx.Client is thread-safe; each thread gets a connection
        with lock:
            answers.append(answer)

    threads = [in_background(post) for _ in range(20)]
    for t in threads:
        t.join(10)

    assert len(answers) == 20
    assert {a.status_code for a in answers} <= {200, 409}
    ids = {a.json()["id"] for a in answers if a.status_code == 200}
    assert len(ids) == 1
    [charge] = provider.charges()
    assert charge.id in ids


# -- faults ----------------------------------------------------------------------------------


def test_timeout_before_never_commits(provider: StandinProvider, http: httpx.Client) -> None:
    provider.set_faults({"keys": {"k": "timeout_before"}})
    holder: list[httpx.Response] = []
    started = time.monotonic()
    thread = in_background(lambda: holder.append(pay(http, "k")))
    wait_for_sync(lambda: "k" in provider.in_flight(), 5, "the request")

    # Received but undecided: 409, not "never received".
    assert http.get("/payments/k").status_code == 409
    thread.join(10)
    assert time.monotonic() - started >= HANG_S
    assert holder[0].status_code == 503  # a patient client learns nothing was done
    assert provider.charges() == []
    assert http.get("/payments/k").status_code == 404
    assert pay(http, "k").json()["status"] == "succeeded"


@pytest.mark.parametrize(("mode", "status"), [("error_after", 500), ("timeout_after", 200)])
def test_faults_after_commit(
    provider: StandinProvider, http: httpx.Client, mode: str, status: int
) -> None:
    provider.set_faults({"keys": {"k": mode}})
    started = time.monotonic()
    answer = pay(http, "k")
    assert answer.status_code == status
    assert (time.monotonic() - started >= HANG_S) == (mode == "timeout_after")
    assert [c.status for c in provider.charges()] == ["succeeded"]


def test_drop_after_closes_without_an_answer(provider: StandinProvider, http: httpx.Client) -> None:
    provider.set_faults({"keys": {"k": "drop_after"}})
    with pytest.raises(httpx.RemoteProtocolError):
        pay(http, "k")
    assert [c.status for c in provider.charges()] == ["succeeded"]
    assert http.get("/payments/k").json()["status"] == "succeeded"


def test_decline_and_slow(provider: StandinProvider, http: httpx.Client) -> None:
    provider.set_faults({"keys": {"d": "decline", "s": "slow"}, "slow_s": 0.2})
    declined = pay(http, "d").json()
    assert (declined["status"], declined["reason"]) == (
        "declined",
        "declined by stand-in (injected)",
    )
    started = time.monotonic()
    assert pay(http, "s").json()["status"] == "succeeded"
    assert time.monotonic() - started >= 0.2


def test_pending_settles_on_read(provider: StandinProvider, http: httpx.Client) -> None:
    provider.set_faults({"keys": {"k": "pending"}})
    assert pay(http, "k").json()["status"] == "pending"
    assert http.get("/payments/k").json()["status"] == "pending"
    wait_for_sync(lambda: http.get("/payments/k").json()["status"] != "pending", 5, "settlement")
    [charge] = provider.charges()
    assert charge.status == "succeeded"
    assert charge.settles_at is not None
    assert (charge.settles_at - charge.created_at).total_seconds() == pytest.approx(0.3)


def first_key_drawing(faults: Faults, mode: Mode, settle_to: str) -> str:
    for i in range(1000):
        key = f"key-{i}"
        draw = Faults(faults.seed, faults.snapshot()["rates"]).for_post(key)
        if (draw.mode, draw.settle_to) == (mode, settle_to):
            return key
    raise AssertionError(f"no key draws {mode}/{settle_to}")


def test_pending_settles_to_declined_as_drawn(tmp_path: Path) -> None:
    rates = {"pending": 0.5, "decline": 0.5}
    with (
        StandinProvider(tmp_path / "s.db", seed=11, rates=rates, settle_s=0.2) as p,
        httpx.Client(base_url=p.url) as c,
    ):
        p.set_balance("alice", "100.00")
        doomed = first_key_drawing(p.faults, Mode.PENDING, "declined")
        fine = first_key_drawing(p.faults, Mode.PENDING, "succeeded")
        assert pay(c, doomed).json()["status"] == "pending"
        assert pay(c, fine).json()["status"] == "pending"
        # A pending charge that will succeed holds the money at once; a doomed one holds none.
        assert p.ledger.balance("alice") == Decimal("87.66")
        wait_for_sync(lambda: all(ch.status != "pending" for ch in p.charges()), 5, "settling")
        settled = {ch.key: (ch.status, ch.reason) for ch in p.charges()}
        assert settled == {
            doomed: ("declined", "declined by stand-in at settlement (injected)"),
            fine: ("succeeded", None),
        }
        assert p.ledger.balance("alice") == Decimal("87.66")


def test_lookup_error(provider: StandinProvider, http: httpx.Client) -> None:
    pay(http, "k")
    provider.set_faults({"keys": {"k": ["lookup_error", "lookup_error"]}})
    assert [http.get("/payments/k").status_code for _ in range(3)] == [503, 503, 200]


def test_replays_are_never_charged_twice_whatever_the_faults(
    provider: StandinProvider, http: httpx.Client
) -> None:
    provider.set_faults({"error_after": 1.0})
    assert pay(http, "k").status_code == 500
    assert pay(http, "k").status_code == 500  # delivery faults hit replays too ...
    provider.set_faults({"clear": True, "decline": 0.5, "pending": 0.5})
    for _ in range(5):  # ... but decline/pending never rewrite a stored charge
        assert pay(http, "k").json()["status"] == "succeeded"
    assert [c.status for c in provider.charges()] == ["succeeded"]


def test_seeded_draws_are_reproducible() -> None:
    rates = parse_rates("decline=0.2,timeout_before=0.1,drop_after=0.1,pending=0.1")
    keys = [f"pay-{i}-1" for i in range(300)]

    def draws(seed: int, order: list[str]) -> dict[tuple[str, int], Mode]:
        faults = Faults(seed, rates)
        out: dict[tuple[str, int], Mode] = {}
        for n in range(3):
            for key in order:
                out[(key, n)] = faults.for_post(key).mode
        return out

    first = draws(7, keys)
    assert draws(7, list(reversed(keys))) == first  # independent of the interleaving
    assert draws(8, keys) != first
    declined = sum(mode is Mode.DECLINE for mode in first.values()) / len(first)
    assert declined == pytest.approx(0.2, abs=0.05)
    assert {Mode.NONE, Mode.TIMEOUT_BEFORE, Mode.DROP_AFTER, Mode.PENDING} <= set(first.values())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("decline=2", "decline: expected a rate"),
        ("explode=0.1", "explode: unknown fault mode"),
        ("decline", "expected mode=rate"),
        ("decline=0.6,slow=0.6", "more than 1"),
    ],
)
def test_bad_rates(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rates(text)


# -- admin endpoints -------------------------------------------------------------------------


def test_faults_endpoint(provider: StandinProvider, http: httpx.Client) -> None:
    answer = http.post("/_faults", json={"decline": 1.0, "keys": {"k": "slow"}, "hang_s": 0.5})
    assert answer.status_code == 200
    assert answer.json()["rates"] == {"decline": 1.0}
    assert answer.json()["keys"] == {"k": ["slow"]}
    assert provider.faults.hang_s == 0.5
    assert pay(http, "a").json()["status"] == "declined"
    assert pay(http, "k").json()["status"] == "succeeded"  # the override wins over the rates

    bad = http.post("/_faults", json={"explode": 0.5})
    assert bad.status_code == 400
    assert bad.json()["reason"].startswith("explode: unknown fault mode")
    assert http.post("/_faults", json={"slow": 0.9}).status_code == 400  # 0.9 + 1.0 > 1
    assert http.get("/_faults").json()["rates"] == {"decline": 1.0}  # unchanged by the errors

    http.post("/_faults", json={"clear": True})
    assert pay(http, "b").json()["status"] == "succeeded"
    provider.set_faults({"keys": {"b": "lookup_error"}})
    assert http.get("/payments/b").status_code == 503
    # What hit the requests, for a report: the decline by rate, the slow override, the
    # clean one after the clear, and the failed lookup.
    assert http.get("/_faults").json()["drawn"] == {
        "decline": 1,
        "lookup_error": 1,
        "none": 1,
        "slow": 1,
    }


def test_charges_endpoint(provider: StandinProvider, http: httpx.Client) -> None:
    provider.set_faults({"keys": {"d": "decline"}})
    pay(http, "s", reference="s")
    pay(http, "d", reference="d")

    rows = http.get("/_charges").json()

    assert [(r["key"], r["status"]) for r in rows] == [("s", "succeeded"), ("d", "declined")]
    assert set(rows[0]) == {
        "key",
        "id",
        "amount",
        "currency",
        "from",
        "to",
        "reference",
        "status",
        "reason",
        "created_at",
        "settles_at",
        "settle_to",
        "fingerprint",
    }
    assert rows == [c.row() for c in provider.charges()]


def test_accounts_endpoint_and_balances(provider: StandinProvider, http: httpx.Client) -> None:
    assert http.post("/_accounts", json={"name": "alice", "balance": "20.00"}).status_code == 200
    http.post("/_accounts", json={"name": "bob", "balance": "0"})

    assert pay(http, "k1").json()["status"] == "succeeded"
    assert http.get("/_accounts/alice").json() == {"name": "alice", "balance": "7.66"}
    assert http.get("/_accounts/bob").json() == {"name": "bob", "balance": "12.34"}
    short = pay(http, "k2").json()
    assert short["status"] == "declined"
    assert short["reason"] == "insufficient balance in alice: 7.66 available, 12.34 needed"
    assert http.get("/_accounts/alice").json()["balance"] == "7.66"
    assert http.get("/_accounts/carol").json() == {"name": "carol", "balance": None}

    bad = http.post("/_accounts", json={"name": "alice", "balance": 5.5})
    assert (bad.status_code, bad.json()["reason"][:8]) == (400, "balance:")
    assert http.post("/_accounts", json={"name": "alice", "balance": "-1"}).status_code == 400
    http.post("/_accounts", json={"name": "alice", "balance": None})  # unlimited again
    assert pay(http, "k3").json()["status"] == "succeeded"


# -- ledger and life cycle -------------------------------------------------------------------


def test_ledger_never_charges_a_key_twice(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    try:
        request = ChargeRequest("1.00", "USD", "a", "b", "k")
        first, created = ledger.commit("k", request)
        again, created_again = ledger.commit("k", request, status="declined")
        assert (created, created_again) == (True, False)
        assert again == first
        assert len(ledger.charges()) == 1
    finally:
        ledger.close()
    # The primary key is the last line of defence, even against a direct insert.
    raw = sqlite3.connect(tmp_path / "l.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("INSERT INTO charges SELECT * FROM charges WHERE key = 'k'")
    finally:
        raw.close()


def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "standin.db"
    with StandinProvider(db) as p, httpx.Client(base_url=p.url) as c:
        charge = pay(c, "k").json()
    with StandinProvider(db) as p, httpx.Client(base_url=p.url) as c:
        assert c.get("/payments/k").json() == charge
        assert pay(c, "k").json() == charge
        assert len(p.charges()) == 1


def test_memory_ledger_is_a_temporary_file() -> None:
    with StandinProvider(":memory:") as p:
        path = p.ledger.path
        assert path.exists()
    assert not path.exists()


def test_stop_does_not_wait_out_a_hang(tmp_path: Path) -> None:
    p = StandinProvider(tmp_path / "s.db", hang_s=60)
    p.start()
    p.set_faults({"keys": {"k": "timeout_before"}})
    c = httpx.Client(base_url=p.url, timeout=60)
    in_background(lambda: pay(c, "k"))
    wait_for_sync(lambda: "k" in p.in_flight(), 5, "the request")
    stopping = threading.Thread(target=p.stop)
    stopping.start()
    stopping.join(timeout=30)  # well inside the 60 s hang: stop() did not wait it out
    assert not stopping.is_alive()
    c.close()


def test_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PAYSCHED_STANDIN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paysched.standin",
            "--port",
            "0",
            "--db",
            str(tmp_path / "c.db"),
            "--seed",
            "3",
            "--rates",
            "decline=1.0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, headers=AUTH) as c:
            assert pay(c, "k").json()["status"] == "declined"
            assert c.get("/_faults").json()["seed"] == "3"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raw = sqlite3.connect(tmp_path / "c.db")
    try:
        assert raw.execute("SELECT status FROM charges").fetchall() == [("declined",)]
    finally:
        raw.close()


def test_command_line_rejects_bad_rates() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "paysched.standin", "--rates", "decline=7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "decline: expected a rate between 0 and 1" in done.stderr
