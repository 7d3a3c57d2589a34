#!/usr/bin/env python3
"""A provider for benchmarks: answers every charge `succeeded` after a fixed latency.

The stand-in provider (`python -m paysched.standin`) is built for faults, not speed: one thread
per connection and a SQLite commit per charge cap it near 100 charges/s on this machine, so a
benchmark of the HTTP executor through it measures the stand-in. This is the provider's
contract (docs: README, "Your payment provider") and nothing else, as a plain ASGI app under
uvicorn: POST /payments answers {"id", "status": "succeeded", "reference"} after --latency-ms,
the same answer again for a repeated Idempotency-Key; GET /payments/{key} looks one up.

    python bench/fast_provider.py --port 9100 --latency-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn

Scope = dict[str, Any]


class FastProvider:
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.charges: dict[str, bytes] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/payments":
            key = json.loads(body)["reference"]
            if key not in self.charges:
                await asyncio.sleep(self.latency_s)
                answer = {"id": f"fp-{key}", "status": "succeeded", "reference": key}
                self.charges.setdefault(key, json.dumps(answer).encode())
            await self._answer(send, 200, self.charges[key])
        elif method == "GET" and path.startswith("/payments/"):
            found = self.charges.get(path.removeprefix("/payments/"))
            await self._answer(send, 200 if found else 404, found or b'{"error": "not found"}')
        else:
            await self._answer(send, 404, b'{"error": "not found"}')

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    args = ap.parse_args()
    uvicorn.run(
        FastProvider(args.latency_ms / 1000),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
