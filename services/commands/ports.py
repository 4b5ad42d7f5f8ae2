"""What the API needs from the outside world, as interfaces: the command bus (Kafka), the
idempotency store and the key store (Postgres). The app is built with real ones
(`services.commands.app.create_app`) or with hand-written fakes (`tests/commands/fakes.py`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from schemas.wire import CommandRecord, CommandResult

__all__ = ["Claim", "CommandBus", "IdempotencyStore", "KeyStore"]


@dataclass(frozen=True)
class Claim:
    """The idempotency row of a request: the one just created, or the one a first try left."""

    fingerprint: str
    command_id: UUID
    message_id: UUID
    response_status: int | None
    response_body: Any


class CommandBus(Protocol):
    """Publishes command records and hands out their results by command id."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def expect(self, command_id: UUID) -> asyncio.Future[CommandResult]:
        """A future for the result of `command_id`; registered before the command is published,
        so a result can never arrive unseen."""
        ...

    def forget(self, command_id: UUID, future: asyncio.Future[CommandResult]) -> None:
        """Stop waiting (a wait that gave up)."""
        ...

    async def publish(self, record: CommandRecord, value: bytes | None = None) -> None:
        """Publish to `<prefix>.commands`, keyed by the message id; returns once acknowledged.
        `value`: the record already encoded (the gateway encodes it once to check its size)."""
        ...


class IdempotencyStore(Protocol):
    """(account, Idempotency-Key) -> request fingerprint, command id, response (migration 0003)."""

    async def claim(
        self, account: str, key: str, fingerprint: str, command_id: UUID, message_id: UUID
    ) -> Claim:
        """Insert the row unless the key is taken; either way return the row that stands."""
        ...

    async def answer(self, command_id: UUID, status: int, body: Any) -> None:
        """Store a command's response; the first stored answer stands."""
        ...

    async def outcome(self, account: str, command_id: UUID) -> Claim | None:
        """The row of a command of this account (None for unknown or another account's)."""
        ...

    async def default_time_zone(self, account: str) -> str:
        """The account's zone for contacts without one (UTC unless set)."""
        ...

    async def set_default_time_zone(self, account: str, zone: str) -> None:
        """Set the account's zone (a valid IANA name); commands issued from then on carry it."""
        ...


class KeyStore(Protocol):
    async def account_for(self, key: str) -> str | None:
        """The account of a presented API key; None for a malformed, unknown or revoked key."""
        ...
