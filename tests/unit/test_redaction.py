"""Secrets are masked in every log record, whichever logger wrote it, and in error lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from paysched import redaction
from paysched.config import Settings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    redaction.install()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("httpx", "sqlalchemy.engine", "paysched.test")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield out
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_credential_shapes_are_masked_whatever_their_source() -> None:
    cases = {
        "POST https://api.telegram.org/bot123456:AAH-secret_Tok3n/sendMessage": "POST https://api.telegram.org/bot***/sendMessage",
        "connect redis://:hunter2@db.internal:6379/0": "connect redis://:***@db.internal:6379/0",
        "postgresql+psycopg://app:p%40ss@127.0.0.1/pay": "postgresql+psycopg://app:***@127.0.0.1/pay",
        "webhook http://user:pw1234@hooks.example/x": "webhook http://user:***@hooks.example/x",
        "Authorization: Bearer abc.def-ghi": "Authorization: Bearer ***",
        "nothing secret here: 12.34 USD": "nothing secret here: 12.34 USD",
    }
    for text, expected in cases.items():
        assert redaction.redact(text) == expected


def test_configured_secrets_are_masked_with_their_url_spellings(captured: io.StringIO) -> None:
    cfg = Settings.from_env(
        {
            "PAYSCHED_PROVIDER_TOKEN": "prov/tok en+1",
            "PAYSCHED_WEBHOOK_SECRET": "whsec-0123456789",
            "REDIS_PASSWORD": "r3dis p@ss",
        }
    )
    redaction.remember(cfg.secrets())
    log = logging.getLogger("paysched.test")
    log.info("provider said %s", "token prov/tok en+1 rejected")
    log.info("quoted: prov%2Ftok%20en%2B1 and whsec-0123456789")
    logging.getLogger("sqlalchemy.engine").debug("redis at %s", cfg.redis_url)
    text = captured.getvalue()
    for secret in (
        "prov/tok en+1",
        "prov%2Ftok%20en%2B1",
        "whsec-0123456789",
        "r3dis",
        "r3dis%20p%40ss",
    ):
        assert secret not in text
    assert text.count("***") >= 4


def test_third_party_lines_and_tracebacks_are_masked(captured: io.StringIO) -> None:
    logging.getLogger("httpx").info(
        'HTTP Request: POST %s "HTTP/1.1 200 OK"',
        "http://127.0.0.1:9/bot42:SECRETBOTTOKEN/sendMessage",
    )
    try:
        raise ConnectionError("cannot reach http://bot:SECRETPW99@hooks.example/")
    except ConnectionError:
        logging.getLogger("paysched.test").exception("delivery failed")
    text = captured.getvalue()
    assert "SECRETBOTTOKEN" not in text and "SECRETPW99" not in text
    assert "bot***/sendMessage" in text and "Traceback" in text


def test_short_values_are_not_treated_as_secrets() -> None:
    redaction.remember(["", "ab", "  "])
    assert redaction.redact("a table of abs") == "a table of abs"


def test_api_keys_are_masked_wherever_they_appear() -> None:
    key = "psk_c9b370aaabb9_HqafblyYqFV9uVqbUgoq5-7GlGjDF1nnuclaW-YBbO0"
    assert redaction.redact(f"key={key}; next") == "key=psk_c9b370aaabb9_***; next"
    assert "HqafblyY" not in redaction.redact(f'{{"Authorization": "Bearer {key}"}}')
