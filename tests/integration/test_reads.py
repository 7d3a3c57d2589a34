"""The one store setup (db.setup) and the one read path (paysched.reads) that App, the HTTP API,
the dashboard and the CLI's quick commands share."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest

from paysched import reads
from paysched.app import App
from paysched.config import Settings
from paysched.db.setup import open_store
from paysched.errors import InvalidInput
from tests.integration.helpers import fund, pay


async def test_app_and_the_cli_set_the_store_up_alike(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """What both relied on when each connected on its own: the settings' catch-up lateness
    (PAYSCHED_CATCHUP_LATE_AFTER) and the settings' secrets masked in every log record."""
    token = f"123456:{uuid.uuid4().hex}"
    cfg = settings.with_overrides(catchup_late_after=timedelta(minutes=7), telegram_token=token)
    log = logging.getLogger("paysched.test")
    with open_store(cfg, migrate=True) as store:
        assert store.payments.late_after == timedelta(minutes=7)
        pool: Any = store.engine.pool  # a QueuePool (Pool does not declare size)
        assert pool.size() == 1  # a quick command's one connection
    with caplog.at_level(logging.INFO, "paysched.test"):
        log.info("a token %s", token)
    assert token not in caplog.text and "a token" in caplog.text

    other = f"654321:{uuid.uuid4().hex}"
    app = await App.open(
        cfg.with_overrides(telegram_token=other, catchup_late_after=timedelta(minutes=9)),
        with_queue=False,
    )
    try:
        assert app.store.payments.late_after == timedelta(minutes=9)
        caplog.clear()
        with caplog.at_level(logging.INFO, "paysched.test"):
            log.info("another token %s", other)
        assert other not in caplog.text and "another token" in caplog.text
    finally:
        await app.close()


async def test_the_cli_and_app_read_the_same(app: App) -> None:
    """A read of paysched.reads gives the same on the CLI's store as through App.read (the
    API's and the dashboard's way), and refuses a bad filter naming it, either way."""
    await fund(app, {"alice": 10_000, "bob": 0})
    pid = await pay(app, "alice", "bob", 100, in_s=60)
    through_app = await app.read(reads.payment_detail, pid)
    with open_store(app.settings, migrate=False) as store:
        assert reads.payment_detail(store, pid) == through_app
        assert reads.notifications(store, None, pid, 10) == await app.read(
            reads.notifications, None, pid, 10
        )
        with pytest.raises(InvalidInput) as bad:
            reads.notifications(store, "lost", None, 10)
    assert bad.value.field == "state"
    with pytest.raises(InvalidInput) as bad:
        await app.read(reads.notifications, "lost", None, 10)
    assert bad.value.field == "state"
