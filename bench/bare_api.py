#!/usr/bin/env python3
"""The bare reference of bench/measure_api_wrk.py: what FastAPI + uvicorn + psycopg_pool cost
with nothing of paysched, doing the same INSERT ... RETURNING and SELECT by id on its own
table. `BARE_DSN=postgresql://... python -m uvicorn bare_api:app --port N` (from bench/)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

TABLE = """CREATE TABLE IF NOT EXISTS bare_payments (
    id BIGSERIAL PRIMARY KEY, payer TEXT NOT NULL, payee TEXT NOT NULL,
    amount BIGINT NOT NULL, memo TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
pool = AsyncConnectionPool(
    os.environ["BARE_DSN"],
    min_size=10,
    max_size=10,
    open=False,
    connection_class=AsyncConnection[DictRow],
    kwargs={"row_factory": dict_row},
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(TABLE)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/payments", status_code=201)
async def create(body: dict[str, Any]) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO bare_payments (payer, payee, amount, memo) VALUES (%s, %s, %s, %s) "
            "RETURNING *",
            (body["from"], body["to"], 100, body.get("memo")),
        )
        row = await cur.fetchone()
    assert row is not None
    return {**row, "created_at": row["created_at"].isoformat()}


@app.get("/v1/payments/{payment_id}")
async def get(payment_id: int) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM bare_payments WHERE id = %s", (payment_id,))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404)
    return {**row, "created_at": row["created_at"].isoformat()}
