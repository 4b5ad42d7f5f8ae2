"""The SMTP sink, over real SMTP (aiosmtplib) and its HTTP API (httpx).

The sink commits a mail before it answers 250, so a mail is queryable as soon as the send
returns: the tests read it back at once, and that is part of what they check. Addresses and
Message-IDs are unique per test, so the tests need no clean store and run against a shared sink.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest

from bench.harness.spawn import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def mail(rcpt: str, *, message_id: str | None = None, subject: str = "hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@mailctl.test"
    message["To"] = rcpt
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4()}@mailctl.test>"
    message["X-Mailctl-Send-Id"] = "message-1:contact-1"
    message.set_content("Hi there,\nthis is the body.\n")
    return message


def unique_address(domain: str = "sink.test") -> str:
    return f"rcpt-{uuid.uuid4().hex[:12]}@{domain}"


@pytest.fixture
async def sink(smtp_sink_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=smtp_sink_url, timeout=10) as client:
        yield client


async def send(smtp_address: tuple[str, int], message: EmailMessage) -> None:
    host, port = smtp_address
    await aiosmtplib.send(message, hostname=host, port=port, start_tls=False, timeout=10)


async def stats(sink: httpx.AsyncClient) -> dict[str, Any]:
    response = await sink.get("/stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def test_a_sent_mail_arrives_with_its_headers_and_body(
    smtp_address: tuple[str, int], sink: httpx.AsyncClient
) -> None:
    rcpt = unique_address()
    message_id = f"<{uuid.uuid4()}@mailctl.test>"
    await send(smtp_address, mail(rcpt, message_id=message_id, subject="Spring sale"))

    page = (await sink.get("/messages", params={"message_id": message_id})).json()

    assert page["total"] == 1
    [received] = page["items"]
    assert received["rcpts"] == [rcpt]
    assert received["mail_from"] == "sender@mailctl.test"
    assert received["message_id"] == message_id
    assert received["subject"] == "Spring sale"
    headers = dict(received["headers"])
    assert headers["X-Mailctl-Send-Id"] == "message-1:contact-1"
    assert headers["To"] == rcpt
    assert received["body"] == "Hi there,\nthis is the body.\n"
    # The same mail found by recipient, and by its id without angle brackets.
    by_rcpt = (await sink.get("/messages", params={"rcpt": rcpt.upper()})).json()
    assert [m["id"] for m in by_rcpt["items"]] == [received["id"]]
    bare = (await sink.get("/messages", params={"message_id": message_id.strip("<>")})).json()
    assert [m["id"] for m in bare["items"]] == [received["id"]]


async def test_messages_are_paged_in_arrival_order(
    smtp_address: tuple[str, int], sink: httpx.AsyncClient
) -> None:
    rcpt = unique_address()
    for n in range(5):
        await send(smtp_address, mail(rcpt, subject=f"mail {n}"))

    subjects: list[str] = []
    after = 0
    pages = 0
    while True:
        params: dict[str, Any] = {"rcpt": rcpt, "limit": 2, "after": after}
        page = (await sink.get("/messages", params=params)).json()
        assert page["total"] == 5
        subjects += [m["subject"] for m in page["items"]]
        pages += 1
        if page["next_after"] is None:
            break
        after = page["next_after"]

    assert subjects == [f"mail {n}" for n in range(5)]
    assert pages == 3


async def test_failure_addresses_are_refused_with_permanent_and_transient_codes(
    smtp_address: tuple[str, int], sink: httpx.AsyncClient
) -> None:
    permanent = unique_address("fail-permanent.test")
    transient = unique_address("fail-transient.test")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused_permanent:
        await send(smtp_address, mail(permanent))
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused_transient:
        await send(smtp_address, mail(transient))

    assert [r.code for r in refused_permanent.value.recipients] == [550]
    assert [r.code for r in refused_transient.value.recipients] == [451]
    for rcpt, code in ((permanent, 550), (transient, 451)):
        assert (await sink.get("/messages", params={"rcpt": rcpt})).json()["total"] == 0
        refusals = (await sink.get("/refusals", params={"rcpt": rcpt})).json()
        assert [r["code"] for r in refusals] == [code]


async def test_a_mail_to_a_good_and_a_refused_recipient_reaches_only_the_good_one(
    smtp_address: tuple[str, int], sink: httpx.AsyncClient
) -> None:
    good, bad = unique_address(), unique_address("fail-permanent.test")
    message = mail(good)
    del message["To"]
    message["To"] = f"{good}, {bad}"
    host, port = smtp_address

    errors, _ = await aiosmtplib.send(message, hostname=host, port=port, start_tls=False)

    assert errors[bad].code == 550
    page = (await sink.get("/messages", params={"message_id": message["Message-ID"]})).json()
    assert [m["rcpts"] for m in page["items"]] == [[good]]


async def test_duplicate_statistics_count_a_repeated_message_id(
    smtp_address: tuple[str, int], sink: httpx.AsyncClient
) -> None:
    rcpt, other = unique_address(), unique_address()
    message_id = f"<{uuid.uuid4()}@mailctl.test>"
    before = await stats(sink)

    await send(smtp_address, mail(rcpt, message_id=message_id))
    await send(smtp_address, mail(rcpt, message_id=message_id))  # the same mail, again
    await send(smtp_address, mail(other, message_id=message_id))  # same id, other recipient

    after = await stats(sink)
    assert after["messages"] == before["messages"] + 3
    ids, pairs = after["duplicate_message_ids"], after["duplicate_deliveries"]
    # One Message-ID received three times: two extra copies.
    assert ids["count"] == before["duplicate_message_ids"]["count"] + 1
    assert ids["extra_copies"] == before["duplicate_message_ids"]["extra_copies"] + 2
    # One (Message-ID, recipient) pair received twice: one extra copy to that recipient.
    assert pairs["count"] == before["duplicate_deliveries"]["count"] + 1
    assert pairs["extra_copies"] == before["duplicate_deliveries"]["extra_copies"] + 1


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the sink exited:\n{log.read_text()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"no healthy sink at {url} within 30 s:\n{log.read_text()}")


def start_private_sink(tmp_path: Path, smtp_port: int, http_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SMTP_PORT": str(smtp_port),
        "SMTP_SINK_HTTP_PORT": str(http_port),
        "SMTP_SINK_DB": str(tmp_path / "sink.sqlite3"),
    }
    log = tmp_path / "sink.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.smtp_sink"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_healthy(process, f"http://127.0.0.1:{http_port}/health", log)
    return process


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


async def test_received_mail_survives_a_restart_of_the_sink_until_cleared(
    tmp_path: Path,
) -> None:
    smtp_port, http_port = free_port(), free_port()
    api = f"http://127.0.0.1:{http_port}"
    rcpt = unique_address()
    process = start_private_sink(tmp_path, smtp_port, http_port)
    try:
        await send(("127.0.0.1", smtp_port), mail(rcpt, subject="before restart"))
        assert stop(process) == 0

        process = start_private_sink(tmp_path, smtp_port, http_port)
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            page = (await client.get("/messages", params={"rcpt": rcpt})).json()
            assert [m["subject"] for m in page["items"]] == ["before restart"]

            assert (await client.delete("/messages")).json() == {"deleted": 1}
            assert (await client.get("/messages")).json()["total"] == 0
            assert (await stats(client))["messages"] == 0
    finally:
        if process.poll() is None:
            stop(process)


async def test_a_slow_sender_s_mail_is_recorded_before_its_late_reply(
    sink: httpx.AsyncClient, smtp_address: tuple[str, int]
) -> None:
    """Given the sink slowed for one sender, a mail from it is recorded (queryable) while the
    client still waits for the 250; other senders are not slowed; 0 ends the slow mode."""
    sender = f"slow-{uuid.uuid4().hex[:8]}@mailctl.test"
    response = await sink.put("/slow", params={"mail_from": sender, "delay_s": 30})
    assert response.json() == {sender: 30.0}
    rcpt = unique_address()
    message = mail(rcpt)
    message.replace_header("From", sender)
    host, port = smtp_address
    sending = asyncio.create_task(
        aiosmtplib.send(message, hostname=host, port=port, start_tls=False, timeout=60)
    )
    try:
        for _ in range(100):
            found = (await sink.get("/messages", params={"rcpt": rcpt})).json()["items"]
            if found:
                break
            await asyncio.sleep(0.1)
        assert found and found[0]["mail_from"] == sender
        assert not sending.done()  # recorded; the reply is held back
        # Another sender is answered at once, meanwhile.
        await send(smtp_address, mail(unique_address()))
        assert not sending.done()
    finally:
        await sink.put("/slow", params={"mail_from": sender, "delay_s": 0})
        sending.cancel()
    assert (await sink.put("/slow", params={"mail_from": "x", "delay_s": 0})).json() == {}
