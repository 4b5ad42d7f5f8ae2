"""Issue 16 end to end, on the whole real stack of tests/integration/ui/conftest.py (commands
service, processor, delivery worker, projection worker, SMTP sink, Postgres, Kafka): the CSV
import through the API (every kind of bad row, an interrupted import resumed), preview, test
sends, export of a canceled message's not-delivered contacts into a new message, and in
Chromium a 100,000-row import with its progress bar, the preview's inert script, a test send."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from bench.harness.spawn import api_key
from core import send_id
from tests.integration.ui.conftest import UiStack, until

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Api:
    def __init__(self, ui: UiStack, key: str) -> None:
        self.ui = ui
        self.client = httpx.AsyncClient(
            base_url=ui.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=300
        )

    async def create(
        self,
        body: str = "Hello {{first_name|friend}}",
        subject: str = "Hi",
        plan: dict[str, Any] | None = None,
        html_body: str | None = None,
    ) -> str:
        content = {
            "name": f"audience {uuid.uuid4().hex[:6]}",
            "from_address": self.ui.sender,
            "subject": subject,
            "body": body,
        }
        if html_body is not None:
            content["html_body"] = html_body
        answer = await self.client.post(
            "/v1/messages", json={"content": content, "plan": plan or {}}
        )
        assert answer.status_code == 201, answer.text
        message = str(answer.json()["message_id"])
        await self.view(message)
        return message

    async def view(self, message: str, min_sequence: int = 1) -> dict[str, Any]:
        answer = await self.client.get(
            f"/v1/messages/{message}", params={"min_sequence": min_sequence, "wait_s": 30}
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    async def upload(
        self, message: str, data: Any, import_id: uuid.UUID, **params: str
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/messages/{message}/imports",
            params={"import_id": str(import_id), **params},
            content=data,
            headers={"Content-Type": "text/csv"},
        )

    async def settled(self, message: str, audience: int) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            view = await self.view(message)
            return view if view["audience"] == audience else None

        found: dict[str, Any] = await until(f"an audience of {audience}", check)
        return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(ui: UiStack) -> AsyncIterator[Api]:
    client = Api(ui, await asyncio.to_thread(api_key, ui.dsn, ui.ada.account))
    try:
        yield client
    finally:
        await client.client.aclose()


BAD_FILE = (
    (
        "\ufeffContact ID,Email,Time Zone,first_name\r\n"  # 1: a BOM, another spelling
        'a,a@example.org,Europe/London,"Ann, ""the"" first\r\nof her name"\r\n'  # 2-3: quoted
        "b,,,Bob\r\n"  # 4: no email
        "c,c@example.org,Mars/Olympus_Mons,Cy\r\n"  # 5: no such zone
        "a,other@example.org,,Again\r\n"  # 6: the id of line 2 again
        "d,A@Example.org,,Dee\r\n"  # 7: the address of line 2
    ).encode()
    + b"e,e@example.org,,\xff\xfeBad\r\n"
    + b"f,f@example.org,,Fay\r\n"
)  # 8: not UTF-8


async def test_a_csv_with_every_kind_of_bad_row_gives_the_exact_summary(api: Api) -> None:
    message = await api.create()
    import_id = uuid.uuid4()

    answer = await api.upload(message, BAD_FILE, import_id, file_name="bad.csv")

    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["state"] == "done" and summary["rows_read"] == 7
    counts = {k: v for k, v in summary["counts"].items() if v}
    assert counts == {"added": 2, "duplicate_address": 1, "invalid": 4}
    problems = await api.client.get(f"/v1/imports/{import_id}/problems.csv")
    assert problems.text.splitlines() == [
        "line,kind,contact_id,reason",
        "4,invalid,b,email: missing",
        "5,invalid,c,time_zone: unknown IANA time zone 'Mars/Olympus_Mons'",
        "6,invalid,a,duplicate contact id: an earlier row has it",
        "7,duplicate_address,d,duplicate address",
        "8,invalid,e,the row is not valid UTF-8 text",
    ]
    await api.settled(message, 3)
    preview = await api.client.get(f"/v1/messages/{message}/preview", params={"contact_id": "a"})
    [mail] = preview.json()["previews"]
    assert mail["body"] == 'Hello Ann, "the" first\nof her name'
    assert mail["fields"] == [
        {
            "name": "first_name",
            "value": 'Ann, "the" first\nof her name',
            "fallback": "friend",
            "missing": False,
        }
    ]


async def test_the_preview_answers_the_subject_and_both_bodies_merged(api: Api) -> None:
    message = await api.create(
        body="Text for {{first_name|friend}} in {{city|somewhere}}",
        subject="Hi {{first_name}}",
        html_body="<p>HTML for {{first_name}} at {{email}}</p>",
    )
    csv = b"contact_id,email,first_name\nq,q@example.org,Q<&>\n"
    answer = await api.upload(message, csv, uuid.uuid4())
    assert answer.status_code == 200, answer.text
    await api.settled(message, 1)
    preview = await api.client.get(f"/v1/messages/{message}/preview", params={"contact_id": "q"})
    [mail] = preview.json()["previews"]
    assert mail["subject"] == "Hi Q<&>"
    assert mail["text_body"] == "Text for Q<&> in somewhere"
    assert mail["html_body"] == "<p>HTML for Q&lt;&amp;&gt; at q@example.org</p>"
    assert (mail["body"], mail["html"]) == ("Text for Q<&> in somewhere", False)
    # Subject, then text body, then HTML body; one entry per (field, fallback).
    assert [(f["name"], f["fallback"], f["missing"]) for f in mail["fields"]] == [
        ("first_name", None, False),
        ("first_name", "friend", False),
        ("city", "somewhere", True),
        ("email", None, False),
    ]


def rows(n: int, start: int = 0) -> bytes:
    lines = ["contact_id,email,first_name"]
    lines += [f"r{i},r{i}@example.org,P{i}" for i in range(start, start + n)]
    return ("\n".join(lines) + "\n").encode()


async def test_an_interrupted_import_is_partial_and_resumed_without_duplicates(api: Api) -> None:
    message = await api.create()
    import_id = uuid.uuid4()
    data = rows(25_000)

    class Gone(Exception):
        pass

    async def then_break() -> AsyncIterator[bytes]:
        # 12,000 rows (one chunk applied), then the client goes away mid-file.
        cut = data.index(b"\nr12000,") + 1
        for i in range(0, cut, 65536):
            yield data[i : min(i + 65536, cut)]
        await until("the first chunk applied", lambda: chunks_done(api, import_id, 1), 60)
        raise Gone

    with pytest.raises((Gone, httpx.HTTPError)):
        await api.upload(message, then_break(), import_id)

    async def partial() -> dict[str, Any] | None:
        found = (await api.client.get(f"/v1/imports/{import_id}")).json()
        return found if found["state"] == "partial" else None

    await until("the import reported partial", partial, 60)

    resumed = await api.upload(message, data, import_id)

    summary = resumed.json()
    assert summary["state"] == "done", summary
    assert summary["counts"]["added"] == 25_000
    assert summary["counts"]["already_present"] == 0
    view = await api.settled(message, 25_000)
    history = await api.client.get(f"/v1/messages/{message}/history", params={"limit": 100})
    types = [e["type"] for e in history.json()["items"]]
    assert types.count("RecipientsAdded") == 3  # one per chunk: the resumed chunk 0 not again
    assert view["audience"] == 25_000


async def chunks_done(api: Api, import_id: uuid.UUID, n: int) -> bool:
    found = await api.client.get(f"/v1/imports/{import_id}")
    return found.status_code == 200 and found.json()["chunks_done"] >= n


async def test_a_test_send_reaches_the_sink_and_leaves_the_real_send_untouched(
    api: Api, ui: UiStack
) -> None:
    message = await api.create(subject="Quarterly {{first_name|news}}")
    await api.upload(message, rows(3, start=900), uuid.uuid4())
    before = await api.settled(message, 3)
    tester = f"tester-{uuid.uuid4().hex[:6]}@example.org"

    refused = await api.client.post(
        f"/v1/messages/{message}/test-sends", json={"addresses": [tester]}
    )
    assert refused.status_code == 403 and "allowed test addresses" in refused.text

    added = await api.client.post("/v1/test-addresses", json={"address": tester})
    assert added.status_code == 201
    answer = await api.client.post(
        f"/v1/messages/{message}/test-sends",
        json={"addresses": [tester], "contact_id": "r900"},
        headers={"X-Actor-User": "ada"},
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["test_sends"] == [{"address": tester, "sent": True, "reason": None}]
    await until("the test at the sink", lambda: _received(ui, tester))
    after = await api.view(message, min_sequence=int(answer.json()["sequence"]))
    for field in ("audience", "delivered", "failed", "remaining", "status"):
        assert after.get(field) == before.get(field), field
    history = (await api.client.get(f"/v1/messages/{message}/history")).json()["items"]
    [test] = [e for e in history if e["type"] == "TestSendRequested"]
    assert test["actor"]["user_id"] == "ada" and test["detail"]["addresses_count"] == 1


async def _received(ui: UiStack, address: str) -> bool:
    return any(rcpt == address for _, rcpt in await ui.stack.sink())


async def test_the_not_delivered_export_of_a_canceled_message_mails_exactly_the_rest(
    api: Api, ui: UiStack
) -> None:
    # One release a second: the cancel comes while most contacts are still pending.
    original = await api.create(plan={"release_rate": 1})
    everyone = [f"x{i}" for i in range(40)]
    await api.upload(
        original,
        rows(0).replace(b"\n", b"\n", 1)
        + b"".join(f"{c},{c}@example.org,X\n".encode() for c in everyone),
        uuid.uuid4(),
    )
    await api.settled(original, 40)
    await api.client.put(f"/v1/messages/{original}/schedule", json={"send_now": True})

    async def some_delivered() -> bool:
        return int((await api.view(original)).get("delivered") or 0) >= 5

    await until("a few delivered", some_delivered)
    cancel = await api.client.post(f"/v1/messages/{original}/cancel", json={})
    assert cancel.status_code == 200, cancel.text

    async def outcomes_in() -> dict[str, Any] | None:
        view = await api.view(original, min_sequence=int(cancel.json()["sequence"]))
        return view if int(view.get("released") or 0) == 0 else None

    await until("no send in flight", outcomes_in)
    exported = await api.client.get(
        f"/v1/messages/{original}/recipients.csv",
        params=[("state", s) for s in ("pending", "failed", "skipped")],
    )
    assert exported.status_code == 200
    left = [line.split(",")[0] for line in exported.text.splitlines()[1:]]
    assert 0 < len(left) < 40

    copy = await api.create()
    summary = (await api.upload(copy, exported.content, uuid.uuid4())).json()
    assert summary["counts"]["added"] == len(left)
    await api.settled(copy, len(left))
    await api.client.put(f"/v1/messages/{copy}/schedule", json={"send_now": True})

    async def copy_done() -> bool:
        return (await api.view(copy)).get("status") == "sent"

    await until("the copy sent", copy_done, 180)
    mails = await ui.stack.sink()
    # A mail's Message-ID is <send id@domain>, the send id derived from message and contact.
    by_copy = {str(send_id(uuid.UUID(copy), c)) for c in everyone}
    by_original = {str(send_id(uuid.UUID(original), c)) for c in everyone}
    sent = [(mid.strip().strip("<>").split("@")[0], r) for mid, r in mails if mid]
    copy_rcpts = [r for sid, r in sent if sid in by_copy]
    original_rcpts = [r for sid, r in sent if sid in by_original]
    assert sorted(copy_rcpts) == sorted(f"{c}@example.org" for c in left)
    assert not set(copy_rcpts) & set(original_rcpts)
    assert Counter(copy_rcpts + original_rcpts) == Counter(f"{c}@example.org" for c in everyone)


async def test_a_100000_row_import_in_the_browser_with_progress_preview_and_test(
    ui: UiStack, api: Api, tmp_path: Path
) -> None:
    message = await api.create(
        body="<p>Hi {{first_name|there}}, {{city|somewhere}}</p>"
        "<script>document.body.setAttribute('data-ran', 'yes')</script>",
        subject="Big {{first_name}}",
    )
    csv_file = tmp_path / "crm-export.csv"
    with csv_file.open("wb") as out:
        out.write(b"Customer,E-Mail Address,first_name\r\n")
        for i in range(100_000):
            out.write(f"u{i:06d},u{i}@example.org,Name{i}\r\n".encode())
    context, page = await ui.signed_in(ui.ada)
    try:
        await page.goto(f"{ui.base_url}/ui/messages/{message}/audience")
        await page.locator("#import-file").set_input_files(str(csv_file))
        await page.locator("summary", has_text="Column mapping").click()
        await page.get_by_label("Column of the contact id").fill("Customer")
        await page.get_by_label("Column of the email address").fill("E-Mail Address")
        await page.get_by_role("button", name="Upload").click()

        seen: list[float] = []

        async def progressed() -> bool:
            value = float(await page.locator("#import-progress").get_attribute("value") or 0)
            seen.append(value)
            return 0 < value < 1 or await page.locator(".count-added").count() > 0

        await until("the progress bar moving", progressed, 120)
        await expect(page.locator(".count-added")).to_have_text("100000", timeout=240_000)
        assert any(0 < v < 1 for v in seen) or seen  # the bar was polled while uploading
        await api.settled(message, 100_000)

        await page.goto(f"{ui.base_url}/ui/messages/{message}/audience?contact_id=u000007")
        preview = page.locator("article.mail-preview")
        await expect(preview.locator(".preview-subject")).to_have_text("Big Name7")
        await expect(preview.locator("tr.missing")).to_contain_text("fallback “somewhere”")
        frame = page.frame_locator("iframe.html-preview")
        await expect(frame.locator("p")).to_have_text("Hi Name7, somewhere")
        assert await frame.locator("body").get_attribute("data-ran") is None
        assert await page.locator("iframe.html-preview").get_attribute("sandbox") == ""

        tester = f"ui-tester-{uuid.uuid4().hex[:6]}@example.org"
        await page.get_by_label("Allow a test address").fill(tester)
        await page.get_by_role("button", name="Add", exact=True).click()
        await page.get_by_role("checkbox", name=tester).check()
        await page.get_by_role("button", name="Send test").click()
        await expect(page.locator(".test-results")).to_contain_text(f"{tester}: sent")
        await until("the UI's test at the sink", lambda: _received(ui, tester))
        view = await api.view(message)
        assert view["audience"] == 100_000 and int(view.get("delivered") or 0) == 0
    finally:
        await context.close()
