"""A chaos harness: real schedulers and workers under seeded faults, checked for exactly-once.

`python -m paysched.chaos --seed 1 --duration 60 --payments 500 --database postgresql` starts a
private Redis (AOF on), a private database (a PostgreSQL cluster or an SQLite file), several
`paysched scheduler` and worker processes, schedules one-time payments due over the run, injects
faults drawn from `random.Random(seed)`, lets the system drain, and checks the invariants from
the database and the ledger. Nothing in paysched imports this package.

Modules: `servers` (private Redis and PostgreSQL), `procs` (the paysched processes), `node` (a
worker process with a fault-injecting executor), `faults` (the seeded fault schedule and its
injection), `cancels` and `pauses` (a person cancelling, pausing and resuming payments),
`invariants` (the end-of-run checks), `report` (JSON and text), `runner` (one run).
"""
