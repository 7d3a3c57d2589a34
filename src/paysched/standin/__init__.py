"""A stand-in payment provider speaking the contract of `paysched.executors.http`.

It keeps its own SQLite ledger (`ledger`), injects seeded, reproducible faults (`faults`) and
serves on 127.0.0.1 from a background thread (`server.StandinProvider`), or from the command
line: ``python -m paysched.standin --port 8099 --db standin.db --seed 7 --rates decline=0.05``.
Used by the tests, the chaos harness and ``paysched demo --executor http``.
"""

from paysched.standin.faults import Faults, Mode, parse_rates
from paysched.standin.ledger import Charge, ChargeRequest, Ledger
from paysched.standin.server import StandinProvider

__all__ = [
    "Charge",
    "ChargeRequest",
    "Faults",
    "Ledger",
    "Mode",
    "StandinProvider",
    "parse_rates",
]
