"""Request bodies sent in chunks (Transfer-Encoding: chunked, no Content-Length) to a real
`paysched serve`: a proper answer while the body is small, 413 as soon as it is not."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest

from paysched.api.app import MAX_BODY
from tests.api.test_serve import start_serve
from tests.integration.test_cli import paysched

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PREFIX = b'{"from": "alice", "to": "bob", "amount": "1.00", "in": "1h", "memo": "'
SUFFIX = b'"}'


def chunked(memo_bytes: int, chunk: int, sent: list[int]) -> Iterator[bytes]:
    """A payment whose memo is `memo_bytes` long, in chunks of `chunk` bytes (made as they
    are sent, never whole); `sent` counts what the client has taken. A generator: httpx sends
    it chunked, without a Content-Length."""
    memo_end = len(PREFIX) + memo_bytes
    total = memo_end + len(SUFFIX)
    for start in range(0, total, chunk):
        end = min(start + chunk, total)
        xs = max(0, min(end, memo_end) - max(start, len(PREFIX)))
        suffix = SUFFIX[max(0, start - memo_end) : max(0, end - memo_end)]
        piece = PREFIX[start:end] + b"x" * xs + suffix
        sent.append(len(piece))
        yield piece


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    key = json.loads(
        paysched(env, "apikeys", "create", "ops", "--scope", "write", "--json").stdout
    )["key"]
    server, client = start_serve(env)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with contextlib.closing(client):
            for name in ("alice", "bob"):
                assert client.post("/v1/accounts", json={"name": name}, headers=auth).is_success
            client.post("/v1/accounts/alice/deposits", json={"amount": "100.00"}, headers=auth)
            yield client, auth
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def post(
    client: httpx.Client, auth: dict[str, str], memo_bytes: int, chunk: int, sent: list[int]
) -> httpx.Response:
    headers = auth | {"Content-Type": "application/json"}
    return client.post("/v1/payments", content=chunked(memo_bytes, chunk, sent), headers=headers)


def too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "body_too_large"
    assert response.headers["x-request-id"]


def test_a_100_mb_chunked_memo_is_413_before_it_is_sent(
    served: tuple[httpx.Client, dict[str, str]],
) -> None:
    """Finding 10: the whole 100 MB was read and parsed (+170 MB of server memory) before the
    memo's 1,000-character check. The client here sends the first megabyte of it and then
    waits, its body unfinished: the 413 must come (before the fix the server waited for the
    rest). h11 over a socket, because httpx reads no answer before it has sent everything."""
    client, auth = served
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("Host", "paysched"),
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
        *auth.items(),
    ]
    address = (client.base_url.host, client.base_url.port or 80)
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(conn.send(h11.Request(method="POST", target="/v1/payments", headers=headers)))
        sent = 0
        for piece in chunked(100 * 1024 * 1024, 64 * 1024, []):
            sock.sendall(conn.send(h11.Data(data=piece)))
            sent += len(piece)
            if sent >= 1024 * 1024:
                break  # and no more, nor the last chunk: the body is not finished
        events: list[Any] = []
        while not events or not isinstance(events[-1], h11.EndOfMessage):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))  # times out if no answer comes
            else:
                events.append(event)
    response = httpx.Response(
        events[0].status_code,
        headers=[(k.decode(), v.decode()) for k, v in events[0].headers],
        content=b"".join(e.data for e in events if isinstance(e, h11.Data)),
    )
    too_large(response)


@pytest.mark.parametrize("chunk", [1, 100, 4096, 65536])
def test_bodies_in_chunks_get_a_proper_answer_or_413(
    served: tuple[httpx.Client, dict[str, str]], chunk: int
) -> None:
    client, auth = served
    sent: list[int] = []
    r = post(client, auth, 12, chunk, sent)
    assert r.status_code == 201 and r.json()["memo"] == "x" * 12, r.text
    assert sum(sent) == len(PREFIX) + 12 + len(SUFFIX)
    r = post(client, auth, 1001, chunk, [])  # within the body limit, over the memo's
    assert r.status_code == 422 and r.json()["field"] == "memo", r.text
    too_large(post(client, auth, MAX_BODY, chunk, []))
    r = client.post(
        "/v1/payments",
        content=(b"x" for _ in range(3)),
        headers=auth | {"Content-Type": "text/plain"},
    )
    assert r.status_code == 415, r.text
