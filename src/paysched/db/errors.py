"""The one place where the database driver's errors become paysched's (see paysched.errors).

`install` hooks every engine paysched runs on (make_engine, and any engine a Store is given):
SQLAlchemy calls the hook for each error of the driver, wherever the statement, connect or
COMMIT ran, and raises what it returns instead, the driver's own error as its ``__cause__``.
So no code, in paysched.db or outside it, meets a driver error: the store's transactions, the
bot's reads and a migration alike raise DatabaseUnavailable or a DatabaseError. A hook rather
than a wrapper at each transaction: a transaction added later cannot forget it.
"""

from __future__ import annotations

import weakref

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from paysched.errors import (
    BackendUnavailable,
    ConstraintViolation,
    DatabaseError,
    DatabaseUnavailable,
    ValueRefused,
)

# The engines already hooked. Not `event.contains`: SQLAlchemy's registry keys a listener by
# id(engine) and forgets it only when the listener's collection (on the engine's dialect) is
# garbage-collected, so a new engine at a freed engine's address read as hooked and was not:
# its driver errors escaped raw, now and then (a test's fresh SQLite "no such table").
_HOOKED: weakref.WeakSet[Engine] = weakref.WeakSet()


def install(engine: Engine) -> None:
    """Translate `engine`'s driver errors from now on (once per engine however often asked)."""
    if engine not in _HOOKED:
        event.listen(engine, "handle_error", _translate_error)
        _HOOKED.add(engine)


def translate(exc: DBAPIError, disconnect: bool = False) -> DatabaseUnavailable | DatabaseError:
    """paysched's error for SQLAlchemy's wrapper of a driver error. Unavailable: PEP 249's
    OperationalError and InterfaceError (a refused or lost connection, a timeout, a server
    shutting down, a lock or statement timeout, a deadlock's victim) and whatever the
    dialect or paysched's own handler (db.engine) took for a lost connection."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    first = _first_line(orig if orig is not None else exc)
    lost = disconnect or exc.connection_invalidated
    if lost or isinstance(exc, OperationalError | InterfaceError):
        return DatabaseUnavailable(f"database unavailable: {first}", sqlstate)
    if isinstance(exc, DataError):
        return ValueRefused(f"invalid value: {first}", sqlstate)
    if isinstance(exc, IntegrityError):
        return ConstraintViolation(f"database error: {first}", sqlstate)
    return DatabaseError(f"database error: {first}", sqlstate)


def described(exc: BaseException) -> str:
    """`exc` as one line for a retry's reason or a log: a translated error already says what it
    is ("database unavailable: …"); any other one (LostRace) is named a database error."""
    if isinstance(exc, DatabaseError | BackendUnavailable):
        return str(exc) or type(exc).__name__
    return f"database error: {_first_line(exc)}"


def _translate_error(ctx: ExceptionContext) -> DatabaseUnavailable | DatabaseError | None:
    # A failed pre-ping is the pool's to handle (it reconnects): SQLAlchemy expects its own
    # error back from it. An error that is not the driver's (a bug of paysched's, raised in
    # an event or a type's processing) is left as it is.
    if ctx.is_pre_ping or not isinstance(ctx.sqlalchemy_exception, DBAPIError):
        return None
    return translate(ctx.sqlalchemy_exception, ctx.is_disconnect)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
