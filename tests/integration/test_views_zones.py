"""The read side over the real Postgres for issue 11's view rules: the Scheduled list ordered by
the real first release (recipient_timezone: the first zone's due time, migration 0012), and a
released send that delivery is to try again after a 4xx showing that refusal (the delivery
ledger's deferred row, joined by the reader). The rows are the pure view function's
(tests/projections/tables.py), written as the projection store writes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from bench.harness.histories import T0, Simulator, contacts
from bench.harness.projections import drop_schema, new_schema, with_schema
from schemas import DeliveryPlan, ScheduleMessage
from services.projections.reader import PostgresViews
from services.projections.views import MESSAGE_COLUMNS, RECIPIENT_COLUMNS
from tests.projections.tables import Tables, project


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    name = await new_schema(database_url, "tzones")
    try:
        yield with_schema(database_url, name)
    finally:
        await drop_schema(database_url, name)


async def write(dsn: str, tables: Tables) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "view_messages",
            records=[tuple(r[c] for c in MESSAGE_COLUMNS) for r in tables.messages.values()],
            columns=MESSAGE_COLUMNS,
        )
        await conn.copy_records_to_table(
            "view_recipients",
            records=[tuple(r[c] for c in RECIPIENT_COLUMNS) for r in tables.recipients.values()],
            columns=RECIPIENT_COLUMNS,
        )
    finally:
        await conn.close()


def schedule(sim: Simulator, zones: tuple[str | None, ...], **when: Any) -> UUID:
    message = sim.create(plan=DeliveryPlan(mode="recipient_timezone"))
    sim.add(message, contacts(2, prefix=f"z{len(sim.events)}-", zones=zones))
    sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, **when))
    return message


async def test_the_scheduled_list_orders_by_the_real_first_release(dsn: str) -> None:
    sim = Simulator(zone="Europe/Berlin")
    # 09:00 local for Tokyo: it starts at 00:00 UTC, eight hours before its send time in the
    # account's zone (08:00 UTC).
    tokyo = schedule(sim, ("Asia/Tokyo",), send_at_local=datetime(2030, 1, 16, 9, 0))
    # A fixed message at 05:00 UTC: after Tokyo's first release, before its send_at.
    fixed = sim.create()
    sim.add(fixed, contacts(1, prefix="f"))
    sim.run(
        ScheduleMessage(command_id=sim.new_id(), message_id=fixed, send_at=T0 + timedelta(hours=20))
    )
    # 06:00 local for New York only: 11:00 UTC, after both.
    new_york = schedule(sim, ("America/New_York",), send_at_local=datetime(2030, 1, 16, 6, 0))
    await write(dsn, project(sim.events))
    views = PostgresViews(dsn)
    try:
        rows = await views.list_messages(
            sim.states[tokyo].account_id,
            "scheduled",
            ["scheduled"],
            search=None,
            limit=10,
            offset=0,
        )
    finally:
        await views.close()

    assert [r["message_id"] for r in rows] == [tokyo, fixed, new_york]
    assert [r["first_release_at"].hour for r in rows] == [0, 5, 11]
    assert rows[0]["zone_times"] == [
        {"zone": "Asia/Tokyo", "due_at": "2030-01-16T00:00:00+00:00", "pending": 2}
    ]


async def test_a_deferred_send_shows_its_last_refusal_while_it_waits(dsn: str) -> None:
    sim = Simulator()
    message = sim.create(plan=DeliveryPlan(release_rate=2))
    sim.add(message, contacts(3))
    sim.send_now(message)
    sim.tick()  # starts, releases c0 and c1
    await write(dsn, project(sim.events))
    conn = await asyncpg.connect(dsn)
    try:
        for contact, state, detail in (
            ("c0", "deferred", "451 4.7.1 greylisted"),
            ("c1", "claimed", None),
        ):
            await conn.execute(
                "INSERT INTO delivery_ledger (send_id, message_id, contact_id, state, detail)"
                " VALUES ($1, $2, $3, $4, $5)",
                f"{message}:{contact}",
                str(message),
                contact,
                state,
                detail,
            )
    finally:
        await conn.close()
    views = PostgresViews(dsn)
    try:
        rows = await views.recipients(
            sim.states[message].account_id, message, None, after=None, limit=10
        )
    finally:
        await views.close()

    refusals = {r["contact_id"]: (r["state"], r["refusal"]) for r in rows}
    assert refusals == {
        "c0": ("released", "451 4.7.1 greylisted"),
        "c1": ("released", None),  # in a first attempt: nothing refused yet
        "c2": ("pending", None),
    }
