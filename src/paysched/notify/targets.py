"""Notification targets: "telegram:CHAT_ID", "webhook:URL", "log"."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from paysched.errors import InvalidInput

CHANNELS = ("telegram", "webhook", "log")
EVENTS = ("succeeded", "failed", "retrying", "needs_review")
_CHAT_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")


def parse_target(text: str, field: str = "notify") -> tuple[str, str]:
    """'telegram:123' -> ('telegram', '123'); 'webhook:https://x/y' -> ('webhook', url)."""
    raw = text.strip()
    if raw == "log":
        return "log", ""
    channel, sep, target = raw.partition(":")
    if not sep or channel not in CHANNELS:
        raise InvalidInput(field, f"expected telegram:CHAT_ID, webhook:URL or log, got {text!r}")
    if channel == "telegram" and not _CHAT_RE.match(target):
        raise InvalidInput(field, f"telegram chat must be a numeric id or @channel, got {target!r}")
    if channel == "webhook":
        url = urlsplit(target)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise InvalidInput(field, f"webhook needs an http(s) URL, got {target!r}")
    if channel == "log" and target:
        raise InvalidInput(field, "the log channel takes no target: use 'log'")
    return channel, target


def normalise_targets(texts: list[str], field: str = "notify") -> list[str]:
    """Validate and de-duplicate, keeping order."""
    seen: list[str] = []
    for text in texts:
        channel, target = parse_target(text, field)
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
