"""paysched inside your own asyncio application.

::

    import paysched

    async with paysched.open() as ps:          # Settings.from_env(), or open(settings, **overrides)
        await ps.create_account("alice", currency="USD")
        await ps.deposit("alice", Decimal("100.00"))
        unsubscribe = ps.on("completed", on_completed)   # sync or async callback(event)
        payment = await ps.schedule(payer="alice", payee="bob", amount=Decimal("12.34"),
                                    in_=timedelta(seconds=30))
        await ps.start()                       # scheduler, workers, notifications: in this loop
        detail = await ps.wait_for(payment.id)
        await ps.stop()                        # graceful, like SIGTERM for `paysched run`

`paysched.open(...)` can also be awaited for an object that lives as long as the application
(a bot's start-up and shutdown hooks): ``ps = await paysched.open()`` ... ``await ps.close()``.

Every method checks its input exactly as the command line does (`paysched.inputs`) and raises
paysched's own errors (`paysched.errors`):

- `InvalidInput` — a value is malformed or refused; `.field` names the parameter
  (`amount`, `currency`, `at`, `in_`, `cron`, `tz`, `notify`, `payer`, `payee`, `id`, ...);
- `NotFound` — no such payment or account;
- `Conflict` — the request contradicts the current state (cancelling twice, starting twice,
  using a closed Paysched, an account that already exists);
- `BackendUnavailable` — Redis or the database does not answer (`open` says so within ~5 s);
- `ConfigError` — a setting is malformed; `.variable` names it.

Money is never a float: amounts go in as `Decimal` or strings (``"12.34"``) and come back as
integer minor units with their currency (`Payment.amount`, `Account.balance`); `to_decimal`
turns those into a Decimal.

Events are in-process: they come from the scheduler and workers this object started. A
callback runs on the event loop: a sync one inline (keep it short), an async one as its own
task. A callback that raises is logged and never affects a payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from paysched.actors import Actor
from paysched.app import App
from paysched.config import Settings, normalise_database_url
from paysched.db.store import CancelResult
from paysched.domain import (
    FINAL_STATES,
    Account,
    Occurrence,
    Payment,
    PaymentState,
    format_amount,
    parse_currency,
    parse_id,
    payment_state_filter,
    refuse_external,
)
from paysched.errors import ConfigError, Conflict, InvalidInput
from paysched.events import Event, EventKind
from paysched.inputs import (
    PYTHON_NAMES,
    Calendar,
    deposit_amount,
    parse_remind,
    payer_currency,
    payment_request,
)
from paysched.views import payment_status

log = logging.getLogger("paysched.client")

Callback = Callable[[Event], Awaitable[None] | None]

# How often wait_for looks at the database when no event wakes it: events only come from
# workers in this process, and a payment may be finished by a worker elsewhere.
WAIT_POLL_S = 0.25
# The command line's bounds for `paysched list --limit`.
MAX_LIST_LIMIT = 10_000


def to_decimal(minor: int, currency: str) -> Decimal:
    """Minor units as an exact Decimal: ``to_decimal(1234, "USD") == Decimal("12.34")``."""
    return Decimal(format_amount(minor, currency))


@dataclass(frozen=True, slots=True)
class PaymentDetail:
    """A payment with its occurrences (each due time of it: one for a one-time payment).

    `status` is what `paysched show` says: ``cancelled``, ``scheduled`` (more to come),
    ``pending`` (an occurrence is not final yet), or the final state of the last occurrence
    (``succeeded``, ``failed``, ``skipped``)."""

    payment: Payment
    status: str
    occurrences: tuple[Occurrence, ...]

    @property
    def amount(self) -> Decimal:
        return to_decimal(self.payment.amount, self.payment.currency)

    @property
    def final(self) -> bool:
        """Nothing more will happen: no occurrence will be added, and each one is final. An
        occurrence whose outcome is unknown or needs review is not final."""
        ended = (PaymentState.DONE, PaymentState.CANCELLED)  # a paused one may resume
        return self.payment.state in ended and all(
            o.state in FINAL_STATES for o in self.occurrences
        )


@dataclass(frozen=True, slots=True)
class Stats:
    """What `paysched stats` shows: queue job counts (waiting, active, completed, failed,
    delayed, total), occurrences per state, notifications per state."""

    queue: dict[str, int]
    occurrences: dict[str, int]
    notifications: dict[str, int]


def build_settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """`settings` (or Settings.from_env()) with `overrides` by field name.

    Overrides are code, not user input, so they are not parsed like the environment; but an
    unknown name is a ConfigError, a postgresql:// URL gets paysched's driver, and a new
    data_dir also moves the default SQLite file and an explicit redis_url is used as given
    (never replaced by the embedded server)."""
    base = settings if settings is not None else Settings.from_env()
    if not overrides:
        return base
    known = {f.name for f in dataclasses.fields(Settings)}
    for name in overrides:
        if name not in known:
            raise ConfigError(name, "not a paysched setting (see paysched.config.Settings)")
    changes = dict(overrides)
    if "data_dir" in changes:
        changes["data_dir"] = Path(changes["data_dir"]).expanduser()
        default_db = f"sqlite:///{base.data_dir / 'paysched.db'}"
        if "database_url" not in changes and base.database_url == default_db:
            changes["database_url"] = f"sqlite:///{changes['data_dir'] / 'paysched.db'}"
    if "database_url" in changes:
        changes["database_url"] = normalise_database_url(str(changes["database_url"]))
    if "redis_url" in changes:
        changes.setdefault("redis_explicit", True)
    return base.with_overrides(**changes)


def _event_kinds(kind: str | EventKind | Iterable[str | EventKind]) -> frozenset[EventKind]:
    names = [kind] if isinstance(kind, str) else list(kind)
    if names == ["*"]:
        return frozenset(EventKind)
    try:
        return frozenset(EventKind(n) for n in names)
    except ValueError:
        choices = ", ".join(k.value for k in EventKind)
        raise InvalidInput("kind", f"expected '*' or one of {choices}, got {kind!r}") from None


def _payment_id(value: int | str) -> int:
    """A positive id, as an int or (from a chat message, say) its decimal text."""
    if isinstance(value, str):
        return parse_id(value, "id")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput("id", f"expected a positive integer id, got {value!r}")
    return value


def _account_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected a string, got {type(value).__name__}")
    return value


class Paysched:
    """paysched embedded in the running event loop. Create it with `paysched.open(...)`."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Who acts through this API, recorded with each change it makes (`python (alice)`).
        self.actor = Actor.python()

    @property
    def settings(self) -> Settings:
        return self._app.settings

    @property
    def app(self) -> App:
        """The composition root underneath, for what this API does not cover. Not part of the
        stable surface."""
        return self._app

    @property
    def running(self) -> bool:
        """True between start() and stop() (even if the scheduler or workers failed)."""
        return self._runner is not None

    def _open_app(self) -> App:
        if self._closed:
            raise Conflict("this Paysched is closed; open a new one")
        return self._app

    # -- accounts ----------------------------------------------------------------------------

    async def create_account(
        self, name: str, *, currency: str = "USD", remind: timedelta | str | None = None
    ) -> Account:
        """A user account with a zero balance. Conflict if the name exists (names are
        compared after Unicode NFC and trimming); names starting with '@' are refused.
        `remind` (a timedelta, or '24h'): the reminder default of the payments it pays."""
        app = self._open_app()
        code = parse_currency(currency)
        default = None if remind is None else parse_remind(remind)
        return await app.create_account(_account_name(name), code, actor=self.actor, remind=default)

    async def deposit(self, name: str, amount: Decimal | str) -> Account:
        """Money entering paysched into `name`'s account; returns it with its new balance."""
        app = self._open_app()
        refuse_external(_account_name(name))
        account = await app.db(app.store.accounts.get_account, name)
        minor = deposit_amount(amount, account.currency)
        return await app.deposit(name, minor, actor=self.actor)

    async def get_account(self, name: str) -> Account:
        app = self._open_app()
        return await app.db(app.store.accounts.get_account, _account_name(name))

    async def list_accounts(self) -> list[Account]:
        app = self._open_app()
        return await app.db(app.store.accounts.list_accounts)

    # -- payments ----------------------------------------------------------------------------

    async def schedule(
        self,
        *,
        payer: str,
        payee: str,
        amount: Decimal | str,
        currency: str | None = None,
        at: datetime | str | None = None,
        in_: timedelta | str | None = None,
        cron: str | None = None,
        tz: str | None = None,
        memo: str = "",
        notify: Sequence[str] | None = None,
        allow_past: bool = False,
        rrule: str | None = None,
        every: str | None = None,
        start: datetime | str | None = None,
        count: int | None = None,
        until: str | None = None,
        business_day: str = "none",
        calendar: str | None = None,
        catchup: str = "all",
        catchup_window: timedelta | str | None = None,
        remind: timedelta | str | None = None,
        approval: str = "none",
        approval_timeout: timedelta | str | None = None,
        on_timeout: str | None = None,
    ) -> Payment:
        """Schedule a payment: exactly one of `at` (an aware datetime, or ISO-8601 text with
        an offset), `in_` (a timedelta, or '30s'), `cron` (5 fields; `tz` an IANA zone) or a
        calendar rule: `rrule` (RFC 5545, e.g. 'FREQ=MONTHLY;BYMONTHDAY=-1') or `every`
        ('2 weeks'), from `start` (local wall time in `tz`), optionally `count` / `until`,
        `business_day` (following, modified_following, preceding) with a holiday `calendar`
        ('DE', 'NYSE'). `catchup` (all, latest, none) and `catchup_window` say what runs of
        what fell due while paysched was down or the payment paused. `remind` (a timedelta,
        or '24h') reminds the payer's linked chats that long before each occurrence; None
        takes the payer account's default.
        `approval='required'`: each occurrence waits for someone other than its creator to
        approve it (`approve`); `approval_timeout` after its due time unanswered, it is
        skipped (`on_timeout='skip'`, the default) or failed (`'fail'`).
        `currency` defaults to the paying account's. A past `at` is refused unless
        `allow_past` (then it runs at once). `notify` lists
        targets ('log', 'telegram:CHAT_ID', 'webhook:URL'); None means PAYSCHED_NOTIFY.
        Whatever falls due within the look-ahead window is on the queue when this returns."""
        app = self._open_app()
        # On the thread pool: checking a calendar rule expands it, CPU the caller's event
        # loop would otherwise wait on.
        request = await app.db(
            payment_request,
            payer=payer,
            payee=payee,
            amount=amount,
            currency=currency,
            at=at,
            in_=in_,
            cron=cron,
            tz=tz,
            memo=memo,
            notify=notify,
            allow_past=allow_past,
            allow_private=app.settings.webhook_allow_private,
            now=app.clock.now(),
            names=PYTHON_NAMES,
            catchup=catchup,
            catchup_window=catchup_window,
            remind=remind,
            approval=approval,
            approval_timeout=approval_timeout,
            on_timeout=on_timeout,
            calendar=Calendar(rrule, every, start, count, until, business_day, calendar),
        )
        if request.currency is None:
            request = request.in_currency(
                await app.db(payer_currency, app.store.accounts.get_account, payer, PYTHON_NAMES)
            )
        try:
            return await app.create_payment(actor=self.actor, **request.fields())
        except InvalidInput as exc:
            # The store names the accounts as the command line does (--from, --to).
            renamed = {"from": PYTHON_NAMES.payer_field, "to": PYTHON_NAMES.payee_field}
            if exc.field not in renamed:
                raise
            raise InvalidInput(renamed[exc.field], exc.problem) from None

    async def get_payment(self, payment_id: int | str) -> PaymentDetail:
        """The payment, its status and its occurrences. NotFound if there is none."""
        app = self._open_app()
        pid = _payment_id(payment_id)
        payment = await app.db(app.store.payments.get_payment, pid)
        occurrences = await app.db(app.store.reads.occurrences_of, pid)
        return PaymentDetail(
            payment, payment_status(payment, [o.state for o in occurrences]), tuple(occurrences)
        )

    async def list_payments(self, *, state: str | None = None, limit: int = 50) -> list[Payment]:
        """Payments, newest first; `state` is active, paused, done or cancelled."""
        app = self._open_app()
        payment_state_filter(state)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIST_LIMIT:
            raise InvalidInput(
                "limit", f"expected an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}"
            )
        return await app.db(app.store.payments.list_payments, limit, state)

    async def cancel(self, payment_id: int | str) -> CancelResult:
        """Cancel the payment: none of its occurrences that have not started will execute
        (`.cancelled`); those already executing or being resolved finish (`.in_flight`).
        Conflict if it is already cancelled, NotFound if there is none."""
        app = self._open_app()
        return await app.cancel_payment(_payment_id(payment_id), actor=self.actor)

    async def pause(self, payment_id: int | str) -> Payment:
        """Nothing of the payment starts until `resume` (Conflict unless active)."""
        paused = await self._open_app().pause_payment(_payment_id(payment_id), actor=self.actor)
        return paused.payment

    async def resume(self, payment_id: int | str) -> Payment:
        """Active again; what fell due meanwhile follows its catch-up policy."""
        resumed = await self._open_app().resume_payment(_payment_id(payment_id), actor=self.actor)
        return resumed.payment

    async def approve(self, occurrence: int | str) -> Occurrence:
        """Approve an occurrence awaiting approval (by id or key): it is queued to run at its
        due time. Conflict if it awaits none, or if this user created its payment."""
        app = self._open_app()
        return await app.decide_occurrence(str(occurrence), True, actor=self.actor)

    async def reject(self, occurrence: int | str, reason: str) -> Occurrence:
        """Reject an occurrence awaiting approval: it is cancelled with `reason`."""
        app = self._open_app()
        return await app.decide_occurrence(str(occurrence), False, reason, actor=self.actor)

    async def skip_next(self, payment_id: int | str) -> Occurrence:
        """Skip the payment's next occurrence (recorded as skipped)."""
        return await self._open_app().skip_next(_payment_id(payment_id), actor=self.actor)

    async def preview(self, payment_id: int | str, count: int = 12) -> list[datetime]:
        """The payment's next `count` due times (UTC), after holidays and DST."""
        dues = await self._open_app().upcoming(_payment_id(payment_id), count)
        return [d.due for d in dues]

    async def stats(self) -> Stats:
        app = self._open_app()
        data = await app.stats()
        return Stats(data["queue"], data["occurrences"], data["notifications"])

    # -- events ------------------------------------------------------------------------------

    def on(
        self, kind: str | EventKind | Iterable[str | EventKind], callback: Callback
    ) -> Callable[[], None]:
        """Call `callback(event)` for each event of `kind` ('completed', 'failed', 'progress',
        'retrying', 'unknown', 'needs_review', 'resolved', 'error'; several; or '*' for all).
        Returns a function that unsubscribes (calling it again does nothing)."""
        app = self._open_app()
        kinds = _event_kinds(kind)
        if not callable(callback):
            raise InvalidInput("callback", f"expected a callable, got {type(callback).__name__}")

        def deliver(event: Event) -> None:
            if event.kind not in kinds:
                return
            if threading.get_ident() != self._loop_thread:
                # Every event is emitted on the loop today; should one come from a thread, the
                # callback still runs on the loop, where an asyncio application expects it.
                self._loop.call_soon_threadsafe(self._call, callback, event)
            else:
                self._call(callback, event)

        unsubscribe_bus = app.bus.subscribe(deliver)
        subscribed = True

        def unsubscribe() -> None:
            nonlocal subscribed
            if subscribed:
                subscribed = False
                unsubscribe_bus()

        return unsubscribe

    def _call(self, callback: Callback, event: Event) -> None:
        try:
            result = callback(event)
        except Exception:
            log.exception(
                "event callback %r failed on %s %s", callback, event.kind, event.occurrence_key
            )
            return
        if inspect.isawaitable(result):
            task = self._loop.create_task(self._guarded(result, callback, event))
            # Held until done: the loop keeps only weak references to tasks.
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    @staticmethod
    async def _guarded(result: Awaitable[None], callback: Callback, event: Event) -> None:
        try:
            await result
        except Exception:
            log.exception(
                "event callback %r failed on %s %s", callback, event.kind, event.occurrence_key
            )

    async def _drain_callbacks(self, timeout: float) -> None:
        """Let the async callbacks of events already emitted finish (within `timeout`)."""
        if self._callbacks:
            await asyncio.wait(set(self._callbacks), timeout=timeout)

    # -- running -----------------------------------------------------------------------------

    async def start(self, *, scheduler: bool = True, workers: bool = True) -> None:
        """Run the scheduler and the workers (with notification delivery) as background tasks
        of this event loop, like `paysched run`; `scheduler=False` or `workers=False` runs one
        part only (others may run elsewhere against the same Redis and database). Conflict if
        already running."""
        app = self._open_app()
        if self._runner is not None:
            raise Conflict("paysched is already running here; stop() it first")
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(
            app.run(self._stop, scheduler=scheduler, worker=workers), name="paysched"
        )

    async def stop(self) -> None:
        """Stop gracefully, like SIGTERM for `paysched run`: take no new jobs, let active
        payments finish within PAYSCHED_SHUTDOWN_GRACE, send their notifications, and let the
        async callbacks of their events finish. Raises what stopped the scheduler or workers,
        if anything did. Does nothing if not running."""
        runner, stop = self._runner, self._stop
        if runner is None or stop is None:
            return
        stop.set()
        self._runner = self._stop = None
        try:
            await runner
        finally:
            await self._drain_callbacks(self.settings.shutdown_grace.total_seconds())

    async def wait_for(self, payment_id: int | str, timeout: float = 30.0) -> PaymentDetail:
        """Wait until the payment is final (see PaymentDetail.final) and return it.

        TimeoutError after `timeout` seconds. A recurring payment is final only once
        cancelled and its occurrences are final; an unknown or needs_review outcome is not
        final. If the workers started here fail meanwhile, their error is raised."""
        app = self._open_app()
        pid = _payment_id(payment_id)
        wake = asyncio.Event()

        def on_event(event: Event) -> None:
            if event.payment_id == pid:
                wake.set()

        unsubscribe = app.bus.subscribe(on_event)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    wake.clear()  # before reading: an event during the read wakes the next wait
                    detail = await self.get_payment(pid)
                    if detail.final:
                        return detail
                    runner = self._runner
                    if runner is not None and runner.done() and not runner.cancelled():
                        runner.result()  # raises what stopped the scheduler or workers, if any
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), WAIT_POLL_S)
        except TimeoutError:
            raise TimeoutError(f"payment {pid} is not final after {timeout:g} s") from None
        finally:
            unsubscribe()

    # -- lifetime ----------------------------------------------------------------------------

    async def close(self) -> None:
        """stop() if running, then release the database, Redis and the embedded Redis (if
        paysched started one). Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.stop()
        finally:
            for task in list(self._callbacks):
                task.cancel()
            await self._app.close()

    async def __aenter__(self) -> Paysched:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Opening:
    """What `paysched.open()` returns: await it for a Paysched (close it yourself), or use it
    as ``async with paysched.open() as ps:`` (closed at the end of the block)."""

    def __init__(self, settings: Settings | None, overrides: dict[str, Any]) -> None:
        self._settings = settings
        self._overrides = overrides
        self._opened: Paysched | None = None

    async def _open(self) -> Paysched:
        settings = build_settings(self._settings, self._overrides)
        app = await App.open(settings)
        return Paysched(app)

    def __await__(self) -> Generator[Any, None, Paysched]:
        return self._open().__await__()

    async def __aenter__(self) -> Paysched:
        self._opened = await self._open()
        return self._opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            opened, self._opened = self._opened, None
            await opened.close()


def open(settings: Settings | None = None, /, **overrides: Any) -> Opening:
    """Open paysched on `settings` (default: Settings.from_env(), i.e. the environment as the
    command line reads it), with `overrides` by Settings field name (``queue_name="bot"``,
    ``database_url="sqlite:///bot.db"``, ``concurrency=5``).

    Connects to the database (creating or migrating its schema) and to Redis (or starts the
    embedded one); BackendUnavailable if either does not answer within ~5 s. Nothing runs
    until start()."""
    return Opening(settings, overrides)


__all__ = [
    "Callback",
    "Opening",
    "PaymentDetail",
    "Paysched",
    "Stats",
    "build_settings",
    "open",
    "to_decimal",
]
