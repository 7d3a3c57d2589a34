"""/v1/reconciliations over a real App (the ledger executor: its "provider" is the ledger)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from paysched.db import tables as t
from paysched.db.store.accounts import entries, write_entries
from tests.api.conftest import Api, problem
from tests.api.test_dashboard import page, signed
from tests.conftest import wait_for
from tests.integration.helpers import fund


async def test_start_follow_page_and_list(api: Api) -> None:
    app = api.app
    await fund(app, {"alice": 1000, "bob": 0})
    with app.store.engine.begin() as conn:  # two transfers no occurrence stands behind
        ids = {r.name: r.id for r in conn.execute(t.accounts.select())}
        for n in (1, 2):
            rows = entries(f"stray-{n}", ids["alice"], ids["bob"], 100 * n, None, datetime.now(UTC))
            write_entries(conn, rows)
    day = datetime.now(UTC).date().isoformat()
    body = {"from": day, "to": day}
    problem(await api.post("/v1/reconciliations", body, scope="write"), 403, "insufficient_scope")
    started = await api.post("/v1/reconciliations", body, key="rc-1")
    assert started.status_code == 202, started.text
    rid = started.json()["id"]
    assert started.json()["trigger"] == "api"
    assert re.fullmatch(r"key #\d+ test-admin", started.json()["actor"]), started.json()
    logged = (await api.get("/v1/actions", action="reconcile")).json()["data"]
    assert [a["detail"]["reconciliation"] for a in logged] == [rid]  # once, not per replay
    replay = await api.post("/v1/reconciliations", body, key="rc-1")
    assert replay.json()["id"] == rid and replay.headers["Idempotent-Replayed"] == "true"

    async def done() -> bool:
        return bool((await api.get(f"/v1/reconciliations/{rid}")).json()["state"] == "done")

    await wait_for(done, 20, "the reconciliation to finish")
    first = (await api.get(f"/v1/reconciliations/{rid}", limit=1)).json()
    assert first["counts"]["ledger_without_occurrence"] == 2 and first["discrepancies"] == 2
    assert first["counts"]["compared_with"] == "ledger" and first["provider_listed"] is True
    assert [i["reference"] for i in first["items"]] == ["stray-1"] and first["has_more"]
    second = (
        await api.get(f"/v1/reconciliations/{rid}", limit=1, cursor=first["next_cursor"])
    ).json()
    assert [i["detail"]["amount"] for i in second["items"]] == ["2.00"]
    assert not second["has_more"]
    listed = (await api.get("/v1/reconciliations")).json()
    assert [r["id"] for r in listed["data"]] == [rid]

    # The dashboard lists the latest reports with their counts, and a report's items.
    latest = await page(api, "/dashboard/reconciliations")
    assert f'href="/dashboard/reconciliations/{rid}"' in latest
    assert "2 ledger without occurrence" in latest
    report = await page(api, f"/dashboard/reconciliations/{rid}")
    assert "stray-1" in report and "stray-2" in report and "2 discrepancies" in report
    missing = await api.client.get("/dashboard/reconciliations/999", headers=signed(api, "read"))
    assert missing.status_code == 404


async def test_bad_input_names_the_field(api: Api) -> None:
    wrong = await api.post("/v1/reconciliations", {"from": "soon", "to": "2026-12-01"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "from", wrong.text
    backwards = await api.post("/v1/reconciliations", {"from": "2026-12-02", "to": "2026-12-01"})
    assert backwards.status_code == 422 and backwards.json()["field"] == "to"
    extra = await api.post("/v1/reconciliations", {"from": "2026-12-01", "to": "x", "y": 1})
    assert extra.status_code == 422
    problem(await api.get("/v1/reconciliations/999"), 404, "not_found")
    bad_cursor = await api.get("/v1/reconciliations", cursor="zzz")
    problem(bad_cursor, 422, "invalid_cursor", "cursor")
