"""The delivery ledger on the real Postgres: the unique claim, and the owner epoch that fences a
worker which lost its partition (a zombie) before it can claim a send or write an outcome."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.delivery.ledger import (
    IDLE_IN_TRANSACTION_S,
    Claim,
    FencedError,
    Ledger,
    Outcome,
)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
    finally:
        await conn.close()
    ledger = await Ledger.connect(database_url)
    try:
        yield ledger
    finally:
        await ledger.close()


def claims(n: int) -> list[Claim]:
    message = str(uuid.uuid4())
    return [Claim(str(uuid.uuid4()), message, f"c{i}", "acct") for i in range(n)]


async def test_a_send_is_claimed_once_whoever_asks_again(ledger: Ledger) -> None:
    topic = f"t{uuid.uuid4().hex}.sends"
    epoch, _ = await ledger.take(topic, 0, "a")
    batch = claims(5)
    assert await ledger.claim(topic, 0, epoch, batch) == {c.send_id for c in batch}
    assert await ledger.claim(topic, 0, epoch, batch) == set()
    more = claims(2)
    assert await ledger.claim(topic, 0, epoch, [*batch, *more]) == {c.send_id for c in more}


async def test_a_new_owner_fences_the_old_one_and_marks_its_open_claims_unknown(
    ledger: Ledger,
) -> None:
    topic = f"t{uuid.uuid4().hex}.sends"
    old, _ = await ledger.take(topic, 1, "old")
    batch = claims(3)
    await ledger.claim(topic, 1, old, batch)
    await ledger.record(topic, 1, old, [Outcome(batch[0].send_id, "delivered", "250 ok")])

    new, marked = await ledger.take(topic, 1, "new")

    assert new == old + 1
    assert marked == 2  # the two claims without an outcome
    with pytest.raises(FencedError):
        await ledger.claim(topic, 1, old, claims(1))
    with pytest.raises(FencedError):
        await ledger.record(topic, 1, old, [Outcome(batch[1].send_id, "delivered", "250 ok")])
    rows = await ledger.pool.fetch(
        "SELECT send_id, state FROM delivery_ledger WHERE topic = $1", topic
    )
    states = {row["send_id"]: row["state"] for row in rows}
    assert states == {
        batch[0].send_id: "delivered",
        batch[1].send_id: "unknown",
        batch[2].send_id: "unknown",
    }
    reportable = await ledger.unreported(topic, [1], 100)
    assert {r.send_id for r in reportable} == set(states)


async def test_a_deferred_send_is_claimed_again_only_when_due(ledger: Ledger) -> None:
    topic = f"t{uuid.uuid4().hex}.sends"
    epoch, _ = await ledger.take(topic, 2, "a")
    later, now = claims(1)[0], claims(1)[0]
    await ledger.claim(topic, 2, epoch, [later, now])
    await ledger.record(
        topic,
        2,
        epoch,
        [
            Outcome(later.send_id, "deferred", "451", datetime.now(UTC) + timedelta(hours=1), "{}"),
            Outcome(now.send_id, "deferred", "451", datetime.now(UTC) - timedelta(seconds=1), "{}"),
        ],
    )
    due = await ledger.reclaim_due(topic, 2, epoch, 10)
    assert [(send_id, attempts) for send_id, _, attempts in due] == [(now.send_id, 1)]
    assert await ledger.reclaim_due(topic, 2, epoch, 10) == []


async def test_a_worker_frozen_inside_a_transaction_does_not_block_the_takeover(
    database_url: str,
) -> None:
    """Given the old owner stopped in the middle of a ledger transaction (holding its FOR SHARE
    lock on the owner row), when a new worker takes the partition, then the server ends the
    stalled transaction after IDLE_IN_TRANSACTION_S and the takeover completes; the old owner's
    next write is refused as fenced."""
    topic = f"t{uuid.uuid4().hex}.sends"
    old_ledger = await Ledger.connect(database_url)
    new_ledger = await Ledger.connect(database_url)
    try:
        old, _ = await old_ledger.take(topic, 0, "old")
        conn = await old_ledger.pool.acquire()
        stalled = conn.transaction()
        await stalled.start()
        await conn.fetchval(
            "SELECT epoch FROM delivery_owners WHERE topic = $1 AND partition = 0 FOR SHARE", topic
        )
        new, _ = await asyncio.wait_for(
            new_ledger.take(topic, 0, "new"), IDLE_IN_TRANSACTION_S + 20
        )
        assert new == old + 1
        with pytest.raises(FencedError):
            await old_ledger.claim(topic, 0, old, claims(1))
        with contextlib.suppress(Exception):
            await old_ledger.pool.release(conn)
    finally:
        await old_ledger.close()
        await new_ledger.close()


def released(batch: list[Claim], release: int) -> list[Claim]:
    """The same sends as of another release of their contacts (after a resume)."""
    return [dataclasses.replace(c, release=release) for c in batch]


async def test_a_returned_send_is_claimed_again_only_by_a_newer_release_and_only_once(
    ledger: Ledger,
) -> None:
    topic = f"t{uuid.uuid4().hex}.sends"
    epoch, _ = await ledger.take(topic, 0, "a")
    batch = released(claims(4), 10)
    # The fence stopped two before their claim, one after it; one was delivered.
    assert await ledger.claim(topic, 0, epoch, batch[:2], state="returned") == {
        c.send_id for c in batch[:2]
    }
    await ledger.claim(topic, 0, epoch, batch[2:])
    await ledger.record(
        topic,
        0,
        epoch,
        [
            Outcome(batch[2].send_id, "returned", "paused"),
            Outcome(batch[3].send_id, "delivered", "250 ok"),
        ],
    )
    # The same release again (Kafka redelivers, a restart re-reads): nothing is claimed.
    assert await ledger.claim(topic, 0, epoch, batch) == set()
    # A send the fence stops that was handed off before stays as it was.
    assert await ledger.claim(topic, 0, epoch, batch[3:], state="returned") == set()
    rows = await ledger.unreported(topic, [0], 100)
    assert {(r.contact_id, r.state, r.release) for r in rows} == {
        ("c0", "returned", 10),
        ("c1", "returned", 10),
        ("c2", "returned", 10),
        ("c3", "delivered", 10),
    }
    await ledger.mark_reported(rows)
    # The newer release: two workers racing (two epochs cannot, one worker twice can): once.
    again = released(batch, 25)
    first, second = await asyncio.gather(
        ledger.claim(topic, 0, epoch, again), ledger.claim(topic, 0, epoch, again)
    )
    assert first | second == {c.send_id for c in batch[:3]}
    assert not first & second
    # An older release arriving late claims nothing either.
    assert await ledger.claim(topic, 0, epoch, released(batch, 20)) == set()
    state = await ledger.pool.fetch(
        "SELECT contact_id, state, release, reported FROM delivery_ledger WHERE topic = $1", topic
    )
    assert {(r["contact_id"], r["state"], r["release"], r["reported"]) for r in state} == {
        ("c0", "claimed", 25, False),
        ("c1", "claimed", 25, False),
        ("c2", "claimed", 25, False),
        ("c3", "delivered", 10, True),
    }


async def test_a_returned_report_does_not_mark_the_claim_of_a_newer_release_reported(
    ledger: Ledger,
) -> None:
    topic = f"t{uuid.uuid4().hex}.sends"
    epoch, _ = await ledger.take(topic, 0, "a")
    batch = released(claims(1), 3)
    await ledger.claim(topic, 0, epoch, batch, state="returned")
    rows = await ledger.unreported(topic, [0], 100)
    # Published; before it is marked, the message resumed and released the contact again.
    await ledger.claim(topic, 0, epoch, released(batch, 9))
    await ledger.record(topic, 0, epoch, [Outcome(batch[0].send_id, "delivered", "250 ok")])
    await ledger.mark_reported(rows)
    (left,) = await ledger.unreported(topic, [0], 100)
    assert (left.state, left.release) == ("delivered", 9)


async def test_a_zombie_cannot_return_or_claim_again_after_a_takeover(ledger: Ledger) -> None:
    topic = f"t{uuid.uuid4().hex}.sends"
    old, _ = await ledger.take(topic, 2, "old")
    batch = released(claims(2), 4)
    await ledger.claim(topic, 2, old, batch)
    new, marked = await ledger.take(topic, 2, "new")
    assert marked == 2  # claimed, crashed between the fence and the hand-off: unknown
    with pytest.raises(FencedError):
        await ledger.record(topic, 2, old, [Outcome(batch[0].send_id, "returned", "paused")])
    # Unknown is final: no release claims it again.
    assert await ledger.claim(topic, 2, new, released(batch, 8)) == set()
