"""Telegram through the Bot API's documented HTTP interface (sendMessage), with httpx.

The API base URL is configurable (TELEGRAM_API_URL) so a self-hosted Bot API server, and the
tests' local one, can stand in for the public service. The token never appears in logs or errors.
"""

from __future__ import annotations

from typing import Any

import httpx

from paysched.errors import PermanentDelivery, RetryableDelivery

DEFAULT_API_URL = "https://api.telegram.org"


class TelegramNotifier:
    channel = "telegram"

    def __init__(self, token: str, api_url: str = DEFAULT_API_URL, timeout: float = 10.0) -> None:
        self._token = token
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._client = httpx.AsyncClient(timeout=timeout)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")

    async def send(self, target: str, event: dict[str, Any], dedup_key: str) -> None:
        chat: int | str = int(target) if target.lstrip("-").isdigit() else target
        try:
            response = await self._client.post(self._url, json=_message(chat, event))
        except httpx.HTTPError as exc:
            raise RetryableDelivery(self._redact(f"telegram unreachable: {exc}")) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200 and body.get("ok"):
            return
        description = self._redact(str(body.get("description") or response.reason_phrase))
        if response.status_code == 429:
            retry_after = (body.get("parameters") or {}).get("retry_after")
            raise RetryableDelivery(
                f"telegram 429: {description}",
                float(retry_after) if isinstance(retry_after, int | float) else None,
            )
        if response.status_code >= 500:
            raise RetryableDelivery(f"telegram {response.status_code}: {description}")
        # 400 chat not found, 403 bot blocked by the user, 401 bad token, ...: retrying won't help.
        raise PermanentDelivery(f"telegram {response.status_code}: {description}")

    async def close(self) -> None:
        await self._client.aclose()


def _message(chat: int | str, event: dict[str, Any]) -> dict[str, Any]:
    """sendMessage's body: the text, and an event's `buttons` (rows of {"text",
    "callback_data"}) as an inline keyboard."""
    body: dict[str, Any] = {"chat_id": chat, "text": event["text"]}
    if event.get("buttons"):
        body["reply_markup"] = {"inline_keyboard": event["buttons"]}
    return body
