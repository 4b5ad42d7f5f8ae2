"""The command endpoints: each request becomes one command record for the processor, and the
answer is the command's result (docs/api.md).

No `from __future__ import annotations`: FastAPI reads these annotations at run time, and they
name dependencies that only exist inside `command_routes`.
"""

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4, uuid5

import structlog
from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NaiveDatetime, model_validator

from schemas import (
    MAX_CHUNK,
    Actor,
    AddRecipients,
    CancelMessage,
    Command,
    Contact,
    Content,
    CopyMessage,
    CreateDraft,
    DeliveryPlan,
    DiscardDraft,
    EditDraft,
    PauseMessage,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    UnscheduleMessage,
)
from schemas.values import ContactId, OneLine
from schemas.wire import CommandRecord, CommandResult, EventRef
from services.commands.audience_answer import AudienceAnswer
from services.commands.errors import (
    ERROR_RESPONSES,
    Problem,
    ProblemError,
    http_status,
    problem_of,
)
from services.commands.ports import CommandBus, IdempotencyStore

log = structlog.get_logger(__name__)

# Command ids and new message ids are derived from (account, Idempotency-Key) in this namespace,
# so a retry names the same command and the same new message. Never change it: retries across a
# deployment would become new commands.
ID_NAMESPACE = UUID("0b5c3f0e-6f2a-4c8e-9d1b-7a4e2c9f3d61")

# A record carries more than its JSON value (key, headers, batch framing): keep this much of
# max_record_bytes free so that a command that passes the check is never refused by the producer.
RECORD_OVERHEAD_BYTES = 4096


def command_id_for(account: str, key: str | None) -> UUID:
    """The command id of a request: derived from the account and its Idempotency-Key (a retry
    publishes the same command), random without a key."""
    return uuid5(ID_NAMESPACE, f"{account}\n{key}") if key is not None else uuid4()


def created_message_id(command_id: UUID, kind: Literal["create", "copy"]) -> UUID:
    """The id of the message a create or copy makes: a retry targets the same message."""
    return uuid5(ID_NAMESPACE, f"{command_id}\n{kind}")


def fingerprint(method: str, path: str, body: Any) -> str:
    """sha256 of the method, the path and the canonical JSON of the validated body: what makes
    two requests with one Idempotency-Key the same request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


# ---------------------------------------------------------------------------- request bodies


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateMessageBody(Strict):
    """A new draft (`CreateDraft`)."""

    content: Content
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)


class EditMessageBody(Strict):
    """What to replace in a draft (`EditDraft`): content, plan or both."""

    content: Content | None = None
    plan: DeliveryPlan | None = None

    @model_validator(mode="after")
    def _something(self) -> "EditMessageBody":
        if self.content is None and self.plan is None:
            raise ValueError("an edit changes content, plan or both")
        return self


class ScheduleBody(Strict):
    """When to send (`ScheduleMessage`). Exactly one of: `send_at` (an instant with its UTC
    offset), `send_at_local` (a wall-clock time without offset: in `recipient_timezone` mode read
    in each recipient's zone, else in the account's default zone), `send_now: true`."""

    send_at: AwareDatetime | None = None
    send_at_local: NaiveDatetime | None = None
    send_now: bool = False

    @model_validator(mode="after")
    def _one_time(self) -> "ScheduleBody":
        given = (self.send_at is not None) + (self.send_at_local is not None) + self.send_now
        if given != 1:
            raise ValueError("give exactly one of send_at, send_at_local, send_now")
        return self


class ReasonBody(Strict):
    """Optional; the reason shows in the message's history and pause details."""

    reason: str | None = Field(default=None, max_length=1000)


class EmptyBody(Strict):
    """No fields: send no body, or `{}`."""


class CopyBody(Strict):
    """`exclude_delivered`: leave out every contact that may have received the original
    (released, delivered, or with an unknown outcome)."""

    exclude_delivered: bool = False


class AddRecipientsBody(Strict):
    contacts: list[Contact] = Field(
        min_length=1,
        max_length=MAX_CHUNK,
        description=f"1 to {MAX_CHUNK} contacts; a larger audience is sent as several chunks",
    )


class RemoveRecipientsBody(Strict):
    contact_ids: list[ContactId] = Field(
        min_length=1, max_length=MAX_CHUNK, description=f"1 to {MAX_CHUNK} contact ids"
    )


# ---------------------------------------------------------------------------- response bodies


class Outcome(BaseModel):
    """An accepted command: what it did, and the message's status and last event sequence
    number after it. A repeat of a command whose effect already held has no events."""

    command_id: UUID
    message_id: UUID = Field(description="the message the command addressed (a copy's original)")
    new_message_id: UUID | None = Field(
        default=None, description="copy only: the id of the new draft"
    )
    command_type: str
    outcome: Literal["accepted"] = "accepted"
    status: str | None
    sequence: int
    events: list[EventRef]
    audience: AudienceAnswer | None = Field(
        default=None, description="add/remove recipients: what the chunk did to each contact"
    )


class Pending(BaseModel):
    """The outcome was not known in time; poll `status_url` (also the Location header)."""

    command_id: UUID
    message_id: UUID
    state: Literal["pending"] = "pending"
    status_url: str


class CommandStatus(BaseModel):
    """A command's stored outcome: `pending`, or `done` with the HTTP status and body the
    command's request was (or would have been) answered with."""

    command_id: UUID
    message_id: UUID
    state: Literal["pending", "done"]
    http_status: int | None = None
    response: dict[str, Any] | None = None


def render(result: CommandResult, created: bool, new_message_id: UUID | None) -> tuple[int, Any]:
    """A command's result as the HTTP status and body the API answers with."""
    if result.outcome == "rejected":
        assert result.rejection is not None  # the processor always says why
        problem = problem_of(result.rejection, result.command_id)
        return http_status(problem.code), {"detail": problem.model_dump(exclude_none=True)}
    body = Outcome(
        command_id=result.command_id,
        message_id=result.message_id,
        new_message_id=new_message_id,
        command_type=result.command_type,
        status=result.status,
        sequence=result.sequence,
        events=list(result.events),
        audience=None if result.audience is None else AudienceAnswer.of(result.audience),
    )
    return (201 if created else 200), body.model_dump(mode="json", exclude_none=True)


def headers_for(status: int, body: Any) -> dict[str, str]:
    """The headers of an answer, from its status and body (so a replayed answer gets them too)."""
    if status == 201:
        created = body.get("new_message_id") or body.get("message_id")
        return {"Location": f"/v1/messages/{created}"}
    return {}


# ---------------------------------------------------------------------------- executing


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
        value = record.model_dump_json().encode()
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
            await self.bus.publish(record)
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


# ---------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Caller:
    """Who asks, with which key, on which route (the same for every command endpoint)."""

    account: str
    key: str | None
    actor: Actor
    correlation_id: UUID | None
    method: str
    route: str  # the route's template, e.g. /v1/messages/{message_id}/pause

    @property
    def command_id(self) -> UUID:
        return command_id_for(self.account, self.key)

    def path(self, message_id: UUID) -> str:
        """The request's path with the message id in its canonical spelling (the fingerprint
        must not depend on how a client wrote the UUID). A create's route names no message."""
        return self.route.replace("{message_id}", str(message_id))


def _actor(account: str, user: str | None) -> Actor:
    if user is not None:
        return Actor(kind="user", account_id=account, user_id=user)
    return Actor(kind="service", account_id=account, service="api")


def command_routes(
    account: Callable[..., Awaitable[str]],
    executor: Executor,
    store: IdempotencyStore,
) -> APIRouter:
    """The /v1 command routes; `account` is the authentication dependency."""
    router = APIRouter(prefix="/v1", tags=["messages"], responses=ERROR_RESPONSES)
    Account = Annotated[str, Depends(account)]
    # Header values are text like any other input (schemas/text.py): one line, or a 422 naming
    # the header (HTTP itself lets a TAB through).
    IdempotencyKey = Annotated[
        OneLine | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Makes retries safe: the same key and request return the first outcome "
            "and change nothing; the same key with another request is refused (422). Without "
            "it every request is a new command.",
        ),
    ]
    ActorUser = Annotated[
        OneLine | None,
        Header(
            alias="X-Actor-User",
            min_length=1,
            max_length=200,
            description="The operator acting, recorded in the history as a user actor; without "
            "it the actor is the service `api` of the account.",
        ),
    ]
    CorrelationId = Annotated[
        UUID | None,
        Header(
            alias="X-Correlation-Id",
            description="Ties the command's events to a wider operation (defaults to the "
            "command id).",
        ),
    ]

    async def caller(
        request: Request,
        account_id: Account,
        key: IdempotencyKey = None,
        user: ActorUser = None,
        correlation_id: CorrelationId = None,
    ) -> Caller:
        route = request.scope.get("route")
        template = route.path if isinstance(route, APIRoute) else request.url.path
        return Caller(
            account_id, key, _actor(account_id, user), correlation_id, request.method, template
        )

    Who = Annotated[Caller, Depends(caller)]

    async def run(
        who: Caller,
        body: BaseModel,
        make: Callable[[UUID], Command],
        *,
        created: bool = False,
        new_message_id: Callable[[UUID], UUID] | None = None,
    ) -> JSONResponse:
        command_id = who.command_id
        command = make(command_id)
        return await executor.execute(
            CommandRequest(
                account=who.account,
                key=who.key,
                actor=who.actor,
                correlation_id=who.correlation_id,
                method=who.method,
                path=who.path(command.message_id),
                body=body.model_dump(mode="json"),
                command=command,
                created=created,
                new_message_id=new_message_id(command_id) if new_message_id else None,
            )
        )

    pending: dict[int | str, dict[str, Any]] = {
        202: {"model": Pending, "description": "Outcome not known in time: poll Location."}
    }

    @router.post(
        "/messages",
        status_code=201,
        summary="Create a draft",
        description="Creates a draft with its content and delivery plan. The new message's id "
        "is derived from the Idempotency-Key, so a retry never makes a second draft.",
        response_model=Outcome,
        responses=pending,
    )
    async def create_message(who: Who, body: CreateMessageBody) -> JSONResponse:
        def make(c: UUID) -> Command:
            return CreateDraft(
                command_id=c,
                message_id=created_message_id(c, "create"),
                content=body.content,
                plan=body.plan,
            )

        return await run(who, body, make, created=True)

    @router.patch(
        "/messages/{message_id}",
        summary="Edit a draft",
        description="Replaces the content, the plan, or both, of a draft (409 in any other "
        "status). An edit that changes nothing is accepted without events.",
        response_model=Outcome,
        responses=pending,
    )
    async def edit_message(who: Who, message_id: UUID, body: EditMessageBody) -> JSONResponse:
        return await run(
            who,
            body,
            lambda c: EditDraft(
                command_id=c, message_id=message_id, content=body.content, plan=body.plan
            ),
        )

    @router.put(
        "/messages/{message_id}/schedule",
        summary="Schedule a draft, or send it now",
        description="Exactly one of `send_at`, `send_at_local`, `send_now`. A send time more "
        "than 5 minutes in the past, or a throttle end date not after it, is refused (422 "
        "naming the field). To reschedule, unschedule first.",
        response_model=Outcome,
        responses=pending,
    )
    async def schedule_message(who: Who, message_id: UUID, body: ScheduleBody) -> JSONResponse:
        return await run(
            who,
            body,
            lambda c: ScheduleMessage(
                command_id=c,
                message_id=message_id,
                send_at=body.send_at,
                send_at_local=body.send_at_local,
                send_now=body.send_now,
            ),
        )

    @router.post(
        "/messages/{message_id}/unschedule",
        summary="Take a scheduled message back to draft",
        description="Only before it started sending. No body, or `{}`.",
        response_model=Outcome,
        responses=pending,
    )
    async def unschedule_message(
        who: Who, message_id: UUID, body: Annotated[EmptyBody | None, Body()] = None
    ) -> JSONResponse:
        return await run(
            who,
            body or EmptyBody(),
            lambda c: UnscheduleMessage(command_id=c, message_id=message_id),
        )

    @router.post(
        "/messages/{message_id}/discard",
        summary="Discard a draft",
        description="Final: the draft leaves the Drafts list and is never sent (its history "
        "stays). Only in draft. No body, or `{}`.",
        response_model=Outcome,
        responses=pending,
    )
    async def discard_draft(
        who: Who, message_id: UUID, body: Annotated[EmptyBody | None, Body()] = None
    ) -> JSONResponse:
        return await run(
            who,
            body or EmptyBody(),
            lambda c: DiscardDraft(command_id=c, message_id=message_id),
        )

    @router.post(
        "/messages/{message_id}/pause",
        summary="Pause a sending message",
        description="No further recipient is released; sends already handed to the mail "
        'transport finish. Body optional: `{"reason": ...}`.',
        response_model=Outcome,
        responses=pending,
    )
    async def pause_message(
        who: Who, message_id: UUID, body: Annotated[ReasonBody | None, Body()] = None
    ) -> JSONResponse:
        given = body or ReasonBody()
        return await run(
            who,
            given,
            lambda c: PauseMessage(command_id=c, message_id=message_id, reason=given.reason),
        )

    @router.post(
        "/messages/{message_id}/resume",
        summary="Resume a paused message",
        description="Sending continues (missed zones and throttle slots: see the product "
        "rules). No body, or `{}`.",
        response_model=Outcome,
        responses=pending,
    )
    async def resume_message(
        who: Who, message_id: UUID, body: Annotated[EmptyBody | None, Body()] = None
    ) -> JSONResponse:
        return await run(
            who,
            body or EmptyBody(),
            lambda c: ResumeMessage(command_id=c, message_id=message_id),
        )

    @router.post(
        "/messages/{message_id}/cancel",
        summary="Cancel a scheduled, sending or paused message for good",
        description='Final: nothing more is released. Body optional: `{"reason": ...}`.',
        response_model=Outcome,
        responses=pending,
    )
    async def cancel_message(
        who: Who, message_id: UUID, body: Annotated[ReasonBody | None, Body()] = None
    ) -> JSONResponse:
        given = body or ReasonBody()
        return await run(
            who,
            given,
            lambda c: CancelMessage(command_id=c, message_id=message_id, reason=given.reason),
        )

    @router.post(
        "/messages/{message_id}/copy",
        status_code=201,
        summary="Copy any message as a new draft",
        description="The copy has the same content, plan and audience; with "
        "`exclude_delivered` every contact that may have received the original is excluded. "
        "`new_message_id` (and Location) name the copy; it is derived from the "
        "Idempotency-Key, so a retry never makes a second copy.",
        response_model=Outcome,
        responses=pending,
    )
    async def copy_message(
        who: Who, message_id: UUID, body: Annotated[CopyBody | None, Body()] = None
    ) -> JSONResponse:
        given = body or CopyBody()
        return await run(
            who,
            given,
            lambda c: CopyMessage(
                command_id=c,
                message_id=message_id,
                new_message_id=created_message_id(c, "copy"),
                exclude_delivered=given.exclude_delivered,
            ),
            created=True,
            new_message_id=lambda c: created_message_id(c, "copy"),
        )

    @router.post(
        "/messages/{message_id}/recipients",
        summary=f"Add a chunk of up to {MAX_CHUNK} recipients",
        description=f"In draft, scheduled, sending or paused. At most {MAX_CHUNK} contacts per "
        "request (more: 422 on `contacts`), and the command must fit one Kafka record (else "
        "413). The answer's `audience` says what happened to each contact: added, updated "
        "(pending ones with new data), already present, duplicate in chunk, duplicate address, "
        "refused (released ones with new data, with the reason).",
        response_model=Outcome,
        responses=pending,
    )
    async def add_recipients(who: Who, message_id: UUID, body: AddRecipientsBody) -> JSONResponse:
        return await run(
            who,
            body,
            lambda c: AddRecipients(
                command_id=c, message_id=message_id, contacts=tuple(body.contacts)
            ),
        )

    @router.delete(
        "/messages/{message_id}/recipients",
        summary=f"Remove a chunk of up to {MAX_CHUNK} recipients",
        description="By contact id, with a JSON body. Only pending contacts are removed; "
        "removing one already released or sent changes nothing that happened.",
        response_model=Outcome,
        responses=pending,
    )
    async def remove_recipients(
        who: Who, message_id: UUID, body: RemoveRecipientsBody
    ) -> JSONResponse:
        return await run(
            who,
            body,
            lambda c: RemoveRecipients(
                command_id=c, message_id=message_id, contact_ids=tuple(body.contact_ids)
            ),
        )

    @router.get(
        "/commands/{command_id}",
        tags=["commands"],
        summary="The outcome of a command (after a 202)",
        description="`pending` until the processor's result is stored, then `done` with the "
        "HTTP status and body the command's request would have been answered with. 404 for a "
        "command of another account.",
        response_model=CommandStatus,
    )
    async def command_outcome(account_id: Account, command_id: UUID) -> CommandStatus:
        claim = await store.outcome(account_id, command_id)
        if claim is None:
            raise ProblemError(Problem(code="not_found", message=f"command {command_id} not found"))
        if claim.response_status is None:
            return CommandStatus(
                command_id=command_id, message_id=claim.message_id, state="pending"
            )
        return CommandStatus(
            command_id=command_id,
            message_id=claim.message_id,
            state="done",
            http_status=claim.response_status,
            response=claim.response_body,
        )

    return router
