"""The dashboard in a real Chromium against a real `paysched run --api` (issue 22): signing in
and out, live updates without a reload, search, filters and paging, cancelling with its
confirmation, what a read key may do, revoked keys, and the phone-width layout."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect

from tests.browser.conftest import WAIT_MS, Server, screenshot, sign_in
from tests.conftest import wait_for_sync
from tests.integration.test_cli import paysched


def row_of(page: Page, pid: int, within: str = "body") -> Any:
    """The table row of payment `pid` (its first cell links to its page)."""
    link = page.locator(f'a[href="/dashboard/payments/{pid}"]')
    return page.locator(f"{within} tbody tr").filter(has=link)


def status_of(server: Server, pid: int) -> str:
    status: str = server.api("GET", f"/v1/payments/{pid}")["status"]
    return status


def occurrences(server: Server, pid: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.api("GET", f"/v1/payments/{pid}")["occurrences"]
    return found


def accounts(server: Server, *names: str) -> None:
    for name in names:
        server.api("POST", "/v1/accounts", {"name": name})


# -- signing in --------------------------------------------------------------------------------


def test_sign_in_and_sign_out(server: Server, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(server.url + "/dashboard/")
    expect(page).to_have_url(server.url + "/dashboard/login")

    key = page.get_by_label("API key")
    key.fill("psk_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")

    key.fill(server.keys["reader"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server.url + "/dashboard/")
    expect(page.locator("header .who")).to_have_text("reader (read)")
    assert server.keys["reader"] not in page.content()
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"

    page.get_by_role("link", name="Sign out").click()
    expect(page).to_have_url(server.url + "/dashboard/login")
    page.goto(server.url + "/dashboard/payments")
    expect(page).to_have_url(server.url + "/dashboard/login")


# -- live --------------------------------------------------------------------------------------


def test_a_payment_created_over_the_api_appears_and_succeeds_without_a_reload(
    server: Server, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, server, "writer")
    # A reload would lose this: it proves the row came over the event stream.
    page.evaluate("window.sameDocument = true")
    pid = server.schedule(memo="rent, live", **{"in": "1s"})

    row = row_of(page, pid, "#live")
    expect(row).to_have_count(1)
    expect(row.locator(".status")).to_have_text("succeeded", timeout=30_000)
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, "overview.png", full_page=True)

    row.get_by_role("link", name=f"#{pid}").click()
    expect(page.locator("#payment h1")).to_contain_text(f"Payment #{pid}")
    expect(page.locator("#payment h1 .status")).to_have_text("succeeded")
    screenshot(page, "payment.png")


# -- finding -----------------------------------------------------------------------------------


def test_search_finds_a_payment_by_occurrence_key_and_by_account(
    server: Server, context: BrowserContext
) -> None:
    accounts(server, "carol", "dave")
    server.api("POST", "/v1/accounts/carol/deposits", {"amount": "10.00"})
    pid = server.schedule("carol", "dave", **{"in": "1s"})
    server.schedule()  # alice -> bob: found by neither search
    # Its occurrence (and so its key) is made when the scheduler's look-ahead reaches it.
    wait_for_sync(lambda: bool(occurrences(server, pid)), 30, f"payment {pid}'s occurrence")
    occurrence_key = occurrences(server, pid)[0]["key"]

    page = context.new_page()
    sign_in(page, server, "reader")
    page.get_by_role("link", name="Payments", exact=True).click()
    found = page.locator("#found")
    searches = [(occurrence_key, "an occurrence key"), ("carol", "an account (payer or payee)")]
    for query, taken_as in searches:
        page.get_by_role("searchbox", name="Search").fill(query)
        page.get_by_role("button", name="Find").click()
        expect(found).to_contain_text(f"was taken as {taken_as}")
        expect(found.locator("tbody tr")).to_have_count(1)
        expect(row_of(page, pid, "#found")).to_have_count(1)


def test_a_status_filter_and_its_second_page(server: Server, context: BrowserContext) -> None:
    """27 payments between two accounts of this test, one cancelled: filtered by account and
    status=scheduled, 25 on the first page and the last one on the second."""
    accounts(server, "erin", "frank")
    ids = [server.schedule("erin", "frank") for _ in range(27)]
    server.api("POST", f"/v1/payments/{ids[5]}/cancel")
    scheduled = [pid for pid in ids if pid != ids[5]]

    page = context.new_page()
    sign_in(page, server, "reader")
    page.goto(server.url + "/dashboard/payments")
    page.locator('input[name="account"]').fill("erin")
    page.locator('select[name="status"]').select_option("scheduled")
    page.get_by_role("button", name="Find").click()

    rows = page.locator("#found tbody tr")
    expect(rows).to_have_count(25)
    assert "status=scheduled" in page.url and "account=erin" in page.url
    expect(rows.first).to_contain_text(f"#{scheduled[-1]}")  # newest first
    expect(rows.last).to_contain_text(f"#{scheduled[1]}")

    page.get_by_role("link", name="Older →").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"#{scheduled[0]}")
    assert "status=scheduled" in page.url and "account=erin" in page.url  # the filter is kept
    expect(page.locator('select[name="status"]')).to_have_value("scheduled")
    expect(row_of(page, ids[5], "#found")).to_have_count(0)


# -- acting ------------------------------------------------------------------------------------


def cancel_from_its_page(page: Page, server: Server, pid: int) -> list[str]:
    """Open the payment, refuse the confirmation once, then accept it; the dialogs' texts."""
    asked: list[str] = []

    def answer(accept: bool) -> Any:
        def handle(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(f"{server.url}/dashboard/payments/{pid}")
    button = page.get_by_role("button", name="Cancel payment")
    page.once("dialog", answer(False))
    button.click()
    assert len(asked) == 1  # click() returns once the dialog was handled
    assert posts == [], "a refused confirmation sends nothing"
    expect(page.locator("#payment h1 .status")).to_have_text("scheduled")
    assert status_of(server, pid) == "scheduled"

    page.once("dialog", answer(True))
    button.click()
    expect(page.locator("#result")).to_contain_text(f"Payment #{pid} cancelled")
    assert posts == [f"{server.url}/dashboard/payments/{pid}/cancel"]
    return asked


def test_cancel_asks_for_confirmation_then_cancels(server: Server, context: BrowserContext) -> None:
    pid = server.schedule()
    page = context.new_page()
    sign_in(page, server, "writer")
    asked = cancel_from_its_page(page, server, pid)
    named = f"payment #{pid} (2.50 USD, alice → bob)"  # which payment, how much, whose
    assert asked == [f"Cancel {named}? Nothing of it that has not started will run."] * 2
    # The detail reloads itself: the new status, and nothing left to cancel.
    expect(page.locator("#payment h1 .status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel payment")).to_have_count(0)
    assert status_of(server, pid) == "cancelled"


def test_a_cancel_names_its_actor_in_the_payment_page(
    server: Server, context: BrowserContext
) -> None:
    """Who cancelled is recorded (the `actions` table) and shown with the payment: the key's
    id and name, and that it was done from the dashboard."""
    name = "ops-hanna"
    server.create_key(name, "write")
    pid = server.schedule()
    page = context.new_page()
    sign_in(page, server, name)
    cancel_from_its_page(page, server, pid)
    expect(page.locator("#payment h1 .status")).to_have_text("cancelled")
    page.reload()
    timeline = page.locator("#payment")
    expect(timeline).to_contain_text(name)
    expect(timeline).to_contain_text(f"#{server.key_ids[name]}")
    expect(timeline).to_contain_text("dashboard")


def test_a_read_key_sees_no_action_and_its_forged_post_is_refused(
    server: Server, context: BrowserContext
) -> None:
    pid = server.schedule()
    page = context.new_page()
    sign_in(page, server, "reader")
    page.goto(f"{server.url}/dashboard/payments/{pid}")
    expect(page.get_by_text("Signed in with a read key")).to_be_visible()
    expect(page.locator("#payment").get_by_role("button")).to_have_count(0)

    # What a read key's holder could send by hand from the page: its cookie, same origin,
    # HX-Request set. The server refuses it for the key's scope, not for CSRF.
    answer = page.evaluate(
        """async (url) => {
             const r = await fetch(url, {method: "POST", headers: {"HX-Request": "true"}});
             return {status: r.status, text: await r.text()};
           }""",
        f"/dashboard/payments/{pid}/cancel",
    )
    assert answer["status"] == 403, answer
    assert "scope" in answer["text"], answer
    assert status_of(server, pid) == "scheduled"


# -- revoked keys ------------------------------------------------------------------------------


def test_the_next_click_after_a_revoke_goes_to_sign_in(
    server: Server, context: BrowserContext
) -> None:
    server.create_key("revoked-click", "read")
    page = context.new_page()
    sign_in(page, server, "revoked-click")
    paysched(server.env, "apikeys", "revoke", str(server.key_ids["revoked-click"]))
    page.get_by_role("link", name="Payments", exact=True).click()
    expect(page).to_have_url(server.url + "/dashboard/login")
    expect(page.get_by_role("status")).to_have_text(
        "The API key you signed in with was revoked. Sign in with another key."
    )
    assert context.cookies() == [], "the revoked key's cookie is cleared"


def test_an_open_page_goes_to_sign_in_when_its_key_is_revoked(
    server: Server, context: BrowserContext
) -> None:
    """Nobody clicks: the open overview itself (its live stream) finds the key revoked and
    the page goes to the sign-in form."""
    server.create_key("revoked-open", "read")
    page = context.new_page()
    sign_in(page, server, "revoked-open")
    paysched(server.env, "apikeys", "revoke", str(server.key_ids["revoked-open"]))
    page.wait_for_url(server.url + "/dashboard/login**", timeout=max(WAIT_MS, 30_000))
    # And says why (the stream's check left the ended session for the page to find).
    expect(page.get_by_role("status")).to_have_text(
        "The API key you signed in with was revoked. Sign in with another key."
    )


# -- phone width -------------------------------------------------------------------------------


# The outermost elements that reach past the window's right edge (tag.class and width), so a
# failure says where to look.
OVERFLOWING = """() => {
  const edge = document.documentElement.clientWidth;
  const past = [...document.body.querySelectorAll("*")].filter(
    (e) => e.getBoundingClientRect().right > edge + 0.5);
  const outermost = past.filter((e) => !past.includes(e.parentElement));
  return outermost.slice(0, 5).map((e) =>
    `${e.tagName.toLowerCase()}${e.className ? "." + e.className : ""}`
    + ` (${Math.round(e.getBoundingClientRect().width)} px)`);
}"""


def test_no_horizontal_scroll_at_400_px(server: Server, browser: Browser) -> None:
    """Every page fits a 400 px wide window: nothing wider than the page (scrollWidth within
    clientWidth, which leaves out a vertical scroll bar)."""
    pid = server.schedule(memo="a memo long enough to need wrapping on a narrow phone screen")
    context = browser.new_context(viewport={"width": 400, "height": 860})
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        sign_in(page, server, "writer")
        widths: dict[str, tuple[int, int]] = {}
        culprits: dict[str, list[str]] = {}
        pages = {
            "overview": "/dashboard/",
            "list": "/dashboard/payments",
            "payment": f"/dashboard/payments/{pid}",
            "account": "/dashboard/accounts/alice",
            "actions": "/dashboard/actions",
        }
        for name, path in pages.items():
            page.goto(server.url + path)
            scroll, client = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            widths[name] = (scroll, client)
            if scroll > client:
                culprits[name] = page.evaluate(OVERFLOWING)
            if name == "overview":
                screenshot(page, "phone.png")
        too_wide = {name: w for name, w in widths.items() if w[0] > w[1]}
        assert not too_wide, (
            f"wider than the window (scrollWidth, clientWidth): {widths}; "
            f"the widest elements reaching past it: {culprits}"
        )
    finally:
        context.close()
