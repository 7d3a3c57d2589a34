"""Every error paysched raises on purpose.

::

    PayschedError
    ├── ConfigError            a setting is missing or malformed (names the variable)
    ├── InvalidInput           a user-supplied value is malformed (names the field)
    ├── NotFound               an account, payment or occurrence does not exist
    ├── Conflict               the request contradicts current state (cancel a finished payment)
    ├── SchemaMismatch         the database's schema is older (or newer) than this paysched
    ├── BackendUnavailable     Redis or the database does not answer
    │   ├── DatabaseUnavailable  connection refused or lost, a timeout, a server shutting down
    │   └── InfrastructureError  it failed under an attempt: retried, never counted as one
    ├── DatabaseError          the database refused a statement for another reason
    │   ├── ConstraintViolation  a unique, foreign key or check constraint refused a row
    │   └── ValueRefused         a value the database cannot hold (out of range, too long)
    ├── DeliveryError          raised by notifiers
    │   ├── RetryableDelivery  429, 5xx, connection errors: retried (honouring retry_after)
    │   └── PermanentDelivery  chat not found, bot blocked, other 4xx: the notification is dead
    └── ExecutionError         raised by executors; decides retry vs. fail
        ├── RetryableError     timeout, 5xx, connection loss: retried with backoff
        └── PermanentError     retrying cannot help: failed at once
            ├── InsufficientFunds
            ├── BalanceLimit
            ├── UnknownAccount
            └── CurrencyMismatch

The message of each instance is meant for people: the CLI prints it as one line.

The database driver's own errors never leave paysched.db: paysched.db.errors turns each into
DatabaseUnavailable or a DatabaseError as the driver raises it, the driver's error kept as
its ``__cause__``.
"""

from __future__ import annotations


class PayschedError(Exception):
    """Base class of every paysched error."""


class ConfigError(PayschedError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class InvalidInput(PayschedError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(PayschedError):
    pass


class Conflict(PayschedError):
    pass


class SchemaMismatch(PayschedError):
    """The database's schema revision is not the one this paysched needs: older, for a
    command that does not migrate (`paysched migrate` fixes it), or of a newer paysched."""

    def __init__(self, message: str, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current


class BackendUnavailable(PayschedError):
    pass


class DatabaseUnavailable(BackendUnavailable):
    """paysched's database did not answer: the connection was refused, lost or timed out, or
    the server is shutting down or read-only (a failover). Transient: worth trying again."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate  # PostgreSQL's SQLSTATE, when the server sent one


class DatabaseError(PayschedError):
    """paysched's database refused a statement for another reason than its availability."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ConstraintViolation(DatabaseError):
    pass


class ValueRefused(DatabaseError):
    """A value the database cannot hold in its column: the input's fault, not the database's."""


class InfrastructureError(BackendUnavailable):
    """paysched's own database failed while an attempt ran, and nothing of the attempt was
    committed. Not the payment's fault: retried, never counted as one of its attempts."""


class ExecutionError(PayschedError):
    """Raised by an executor. Subclasses say whether a retry can help."""


class RetryableError(ExecutionError):
    """The outcome is unknown or the failure is transient: try again with the same key."""


class PermanentError(ExecutionError):
    """Retrying cannot succeed: the occurrence fails at once."""


class InsufficientFunds(PermanentError):
    pass


class BalanceLimit(PermanentError):
    """The payee's balance would pass domain.MAX_BALANCE: refused, never overflowed."""


class UnknownAccount(PermanentError):
    pass


class CurrencyMismatch(PermanentError):
    pass


class DeliveryError(PayschedError):
    """Raised by a notifier."""


class RetryableDelivery(DeliveryError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDelivery(DeliveryError):
    pass
