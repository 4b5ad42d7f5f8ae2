"""The command gateway: one validated command request is claimed in the idempotency store,
published to the command topic, and answered with the processor's result (or 202 and a stored
answer later). The REST routes (services/commands/api.py) and the web UI (services/web) both
send their commands through it (docs/api.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from fastapi.responses import JSONResponse

from schemas import Actor, Command
from schemas.fast import dump_json
from schemas.wire import CommandRecord, CommandResult
from services.commands.errors import Problem, ProblemError
from services.commands.ids import fingerprint
from services.commands.ports import CommandBus, IdempotencyStore
from services.commands.responses import Pending, headers_for, render

__all__ = ["RECORD_OVERHEAD_BYTES", "CommandRequest", "Executor"]

log = structlog.get_logger(__name__)

# A record carries more than its JSON value (key, headers, batch framing): keep this much of
# max_record_bytes free so that a command that passes the check is never refused by the producer.
RECORD_OVERHEAD_BYTES = 4096


@dataclass(frozen=True)
class CommandRequest:
    """One command request, everything validated."""

    account: str
    key: str | None
    actor: Actor
    correlation_id: UUID | None
    method: str
    path: str
    body: Any
    command: Command
    created: bool = False
    new_message_id: UUID | None = None
    #: Set once the command is on the command topic (or was already: a replay), or will not
    #: be (refused, not published): a caller with several commands in flight publishes the
    #: next one only then, so the topic holds them in its order (a CSV import's chunks).
    published: asyncio.Event | None = None


class Executor:
    """Claims the idempotency row, publishes the command, waits for its result and stores it."""

    def __init__(
        self,
        bus: CommandBus,
        store: IdempotencyStore,
        *,
        wait_s: float,
        background_wait_s: float,
        max_record_bytes: int,
    ) -> None:
        self.bus = bus
        self.store = store
        self.wait_s = wait_s
        self.background_wait_s = background_wait_s
        self.max_record_bytes = max_record_bytes
        self._background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop the background waits (at shutdown); their rows stay pending, a retry finishes."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def execute(self, req: CommandRequest) -> JSONResponse:
        try:
            return await self._execute(req)
        finally:
            if req.published is not None:
                req.published.set()  # whatever happened: it is published by now or never

    async def _execute(self, req: CommandRequest) -> JSONResponse:
        command = req.command
        # Built without validating again: the command and the actor are validated models
        # already, and validating a chunk of 10,000 contacts again costs more than publishing
        # it (the processor validates the record it reads, at its own edge).
        record = CommandRecord.model_construct(
            type="CommandRecord",
            schema_version=1,
            command=command,
            actor=req.actor,
            issued_at=datetime.now(UTC),
            correlation_id=req.correlation_id or command.command_id,
            default_time_zone=await self.store.default_time_zone(req.account),
        )
        value = dump_json(record)  # model_dump_json's bytes; a chunk's contacts by orjson
        if len(value) + RECORD_OVERHEAD_BYTES > self.max_record_bytes:
            # Refused before anything is written: the broker would refuse it after the claim.
            raise ProblemError(
                Problem(
                    code="too_large",
                    message=f"the command is {len(value)} bytes as a record; at most "
                    f"{self.max_record_bytes - RECORD_OVERHEAD_BYTES} fit: send smaller chunks",
                )
            )
        request_print = fingerprint(req.method, req.path, req.body)
        claim = await self.store.claim(
            req.account,
            # Keyless requests get a row too, so that GET /v1/commands/{id} can report them.
            req.key if req.key is not None else f"auto:{command.command_id}",
            request_print,
            command.command_id,
            command.message_id,
        )
        if claim.fingerprint != request_print:
            raise ProblemError(
                Problem(
                    code="idempotency_key_reused",
                    message="this Idempotency-Key was already used with another request "
                    "(another method, path or body); use a new key for a new request",
                    field="Idempotency-Key",
                )
            )
        if claim.response_status is not None:
            return JSONResponse(
                claim.response_body,
                status_code=claim.response_status,
                headers={
                    **headers_for(claim.response_status, claim.response_body),
                    "Idempotent-Replayed": "true",
                },
            )
        # No stored answer: a first try, or a retry of one that died or timed out. Either way
        # publish (the same command id): the processor decides a command id once and answers a
        # repeat with its first result.
        future = self.bus.expect(command.command_id)  # before publishing: never miss the result
        try:
            await self.bus.publish(record, value)
        except Exception as error:
            self.bus.forget(command.command_id, future)
            log.warning(
                "command not published", command_id=str(command.command_id), error=repr(error)
            )
            raise ProblemError(
                Problem(
                    code="unavailable",
                    message="the command could not be published; nothing was decided: retry "
                    "with the same Idempotency-Key",
                )
            ) from error
        if req.published is not None:
            req.published.set()
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            self._answer_later(req, future)
            pending = Pending(
                command_id=command.command_id,
                message_id=command.message_id,
                status_url=f"/v1/commands/{command.command_id}",
            )
            return JSONResponse(
                pending.model_dump(mode="json"),
                status_code=202,
                headers={"Location": pending.status_url, "Retry-After": "1"},
            )
        except asyncio.CancelledError:
            # The client went away: the outcome is still stored for its retry or a poll.
            self._answer_later(req, future)
            raise
        status, body = render(result, req.created, req.new_message_id)
        await self.store.answer(command.command_id, status, body)
        log.info(
            "command answered",
            command_id=str(command.command_id),
            message_id=str(command.message_id),
            command_type=command.type,
            http_status=status,
            account_id=req.account,
        )
        return JSONResponse(body, status_code=status, headers=headers_for(status, body))

    def _answer_later(self, req: CommandRequest, future: asyncio.Future[CommandResult]) -> None:
        task = asyncio.create_task(self._wait_and_store(req, future))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wait_and_store(
        self, req: CommandRequest, future: asyncio.Future[CommandResult]
    ) -> None:
        command_id = req.command.command_id
        try:
            result = await asyncio.wait_for(future, self.background_wait_s)
        except TimeoutError:
            # Bounded: the row stays pending; a retry with the same key publishes again.
            self.bus.forget(command_id, future)
            log.warning("command outcome not seen", command_id=str(command_id))
            return
        status, body = render(result, req.created, req.new_message_id)
        try:
            await self.store.answer(command_id, status, body)
        except Exception as error:  # a background task has nobody to raise to
            log.error("command outcome not stored", command_id=str(command_id), error=repr(error))
            return
        log.info("command answered late", command_id=str(command_id), http_status=status)
