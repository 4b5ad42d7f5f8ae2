"""The integration tests' delivery harness (bench/harness/delivery.py) on the services' own
topics, shared by the rows of a fault run: the events and results it has read are kept, decoded
once and indexed by message, so each row's polls cost what the row wrote, not the whole history
of the default topic prefix (which grows with every run on a kept .state)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import record
from core import MessageState, MessageStatus, fold
from schemas import Command, Event, RemoveRecipients
from schemas.wire import CommandRecord, CommandResult
from services.dispatcher.decider import key_of, partition_of

FINAL = (MessageStatus.SENT, MessageStatus.CANCELED)


class FaultStack(DeliveryStack):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = ""
        self._raw: dict[bytes | None, list[bytes]] = defaultdict(list)
        self._events: dict[bytes | None, list[Event]] = defaultdict(list)
        self._decoded: dict[bytes | None, int] = {}
        self._events_read = 0
        self._results: dict[UUID, list[CommandResult]] = defaultdict(list)
        self._results_read = 0

    def new_sender(self) -> None:
        """A sender of the row's own: the sink's mails of this row are those from it."""
        self.tag = f"f{uuid.uuid4().hex[:10]}"
        self.sender = f"news@{self.tag}.test"
        self.content = self.content.model_copy(update={"from_address": self.sender})

    def record(self, command: Command) -> CommandRecord:
        return record(command)

    def partition_of(self, message_id: UUID) -> int:
        return partition_of(key_of(message_id), self.settings.kafka_partitions)

    # ------------------------------------------------------------------ incremental reading

    async def events_of(self, message_id: UUID) -> list[Event]:
        log = await self._drain(self.topics.events)
        for k, value in log.values[self._events_read :]:
            self._raw[k].append(value)
        self._events_read = len(log.values)
        # Decoded only once a row asks about the message (the keys are message ids).
        key = key_of(message_id)
        decoded = self._events[key]
        # A bad record of the message (the bad-input row's) stays in _raw and is passed over.
        read = self._decoded.get(key, 0)
        fresh = self._raw[key][read:]
        decoded.extend(e for v in fresh if (e := self.event_or_none(v)) is not None)
        self._decoded[key] = read + len(fresh)
        return list(decoded)

    async def results(self) -> dict[UUID, list[CommandResult]]:
        log = await self._drain(self.topics.results)
        for _, value in log.values[self._results_read :]:
            result = self.result_or_none(value)
            if result is not None:
                self._results[result.command_id].append(result)
        self._results_read = len(log.values)
        return self._results

    async def reconnect_db(self) -> None:
        """A new ledger connection after Postgres went away (a restart ends every backend)."""
        if self.db is not None:
            self.db.terminate()
        self.db = await asyncpg.connect(self.database_url)

    # ------------------------------------------------------------------ waiting

    async def barrier_now(self, message_id: UUID) -> None:
        """Every record of the message's partition before now has been decided."""
        await self.decide(
            record(
                RemoveRecipients(
                    command_id=uuid.uuid4(), message_id=message_id, contact_ids=("barrier",)
                ),
                at=datetime.now(UTC),
            ),
            within=300,
        )

    async def wait_final(self, message_id: UUID, within: float) -> MessageState:
        async def check() -> MessageState | None:
            state = fold(await self.events_of(message_id))
            return state if state is not None and state.status in FINAL else None

        found: MessageState = await self.wait_for(f"{message_id} sent or canceled", check, within)
        return found

    async def wait_settled(self, message_id: UUID, within: float) -> bool:
        """Until every ledger row of the message is final and reported (a canceled message's
        sends in flight end after its status does); False when it did not happen in time (the
        checkers then say what is missing)."""
        assert self.db is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            open_rows = await self.db.fetchval(
                "SELECT count(*) FROM delivery_ledger WHERE topic = $1 AND message_id = $2"
                " AND (state NOT IN ('delivered', 'failed', 'unknown', 'returned')"
                " OR NOT reported)",
                self.topics.sends,
                str(message_id),
            )
            if open_rows == 0:
                return True
            await asyncio.sleep(0.2)
        return False
