"""The notifier protocol and the registry handed to the delivery loop (no global)."""

from __future__ import annotations

from typing import Any, Protocol

from paysched.errors import PermanentDelivery


class Notifier(Protocol):
    channel: str

    async def send(self, target: str, event: dict[str, Any], dedup_key: str) -> None:
        """Deliver one event to one target. Raise RetryableDelivery or PermanentDelivery."""
        ...

    async def close(self) -> None: ...


class NotifierRegistry:
    def __init__(self, notifiers: list[Notifier] | None = None) -> None:
        self._by_channel: dict[str, Notifier] = {}
        for notifier in notifiers or []:
            self.register(notifier)

    def register(self, notifier: Notifier) -> None:
        self._by_channel[notifier.channel] = notifier

    def get(self, channel: str) -> Notifier:
        try:
            return self._by_channel[channel]
        except KeyError:
            raise PermanentDelivery(f"channel {channel!r} is not configured here") from None

    @property
    def channels(self) -> list[str]:
        return sorted(self._by_channel)

    async def close(self) -> None:
        for notifier in self._by_channel.values():
            await notifier.close()
