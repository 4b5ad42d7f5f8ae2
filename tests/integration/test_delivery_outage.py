"""A server failing under a running delivery worker does not end it (issue 10: "no single record
may stop a worker; a worker that cannot make progress says so on /health").

The worker reaches Postgres through a proxy of the test's own (bench/harness/proxy.py): cutting
it is, for this worker alone, Postgres stopped (open connections reset, new ones refused), while
the test itself, the dispatcher and every other test keep the real server. The SMTP sink, Kafka
and Postgres of the worktree are never stopped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import free_port, ids
from bench.harness.proxy import CuttableProxy
from core import MessageStatus, RecipientStatus
from schemas import Contact, DeliveryPlan
from services.delivery.worker import CLAIM_CHUNK

RECIPIENTS = 400
#: Mails a second: the send lasts a few seconds, so the cut falls in the middle of it.
RATE = 80


@pytest.fixture
def stack(delivery_stack: DeliveryStack) -> DeliveryStack:
    return delivery_stack


async def health(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            answer = await client.get("/health")
    except httpx.HTTPError:
        return None
    return answer.status_code, answer.json()


def through(database_url: str, proxy: CuttableProxy) -> str:
    parts = urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    address = f"{proxy.host}:{proxy.port}"
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit(parts._replace(netloc=netloc))


async def test_postgres_failing_under_a_running_worker_turns_health_red_and_every_send_goes_once(
    stack: DeliveryStack,
) -> None:
    """Given a 400-recipient send at 80 mails/s, when Postgres becomes unreachable for the
    worker in the middle of it (after 80 delivered), then the worker lives on and its /health
    answers 503 with the reason (the worker check: stalled, retrying, the error); no mail is
    sent meanwhile beyond what was in flight; when Postgres is back the worker goes on by
    itself, /health is green again, the message is sent, every contact has exactly one mail at
    the sink and every ledger row is delivered."""
    parts = urlsplit(stack.database_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = CuttableProxy(parts.hostname, parts.port)
    await proxy.start()
    try:
        port = free_port()
        stack.spawn_dispatcher()
        worker = stack.spawn_delivery(
            database_url=through(stack.database_url, proxy),
            DELIVERY_HEALTH_PORT=str(port),
            DELIVERY_RATE=str(RATE),
        )

        async def green() -> dict[str, Any] | None:
            found = await health(port)
            return found[1] if found is not None and found[0] == 200 else None

        await stack.wait_for("the worker's /health green", green, within=90)
        message = ids()
        audience = tuple(
            Contact(contact_id=f"o{i}", email=f"o{i}@example.org") for i in range(RECIPIENTS)
        )
        await stack.send_now(message, audience, DeliveryPlan(max_in_flight=None))
        await stack.wait_delivered(message, RATE)

        await proxy.cut()

        async def red() -> dict[str, Any] | None:
            found = await health(port)
            if found is None or found[0] != 503:
                return None
            worker_check = found[1]["checks"]["worker"]
            return found[1] if not worker_check["ok"] else None

        report = await stack.wait_for("/health red while Postgres is unreachable", red)
        error = report["checks"]["worker"]["error"]
        assert "stalled" in error and "retrying" in error, error
        assert not report["checks"]["postgres"]["ok"]
        assert worker.poll() is None, "the worker ended"
        # While it cannot record, nothing more is handed over than the chunks in flight.
        at_cut = len(await stack.sink())

        async def stalled_a_while() -> bool:
            found = await health(port)
            if found is None or found[0] != 503:
                return False
            tries: int = found[1]["delivery"]["stall_tries"]
            return tries >= 3

        await stack.wait_for("the worker to retry a few times", stalled_a_while)
        assert worker.poll() is None, "the worker ended"
        # At most a chunk per partition was in hand when the cut came (claimed before it).
        assert len(await stack.sink()) <= at_cut + CLAIM_CHUNK * stack.settings.kafka_partitions

        await proxy.start()
        state = await stack.wait_status(message, MessageStatus.SENT, within=180)
        await stack.wait_for("the worker's /health green again", green, within=60)
        assert worker.poll() is None
    finally:
        await proxy.close()

    assert state.book.counts[RecipientStatus.DELIVERED] == RECIPIENTS
    mails = await stack.sink()
    assert max(Counter(mid for mid, _ in mails).values()) == 1, "a Message-ID arrived twice"
    per_contact = Counter(rcpt.split("@")[0] for _, rcpt in mails)
    assert set(per_contact) == {c.contact_id for c in audience}
    assert max(per_contact.values()) == 1, "a contact got two copies"
    ledger = await stack.ledger(message)
    assert Counter(row["state"] for row in ledger.values()) == {"delivered": RECIPIENTS}
    status = await health(port)
    assert status is not None and status[1]["delivery"]["stalls"] >= 1
