"""A server failing under a running delivery worker does not end it (issue 10: "no single record
may stop a worker; a worker that cannot make progress says so on /health").

Postgres: the worker reaches it through a proxy of the test's own (bench/harness/proxy.py):
cutting it is, for this worker alone, Postgres stopped (open connections reset, new ones
refused), while the test itself, the dispatcher and every other test keep the real server.

Kafka (issue 18): the broker the project's scripts run for this worktree is stopped with SIGSTOP
for about ten seconds (its pid from scripts/kafka.sh's pidfile) and continued with SIGCONT: for
every client it is a broker that answers nothing, connections open, the way a network partition
or a long GC pause looks. A proxy cannot do this for Kafka alone (the clients connect to the
broker's advertised listener). Every process of the worktree's stack sees it, the test's own
clients too; the test makes no Kafka request meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

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
#: How long the broker stays stopped (beyond the session timeout of the worker's group, 10 s).
BROKER_STOPPED_S = 12.0
REPO_ROOT = Path(__file__).resolve().parents[2]


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


async def _sending(
    stack: DeliveryStack, port: int, prefix: str, **worker_options: Any
) -> tuple[subprocess.Popen[bytes], UUID, tuple[Contact, ...], Callable[[], Awaitable[Any]]]:
    """The dispatcher and a delivery worker (its /health on ``port``) started and green, then a
    RECIPIENTS send under way until RATE are delivered: the worker, the message, its audience
    and the /health-green probe the test waits for again at the end."""
    stack.spawn_dispatcher()
    worker = stack.spawn_delivery(
        **worker_options, DELIVERY_HEALTH_PORT=str(port), DELIVERY_RATE=str(RATE)
    )

    async def green() -> dict[str, Any] | None:
        found = await health(port)
        return found[1] if found is not None and found[0] == 200 else None

    await stack.wait_for("the worker's /health green", green, within=90)
    message = ids()
    audience = tuple(
        Contact(contact_id=f"{prefix}{i}", email=f"{prefix}{i}@example.org")
        for i in range(RECIPIENTS)
    )
    await stack.send_now(message, audience, DeliveryPlan(max_in_flight=None))
    await stack.wait_delivered(message, RATE)
    return worker, message, audience, green


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
        worker, message, audience, green = await _sending(
            stack, port, "o", database_url=through(stack.database_url, proxy)
        )

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


def broker_pid() -> int:
    """The pid of the broker scripts/kafka.sh runs for this worktree (its pidfile)."""
    assert os.environ.get("MAILCTL_LOCAL_KAFKA") == "1", (
        "this test stops the broker of the project's scripts: run it with scripts/with_env.sh"
    )
    state = Path(os.environ.get("STATE_DIR", REPO_ROOT / ".state"))
    return int((state / "run" / "kafka.pid").read_text().strip())


def assert_every_contact_once(mails: list[tuple[str | None, str]], contacts: set[str]) -> None:
    assert max(Counter(mid for mid, _ in mails).values()) == 1, "a Message-ID arrived twice"
    per_contact = Counter(rcpt.split("@")[0] for _, rcpt in mails)
    assert set(per_contact) == contacts
    assert max(per_contact.values()) == 1, "a contact got two copies"


async def test_kafka_unreachable_under_a_running_worker_turns_health_red_and_every_send_goes_once(
    stack: DeliveryStack,
) -> None:
    """Given a 400-recipient send at 80 mails/s, when the broker stops answering for about 12 s
    in the middle of it (after 80 delivered), then the worker lives on and its /health answers
    503 with the reason while it cannot make progress; when the broker answers again the worker
    goes on by itself, /health is green again, the message is sent, and every contact has
    exactly one mail at the sink and one delivered ledger row."""
    pid = broker_pid()
    port = free_port()
    worker, message, audience, green = await _sending(stack, port, "k")

    reasons: list[str] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        deadline = stopped_at + 60
        # The broker stays stopped BROKER_STOPPED_S, and at least until /health said red.
        while time.monotonic() < stopped_at + BROKER_STOPPED_S or not reasons:
            assert time.monotonic() < deadline, "/health never turned red with Kafka stopped"
            found = await health(port)
            if found is not None and found[0] == 503:
                failing = {
                    n: c.get("error", "") for n, c in found[1]["checks"].items() if not c["ok"]
                }
                reasons.append(repr(failing))
            assert worker.poll() is None, "the worker ended"
            await asyncio.sleep(0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert any("kafka" in r for r in reasons), reasons

    state = await stack.wait_status(message, MessageStatus.SENT, within=180)
    await stack.wait_for("the worker's /health green again", green, within=90)
    assert worker.poll() is None, "the worker ended"
    assert state.book.counts[RecipientStatus.DELIVERED] == RECIPIENTS
    assert_every_contact_once(await stack.sink(), {c.contact_id for c in audience})
    ledger = await stack.ledger(message)
    assert Counter(row["state"] for row in ledger.values()) == {"delivered": RECIPIENTS}
