"""Hand-written fakes of the API's ports (services/commands/ports.py): a command bus that
decides with the real core in memory, as the processor does, and in-memory key and
idempotency stores with the Postgres store's rules."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from core import MessageState
from schemas import Event, Tick
from schemas.wire import CommandRecord, CommandResult
from services.commands.ports import Claim
from services.dispatcher.decider import (
    Input,
    PartitionState,
    Results,
    Rules,
    WriteEvent,
    WriteForward,
    WriteResult,
    decide_command,
    decide_record,
)


class BusDownError(ConnectionError):
    """Raised by the fake bus's publish while it is set to be unreachable."""


class FakeBus:
    """Decides each published command at once with the processor's own partition decider
    (services/dispatcher/decider.py; unless holding), remembers every command id's first result
    and answers a repeat with it, like the processor. All messages live in one partition."""

    def __init__(self) -> None:
        self.published: list[CommandRecord] = []
        self.partition = PartitionState(0)
        self.events: dict[UUID, list[Event]] = {}
        self.holding = False  # publish, but decide only on release(): the slow processor
        self.down = False  # publish raises: Kafka unreachable
        self.held: list[CommandRecord] = []
        self._waiters: dict[UUID, list[asyncio.Future[CommandResult]]] = {}
        self.started = False
        self._ticks = 0

    @property
    def states(self) -> dict[UUID, MessageState]:
        return self.partition.messages

    @property
    def results(self) -> Results:
        return self.partition.results

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def expect(self, command_id: UUID) -> asyncio.Future[CommandResult]:
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(command_id, []).append(future)
        return future

    def forget(self, command_id: UUID, future: asyncio.Future[CommandResult]) -> None:
        waiting = self._waiters.get(command_id, [])
        if future in waiting:
            waiting.remove(future)

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def publish(self, record: CommandRecord, value: bytes | None = None) -> None:
        if self.down:
            raise BusDownError("no broker")
        self.published.append(record)
        if self.holding:
            self.held.append(record)
        else:
            self._decide(record)

    def release(self) -> None:
        held, self.held = self.held, []
        for record in held:
            self._decide(record)

    def tick(self, at: datetime) -> None:
        """A clock tick for every message (starts scheduled ones, releases recipients)."""
        tick = Tick(tick_id=uuid4(), at=at)
        self._ticks += 1
        value = tick.model_dump_json().encode()
        decision = decide_record(
            self.partition,
            Input(topic="commands", partition=0, offset=self._ticks, key=None, value=value),
            Rules(partitions=1),
        )
        self._record(decision.writes)

    def _record(self, writes: Any) -> None:
        for write in writes:
            if isinstance(write, WriteEvent):
                self.events.setdefault(write.event.message_id, []).append(write.event)
            elif isinstance(write, WriteForward):
                # The copy's new message: appended as its own partition's processor would.
                event = write.copied.event
                self.events.setdefault(event.message_id, []).append(event)
                self.partition.fold(event)

    def _decide(self, record: CommandRecord) -> None:
        # Decided at the record's issued_at (the fake has no broker to stamp it).
        decision = decide_command(self.partition, record, record.issued_at)
        self._record(decision.writes)
        result = next(w.result for w in decision.writes if isinstance(w, WriteResult))
        for future in self._waiters.pop(record.command.command_id, []):
            if not future.done():
                future.set_result(result)


class FakeKeys:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    async def account_for(self, key: str) -> str | None:
        return self.keys.get(key)


class FakeStore:
    """The idempotency rows in a dict, with the Postgres store's rules: the first row for a key
    stands, the first answer stands, an account sees only its own commands."""

    def __init__(self, zones: dict[str, str] | None = None) -> None:
        self.rows: dict[tuple[str, str], Claim] = {}
        self.accounts: dict[UUID, str] = {}
        self.zones = zones or {}

    async def claim(
        self, account: str, key: str, fingerprint: str, command_id: UUID, message_id: UUID
    ) -> Claim:
        row = self.rows.setdefault(
            (account, key), Claim(fingerprint, command_id, message_id, None, None)
        )
        self.accounts.setdefault(row.command_id, account)
        return row

    async def answer(self, command_id: UUID, status: int, body: Any) -> None:
        for key, row in self.rows.items():
            if row.command_id == command_id and row.response_status is None:
                self.rows[key] = replace(row, response_status=status, response_body=body)

    async def outcome(self, account: str, command_id: UUID) -> Claim | None:
        if self.accounts.get(command_id) != account:
            return None
        return next(r for r in self.rows.values() if r.command_id == command_id)

    async def default_time_zone(self, account: str) -> str:
        return self.zones.get(account, "UTC")

    async def set_default_time_zone(self, account: str, zone: str) -> None:
        self.zones[account] = zone
