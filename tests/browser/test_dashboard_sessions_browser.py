"""Issue 22, items 4-6 in a real Chromium against a real `paysched run --api`: a payment's page
updates itself as the payment runs, every action on money asks first naming the payment (and
the outcome), and an open page goes to sign-in when its session ends however it ends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from playwright.sync_api import BrowserContext, Dialog, Page, Response, expect

from paysched.db.store import Store
from paysched.domain import OccurrenceState
from tests.browser.conftest import WAIT_MS, Server, sign_in
from tests.conftest import wait_for_sync

LIVE_MS = max(WAIT_MS, 30_000)


def answering(page: Page) -> list[str]:
    """Accept every confirmation on `page`; their texts, in order."""
    asked: list[str] = []

    def handle(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", handle)
    return asked


def recurring(server: Server, cron: str, amount: str) -> int:
    made: dict[str, Any] = server.api(
        "POST", "/v1/payments", {"from": "alice", "to": "bob", "amount": amount, "cron": cron}
    )
    return int(made["id"])


def status(page: Page) -> Any:
    return page.locator("#payment h1 .status")


def test_a_payment_page_shows_the_payment_succeed_without_a_reload(
    server: Server, context: BrowserContext
) -> None:
    pid = server.schedule(**{"in": "3s"})
    page = context.new_page()
    sign_in(page, server, "reader")
    page.goto(f"{server.url}/dashboard/payments/{pid}")
    expect(status(page)).to_have_text("pending")
    page.evaluate("window.notReloaded = true")
    expect(status(page)).to_have_text("succeeded", timeout=LIVE_MS)
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"


def test_pause_and_resume_ask_naming_the_payment(server: Server, context: BrowserContext) -> None:
    pid = recurring(server, "0 9 * * 1", "7.25")
    page = context.new_page()
    sign_in(page, server, "writer")
    page.goto(f"{server.url}/dashboard/payments/{pid}")
    named = f"payment #{pid} (7.25 USD, alice → bob)"
    answers, asked = [False, True, True], list[str]()

    def handle(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept() if answers.pop(0) else dialog.dismiss()

    page.on("dialog", handle)
    pause = page.get_by_role("button", name="Pause")
    pause.click()  # refused: nothing happens
    assert server.api("GET", f"/v1/payments/{pid}")["state"] == "active"
    pause.click()
    expect(page.locator("#result")).to_contain_text(f"Payment #{pid} paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#result")).to_contain_text(f"Payment #{pid} resumed")
    pausing = f"Pause {named}? Its occurrences that have not started are held until it is resumed."
    resuming = (
        f"Resume {named}? Its held occurrences are released; those already past due follow its "
        "catch-up policy."
    )
    assert asked == [pausing, pausing, resuming]
    assert server.api("GET", f"/v1/payments/{pid}")["state"] == "active"


def test_resolving_asks_naming_the_outcome_and_keeps_a_reason_being_typed(
    server: Server, context: BrowserContext
) -> None:
    server.create_key("admin", "admin")
    pid = recurring(server, "* * * * *", "5.50")  # its first occurrence within a minute
    occurrences: list[dict[str, Any]] = []

    def created() -> bool:
        occurrences[:] = server.api("GET", f"/v1/payments/{pid}")["occurrences"]
        return bool(occurrences)

    wait_for_sync(created, 30, "the scheduler to create the first occurrence")
    # Parked in needs_review by hand, before it falls due (as a lost provider answer would).
    store = Store.connect(server.env["DATABASE_URL"])
    try:
        now = datetime.now(UTC)
        claim = store.execution.claim(occurrences[-1]["id"], now)
        assert store.execution.finish(claim, OccurrenceState.NEEDS_REVIEW, now, "no answer")  # type: ignore[arg-type]
    finally:
        store.close()
    key = occurrences[-1]["key"]

    page = context.new_page()
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/dashboard/payments/{pid}")
    form = page.locator("form.resolve")
    expect(form.get_by_role("button")).to_have_text(
        ["Resolve as succeeded", "Resolve as failed", "Retry"]
    )
    reason = form.get_by_label("Reason")
    reason.fill("the provider says it bounced")
    reason.press("Enter")  # picks no outcome, sends nothing
    # The payment changes elsewhere: the live detail swaps in, the reason being typed stays.
    server.api("POST", f"/v1/payments/{pid}/pause")
    expect(status(page)).to_have_text("paused", timeout=LIVE_MS)
    expect(reason).to_have_value("the provider says it bounced\n")

    asked = answering(page)
    form.get_by_role("button", name="Resolve as failed").click()
    expect(page.locator("#result")).to_contain_text(
        f"Occurrence {key} resolved by hand: now failed"
    )
    assert asked == [
        f"Resolve occurrence {key} of payment #{pid} (5.50 USD, alice → bob) as "
        "FAILED: the provider did not pay it; nothing is sent again?"
    ]
    expect(page.locator("form.resolve")).to_have_count(0)


def test_signing_out_in_another_tab_sends_an_open_page_to_sign_in(
    server: Server, context: BrowserContext
) -> None:
    pid = server.schedule()
    watching = context.new_page()
    sign_in(watching, server, "reader")
    watching.goto(f"{server.url}/dashboard/payments/{pid}")
    expect(status(watching)).to_have_text("scheduled")
    other = context.new_page()
    other.goto(f"{server.url}/dashboard/")
    other.get_by_role("link", name="Sign out").click()
    expect(other).to_have_url(server.url + "/dashboard/login")
    # The payment page's stream finds its session ended and says so: to sign-in, untouched.
    watching.wait_for_url(server.url + "/dashboard/login", timeout=LIVE_MS)


def test_a_refused_stream_sends_the_page_to_sign_in(
    server: Server, context: BrowserContext
) -> None:
    """An EventSource shows no status: when the stream fails, the page asks /dashboard/session
    and goes to sign-in only on its 401 (a failure while signed in is left to reconnects)."""
    page = context.new_page()
    sign_in(page, server, "reader")
    page.route("**/dashboard/events", lambda route: route.fulfill(status=401, body=""))

    def probe(response: Response) -> bool:
        return response.url == server.url + "/dashboard/session"

    with page.expect_response(probe, timeout=LIVE_MS) as asked:
        page.goto(server.url + "/dashboard/")
    assert asked.value.status == 204
    # Still signed in: it stays, and asks again at the extension's next failed reconnect.
    with page.expect_response(probe, timeout=LIVE_MS) as again:
        pass
    assert again.value.status == 204 and page.url == server.url + "/dashboard/"
    context.request.get(server.url + "/dashboard/logout")  # the session ends (its cookie too)
    with page.expect_response(lambda r: probe(r) and r.status == 401, timeout=LIVE_MS):
        pass
    page.wait_for_url(server.url + "/dashboard/login", timeout=LIVE_MS)
