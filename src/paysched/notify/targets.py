"""Notification targets: "telegram:CHAT_ID", "webhook:URL", "log".

A webhook URL is checked where it enters (CLI, configuration): http(s), a host, a valid port,
no spaces or control characters, at most MAX_URL characters; and, unless
PAYSCHED_WEBHOOK_ALLOW_PRIVATE is set, not an address that is not globally reachable
(loopback, private, link-local, shared 100.64.0.0/10 where cloud metadata services live,
169.254.169.254 included) nor an IPv6 form that carries such an IPv4 address inside it.
paysched posts to these URLs from inside the deployment, so one pointing inwards is refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from paysched.errors import InvalidInput

CHANNELS = ("telegram", "webhook", "log")
EVENTS = ("succeeded", "failed", "retrying", "needs_review", "missed")
_CHAT_RE = re.compile(r"\A(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})\Z")
MAX_URL = 2000


def webhook_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook, or None if it can (wherever it points)."""
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains spaces, control or non-ASCII characters (percent-encode them)"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "needs an http:// or https:// URL"
    try:
        port = parts.port  # raises ValueError for a port above 65535 or not a number
    except ValueError:
        port = 0
    if port == 0:
        return "has an invalid port (1-65535)"
    if not parts.hostname:
        return "has no host"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_internal_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not globally reachable (loopback, private, link-local, shared 100.64.0.0/10,
    reserved, unspecified), multicast, or an IPv6 address that reaches an IPv4 one a
    router or the host itself may translate to: IPv4-mapped (::ffff:a.b.c.d) and
    -compatible (::a.b.c.d) always, Teredo (2001::/32, tunnels to any IPv4) always, and 6to4
    (2002::/16) or NAT64 (64:ff9b::/96) when the IPv4 address inside is internal."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None or int(ip) >> 32 == 0 or ip.teredo is not None:
            return True
        inner = ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and is_internal_address(inner):
            return True
    # is_global alone lets multicast through (224.0.0.1 and ff02::1 count as global).
    return not ip.is_global or ip.is_multicast or ip.is_reserved


def is_internal_host(host: str) -> bool:
    """A local name, or an address (in any numeric form) that is_internal_address refuses."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        try:  # the forms only inet_aton reads, which resolvers accept too: 127.1, 2130706433
            ip = ipaddress.ip_address(socket.inet_aton(name))
        except OSError:
            return False
    return is_internal_address(ip)


def split_target(spec: str) -> tuple[str, str]:
    """A stored target (validated when it entered) -> (channel, target), without checks."""
    if spec == "log":
        return "log", ""
    channel, _, target = spec.partition(":")
    return channel, target


def parse_target(text: str, field: str = "notify", allow_private: bool = False) -> tuple[str, str]:
    """'telegram:123' -> ('telegram', '123'); 'webhook:https://x/y' -> ('webhook', url)."""
    raw = text.strip()
    if raw == "log":
        return "log", ""
    channel, sep, target = raw.partition(":")
    if not sep or channel not in CHANNELS:
        raise InvalidInput(
            field, f"expected telegram:CHAT_ID, webhook:URL or log, got {_shown(text)}"
        )
    if channel == "telegram" and not _CHAT_RE.match(target):
        raise InvalidInput(
            field, f"telegram chat must be a numeric id or @channel, got {_shown(target)}"
        )
    if channel == "webhook":
        problem = webhook_problem(target)
        if problem:
            raise InvalidInput(field, f"webhook URL {problem}")
        host = urlsplit(target).hostname or ""
        if not allow_private and is_internal_host(host):
            raise InvalidInput(
                field,
                f"webhook host {host!r} is a loopback, private, "
                "link-local or otherwise internal address; set "
                "PAYSCHED_WEBHOOK_ALLOW_PRIVATE=1 to allow it",
            )
    if channel == "log" and target:
        raise InvalidInput(field, "the log channel takes no target: use 'log'")
    return channel, target


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "…")


def normalise_targets(
    texts: list[str], field: str = "notify", allow_private: bool = False
) -> list[str]:
    """Validate and de-duplicate, keeping order."""
    seen: list[str] = []
    for text in texts:
        channel, target = parse_target(text, field, allow_private)
        canonical = "log" if channel == "log" else f"{channel}:{target}"
        if canonical not in seen:
            seen.append(canonical)
    return seen


def parse_events(text: str, field: str) -> frozenset[str]:
    events = {e.strip() for e in text.split(",") if e.strip()}
    unknown = events - set(EVENTS)
    if unknown:
        raise InvalidInput(field, f"unknown event(s) {sorted(unknown)}; use {', '.join(EVENTS)}")
    return frozenset(events)
