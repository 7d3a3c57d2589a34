"""Signed webhooks: POST the event as JSON with an HMAC-SHA256 signature over timestamp and body.

Headers sent:
  Paysched-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
  Paysched-Event-Id:  <dedup key>   (the same for every redelivery of this event to this URL)

Receivers verify with `verify()` below (or its few lines copied, see README): recompute the HMAC,
compare in constant time, and reject timestamps outside the tolerance window against replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from typing import Any

import httpx

from paysched.errors import PermanentDelivery, RetryableDelivery
from paysched.notify.targets import is_internal_host, webhook_problem

SIGNATURE_HEADER = "Paysched-Signature"
EVENT_ID_HEADER = "Paysched-Event-Id"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    pass


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise SignatureError unless `header` signs `body` with `secret` within the tolerance."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise SignatureError("malformed signature header") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance window")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature mismatch")


class WebhookNotifier:
    channel = "webhook"

    def __init__(self, secret: str, timeout: float = 10.0, allow_private: bool = False) -> None:
        if not secret:
            raise ValueError("a webhook signing secret is required")
        self._secret = secret
        self._allow_private = allow_private
        self._timeout = timeout
        # Redirects are not followed: one could lead inwards past the address check below.
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, target: str, event: dict[str, Any], dedup_key: str) -> None:
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
            EVENT_ID_HEADER: dedup_key,
        }
        problem = webhook_problem(target)
        if problem:  # no retry can make a malformed URL work
            raise PermanentDelivery(f"invalid webhook URL: {problem}")
        try:
            url = httpx.URL(target)
            address = await self._address(url)
            # Posted to the address just checked, not to a second lookup of the name that
            # could answer otherwise (DNS rebinding); Host and TLS still name the host.
            response = await self._client.post(
                url.copy_with(host=address),
                content=body,
                headers=headers | {"Host": url.netloc.decode("ascii")},
                extensions={"sni_hostname": url.host} if url.scheme == "https" else None,
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentDelivery(f"invalid webhook URL: {exc}") from None
        except httpx.HTTPError as exc:
            raise RetryableDelivery(f"webhook unreachable: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500 or status == 408:
            retry_after = response.headers.get("Retry-After", "")
            raise RetryableDelivery(
                f"webhook {status}", float(retry_after) if retry_after.isdigit() else None
            )
        raise PermanentDelivery(f"webhook {status}: {response.text[:200]}")

    async def _address(self, url: httpx.URL) -> str:
        """The address the webhook's host resolves to, refused if any address it resolves to
        is internal (unless PAYSCHED_WEBHOOK_ALLOW_PRIVATE): a public-looking name, or a
        numeric form such as 127.1, can point inside the deployment."""
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            # Bounded like the post: the system resolver may take minutes, and the delivery's
            # lease runs meanwhile. (The lookup's thread is left to finish on its own.)
            found = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM),
                self._timeout,
            )
        except TimeoutError:
            raise RetryableDelivery(
                f"webhook host {url.host!r} did not resolve within {self._timeout:g} s"
            ) from None
        except OSError as exc:  # socket.gaierror: a name that does not resolve (yet)
            raise RetryableDelivery(f"webhook host {url.host!r} does not resolve: {exc}") from None
        addresses = [str(info[4][0]) for info in found]
        if not addresses:
            raise RetryableDelivery(f"webhook host {url.host!r} resolves to no address")
        inward = [a for a in addresses if is_internal_host(a)]
        if inward and not self._allow_private:
            raise PermanentDelivery(
                f"webhook host {url.host!r} resolves to {inward[0]}, a loopback, private, "
                "link-local or otherwise internal address; set PAYSCHED_WEBHOOK_ALLOW_PRIVATE=1 "
                "to allow it"
            )
        return addresses[0]

    async def close(self) -> None:
        await self._client.aclose()
