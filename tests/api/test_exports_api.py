"""GET /v1/exports/{kind} and GET /v1/accounts/{name}/statement over a real App."""

from __future__ import annotations

import csv
import io
import json
import threading
from typing import Any

import pytest

from paysched import exports
from paysched.api import exports as api_exports
from tests.api.conftest import Api, problem
from tests.export_seed import SECRET, seed

PERIOD = {"from": "2027-01-01", "to": "2027-02-01"}


async def test_export_streams_pages_off_the_event_loop(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = seed(api.app.store.engine)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    pages: list[int] = []
    real = exports.read_chunk

    def counted(*args: Any, **kwargs: Any) -> exports.Chunk:
        threads.append(threading.get_ident())
        chunk = real(*args, **{**kwargs, "page": 2})
        pages.append(chunk.rows)
        return chunk

    monkeypatch.setattr(api_exports, "read_chunk", counted)
    async with api.client.stream(
        "GET", "/v1/exports/occurrences", params=PERIOD, headers=api.auth("read")
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == (
            'attachment; filename="paysched-occurrences-20270101T000000Z-20270201T000000Z.csv"'
        )
        body = b"".join([part async for part in response.aiter_bytes()]).decode()
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [int(r["id"]) for r in rows] == expected["occurrences"]
    assert pages == [2, 2, 2, 1]  # read a page at a time ...
    assert loop_thread not in threads  # ... each on the database threads
    assert SECRET not in body
    # The same bytes as the command line's export.
    asked = exports.export_request("occurrences", "csv", "2027-01-01", "2027-02-01")
    assert body == "".join(c.text for c in exports.chunks(api.app.store, asked))


async def test_a_head_reads_one_page_not_the_whole_export(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD answers as GET without a body: it must not read every page of the period to
    drop them."""
    seed(api.app.store.engine)
    pages: list[int] = []
    real = exports.read_chunk

    def counted(*args: Any, **kwargs: Any) -> exports.Chunk:
        chunk = real(*args, **{**kwargs, "page": 2})
        pages.append(chunk.rows)
        return chunk

    monkeypatch.setattr(api_exports, "read_chunk", counted)
    response = await api.client.head(
        "/v1/exports/occurrences", params=PERIOD, headers=api.auth("read")
    )
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert pages == [2]  # the first page (its errors are the answer's status), no more
    pages.clear()
    whole = await api.get("/v1/exports/occurrences", **PERIOD)
    assert whole.status_code == 200 and pages == [2, 2, 2, 1]


async def test_export_jsonl_and_statement(api: Api) -> None:
    expected = seed(api.app.store.engine)
    response = await api.get("/v1/exports/ledger", format="jsonl", **PERIOD)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [r["id"] for r in lines] == expected["ledger"]
    assert lines[0]["amount"] == "-12.34" and lines[0]["created_at"].endswith("Z")
    statement = await api.get("/v1/accounts/alice/statement", month="2027-01")
    assert statement.status_code == 200, statement.text
    body = statement.json()
    assert (body["opening_balance"], body["closing_balance"]) == ("100.00", "77.66")
    assert body["from"] == "2027-01-01T00:00:00.000000Z"
    assert [e["balance"] for e in body["entries"]] == ["87.66", "77.66"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/exports/refunds", PERIOD, "kind"),
        ("/v1/exports/ledger", {**PERIOD, "format": "xml"}, "format"),
        ("/v1/exports/ledger", {"to": "2027-02-01"}, "from"),
        ("/v1/exports/ledger", {**PERIOD, "from": "2027-01-01T00:00"}, "from"),
        ("/v1/exports/ledger", {**PERIOD, "to": "yesterday"}, "to"),
        ("/v1/exports/ledger", {"from": "2027-02-01", "to": "2027-01-01"}, "to"),
        ("/v1/accounts/alice/statement", {"month": "2027-13"}, "month"),
        ("/v1/accounts/alice/statement", {"month": "Jan"}, "month"),
        ("/v1/accounts/alice/statement", {}, "month"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    api: Api, path: str, params: dict[str, str], field: str
) -> None:
    seed(api.app.store.engine)
    problem(await api.get(path, **params), 422, "invalid_input", field)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_unknown_account_and_no_key(api: Api) -> None:
    seed(api.app.store.engine)
    problem(await api.get("/v1/accounts/nobody/statement", month="2027-01"), 404, "not_found")
    anonymous = await api.client.get("/v1/exports/ledger", params=PERIOD)
    assert anonymous.status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_export_is_in_the_openapi_document(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    export = doc["paths"]["/v1/exports/{kind}"]["get"]
    assert set(export["responses"]["200"]["content"]) >= {"text/csv", "application/x-ndjson"}
    statement = doc["paths"]["/v1/accounts/{name}/statement"]["get"]
    assert statement["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Statement"
    }
