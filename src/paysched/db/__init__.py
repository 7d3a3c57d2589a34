"""The database: tables, migrations and the only code that issues SQL (store.py)."""
