"""What a hostile client found at the HTTP boundary: names that break their own URLs, ids,
amounts and time zones that only look valid, and the HTTP mechanics around the routes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from urllib.parse import quote

import pytest

from tests.api.conftest import Api, problem
from tests.api.test_dashboard import served


@pytest.mark.parametrize(
    "name", ["a/b", "a\\b", "what?", "a#1", "100%", "..", "\uff20external:USD", "\ufe6bx"]
)
async def test_a_name_that_would_break_its_url_or_pass_for_external_is_422(
    api: Api, name: str
) -> None:
    problem(await api.post("/v1/accounts", {"name": name}, "write"), 422, "invalid_input", "name")
    assert (await api.get("/v1/accounts")).json()["data"] == []


async def test_an_accepted_name_is_found_again_at_its_own_url(api: Api) -> None:
    name = "zoé.b+c&d;e=f g"
    assert (await api.post("/v1/accounts", {"name": name}, "write")).status_code == 201
    path = f"/v1/accounts/{quote(name, safe='')}"
    assert (await api.get(path)).json()["name"] == name
    deposited = await api.post(f"{path}/deposits", {"amount": "1.00"}, "write")
    assert deposited.status_code == 200 and deposited.json()["balance"] == "1.00"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v1/accounts/", "/v1/accounts"),
        ("/v1/accounts/?limit=5", "/v1/accounts?limit=5"),
        ("/dashboard", "/dashboard/"),
        ("/dashboard/login/", "/dashboard/login"),
    ],
)
async def test_a_trailing_slash_redirect_names_the_path_only(
    api: Api, path: str, location: str
) -> None:
    """The Location is relative, never built from the Host header a client sent."""
    r = await api.client.get(path, headers=api.auth("read") | {"Host": "evil.example"})
    assert r.status_code == 307 and r.headers["location"] == location
    assert (await api.client.get(path, headers=api.auth("read"), follow_redirects=True)).is_success
    problem(await api.get("/v1/nothing/"), 404, "not_found")


async def test_docs_load_nothing_from_elsewhere_and_say_so_in_their_csp(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200 and "SwaggerUIBundle" in r.text
    linked = re.findall(r'(?:src|href)="([^"]*)"', r.text)
    assert linked and all(url.startswith("/docs/files/") for url in linked), linked
    for url in linked:
        assert (await api.client.get(url)).status_code == 200, url
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and "http" not in r.headers["content-security-policy"]
    # The one inline script (Swagger UI's set-up) is allowed by its hash, nothing else inline.
    [inline] = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert csp["script-src"] == f"'self' 'sha256-{digest}'"


@pytest.mark.parametrize("zone", ["", "localtime", "posixrules", "Factory", "right/UTC"])
async def test_a_time_zone_that_is_not_an_iana_zone_is_422(api: Api, zone: str) -> None:
    for name in ("alice", "bob"):
        assert (await api.post("/v1/accounts", {"name": name}, "write")).status_code == 201
    body = {"from": "alice", "to": "bob", "amount": "1.00", "cron": "0 9 * * 1", "timezone": zone}
    r = await api.post("/v1/payments", body, "write")
    assert "unknown time zone" in problem(r, 422, "invalid_input", "timezone")["detail"]
    body["timezone"] = "Europe/Berlin"
    assert (await api.post("/v1/payments", body, "write")).status_code == 201


@pytest.mark.parametrize("ref", ["1.0", "+1", "1_0", "%201", "1e0", "%D9%A1"])
async def test_an_id_is_ascii_digits_only(api: Api, ref: str) -> None:
    """Not what pydantic would also read as an integer: /v1/payments/1.0 is not payment 1."""
    await api.post("/v1/accounts", {"name": "alice"}, "write")
    await api.post("/v1/accounts/alice/deposits", {"amount": "5.00"}, "write")
    await api.post("/v1/accounts", {"name": "bob"}, "write")
    body = {"from": "alice", "to": "bob", "amount": "1.00", "in": "1h"}
    assert (await api.post("/v1/payments", body, "write")).json()["id"] == 1
    assert (await api.get("/v1/payments/1")).status_code == 200
    problem(await api.get(f"/v1/payments/{ref}"), 422, "invalid_input", "payment_id")
    problem(
        await api.post(f"/v1/payments/{ref}/cancel", None, "write"),
        422,
        "invalid_input",
        "payment_id",
    )
    problem(
        await api.post(f"/v1/notifications/{ref}/retry", None, "write"),
        422,
        "invalid_input",
        "notification_id",
    )
    for listing in ("/v1/occurrences", "/v1/notifications"):
        r = await api.client.get(f"{listing}?payment_id={ref}", headers=api.auth("read"))
        problem(r, 422, "invalid_input", "payment_id")


async def test_an_amount_with_more_decimals_than_its_currency_is_422_even_as_zeros(
    api: Api,
) -> None:
    for name in ("alice", "bob"):
        assert (await api.post("/v1/accounts", {"name": name}, "write")).status_code == 201
    deposit = await api.post("/v1/accounts/alice/deposits", {"amount": "1.0000"}, "write")
    assert "more than 2 decimals" in problem(deposit, 422, "invalid_input", "amount")["detail"]
    body = {"from": "alice", "to": "bob", "amount": "1.000", "in": "1h"}
    problem(await api.post("/v1/payments", body, "write"), 422, "invalid_input", "amount")
    assert (await api.get("/v1/accounts/alice")).json()["balance"] == "0.00"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/accounts", "GET, HEAD, POST"),
        ("POST", "/v1/payments/1", "GET, HEAD"),
        ("GET", "/v1/payments/1/cancel", "POST"),
        ("PUT", "/v1/occurrences/1", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("POST", "/docs", "GET, HEAD"),
        ("POST", "/docs/files/swagger-ui.css", "GET, HEAD"),
    ],
)
async def test_405_names_every_method_the_path_takes(
    api: Api, method: str, path: str, allowed: str
) -> None:
    r = await api.client.request(method, path, headers=api.auth("admin"))
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allowed


@pytest.mark.parametrize(
    "path",
    [
        "/v1/accounts",
        "/v1/accounts/alice",
        "/healthz",
        "/openapi.json",
        "/docs",
        "/docs/files/swagger-ui.css",
        "/dashboard/login",
    ],
)
async def test_head_answers_like_get_without_a_body(api: Api, path: str) -> None:
    await api.post("/v1/accounts", {"name": "alice"}, "write")
    got = await api.client.get(path, headers=api.auth("read"))
    head = await api.client.head(path, headers=api.auth("read"))
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers.get("content-length") == got.headers.get("content-length")
    # And what GET refuses, HEAD refuses the same way.
    assert (await api.client.head("/v1/nothing")).status_code == 404
    assert (await api.client.head("/v1/accounts")).status_code == 401


async def test_a_connection_that_never_finishes_its_headers_is_closed(api: Api) -> None:
    async with served(api.app, header_timeout=0.5) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        # Nothing at all, half a request line, a request line and some headers: closed.
        for opening in (b"", b"GET /hea", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(opening)
            await writer.drain()
            # Waits far longer than the bound for the close (EOF), not for a time.
            assert await asyncio.wait_for(reader.read(), 60) == b""
            writer.close()
        # After a whole request is answered, the next one on the connection is on the clock too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 60)
        assert status.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 60)  # the first answer's body, then the close
        assert reader.at_eof()
        writer.close()


async def test_a_backend_error_is_503_without_a_traceback(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database going away mid-request: 503 with Retry-After, handled where it was raised.
    It was answered by the outermost middleware, which then raised it again for the server to
    print as a traceback per request (here, the test client raises it)."""
    from paysched.errors import DatabaseUnavailable

    def gone(*args: object, **kwargs: object) -> None:
        raise DatabaseUnavailable("database unavailable: server closed the connection")

    monkeypatch.setattr(api.app.store.reads, "payment_history", gone)
    response = await api.get("/v1/payments/1")
    problem(response, 503, "backend_unavailable")
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/dashboard/login", "GET, HEAD, POST"),
        ("POST", "/dashboard/", "GET, HEAD"),
        ("PUT", "/dashboard/payments/1", "GET, HEAD"),
    ],
)
async def test_a_dashboard_405_names_every_method_too(
    api: Api, method: str, path: str, allowed: str
) -> None:
    """The dashboard's 405 pages said only Starlette's first route's methods, without HEAD."""
    r = await api.client.request(method, path)
    assert r.status_code == 405 and r.headers["content-type"].startswith("text/html")
    assert r.headers["allow"] == allowed
