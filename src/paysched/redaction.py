"""Secrets never reach a log line or an error message.

Every log record is redacted as it is created (a log-record factory, so third-party loggers
such as httpx's "HTTP Request: POST https://api.telegram.org/bot<token>/sendMessage" and every
handler, present or added later, are covered): the secret values paysched was configured with
are replaced, and so is anything shaped like a credential whatever its source: the password
in a URL, a Telegram bot token in an API path, a bearer token.

`redact` is also applied to the one-line errors the CLI prints.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# Values shorter than this are not treated as secrets: replacing "a" or "ab" everywhere would
# garble every message, and such a value protects nothing anyway.
MIN_SECRET = 4

_SHAPES: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host -> scheme://user:***@host
    (
        re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?P<tail>@)"),
        rf"\g<head>{MASK}\g<tail>",
    ),
    # Telegram Bot API paths: /bot123456:AA.../method
    (re.compile(r"(?P<head>/bot)\d+:[A-Za-z0-9_-]+"), rf"\g<head>{MASK}"),
    # Authorization: Bearer <token>
    (re.compile(r"(?P<head>\b[Bb]earer\s+)[^\s'\",;]+"), rf"\g<head>{MASK}"),
    # paysched API keys, wherever they appear: psk_<public prefix>_<secret>
    (re.compile(r"(?P<head>\bpsk_[0-9a-f]{1,32}_)[A-Za-z0-9_-]{8,}"), rf"\g<head>{MASK}"),
]

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_installed = False


def remember(values: Iterable[str]) -> None:
    """Add secret values (tokens, passwords) to redact from now on, in every process-wide log
    record, with their URL-quoted spellings."""
    global _secrets
    found = set()
    for value in values:
        value = (value or "").strip()
        if len(value) >= MIN_SECRET:
            found.update({value, quote(value, safe=""), quote(value), unquote(value)})
    with _lock:
        _secrets = _secrets | frozenset(found)


def url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def redact(text: str) -> str:
    """`text` with every known secret and every credential-shaped part masked."""
    # Longest first: a secret that contains another is masked whole.
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


def _redacted_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to logging's own error report
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        # Rendered now, redacted, and cached where every Formatter looks for it first.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def install() -> None:
    """Redact every log record from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redacted_record(make(*args, **kwargs))

    logging.setLogRecordFactory(factory)
