"""The log channel: one readable line per event. The default, so notifications are visible with
nothing configured."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("paysched.notify")


class LogNotifier:
    channel = "log"

    async def send(self, target: str, event: dict[str, Any], dedup_key: str) -> None:
        log.info("notify: %s", event.get("text"))

    async def close(self) -> None:
        return None
