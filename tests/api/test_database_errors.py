"""The API answers the database's real errors (PostgreSQL's, through the driver) as it did
before they became paysched's own (see paysched.db.errors): 503 with Retry-After for a
database that does not answer or fails a statement, 422 for a value it cannot hold."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest

from tests.api.conftest import Api, problem
from tests.conftest import PG_ADMIN

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def dbname(api: Api) -> str:
    return api.app.settings.database_url.rsplit("/", 1)[1]


@pytest.fixture
def in_db(dbname: str) -> Iterator[object]:
    """Runs SQL in the API's own database, as an operator would."""
    base = PG_ADMIN.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/{dbname}", autocommit=True) as conn:
        yield conn


async def test_a_database_refusing_connections_is_503(
    api: Api, dbname: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await api.get("/v1/accounts")).status_code == 200
    admin(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")
        with caplog.at_level(logging.WARNING, "paysched.api"):
            response = await api.get("/v1/accounts")
        body = problem(response, 503, "backend_unavailable")
        assert response.headers["retry-after"] == "5"
        # The driver's words (hosts, databases) go to the log, not to the client.
        assert dbname not in body["detail"]
        assert any("backend error: database unavailable" in r.getMessage() for r in caplog.records)
    finally:
        admin(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    assert (await api.get("/v1/accounts")).status_code == 200


async def test_a_failed_statement_is_503_and_a_refused_value_422(api: Api, in_db: object) -> None:
    conn = in_db
    assert isinstance(conn, psycopg.Connection)
    conn.execute("ALTER TABLE accounts ALTER COLUMN name TYPE varchar(3)")
    refused = await api.post("/v1/accounts", {"name": "alexandra"}, "write")
    body = problem(refused, 422, "invalid_input")
    assert body["detail"] == "a value is out of range for the database"
    conn.execute("ALTER TABLE accounts RENAME TO accounts_elsewhere")
    problem(await api.get("/v1/accounts"), 503, "backend_unavailable")
