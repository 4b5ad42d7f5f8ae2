"""The projection worker against the real Kafka and Postgres: the real processor decides commands
into events, `python -m services.projections` builds the views, and a rebuild from the log equals
them; the worker SIGKILLed mid-stream and restarted (as two instances) leaves views equal to a
rebuild, with nothing counted twice; the read API over the real views keeps accounts apart.

Each test has topics (TOPIC_PREFIX) and a Postgres schema of its own."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx

from bench.harness.histories import sends_history
from bench.harness.processor import (
    CONTENT,
    STRANGER,
    Stack,
    contacts,
    free_port,
    ids,
    record,
)
from bench.harness.projections import (
    compare_with_rebuild,
    produce,
    projections_cli,
    spawn_projections,
    stored_offsets,
    wait_caught_up,
    with_schema,
)
from core import RecipientStatus, fold
from schemas import (
    Actor,
    AddRecipients,
    CancelMessage,
    CopyMessage,
    CreateDraft,
    DeliveryPlan,
    PauseMessage,
    RecipientsReleased,
    RecordDeliveryOutcomes,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
)
from services.commands.app import Adapters, create_app
from services.common.settings import Settings
from services.projections.reader import PostgresViews
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore

DELIVERY = Actor(kind="service", account_id="acct-a", service="delivery")


async def view(dsn: str, message: UUID) -> dict[str, Any] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM view_messages WHERE message_id = $1", message)
        return None if row is None else dict(row)
    finally:
        await conn.close()


async def recipient_states(dsn: str, message: UUID) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT contact_id, state FROM view_recipients WHERE message_id = $1", message
        )
        return {r["contact_id"]: r["state"] for r in rows}
    finally:
        await conn.close()


async def until_view(
    stack: Stack, dsn: str, message: UUID, what: str, **wanted: Any
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        row = await view(dsn, message)
        return row if row is not None and all(row[k] == v for k, v in wanted.items()) else None

    found: dict[str, Any] = await stack.wait_for(what, check)
    return found


async def test_views_follow_the_processor_through_every_command_and_equal_a_rebuild(
    stack: Stack, schema: str, database_url: str
) -> None:
    dsn = with_schema(database_url, schema)
    stack.spawn()
    port = free_port()
    spawn_projections(stack, dsn, port)

    # A message sent to four recipients: delivered, failed, unknown.
    sent = ids()
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=sent, content=CONTENT)),
        record(AddRecipients(command_id=ids(), message_id=sent, contacts=contacts(4))),
        record(ScheduleMessage(command_id=ids(), message_id=sent, send_now=True)),
    )

    async def all_released() -> bool:
        events = await stack.events_of(sent)
        return sum(len(e.contact_ids) for e in events if isinstance(e, RecipientsReleased)) == 4

    await stack.wait_for("every recipient released", all_released)
    await stack.decide(
        record(
            RecordDeliveryOutcomes.model_validate(
                {
                    "command_id": ids(),
                    "message_id": sent,
                    "delivered": ["c0", "c1"],
                    "failed": [{"contact_id": "c2", "reason": "550 no such user"}],
                    "unknown": ["c3"],
                }
            ),
            actor=DELIVERY,
        )
    )
    row = await until_view(stack, dsn, sent, "the message sent", status="sent")
    assert (row["delivered"], row["failed"], row["unknown"], row["audience"]) == (2, 1, 1, 4)
    assert await recipient_states(dsn, sent) == {
        "c0": "delivered",
        "c1": "delivered",
        "c2": "failed",
        "c3": "unknown",
    }

    # Paused by a user, resumed, then canceled: the hover details follow.
    slow = ids()
    await stack.decide(
        record(
            CreateDraft(
                command_id=ids(),
                message_id=slow,
                content=CONTENT,
                plan=DeliveryPlan(release_rate=1),
            )
        ),
        record(AddRecipients(command_id=ids(), message_id=slow, contacts=contacts(50))),
        record(ScheduleMessage(command_id=ids(), message_id=slow, send_now=True)),
    )
    await until_view(stack, dsn, slow, "sending", status="sending")
    await stack.decide(record(PauseMessage(command_id=ids(), message_id=slow, reason="typo")))
    paused = await until_view(stack, dsn, slow, "paused", status="paused")
    assert paused["pause_reason"] == "typo" and paused["paused_at"] is not None
    assert '"user_id": "ada"' in paused["paused_by"]
    await stack.decide(record(ResumeMessage(command_id=ids(), message_id=slow)))
    await until_view(stack, dsn, slow, "resumed", status="sending", paused_at=None)
    await stack.decide(record(CancelMessage(command_id=ids(), message_id=slow)))
    canceled = await until_view(stack, dsn, slow, "canceled", status="canceled")
    assert canceled["canceled_at"] is not None and canceled["pending"] > 0

    # A draft with a removed contact, a copy excluding who received the first message, and a
    # message scheduled for later.
    draft = ids()
    copy = ids()
    later = ids()
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=draft, content=CONTENT)),
        record(AddRecipients(command_id=ids(), message_id=draft, contacts=contacts(2))),
        record(RemoveRecipients(command_id=ids(), message_id=draft, contact_ids=("c1",))),
        record(
            CopyMessage(
                command_id=ids(), message_id=sent, new_message_id=copy, exclude_delivered=True
            )
        ),
        record(CreateDraft(command_id=ids(), message_id=later, content=CONTENT)),
        record(
            ScheduleMessage(
                command_id=ids(),
                message_id=later,
                send_at=time_in(hours=2),
            )
        ),
        record(CreateDraft(command_id=ids(), message_id=ids(), content=CONTENT), actor=STRANGER),
    )
    await until_view(stack, dsn, later, "scheduled", status="scheduled")
    await until_view(stack, dsn, copy, "the copy", status="draft", copied_from=sent)
    assert await recipient_states(dsn, draft) == {"c0": "pending", "c1": "removed"}
    # Delivered and unknown may have received the first message; the failed one never did.
    assert await recipient_states(dsn, copy) == {
        "c0": "excluded",
        "c1": "excluded",
        "c2": "pending",
        "c3": "excluded",
    }

    # History in order with its actors; each event type appears as decided.
    conn = await asyncpg.connect(dsn)
    try:
        history = await conn.fetch(
            "SELECT sequence, type, actor_kind, actor_user_id, actor_service FROM view_history"
            " WHERE message_id = $1 ORDER BY sequence",
            sent,
        )
    finally:
        await conn.close()
    events = await stack.events_of(sent)
    assert [(h["sequence"], h["type"]) for h in history] == [(e.sequence, e.type) for e in events]
    assert {h["type"]: h["actor_service"] for h in history}["RecipientsDelivered"] == "delivery"

    # Health reports each partition; the lag is a metric.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    assert health["status"] == "ok"
    assert {f"partition-{p}" for p in range(4)} <= set(health["checks"])
    assert 'mailctl_projection_lag_events{partition="0"}' in metrics

    # The audit: a rebuild of the whole history equals the live views.
    await wait_caught_up(stack, dsn)
    result = await compare_with_rebuild(stack.settings, database_url, schema)
    assert result.equal, result.as_json()
    assert result.rows["view_messages"] == 6

    # The same audit and the export, through the command-line tool.
    compared = await projections_cli(stack, database_url, "compare", "--live-schema", schema)
    assert compared.returncode == 0, compared.stderr.decode()[-2000:]
    assert json.loads(compared.stdout)["equal"] is True
    exported = await projections_cli(stack, database_url, "export", str(sent))
    assert exported.returncode == 0, exported.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in exported.stdout.decode().splitlines()]
    assert [(x["sequence"], x["type"]) for x in lines] == [(e.sequence, e.type) for e in events]
    assert lines[0]["actor"]["user_id"] == "ada"

    # The read API over these views: the account's own messages, never another's.
    app = create_app(
        Settings(),
        Adapters(
            bus=FakeBus(),
            store=FakeStore(),
            keys=FakeKeys({"key-a": "acct-a", "key-b": "acct-b"}),
            views=PostgresViews(dsn),
        ),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        details = (await api.get(f"/v1/messages/{sent}", headers=a)).json()
        missed = (
            await api.get(
                f"/v1/messages/{sent}/recipients", params={"not_delivered": True}, headers=a
            )
        ).json()
        canceled_recipients = (
            await api.get(f"/v1/messages/{slow}/recipients", params={"state": "pending"}, headers=a)
        ).json()
        trail = (await api.get(f"/v1/messages/{sent}/history", headers=a)).json()
        sent_list = (await api.get("/v1/views/sent", headers=a)).json()
        drafts_b = (await api.get("/v1/views/drafts", headers=b)).json()
        theirs = await api.get(f"/v1/messages/{sent}", headers=b)
        unknown = await api.get(f"/v1/messages/{uuid4()}", headers=b)
        their_history = await api.get(f"/v1/messages/{sent}/history", headers=b)

    assert (details["delivered"], details["failed"], details["unknown"]) == (2, 1, 1)
    assert {i["contact_id"] for i in missed["items"]} == {"c2", "c3"}
    assert {i["reason"] for i in canceled_recipients["items"]} == {"canceled"}
    assert [i["sequence"] for i in trail["items"]] == list(range(1, details["last_sequence"] + 1))
    assert {i["message_id"] for i in sent_list["items"]} == {str(sent), str(slow)}
    assert len(drafts_b["items"]) == 1 and drafts_b["items"][0]["message_id"] not in {
        str(draft),
        str(copy),
    }
    assert theirs.status_code == unknown.status_code == their_history.status_code == 404
    assert theirs.json() == unknown.json()


def time_in(hours: int) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


async def test_a_worker_killed_mid_stream_and_restarted_twice_over_counts_nothing_twice(
    stack: Stack, schema: str, database_url: str
) -> None:
    dsn = with_schema(database_url, schema)
    events = list(sends_history(8, 5000, rate=1000, fail_every=9))
    await produce(stack.settings, events)
    first = spawn_projections(stack, dsn, PROJECTIONS_MAX_BATCH_ROWS="1000")

    async def some_written() -> bool:
        return sum((await stored_offsets(dsn, stack.settings)).values()) > 0

    await stack.wait_for("a first batch written", some_written)
    stack.kill(first)
    at_kill = await stored_offsets(dsn, stack.settings)
    total = len(events)
    assert sum(at_kill.values()) < total, "the worker finished before it could be killed"

    # Two instances at once: they share the partitions, and the offset check keeps a batch
    # written by one from being written again by the other.
    spawn_projections(stack, dsn, PROJECTIONS_MAX_BATCH_ROWS="1000")
    spawn_projections(stack, dsn, PROJECTIONS_MAX_BATCH_ROWS="1000")
    await wait_caught_up(stack, dsn)

    result = await compare_with_rebuild(stack.settings, database_url, schema)
    assert result.equal, result.as_json()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT message_id, delivered, failed, pending, status FROM view_messages"
        )
        history = await conn.fetchval("SELECT count(*) FROM view_history")
    finally:
        await conn.close()
    assert history == total
    for row in rows:
        state = fold(e for e in events if e.message_id == row["message_id"])
        assert state is not None
        counts = state.book.counts
        assert (row["delivered"], row["failed"], row["pending"], row["status"]) == (
            counts[RecipientStatus.DELIVERED],
            counts[RecipientStatus.FAILED],
            0,
            "sent",
        )
        assert row["delivered"] + row["failed"] == 5000


async def test_a_rebuild_of_a_history_with_100000_sends_equals_the_live_views(
    stack: Stack, schema: str, database_url: str
) -> None:
    dsn = with_schema(database_url, schema)
    started = time.perf_counter()
    written = await produce(stack.settings, sends_history(10, 10_000, fail_every=50))
    spawn_projections(stack, dsn)

    await wait_caught_up(stack, dsn, within=120)
    result = await compare_with_rebuild(stack.settings, database_url, schema)

    assert result.equal, result.as_json()
    assert result.rows["view_recipients"] == 100_000
    assert result.rows["view_history"] == written
    print(f"100,000 sends: produced, projected and rebuilt in {time.perf_counter() - started:.1f}s")
