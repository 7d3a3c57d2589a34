"""A payment's page writes its times in the payment's own zone beside UTC, and lists an active
recurring payment's next due times (issue 22, item 8)."""

from __future__ import annotations

import html

from tests.api.conftest import Api
from tests.api.test_api import accounts
from tests.api.test_dashboard import page, schedule


def next_due(text: str) -> list[str]:
    """The page's "Next due" list, as text."""
    if "<dt>Next due</dt>" not in text:
        return []
    block = text.split("<dt>Next due</dt>", 1)[1].split("</ol>", 1)[0]
    return [html.unescape(li.split("</li>", 1)[0]) for li in block.split("<li>")[1:]]


async def test_a_weekly_payment_shows_its_zone_beside_utc_and_its_next_due_times(
    api: Api,
) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    # Winter in Berlin (+1), then summer (+2): each date's own offset.
    winter = await schedule(
        api, every="1 week", start="2030-01-07T09:00", timezone="Europe/Berlin", count="8"
    )
    text = await page(api, f"/dashboard/payments/{winter}")
    assert next_due(text) == [
        f"2030-01-{day:02} 09:00 Europe/Berlin (08:00 UTC)" for day in (7, 14, 21, 28)
    ] + ["2030-02-04 09:00 Europe/Berlin (08:00 UTC)"]
    assert "next due 2030-01-07 09:00 Europe/Berlin (08:00 UTC)" in text
    # The preview the API gives, in both zones.
    preview = (await api.get(f"/v1/payments/{winter}/preview", count=5)).json()
    assert [d["due_at"][11:16] for d in preview] == ["08:00"] * 5

    summer = await schedule(
        api, every="1 week", start="2030-07-01T09:00", timezone="Europe/Berlin", count="2"
    )
    assert next_due(await page(api, f"/dashboard/payments/{summer}")) == [
        "2030-07-01 09:00 Europe/Berlin (07:00 UTC)",
        "2030-07-08 09:00 Europe/Berlin (07:00 UTC)",
    ]


async def test_a_cron_payment_in_its_zone_and_a_one_time_payment_in_utc(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    cron = await schedule(api, cron="30 0 * * *", timezone="Asia/Tokyo")
    due = next_due(await page(api, f"/dashboard/payments/{cron}"))
    # 00:30 in Tokyo is 15:30 UTC the day before: the UTC part names its own date.
    assert len(due) == 5 and all(" 00:30 Asia/Tokyo (" in d and " 15:30 UTC)" in d for d in due)
    once = await schedule(api, at="2030-01-07T08:00:00Z")
    text = await page(api, f"/dashboard/payments/{once}")
    assert "once, at 2030-01-07 08:00 UTC" in text
    assert next_due(text) == []  # one time: nothing recurs


async def test_a_paused_payment_lists_no_next_due_times(api: Api) -> None:
    await accounts(api, {"alice": "100.00", "bob": ""})
    pid = await schedule(api, cron="0 9 * * 1", timezone="Europe/Berlin")
    assert len(next_due(await page(api, f"/dashboard/payments/{pid}"))) == 5
    assert (await api.post(f"/v1/payments/{pid}/pause", None, "write")).status_code == 200
    assert next_due(await page(api, f"/dashboard/payments/{pid}")) == []
