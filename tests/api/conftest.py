"""An API over a real App (real Redis, SQLite and PostgreSQL), driven in-process over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from paysched.api import create_api
from paysched.app import App
from paysched.db.apikeys import ApiKeys


@dataclass
class Api:
    app: App
    api: FastAPI
    client: httpx.AsyncClient
    keys: dict[str, str]  # scope -> key

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def post(
        self,
        path: str,
        body: object = None,
        scope: str = "admin",
        key: str | None = None,
        **headers: str,
    ) -> httpx.Response:
        extra = {"Idempotency-Key": key} if key else {}
        return await self.client.post(path, json=body, headers=self.auth(scope) | extra | headers)

    async def get(self, path: str, scope: str = "read", **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.auth(scope))


@pytest.fixture
async def api(app: App) -> AsyncIterator[Api]:
    keys = ApiKeys(app.store.engine)
    made = {
        s: (await app.db(keys.create, f"test-{s}", s, app.clock.now()))[1]
        for s in ("read", "write", "admin")
    }
    fastapi = create_api(app)
    transport = httpx.ASGITransport(app=fastapi)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Api(app, fastapi, client, made)


def problem(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status, code and (if given) field."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["request_id"] and body["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert body.get("field") == field, body
    return body
