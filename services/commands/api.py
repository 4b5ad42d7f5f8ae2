"""The command endpoints: each request becomes one command record for the processor, and the
answer is the command's result (docs/api.md).

No `from __future__ import annotations`: FastAPI reads these annotations at run time, and they
name dependencies that only exist inside `command_routes`.
"""

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4, uuid5

import structlog
from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NaiveDatetime

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
    EditDraft,
    PauseMessage,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    UnscheduleMessage,
)
from schemas.values import ContactId
from schemas.wire import CommandRecord, CommandResult, EventRef
from services.commands.bus import KafkaCommandBus
from services.commands.store import IdempotencyStore

log = structlog.get_logger(__name__)

# Command ids and new message ids are derived from (account, Idempotency-Key) in this namespace,
# so a retry names the same command and the same new message.
ID_NAMESPACE = UUID("0b5c3f0e-6f2a-4c8e-9d1b-7a4e2c9f3d61")

#: How a rejection's code becomes an HTTP status: the one place of this mapping.
REJECTION_STATUS = {"not_found": 404, "not_allowed": 409, "already_exists": 409, "invalid": 422}

# How long the API keeps waiting, in the background, for a result it answered 202 for.
BACKGROUND_WAIT_S = 600.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateMessageBody(Strict):
    content: Content
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)


class EditMessageBody(Strict):
    content: Content | None = None
    plan: DeliveryPlan | None = None


class ScheduleBody(Strict):
    """Exactly one of: `send_at` (an instant with its offset), `send_at_local` (a wall-clock
    time, read in each recipient's zone in recipient_timezone mode, else in the account's zone),
    `send_now`."""

    send_at: AwareDatetime | None = None
    send_at_local: NaiveDatetime | None = None
    send_now: bool = False


class ReasonBody(Strict):
    reason: str | None = Field(default=None, max_length=1000)


class CopyBody(Strict):
    exclude_delivered: bool = False


class AddRecipientsBody(Strict):
    contacts: list[Contact] = Field(min_length=1, max_length=MAX_CHUNK)


class RemoveRecipientsBody(Strict):
    contact_ids: list[ContactId] = Field(min_length=1, max_length=MAX_CHUNK)


class Outcome(BaseModel):
    """A decided command: the message's status and last event sequence number after it."""

    command_id: UUID
    message_id: UUID
    outcome: str
    status: str | None
    sequence: int
    events: list[EventRef]


class Pending(BaseModel):
    command_id: UUID
    message_id: UUID
    state: str = "pending"
    status_url: str


class Problem(BaseModel):
    code: str
    message: str
    status: str | None = None
    allowed: list[str] | None = None
    field: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or a malformed, unknown or revoked one."},
    404: {"description": "No such message in this account.", "model": Problem},
    409: {
        "description": "Not allowed in the message's status (names it and what is allowed).",
        "model": Problem,
    },
    422: {
        "description": "Invalid input (names the field), or an Idempotency-Key reused with "
        "another request.",
        "model": Problem,
    },
}


def render(result: CommandResult, created: bool) -> tuple[int, dict[str, Any]]:
    """A command's result as the HTTP status and body the API answers with."""
    if result.outcome == "rejected" and result.rejection is not None:
        problem = Problem(
            code=result.rejection.code,
            message=result.rejection.message,
            status=result.rejection.status,
            allowed=list(result.rejection.allowed) if result.rejection.allowed else None,
            field=result.rejection.field,
        )
        return REJECTION_STATUS[result.rejection.code], {"detail": problem.model_dump()}
    body = Outcome(
        command_id=result.command_id,
        message_id=result.message_id,
        outcome=result.outcome,
        status=result.status,
        sequence=result.sequence,
        events=list(result.events),
    )
    return (201 if created else 200), body.model_dump(mode="json")


def fingerprint(request: Request, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.url.path}\n{canonical}".encode()).hexdigest()


def command_routes(
    account: Callable[..., Awaitable[str]],
    bus: Callable[[], KafkaCommandBus],
    store: Callable[[], Awaitable[IdempotencyStore]],
    wait_s: float,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["commands"], responses=ERRORS)
    background: set[asyncio.Task[None]] = set()
    Account = Annotated[str, Depends(account)]
    IdempotencyKey = Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Makes retries safe: the same key and body return the first outcome "
            "and change nothing; the same key with another body is refused (422).",
        ),
    ]
    ActorUser = Annotated[
        str | None,
        Header(
            alias="X-Actor-User",
            min_length=1,
            max_length=200,
            description="The operator acting (shown in the history); without it the actor is "
            "the calling service.",
        ),
    ]

    async def execute(
        request: Request,
        account_id: str,
        key: str | None,
        user: str | None,
        body: Any,
        build: Callable[[UUID, UUID], Command],
        message_id: UUID | None,
        created: bool = False,
    ) -> JSONResponse:
        command_id = uuid5(ID_NAMESPACE, f"{account_id}\n{key}") if key else uuid4()
        if message_id is None:  # a new message: its id follows the command's
            message_id = uuid5(ID_NAMESPACE, f"{command_id}\nmessage")
        command = build(command_id, message_id)
        ids = await store()
        claim = await ids.claim(
            account_id,
            key or f"auto:{command_id}",
            fingerprint(request, body),
            command_id,
            message_id,
        )
        if claim.fingerprint != fingerprint(request, body):
            raise HTTPException(
                422,
                Problem(
                    code="invalid",
                    message="this Idempotency-Key was used with another request",
                    field="Idempotency-Key",
                ).model_dump(),
            )
        if claim.response_status is not None:
            return JSONResponse(claim.response_body, status_code=claim.response_status)
        actor = (
            Actor(kind="user", account_id=account_id, user_id=user)
            if user
            else Actor(kind="service", account_id=account_id, service="api")
        )
        record = CommandRecord(
            command=command,
            actor=actor,
            issued_at=datetime.now(UTC),
            correlation_id=command_id,
            default_time_zone=await ids.default_time_zone(account_id),
        )
        commands = bus()
        future = commands.expect(record)
        await commands.publish(record)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), wait_s)
        except TimeoutError:
            task = asyncio.create_task(_answer_later(ids, record, future, created))
            background.add(task)
            task.add_done_callback(background.discard)
            pending = Pending(
                command_id=command_id,
                message_id=message_id,
                status_url=f"/v1/commands/{command_id}",
            )
            return JSONResponse(
                pending.model_dump(mode="json"),
                status_code=202,
                headers={"Location": pending.status_url},
            )
        status, payload = render(result, created)
        await ids.answer(command_id, status, payload)
        log.info(
            "command answered",
            command_id=str(command_id),
            message_id=str(message_id),
            command_type=command.type,
            http_status=status,
        )
        return JSONResponse(payload, status_code=status)

    async def _answer_later(
        ids: IdempotencyStore,
        record: CommandRecord,
        future: "asyncio.Future[CommandResult]",
        created: bool,
    ) -> None:
        try:
            result = await asyncio.wait_for(future, BACKGROUND_WAIT_S)
        except TimeoutError:
            bus().forget(record, future)
            return
        status, payload = render(result, created)
        await ids.answer(record.command.command_id, status, payload)

    @router.post("/messages", status_code=201, summary="Create a draft", response_model=Outcome)
    async def create_message(
        request: Request,
        account_id: Account,
        body: CreateMessageBody,
        key: IdempotencyKey = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        return await execute(
            request,
            account_id,
            key,
            user,
            body.model_dump(mode="json"),
            lambda c, m: CreateDraft(
                command_id=c, message_id=m, content=body.content, plan=body.plan
            ),
            None,
            created=True,
        )

    @router.patch("/messages/{message_id}", summary="Edit a draft", response_model=Outcome)
    async def edit_message(
        request: Request,
        account_id: Account,
        message_id: UUID,
        body: EditMessageBody,
        key: IdempotencyKey = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        return await execute(
            request,
            account_id,
            key,
            user,
            body.model_dump(mode="json"),
            lambda c, m: EditDraft(
                command_id=c, message_id=m, content=body.content, plan=body.plan
            ),
            message_id,
        )

    @router.put(
        "/messages/{message_id}/schedule",
        summary="Schedule a draft, or send it now",
        response_model=Outcome,
    )
    async def schedule_message(
        request: Request,
        account_id: Account,
        message_id: UUID,
        body: ScheduleBody,
        key: IdempotencyKey = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        return await execute(
            request,
            account_id,
            key,
            user,
            body.model_dump(mode="json"),
            lambda c, m: ScheduleMessage(command_id=c, message_id=m, **body.model_dump()),
            message_id,
        )

    def simple(path: str, summary: str, make: Callable[[UUID, UUID, str | None], Command]) -> None:
        @router.post(f"/messages/{{message_id}}/{path}", summary=summary, response_model=Outcome)
        async def endpoint(
            request: Request,
            account_id: Account,
            message_id: UUID,
            body: Annotated[ReasonBody | None, Body()] = None,
            key: IdempotencyKey = None,
            user: ActorUser = None,
        ) -> JSONResponse:
            given = body or ReasonBody()
            return await execute(
                request,
                account_id,
                key,
                user,
                given.model_dump(mode="json"),
                lambda c, m: make(c, m, given.reason),
                message_id,
            )

        endpoint.__name__ = f"{path}_message"

    simple(
        "unschedule",
        "Take a scheduled message back to draft",
        lambda c, m, _: UnscheduleMessage(command_id=c, message_id=m),
    )
    simple(
        "pause",
        "Pause a sending message",
        lambda c, m, r: PauseMessage(command_id=c, message_id=m, reason=r),
    )
    simple(
        "resume",
        "Resume a paused message",
        lambda c, m, _: ResumeMessage(command_id=c, message_id=m),
    )
    simple(
        "cancel",
        "Cancel a scheduled, sending or paused message for good",
        lambda c, m, r: CancelMessage(command_id=c, message_id=m, reason=r),
    )

    @router.post(
        "/messages/{message_id}/copy",
        status_code=201,
        summary="Copy as a new draft",
        response_model=Outcome,
    )
    async def copy_message(
        request: Request,
        account_id: Account,
        message_id: UUID,
        body: Annotated[CopyBody | None, Body()] = None,
        key: IdempotencyKey = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        given = body or CopyBody()
        new_id: dict[str, UUID] = {}

        def build(c: UUID, m: UUID) -> Command:
            new_id["id"] = uuid5(ID_NAMESPACE, f"{c}\ncopy")
            return CopyMessage(
                command_id=c,
                message_id=m,
                new_message_id=new_id["id"],
                exclude_delivered=given.exclude_delivered,
            )

        response = await execute(
            request,
            account_id,
            key,
            user,
            given.model_dump(mode="json"),
            build,
            message_id,
            created=True,
        )
        if response.status_code == 201:
            response.headers["Location"] = f"/v1/messages/{new_id['id']}"
        return response

    @router.post(
        "/messages/{message_id}/recipients",
        summary=f"Add a chunk of up to {MAX_CHUNK} recipients",
        response_model=Outcome,
    )
    async def add_recipients(
        request: Request,
        account_id: Account,
        message_id: UUID,
        body: AddRecipientsBody,
        key: IdempotencyKey = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        return await execute(
            request,
            account_id,
            key,
            user,
            body.model_dump(mode="json"),
            lambda c, m: AddRecipients(command_id=c, message_id=m, contacts=tuple(body.contacts)),
            message_id,
        )

    @router.delete(
        "/messages/{message_id}/recipients",
        summary=f"Remove a chunk of up to {MAX_CHUNK} recipients",
        response_model=Outcome,
    )
    async def remove_recipients(
        request: Request,
        account_id: Account,
        message_id: UUID,
        body: RemoveRecipientsBody,
        key: IdempotencyKey = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        return await execute(
            request,
            account_id,
            key,
            user,
            body.model_dump(mode="json"),
            lambda c, m: RemoveRecipients(
                command_id=c, message_id=m, contact_ids=tuple(body.contact_ids)
            ),
            message_id,
        )

    @router.get("/commands/{command_id}", summary="The outcome of a command (after a 202)")
    async def command_outcome(account_id: Account, command_id: UUID) -> JSONResponse:
        claim = await (await store()).outcome(account_id, command_id)
        if claim is None:
            raise HTTPException(
                404,
                Problem(code="not_found", message=f"command {command_id} not found").model_dump(),
            )
        if claim.response_status is None:
            pending = Pending(
                command_id=command_id,
                message_id=claim.message_id,
                status_url=f"/v1/commands/{command_id}",
            )
            return JSONResponse(pending.model_dump(mode="json"))
        return JSONResponse(
            {"state": "done", "http_status": claim.response_status, "response": claim.response_body}
        )

    return router
