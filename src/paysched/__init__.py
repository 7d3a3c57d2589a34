"""paysched: scheduled payments, each exactly once, on time, never lost.

The public Python API, for embedding paysched in an asyncio application (see
`paysched.client` and the README)::

    async with paysched.open() as ps:
        payment = await ps.schedule(payer="alice", payee="bob", amount=Decimal("12.34"),
                                    in_=timedelta(seconds=30))

`import paysched` stays light: these names are imported on first use (PEP 562), so the
command line's start-up does not pay for the database and queue libraries behind them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from paysched.client import Opening, PaymentDetail, Paysched, Stats, open, to_decimal
    from paysched.config import Settings
    from paysched.db.store import CancelResult
    from paysched.domain import Account, Occurrence, OccurrenceState, Payment, PaymentState
    from paysched.errors import (
        BackendUnavailable,
        ConfigError,
        Conflict,
        InvalidInput,
        NotFound,
        PayschedError,
    )
    from paysched.events import Event, EventKind

# public name -> the module that defines it
_LAZY = {
    "open": "paysched.client",
    "Opening": "paysched.client",
    "Paysched": "paysched.client",
    "PaymentDetail": "paysched.client",
    "Stats": "paysched.client",
    "to_decimal": "paysched.client",
    "Settings": "paysched.config",
    "CancelResult": "paysched.db.store",
    "Account": "paysched.domain",
    "Occurrence": "paysched.domain",
    "OccurrenceState": "paysched.domain",
    "Payment": "paysched.domain",
    "PaymentState": "paysched.domain",
    "PayschedError": "paysched.errors",
    "ConfigError": "paysched.errors",
    "InvalidInput": "paysched.errors",
    "NotFound": "paysched.errors",
    "Conflict": "paysched.errors",
    "BackendUnavailable": "paysched.errors",
    "Event": "paysched.events",
    "EventKind": "paysched.events",
}

__all__ = [
    "Account",
    "BackendUnavailable",
    "CancelResult",
    "ConfigError",
    "Conflict",
    "Event",
    "EventKind",
    "InvalidInput",
    "NotFound",
    "Occurrence",
    "OccurrenceState",
    "Opening",
    "Payment",
    "PaymentDetail",
    "PaymentState",
    "Paysched",
    "PayschedError",
    "Settings",
    "Stats",
    "__version__",
    "open",
    "to_decimal",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'paysched' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
