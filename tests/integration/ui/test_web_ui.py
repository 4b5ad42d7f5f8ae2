"""The operators' web UI end to end, as an operator uses it, in a real headless Chromium
(issue 14): sign-in; a draft with a pasted audience, scheduled, unscheduled with the notice,
edited and sent now; the counts rising in Email Sent; pause with the icon and the hover details
naming the operator; resume; cancel with confirmation; a 409 in plain words; a copy excluding
the original's recipients, sent, with no contact mailed twice at the SMTP sink; another
account's operator sees nothing; a script-bearing subject stays inert; /docs works offline.
Every page passes axe-core without serious or critical violations and is photographed into
docs/screenshots/."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, expect

from tests.integration.ui.conftest import (
    PASSWORD,
    UiStack,
    check_page,
    shot_path,
    sign_in,
    until,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


TEXT_BODY = "Hello {{name|friend}}, this is the UI test."
HTML_BODY = "<p>Hello {{name|friend}}, this is the <b>HTML</b> part.</p>"


async def shows_both_bodies(page: Page) -> None:
    """The page's preview shows the text body as text and the HTML body in a sandboxed frame."""
    await expect(page.locator("details.body-preview .text-preview")).to_have_text(TEXT_BODY)
    assert await page.locator("iframe.html-preview").get_attribute("sandbox") == ""
    await expect(page.frame_locator("iframe.html-preview").locator("b")).to_have_text("HTML")


def audience(prefix: str, n: int) -> str:
    return "\n".join(f"{prefix}{i}@example.org, Person {i}" for i in range(n))


async def compose(
    page: Page,
    ui: UiStack,
    name: str,
    subject: str,
    contacts: str,
    *,
    throttle: tuple[int, int] | None = None,
) -> None:
    """Fill the New message form (content, plan, pasted audience)."""
    await page.goto(f"{ui.base_url}/ui/messages/new")
    await page.get_by_label("Name (only you see it)").fill(name)
    await page.get_by_label("From address").fill(ui.sender)
    await page.get_by_label("From name").fill("UI News")
    await page.get_by_label("Subject").fill(subject)
    await page.get_by_label("Text body (plain text)").fill(TEXT_BODY)
    await page.get_by_label("HTML body").fill(HTML_BODY)
    await page.locator("#audience").fill(contacts)
    if throttle is not None:
        await page.get_by_label("Throttle: send in batches (fixed time only)").check()
        await page.get_by_label("Batch size").fill(str(throttle[0]))
        await page.get_by_label("Interval between batches (minutes, at least 1)").fill(
            str(throttle[1])
        )


def row(page: Page, name: str) -> Any:
    return page.locator("tr", has=page.get_by_role("link", name=name, exact=True))


async def open_menu(page: Page, name: str) -> None:
    await page.get_by_role("button", name=f"Actions for {name}", exact=True).click()
    await expect(page.get_by_role("menu", name=f"Actions for {name}")).to_be_visible()


async def menu_items(page: Page, name: str) -> list[str]:
    menu = page.get_by_role("menu", name=f"Actions for {name}")
    return [t.strip() for t in await menu.get_by_role("menuitem").all_inner_texts()]


async def sink_counts(ui: UiStack) -> Counter[str]:
    return Counter(rcpt for _, rcpt in await ui.stack.sink())


async def test_sign_in_wrong_password_lockout_and_sign_out(ui: UiStack) -> None:
    context = await ui.context()
    page = await context.new_page()
    await page.goto(f"{ui.base_url}/ui/sent")
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))  # not signed in: sign in first
    await check_page(page, "signin")

    await sign_in(page, ui.base_url, ui.ada.email, "not the password")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")

    await sign_in(page, ui.base_url, ui.ada.email, PASSWORD)
    await expect(page.get_by_role("heading", name="Email Sent")).to_be_visible()
    cookie = next(c for c in await context.cookies() if c["name"] == "mailctl_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["expires"] > 0
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))
    await page.goto(f"{ui.base_url}/ui/drafts")
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))  # the session is gone

    # Five wrong passwords lock the operator out: the right one is refused too, for a while.
    for _ in range(5):
        await sign_in(page, ui.base_url, ui.eve.email, "guessing")
    await sign_in(page, ui.base_url, ui.eve.email, PASSWORD)
    await expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    await context.close()
    # Unlock Eve for the isolation test (as an administrator would, after the lockout).
    conn = await asyncpg.connect(ui.dsn)
    try:
        await conn.execute(
            "UPDATE operators SET failed_signins = 0, locked_until = NULL WHERE email = $1",
            ui.eve.email,
        )
    finally:
        await conn.close()


async def test_a_state_change_without_the_csrf_token_is_refused(ui: UiStack) -> None:
    context, _ = await ui.signed_in(ui.ada)
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    async with httpx.AsyncClient(base_url=ui.base_url, cookies=cookies) as client:
        answer = await client.post(
            "/ui/messages",
            data={"name": "Forged", "from_address": ui.sender, "subject": "x", "body": "x"},
        )
    assert answer.status_code == 403
    await context.close()


async def test_draft_schedule_unschedule_edit_send_now_and_counts_rise(ui: UiStack) -> None:
    context, page = await ui.signed_in(ui.ada)
    await check_page(page, "email-sent-empty")
    name = "Launch news"

    # A draft with a pasted audience (one address twice: added once), scheduled for tomorrow.
    pasted = audience("launch", 40) + "\nlaunch0@example.org, Again"
    await compose(page, ui, name, "Hello {{name|there}}", pasted)
    await expect(page.locator("#audience-count")).to_have_text("41")
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    await page.get_by_label("At a time").check()
    await page.get_by_label("Send date and time").fill(tomorrow.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_label("in time zone").fill("Europe/London")
    await check_page(page, "compose")
    await page.get_by_role("button", name="Schedule", exact=True).click()

    # Scheduled: the time in the account's zone and in UTC, the mode, the audience size.
    await expect(page).to_have_url(re.compile(r"/ui/scheduled$"))
    scheduled = row(page, name)
    await expect(scheduled).to_contain_text("Fixed time")
    await expect(scheduled).to_contain_text("UTC")
    await expect(scheduled.locator("td.num")).to_have_text("40")
    await open_menu(page, name)
    assert await menu_items(page, name) == ["Unschedule…", "Cancel…", "Copy as draft…"]
    await check_page(page, "scheduled")

    # Unschedule: the notice, "Yes, Continue Editing", and the editor of the draft.
    await page.get_by_role("menuitem", name="Unschedule…").click()
    notice = page.get_by_role("dialog")
    await expect(notice).to_contain_text(
        "Editing the message will change its status from scheduled to draft"
    )
    await check_page(page, "unschedule-notice")
    await notice.get_by_role("button", name="Yes, Continue Editing").click()
    await expect(page).to_have_url(re.compile(r"/ui/messages/[0-9a-f-]+/edit$"))
    await expect(page.locator(".meta")).to_contain_text("Status: Draft")
    await expect(page.locator("#audience-size")).to_have_text("40")
    await expect(page.get_by_label("Text body (plain text)")).to_have_value(TEXT_BODY)
    await expect(page.get_by_label("HTML body")).to_have_value(HTML_BODY)
    await shows_both_bodies(page)

    # Edit and send now.
    await page.get_by_label("Subject").fill("Hello {{name|there}}, it is out")
    await page.get_by_role("button", name="Send now").click()
    await expect(page).to_have_url(re.compile(r"/ui/sent$"))

    # Email Sent: the counts rise live (no reload) until all 40 are delivered.
    sent = row(page, name)
    delivered = sent.locator("td.delivered")
    seen: set[int] = set()

    async def all_delivered() -> bool:
        value = int((await delivered.inner_text()).strip())
        seen.add(value)
        return value == 40

    await until("40 delivered in Email Sent", all_delivered, within=90)
    assert any(0 < v < 40 for v in seen), f"counts did not rise live: {sorted(seen)}"
    await expect(sent.locator(".icon")).to_have_attribute("aria-label", "Sent", timeout=60_000)
    await expect(sent.locator("td.remaining")).to_have_text("0")
    await check_page(page, "email-sent")

    # The message page: summary, chart, recipients (filter, search), history with the person.
    await page.get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name="Summary")).to_be_visible()
    await expect(page.locator(".chart rect").first).to_be_attached()
    await page.get_by_label("Address contains").fill("launch1")
    await page.get_by_label("delivered", exact=True).check()
    await page.get_by_role("button", name="Filter").click()
    emails = await page.locator("td.email").all_inner_texts()
    assert emails and all("launch1" in e for e in emails), emails
    history = page.locator(".timeline")
    await expect(history).to_contain_text("Unscheduled by Ada Lovelace")
    await expect(history).to_contain_text("Draft edited by Ada Lovelace")
    await shows_both_bodies(page)
    await check_page(page, "message")
    mails = await sink_counts(ui)
    assert all(mails[f"launch{i}@example.org"] == 1 for i in range(40)), mails
    # The mail itself: multipart/alternative, the text then the HTML part, both merged.
    assert ui.stack.http is not None
    answer = await ui.stack.http.get("/messages", params={"rcpt": "launch1@example.org"})
    this = UUID(page.url.split("/ui/messages/")[1].split("?")[0])
    (item,) = [
        i for i in answer.json()["items"] if dict(i["headers"])["X-Mailctl-Message"] == str(this)
    ]
    mail = message_from_string(
        f"Content-Type: {dict(item['headers'])['Content-Type']}\n\n{item['body']}",
        policy=policy.default,
    )
    assert isinstance(mail, EmailMessage)
    assert mail.get_content_type() == "multipart/alternative"
    assert [(p.get_content_type(), p.get_content()) for p in mail.iter_parts()] == [
        ("text/plain", "Hello Person 1, this is the UI test."),
        ("text/html", "<p>Hello Person 1, this is the <b>HTML</b> part.</p>"),
    ]

    # On the log, every event the operator caused names them: a user actor with their name.
    message_id = UUID(page.url.split("/ui/messages/")[1].split("?")[0])
    by_operator = {
        e.type: e.actor for e in await ui.stack.events_of(message_id) if e.actor.kind == "user"
    }
    assert set(by_operator) >= {
        "DraftCreated",
        "RecipientsAdded",
        "MessageScheduled",
        "MessageUnscheduled",
        "DraftEdited",
    }
    for actor in by_operator.values():
        assert actor.display_name == "Ada Lovelace" and actor.account_id == ui.ada.account
        assert actor.user_id is not None and actor.user_id.startswith("op_")
    await context.close()


async def test_pause_resume_cancel_409_and_copy_excluding_recipients(ui: UiStack) -> None:
    context, page = await ui.signed_in(ui.ada)
    name = "Big sale"
    # Throttled: 30 now, the next batch a minute later; canceled before it.
    await compose(page, ui, name, "Sale", audience("sale", 90), throttle=(30, 1))
    await page.get_by_role("button", name="Send now").click()
    await expect(page).to_have_url(re.compile(r"/ui/sent$"))
    sending = row(page, name)
    await expect(sending.locator(".icon")).to_have_attribute("aria-label", "Sending")
    await open_menu(page, name)
    assert await menu_items(page, name) == ["Pause", "Cancel…", "Copy as draft…"]
    await check_page(page, "email-sent-menu")

    # Pause: the icon, and the hover details say since when and who.
    await page.get_by_role("menuitem", name="Pause").click()
    await expect(sending.locator(".icon")).to_have_attribute("aria-label", "Paused")
    await sending.locator(".details-trigger").hover()
    details = sending.get_by_role("tooltip")
    await expect(details).to_be_visible()
    await expect(details).to_contain_text("Paused since")
    await expect(details.locator(".paused-by")).to_have_text("Ada Lovelace")
    # While paused no batch is due (issue 11): the details show the current batch, no next time.
    await expect(details).to_contain_text("Current batch")
    await expect(details).not_to_contain_text("Next batch")
    await check_page(page, "email-sent-details")
    # The details open on keyboard focus too.
    await page.mouse.move(0, 0)
    await sending.locator(".details-trigger").focus()
    await expect(details).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(details).to_be_hidden()

    # Resume (keyboard: the menu opens with ArrowDown, Enter picks the item).
    await page.get_by_role("button", name=f"Actions for {name}", exact=True).focus()
    await page.keyboard.press("ArrowDown")
    await expect(page.get_by_role("menuitem", name="Resume")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(sending.locator(".icon")).to_have_attribute("aria-label", "Sending")

    # A stale menu (opened before someone else canceled) answers a 409 in plain words.
    await open_menu(page, name)
    other = await context.new_page()
    await other.goto(f"{ui.base_url}/ui/sent")
    await open_menu(other, name)
    await other.get_by_role("menuitem", name="Cancel…").click()
    confirm = other.get_by_role("dialog")
    await expect(confirm).to_contain_text("Canceling is final")
    await check_page(other, "cancel-confirmation")
    await confirm.get_by_role("button", name="Yes, cancel the message").click()
    await expect(row(other, name).locator(".icon")).to_have_attribute("aria-label", "Canceled")
    await page.get_by_role("menuitem", name="Pause").click()
    error = sending.get_by_role("alert")
    await expect(error).to_have_text(
        "Not possible: the message is canceled now. Allowed while canceled: copy."
    )
    # The row shows the message as it is now, the error next to its menu.
    await expect(sending.locator(".icon")).to_have_attribute("aria-label", "Canceled")
    await check_page(page, "error-409")
    await other.close()

    # Copy as draft, excluding everyone who may have received the original; send the copy.
    await page.reload()
    await open_menu(page, name)
    assert await menu_items(page, name) == ["Copy as draft…"]
    await page.get_by_role("menuitem", name="Copy as draft…").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Exclude everyone who may already have received the original").check()
    await check_page(page, "copy-dialog")
    await dialog.get_by_role("button", name="Copy and edit").click()
    await expect(page).to_have_url(re.compile(r"/ui/messages/[0-9a-f-]+/edit$"))
    await expect(page.locator(".meta")).to_contain_text("Status: Draft")
    await page.get_by_label("Name (only you see it)").fill("Big sale, the rest")
    await page.get_by_label("Throttle: send in batches (fixed time only)").uncheck()
    await page.get_by_role("button", name="Send now").click()
    await expect(page).to_have_url(re.compile(r"/ui/sent$"))
    copy = row(page, "Big sale, the rest")
    await expect(copy.locator(".icon")).to_have_attribute("aria-label", "Sent", timeout=90_000)
    copied = int((await copy.locator("td.num").first.inner_text()).strip())
    assert 0 < copied < 90  # the first batch was excluded

    async def everyone_once() -> Counter[str] | None:
        mails = await sink_counts(ui)
        sale = {r: n for r, n in mails.items() if r.startswith("sale")}
        return mails if len(sale) == 90 else None

    mails = await until("every sale contact mailed", everyone_once, within=90)
    assert all(mails[f"sale{i}@example.org"] == 1 for i in range(90)), mails
    await context.close()


async def test_another_accounts_operator_sees_none_of_it(ui: UiStack) -> None:
    context, page = await ui.signed_in(ui.ada)
    await compose(page, ui, "Private plans", "Secret", audience("private", 2))
    await page.get_by_role("button", name="Save draft").click()
    await expect(page).to_have_url(re.compile(r"/ui/drafts$"))
    await open_menu(page, "Private plans")
    assert await menu_items(page, "Private plans") == [
        "Edit",
        "Schedule or send now",
        "Copy as draft…",
        "Discard…",
    ]
    await check_page(page, "drafts")
    href = await page.get_by_role("link", name="Private plans", exact=True).get_attribute("href")
    assert href is not None
    await context.close()

    eve, other = await ui.signed_in(ui.eve)
    for listing in ("sent", "scheduled", "drafts"):
        await other.goto(f"{ui.base_url}/ui/{listing}")
        await expect(other.locator(".empty")).to_have_text("No messages here.")
    answer = await other.goto(f"{ui.base_url}{href}")
    assert answer is not None and answer.status == 404
    await expect(other.locator("main")).to_contain_text("does not exist")
    await eve.close()

    # Back as Ada: discarding the draft takes it off the list.
    context, page = await ui.signed_in(ui.ada)
    await page.goto(f"{ui.base_url}/ui/drafts")
    await open_menu(page, "Private plans")
    await page.get_by_role("menuitem", name="Discard…").click()
    await page.get_by_role("dialog").get_by_role("button", name="Yes, discard the draft").click()
    await expect(page.get_by_role("link", name="Private plans", exact=True)).to_have_count(0)
    await context.close()


async def test_a_script_bearing_subject_is_shown_as_text_and_never_runs(ui: UiStack) -> None:
    context, page = await ui.signed_in(ui.ada)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2;alert(1)</script>'
    await compose(page, ui, f"Evil {evil}", f"Subject {evil}", audience("evil", 1))
    await page.get_by_label("Text body (plain text)").fill(f"Text {evil}")
    await page.get_by_label("HTML body").fill(f"<p>Body</p>{evil}")
    await page.get_by_role("button", name="Save draft").click()
    await expect(page).to_have_url(re.compile(r"/ui/drafts$"))
    await expect(page.locator("td.subject").first).to_have_text(f"Subject {evil}")
    await page.get_by_role("link", name=f"Evil {evil}", exact=True).click()
    await expect(page.locator(".meta .subject")).to_have_text(f"Subject {evil}")
    # The HTML body is previewed in a sandboxed frame: no scripts, an origin of its own.
    preview = page.locator("iframe.html-preview")
    assert await preview.get_attribute("sandbox") == ""
    frame = page.frame_locator("iframe.html-preview")
    await expect(frame.locator("p")).to_have_text("Body")
    await expect(page.locator(".text-preview")).to_have_text(f"Text {evil}")
    assert await page.evaluate("typeof window.pwned") == "undefined"
    inner = next(f for f in page.frames if f != page.main_frame)
    assert await inner.evaluate("typeof window.pwned") == "undefined"
    assert await page.locator("main script, main img").count() == 0
    assert not dialogs
    answer = await page.request.get(page.url)
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    await context.close()


async def test_the_api_documentation_loads_with_no_internet(ui: UiStack) -> None:
    context = await ui.context()
    page = await context.new_page()
    outside: list[str] = []

    async def only_local(route: Any) -> None:
        if route.request.url.startswith(ui.base_url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_local)
    await page.goto(f"{ui.base_url}/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("mailctl commands")
    discard = page.locator('[data-path="/v1/messages/{message_id}/discard"]')
    await expect(discard.first).to_be_visible()
    assert outside == []
    await page.screenshot(path=str(shot_path("docs")))
    await context.close()
