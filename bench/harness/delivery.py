"""The whole sending path on real servers: the processor (`python -m services.dispatcher`) and the
delivery worker (`python -m services.delivery`) as subprocesses on a topic prefix of
their own, the real Postgres ledger and the real SMTP sink. Used by the test_delivery*.py tests.

Every test sends from its own address (`news@<prefix>.test`), so what the shared sink received for
a test is found by sender.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from bench.harness.kafka import committed
from bench.harness.processor import Stack, record
from core import MessageState, MessageStatus, fold
from schemas import (
    MAX_CHUNK,
    AddRecipients,
    Contact,
    Content,
    CreateDraft,
    DeliveryPlan,
    Event,
    RecipientsReleased,
    RemoveRecipients,
    ScheduleMessage,
    Tick,
)
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.dispatcher.clock import TICK_KEY


class DeliveryStack(Stack):
    def __init__(
        self,
        bootstrap: str,
        database_url: str,
        smtp: tuple[str, int],
        sink_url: str,
        tmp: Path,
        *,
        simulated_time: bool = False,
    ) -> None:
        super().__init__(bootstrap, tmp, simulated_time=simulated_time)
        self.database_url = database_url
        self.smtp = smtp
        self.sink_url = sink_url
        self.sender = f"news@{self.settings.topic_prefix}.test"
        self.content = Content(
            name="Launch",
            from_address=self.sender,
            from_name="Ünïcode News",
            subject="Hello {{first_name|friend}}",
            body="Dear {{ first_name | friend }},\nyour code is {{code}}.\n",
        )
        self.http: httpx.AsyncClient | None = None
        self.db: asyncpg.Connection | None = None

    async def start(self) -> None:
        await super().start()
        self.db = await asyncpg.connect(self.database_url)
        await apply_migrations(self.db, load_migrations(MIGRATIONS_DIR))
        self.http = httpx.AsyncClient(base_url=self.sink_url, timeout=30)

    async def close(self) -> None:
        await super().close()
        if self.http is not None:
            await self.http.aclose()
        if self.db is not None:
            await self.db.close()

    # ---------------------------------------------------------------- processes

    def spawn_dispatcher(self, name: str = "dispatcher", **env: str) -> subprocess.Popen[bytes]:
        # Static membership: a restart under the same name gets its partitions back at once.
        return self.spawn(
            name, DISPATCHER_INSTANCE_ID=f"{self.settings.topic_prefix}-{name}", **env
        )

    def spawn_delivery(
        self, name: str = "delivery", *, database_url: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """The delivery worker; `database_url` (default: the stack's) to give it a server of
        its own to fail (bench/harness/proxy.py)."""
        return self.spawn(
            name,
            module="services.delivery",
            DATABASE_URL=database_url or self.database_url,
            SMTP_HOST=self.smtp[0],
            SMTP_PORT=str(self.smtp[1]),
            DELIVERY_INSTANCE_ID=f"{self.settings.topic_prefix}-{name}",
            **env,
        )

    # ---------------------------------------------------------------- the clock, by hand

    async def tick(self, at: datetime) -> None:
        """One tick at `at` in every partition (for processors started with CLOCK_ENABLED=false)."""
        assert self.producer is not None
        for partition in range(self.settings.kafka_partitions):
            tick = Tick(tick_id=uuid.uuid4(), at=at)
            await self.producer.send(
                self.topics.commands,
                value=tick.model_dump_json().encode(),
                key=TICK_KEY,
                partition=partition,
            )
        await self.producer.flush()

    async def add_message(
        self, message_id: UUID, audience: Sequence[Contact], plan: DeliveryPlan
    ) -> None:
        """Create the message with this test's content and add the audience in chunks; wait for
        every command's result (the message is a draft: nothing is released yet)."""
        await self.decide(
            record(
                CreateDraft(
                    command_id=uuid.uuid4(), message_id=message_id, content=self.content, plan=plan
                )
            ),
            *(
                record(
                    AddRecipients(
                        command_id=uuid.uuid4(),
                        message_id=message_id,
                        contacts=tuple(audience[i : i + MAX_CHUNK]),
                    )
                )
                for i in range(0, len(audience), MAX_CHUNK)
            ),
        )

    async def schedule_now(self, *message_ids: UUID) -> None:
        """Send these messages now (their schedules published at once); wait for the results."""
        await self.decide(
            *(
                record(ScheduleMessage(command_id=uuid.uuid4(), message_id=m, send_now=True))
                for m in message_ids
            )
        )

    async def send_now(
        self, message_id: UUID, audience: Sequence[Contact], plan: DeliveryPlan
    ) -> None:
        """Create the message with this test's content, add the audience in chunks, send it
        now; wait for every command's result."""
        await self.add_message(message_id, audience, plan)
        await self.schedule_now(message_id)

    async def wait_delivered(self, message_id: UUID, count: int, within: float = 180.0) -> None:
        """Wait until the ledger holds `count` delivered sends of the message."""

        async def check() -> bool:
            await asyncio.sleep(0.1)
            return await self.delivered_count(message_id) >= count

        await self.wait_for(f"{count} delivered", check, within)

    async def barrier(self, message_id: UUID, at: datetime) -> None:
        """Wait until the message's partition has processed everything written before: a
        command that changes nothing (removing a contact it does not have) gets its result only
        after every earlier record of that partition, ticks included."""
        await self.decide(
            record(
                RemoveRecipients(
                    command_id=uuid.uuid4(), message_id=message_id, contact_ids=("barrier",)
                ),
                at=at,
            )
        )

    # ---------------------------------------------------------------- what happened

    async def state(self, message_id: UUID) -> MessageState:
        state = fold(await self.events_of(message_id))
        assert state is not None
        return state

    async def wait_status(
        self,
        message_id: UUID,
        status: MessageStatus,
        within: float = 120.0,
        *,
        ticking_from: datetime | None = None,
    ) -> MessageState:
        """Wait for the message's status. With `ticking_from` (a processor without its clock),
        write a tick per poll, one simulated second apart from that instant: completion is
        decided at a tick, after the last outcome has come back."""
        clock = [ticking_from]

        async def check() -> MessageState | None:
            state = fold(await self.events_of(message_id))
            if state is not None and state.status is status:
                return state
            if clock[0] is not None:
                await self.tick(clock[0])
                clock[0] += timedelta(seconds=1)
                await asyncio.sleep(0.2)
            return None

        found: MessageState = await self.wait_for(f"{message_id} {status.value}", check, within)
        return found

    async def deliveries(
        self, sender: str | None = None, after: int = 0
    ) -> list[tuple[int, str | None, str, datetime]]:
        """(sink id, Message-ID, recipient, receive time) of every mail the sink received from
        `sender` (default: this test's sender) after sink id `after`, in arrival order."""
        assert self.http is not None
        found: list[tuple[int, str | None, str, datetime]] = []
        while True:
            response = await self.http.get(
                "/deliveries",
                params={"mail_from": sender or self.sender, "after": after, "limit": 50_000},
            )
            response.raise_for_status()
            page: list[Any] = response.json()
            if not page:
                return found
            found.extend(
                (int(row_id), message_id, rcpt, datetime.fromisoformat(at))
                for row_id, message_id, rcpt, at in page
            )
            after = page[-1][0]

    async def sink(self) -> list[tuple[str | None, str]]:
        """(Message-ID, recipient) of every mail the sink received from this test's sender."""
        return [(message_id, rcpt) for _, message_id, rcpt, _ in await self.deliveries()]

    async def arrivals(self) -> list[datetime]:
        """When the sink received each mail from this test's sender, in arrival order."""
        return [at for *_, at in await self.deliveries()]

    async def refusals(self, rcpt: str) -> list[dict[str, Any]]:
        assert self.http is not None
        response = await self.http.get("/refusals", params={"rcpt": rcpt, "limit": 1000})
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows

    async def delivered_count(self, message_id: UUID) -> int:
        assert self.db is not None
        count: int = await self.db.fetchval(
            "SELECT count(*) FROM delivery_ledger WHERE topic = $1 AND message_id = $2"
            " AND state = 'delivered'",
            self.topics.sends,
            str(message_id),
        )
        return count

    async def ledger(self, message_id: UUID) -> dict[str, asyncpg.Record]:
        """The ledger rows of one message, by contact id."""
        assert self.db is not None
        rows = await self.db.fetch(
            "SELECT * FROM delivery_ledger WHERE topic = $1 AND message_id = $2",
            self.topics.sends,
            str(message_id),
        )
        return {row["contact_id"]: row for row in rows}


def released(events: list[Event]) -> list[str]:
    """Every contact id released in these events, in release order."""
    return [c for e in events if isinstance(e, RecipientsReleased) for c in e.contact_ids]


async def read_topic(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Any]]:
    """Every committed record of `topic` up to its current end, by partition, in log order."""
    found: dict[int, list[Any]] = {p: [] for p in range(partitions)}
    async for item in committed(bootstrap, topic, range(partitions)):
        found[item.partition].append(item)
    return found
