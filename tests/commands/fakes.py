"""Hand-written fakes of the API's ports (services/commands/ports.py): a command bus that
decides with the real core in memory, as the processor does, and in-memory key and
idempotency stores with the Postgres store's rules."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from core import Context, DomainError, MessageState, decide, evolve, plan
from schemas import Event, Tick
from schemas.wire import CommandRecord, CommandResult
from services.commands.ports import Claim
from services.dispatcher.processor import result_for


class BusDownError(ConnectionError):
    """Raised by the fake bus's publish while it is set to be unreachable."""


class FakeBus:
    """Decides each published command at once with the core (unless holding), remembers every
    command id's first result and answers a repeat with it, like the processor."""

    def __init__(self) -> None:
        self.published: list[CommandRecord] = []
        self.states: dict[UUID, MessageState] = {}
        self.events: dict[UUID, list[Event]] = {}
        self.results: dict[UUID, CommandResult] = {}
        self.holding = False  # publish, but decide only on release(): the slow processor
        self.down = False  # publish raises: Kafka unreachable
        self.held: list[CommandRecord] = []
        self._waiters: dict[UUID, list[asyncio.Future[CommandResult]]] = {}
        self.started = False

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

    async def publish(self, record: CommandRecord) -> None:
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
        for message_id in list(self.states):
            # plan only reads; its events are then folded one by one, as the processor does.
            for event in plan(self.states[message_id], Tick(tick_id=uuid4(), at=at)):
                self._append(event)

    def _append(self, event: Event) -> None:
        self.events.setdefault(event.message_id, []).append(event)
        self.states[event.message_id] = evolve(self.states.get(event.message_id), event)

    def _decide(self, record: CommandRecord) -> None:
        command = record.command
        result = self.results.get(command.command_id)
        if result is None:
            ctx = Context(
                now=record.issued_at,
                actor=record.actor,
                default_time_zone=record.default_time_zone,
                correlation_id=record.correlation_id,
            )
            state = self.states.get(command.message_id)
            try:
                decided: list[Event] | DomainError = decide(command, state, ctx)
            except DomainError as error:
                decided = error
            else:
                for event in decided:
                    self._append(event)
            # The processor's own function: the fake answers exactly as the processor would.
            result = result_for(record, self.states.get(command.message_id), decided)
            self.results[command.command_id] = result
        for future in self._waiters.pop(command.command_id, []):
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
