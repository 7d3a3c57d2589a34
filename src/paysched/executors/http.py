"""An executor for payment providers that speak a small, generic JSON-over-HTTP contract.

The provider contract
---------------------

``POST {base_url}/payments`` with the headers ``Idempotency-Key: <occurrence key>`` and
``Authorization: Bearer <token>`` (omitted when the token is empty), and the JSON body::

    {"amount": "12.34", "currency": "USD", "from": "<payer name>", "to": "<payee name>",
     "reference": "<occurrence key>"}

answers 2xx with::

    {"id": "...", "status": "succeeded" | "declined" | "pending", "reason": "..."?}

``GET {base_url}/payments/{idempotency_key}`` answers 200 with the same body, or 404 when the
provider never received the payment. A request still in flight (sent, not yet recorded) may
be answered 409 or 404: paysched believes a 404 only once the request's own timeout
(2 x (connect timeout + read timeout)) has passed since it was sent, and asks again then; a
provider must have recorded, or dropped for good, any request it received by that time.

How ``execute`` maps what happens:

- connect failure (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``): NOT_ATTEMPTED,
  nothing was sent;
- read timeout, write timeout, any 5xx, the connection dropped after sending
  (``RemoteProtocolError``, ``ReadError``, ``WriteError``): UNKNOWN;
- 2xx ``succeeded``: SUCCEEDED with the provider's id as reference; ``declined``: DECLINED with
  the provider's reason (or "declined by provider"); ``pending``: UNKNOWN ("provider reports
  the payment pending"); a 2xx whose body is not that JSON: UNKNOWN (money may have moved);
- 409 (the same key is still in flight at the provider): UNKNOWN; 429: NOT_ATTEMPTED
  (``Retry-After`` is not honoured: paysched's own backoff applies); 408: UNKNOWN;
- any other 4xx: DECLINED with the provider's reason, taken from the JSON field ``reason``,
  ``detail``, ``error`` or ``message`` if present, else "provider answered HTTP <code>",
  truncated to 300 characters.

How ``lookup`` maps the GET: 200 is read like a 2xx above; 404 is NOT_ATTEMPTED ("provider never
received it"), so the payment may be sent again with the same key (by the resolver, not
before the request's timeout has passed, see above); any transport error,
timeout, 5xx, other status or odd body is UNKNOWN with the cause.

``GET {base_url}/payments?created_from=<ISO 8601>&created_to=<ISO 8601>&cursor=<c>&limit=<n>``
lists the charges the provider created in [created_from, created_to), oldest first, answering
200 with ``{"data": [<charges, each as the lookup answers it>], "next_cursor": "..." | null}``.
``cursor`` is omitted for the first page and is the previous answer's ``next_cursor`` after
that (opaque to paysched); ``limit`` is a hint (a provider may return fewer or ignore it). Only
`paysched reconcile` uses the listing (``list_charges``); each charge's ``reference`` names the
occurrence key it was sent for. A provider that cannot list may answer 404 or 501: reconcile
then checks only what lookups can, and says so.

Reasons are short, single-line and never contain the token. httpx logs every request's method
and URL at INFO, so nothing secret ever goes into a URL (the base URL may not carry
credentials) and no headers are logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from paysched.domain import format_amount
from paysched.executors.base import (
    ChargePage,
    ExecutionResult,
    ListingError,
    PaymentOrder,
    ProviderCharge,
)

MAX_REASON = 300
_REASON_FIELDS = ("reason", "detail", "error", "message")


# httpx's own default; the worker passes its concurrency.
DEFAULT_CONNECTIONS = 100
CONNECTIONS_PER_CLIENT = 4


class HttpExecutor:
    """Executor, Resolvable and Closable for a provider speaking the contract above."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url: expected an http:// or https:// URL with a host")
        # httpx logs every request URL at INFO: credentials or query strings in it would leak.
        if url.userinfo or url.query or url.fragment:
            raise ValueError(
                "base_url: must not carry credentials, a query or a fragment (pass the token)"
            )
        # A token with spaces or control characters would make the HTTP library fail with an
        # error quoting the header, token and all; refuse it here, without echoing it.
        if token and not all("!" <= ch <= "~" for ch in token):
            raise ValueError("token: expected printable ASCII without spaces")
        self._token = token
        self._read_timeout_s = read_timeout_s
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Several small clients, the least busy taken, rather than one pool of `connections`:
        # httpcore's pool scans every connection for every request it places (and again at
        # each release), so one pool of 50 connections under 50 requests at once spent its
        # time in that scan — 71 requests/s against a provider answering in 50 ms, where
        # twelve pools of 4 made 446/s (bench/run.py --only http). Each request still waits
        # for nothing but a free connection of its client.
        clients = max(1, -(-connections // CONNECTIONS_PER_CLIENT))
        self._clients = [
            httpx.AsyncClient(
                base_url=str(url).rstrip("/"),
                headers=headers,
                # The pool wait is bounded like a connect: nothing has been sent while waiting.
                timeout=httpx.Timeout(
                    connect=connect_timeout_s,
                    read=read_timeout_s,
                    write=read_timeout_s,
                    pool=connect_timeout_s,
                ),
                # A redirect is not part of the contract; following it could re-send a payment.
                follow_redirects=False,
                transport=transport,
                # All kept alive: httpx keeps 20 by default, so at concurrency 50 most charges
                # opened a new connection (and a TLS handshake with a real provider).
                limits=httpx.Limits(
                    max_connections=CONNECTIONS_PER_CLIENT,
                    max_keepalive_connections=CONNECTIONS_PER_CLIENT,
                ),
            )
            for _ in range(clients)
        ]
        self._busy = [0] * clients  # requests in flight per client

    @contextlib.contextmanager
    def _client(self) -> Iterator[httpx.AsyncClient]:
        """The least busy client: with as many connections in all as jobs that may run at
        once, it has a free one, so no request waits behind another client's slow ones."""
        i = min(range(len(self._clients)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            yield self._clients[i]
        finally:
            self._busy[i] -= 1

    async def execute(self, order: PaymentOrder) -> ExecutionResult:
        idempotency_key = order.idempotency_key
        body = {
            "amount": format_amount(order.amount, order.currency),
            "currency": order.currency,
            "from": order.payer,
            "to": order.payee,
            "reference": idempotency_key,
        }
        try:
            with self._client() as client:
                response = await client.post(
                    "/payments", json=body, headers={"Idempotency-Key": idempotency_key}
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return ExecutionResult.not_attempted(
                self._clean(f"provider unreachable: {_cause(exc)}")
            )
        except httpx.HTTPError as exc:
            return ExecutionResult.unknown(self._clean(self._after_send(exc)))
        return self._execute_response(response, idempotency_key)

    async def lookup(self, order: PaymentOrder) -> ExecutionResult:
        idempotency_key = order.idempotency_key
        try:
            with self._client() as client:
                response = await client.get(f"/payments/{quote(idempotency_key, safe='')}")
        except httpx.HTTPError as exc:
            return ExecutionResult.unknown(self._clean(f"lookup failed: {self._after_send(exc)}"))
        code = response.status_code
        if code == 200:
            return self._from_body(response, idempotency_key)
        if code == 404:
            return ExecutionResult.not_attempted("provider never received it")
        return ExecutionResult.unknown(self._clean(f"lookup failed: {self._answered(response)}"))

    async def list_charges(
        self, created_from: datetime, created_to: datetime, cursor: str | None, limit: int
    ) -> ChargePage:
        """One page of the provider's listing (see the contract above)."""
        params = {
            "created_from": created_from.isoformat(),
            "created_to": created_to.isoformat(),
            "limit": str(limit),
        }
        if cursor is not None:
            params["cursor"] = cursor
        try:
            with self._client() as client:
                response = await client.get("/payments", params=params)
        except httpx.HTTPError as exc:
            raise ListingError(self._clean(f"listing failed: {self._after_send(exc)}")) from None
        if response.status_code in (404, 405, 501):
            raise NotImplementedError(self._clean(f"listing: {self._answered(response)}"))
        if response.status_code != 200:
            raise ListingError(self._clean(f"listing failed: {self._answered(response)}"))
        try:
            body: Any = response.json()
        except ValueError:
            raise ListingError("listing: the provider's answer is not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        next_cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if not isinstance(data, list) or not (next_cursor is None or isinstance(next_cursor, str)):
            raise ListingError("listing: expected {data: [...], next_cursor: string or null}")
        return ChargePage([_listed(item) for item in data], next_cursor or None)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    # -- mapping -----------------------------------------------------------------------------

    def _execute_response(self, response: httpx.Response, key: str) -> ExecutionResult:
        code = response.status_code
        if 200 <= code < 300:
            return self._from_body(response, key)
        if code == 409:
            return ExecutionResult.unknown(
                "provider is still processing this idempotency key (HTTP 409)"
            )
        if code == 429:
            return ExecutionResult.not_attempted("provider rate-limited the request (HTTP 429)")
        if code == 408:
            return ExecutionResult.unknown("provider timed out reading the request (HTTP 408)")
        if 400 <= code < 500:
            words = self._reason(response)
            return ExecutionResult.declined(self._clean(words or self._answered(response)))
        # 5xx, and 1xx/3xx which the contract does not use: the provider may have acted.
        return ExecutionResult.unknown(self._clean(self._answered(response)))

    def _from_body(self, response: httpx.Response, key: str) -> ExecutionResult:
        try:
            body: Any = response.json()
        except ValueError:  # not JSON, or not UTF-8
            return ExecutionResult.unknown(
                f"provider answered HTTP {response.status_code} with a body that is not JSON"
            )
        if not isinstance(body, dict):
            return ExecutionResult.unknown("provider's answer is not a JSON object")
        payment_id = body.get("id")
        status = body.get("status")
        if not isinstance(payment_id, str) or not payment_id:
            return ExecutionResult.unknown("provider's answer has no payment id")
        reference = body.get("reference")
        if reference is not None and reference != key:
            # Answering for another payment says nothing about this one.
            return ExecutionResult.unknown("provider's answer names another payment")
        if status == "succeeded":
            return ExecutionResult.succeeded(reference=payment_id)
        if status == "declined":
            reason = body.get("reason")
            text = reason if isinstance(reason, str) and reason.strip() else "declined by provider"
            return ExecutionResult.declined(self._clean(text), reference=payment_id)
        if status == "pending":
            return ExecutionResult.unknown(
                "provider reports the payment pending", reference=payment_id
            )
        return ExecutionResult.unknown(
            self._clean(f"provider answered an unknown status {str(status)[:40]!r}"),
            reference=payment_id,
        )

    def _answered(self, response: httpx.Response) -> str:
        """The status code, and the provider's own words when it gave some."""
        words = self._reason(response)
        return f"provider answered HTTP {response.status_code}" + (f": {words}" if words else "")

    def _reason(self, response: httpx.Response) -> str | None:
        """The provider's own words for a refusal or an error, if its body has them."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for field in _REASON_FIELDS:
                value = body.get(field)
                # {"error": {"message": "..."}} is a common shape too.
                if isinstance(value, dict):
                    value = value.get("message") or value.get("reason")
                if isinstance(value, str) and value.strip():
                    return value
        return None

    def _after_send(self, exc: httpx.HTTPError) -> str:
        if isinstance(exc, httpx.ReadTimeout):
            return f"no answer from provider within {self._read_timeout_s:g} s"
        if isinstance(exc, httpx.WriteTimeout):
            return "timed out sending the request to the provider"
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return f"connection to provider dropped after sending: {_cause(exc)}"
        return f"provider request failed: {_cause(exc)}"

    def _clean(self, text: str) -> str:
        """One line, at most MAX_REASON characters, without the token (a provider may echo
        it back in an error)."""
        if self._token:
            text = text.replace(self._token, "***")
        line = " ".join(text.split())
        if len(line) > MAX_REASON:
            line = line[: MAX_REASON - 1] + "…"
        return line


def _listed(item: Any) -> ProviderCharge:
    """One charge of a listing page; ListingError when it is not a charge's JSON."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise ListingError("listing: a charge without an id")
    created = item.get("created_at")
    try:
        at = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        at = None
    # A charge that names no reference matches no occurrence: it is reported under its id.
    reference = item.get("reference")
    key = reference if isinstance(reference, str) and reference else f"(no reference) {item['id']}"
    return ProviderCharge(
        key=key[:200],
        id=item["id"][:200],
        status=str(item.get("status"))[:40],
        amount=str(item.get("amount"))[:40],
        currency=str(item.get("currency"))[:8],
        created_at=at,
    )


def _cause(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
