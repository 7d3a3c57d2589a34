"""How paysched reaches Redis: one server by URL, or the current primary found through Sentinel.

Every client paysched and BullMQ open is made here, so that under Sentinel every one of them
asks the sentinels for the primary when it (re)connects: after a failover the next reconnect
lands on the promoted replica, and a connection still open to a demoted primary is dropped at
its first READONLY answer (redis-py's SentinelManagedConnection). No restart is needed.

BullMQ for Python has no Sentinel option of its own; it takes a redis-py connection pool in
its connection options, and that pool is a SentinelConnectionPool here.

A Sentinel deployment is written as one URL internally, so that it travels where a Redis URL
does (settings, the supervisor's children, logs once redacted):
`redis+sentinel://[user:password@]host:port,host:port/MASTER[/DB][?sentinel_password=...]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff

SENTINEL_SCHEME = "redis+sentinel"
# A sentinel that does not answer within this long is skipped for the next one.
SENTINEL_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    nodes: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # of the data nodes (primary and replicas)
    sentinel_password: str | None = None

    def url(self) -> str:
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.nodes)
        query = ""
        if self.sentinel_password:
            query = "?" + urlencode({"sentinel_password": self.sentinel_password})
        return f"{SENTINEL_SCHEME}://{auth}{hosts}/{quote(self.master, safe='')}/{self.db}{query}"

    def describe(self) -> str:
        """For logs and errors: no secret in it."""
        hosts = ", ".join(f"{_host(h)}:{p}" for h, p in self.nodes)
        return f"the primary {self.master!r} of the sentinels {hosts}"

    def manager(self, **kwargs: Any) -> Sentinel:
        # No retries of its own: a sentinel that does not answer is skipped for the next one
        # at once (redis-py's default retried each for seconds), and the connection asking
        # for the primary retries the whole discovery.
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        return Sentinel(list(self.nodes), sentinel_kwargs=sentinel_kwargs, **kwargs)  # type: ignore[no-untyped-call]

    def pool(self, **kwargs: Any) -> SentinelConnectionPool:
        """A pool of connections to the current primary, with its own sentinel clients."""
        return _OwnSentinelPool(  # type: ignore[no-untyped-call]
            self.master,
            self.manager(),
            db=self.db,
            username=self.username,
            password=self.password,
            connection_class=_PrimaryConnection,
            **kwargs,
        )


class _PrimaryConnection(SentinelManagedConnection):
    """A connection that asks the sentinels for the primary every time it connects.

    redis-py's asyncio client reconnects through connect_check_health(), which dials the
    address the connection had; only connect() asks the sentinels. After a failover every
    retry dialled the dead primary and the client never came back
    (redis/redis-py#3874, open). Here both paths ask."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )

    async def _connect_retry(self) -> None:
        if self.is_connected:
            return
        await self.connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )


class _OwnSentinelPool(SentinelConnectionPool):
    """Closes its sentinel clients with it: every pool made here has a manager of its own."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_nodes(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` -> ((host, port), ...); ValueError saying what is wrong."""
    nodes = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host:
            raise ValueError(f"{item!r} is not host:port")
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"the port of {item!r} is not a number between 1 and 65535")
        nodes.append((host, int(port)))
    if not nodes:
        raise ValueError("no sentinel named (expected host:port,host:port,...)")
    return tuple(nodes)


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinel deployment a `redis+sentinel://` URL names; None for any other URL."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return None
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    path = [unquote(p) for p in parts.path.strip("/").split("/") if p]
    if not path:
        raise ValueError("no primary name after the sentinels")
    db = path[1] if len(path) > 1 else "0"
    if not (db.isascii() and db.isdigit()):
        raise ValueError(f"the database number {db!r} is not a number")
    query = parse_qs(parts.query)
    return SentinelTarget(
        nodes=parse_nodes(hosts),
        master=path[0],
        db=int(db),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def describe(url: str) -> str:
    """A Redis URL or Sentinel deployment as logs may show it: passwords masked."""
    target = sentinel_target(url)
    if target is not None:
        return target.describe()
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def redis_client(url: str, **kwargs: Any) -> Redis:
    """A redis-py asyncio client for `url`; its pool closes with it."""
    target = sentinel_target(url)
    if target is None:
        return Redis.from_url(url, **kwargs)
    single = bool(kwargs.pop("single_connection_client", False))
    client = Redis(connection_pool=target.pool(**kwargs), single_connection_client=single)
    client.auto_close_connection_pool = True
    return client


def bullmq_connection(url: str) -> str | dict[str, Any]:
    """BullMQ's `connection` option: the URL itself, or a Sentinel pool of its own (BullMQ's
    clients decode responses). Pass the result to one Queue or Worker only, and let
    `owns_pool` hand the pool to the client that closes last."""
    target = sentinel_target(url)
    if target is None:
        return url
    return {"connection_pool": target.pool(decode_responses=True)}


def owns_pool(client: Any) -> None:
    """Make `client` close its connection pool (and the pool's sentinel clients) with itself.

    BullMQ wraps a given pool in clients that leave it open, as redis-py does for any pool it
    did not make. Only for the client BullMQ closes last: closing the pool disconnects every
    client on it."""
    if isinstance(client.connection_pool, _OwnSentinelPool):
        client.auto_close_connection_pool = True


async def sentinel_view(url: str) -> dict[str, Any] | None:
    """What each sentinel says of the primary: for `paysched check`. None without Sentinel."""
    target = sentinel_target(url)
    if target is None:
        return None
    manager = target.manager()
    seen: list[dict[str, Any]] = []
    try:
        for (host, port), node in zip(target.nodes, manager.sentinels, strict=True):
            entry: dict[str, Any] = {"address": f"{_host(host)}:{port}"}
            try:
                # typed as bool by redis-py; it is (host, port) or None
                addr: Any = await node.sentinel_get_master_addr_by_name(target.master)
                entry |= {"ok": addr is not None}
                if addr:
                    raw_host, raw_port = addr
                    entry["primary"] = f"{_text(raw_host)}:{_text(raw_port)}"
                else:
                    entry["error"] = f"knows no primary named {target.master!r}"
            except Exception as exc:  # a sentinel down is reported, not raised
                entry |= {"ok": False, "error": str(exc) or type(exc).__name__}
            seen.append(entry)
    finally:
        await manager.aclose()
    primaries = sorted({e["primary"] for e in seen if e.get("primary")})
    return {"master": target.master, "sentinels": seen, "primary": _agreed(primaries)}


def _agreed(primaries: Sequence[str]) -> str | None:
    return primaries[0] if len(primaries) == 1 else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
