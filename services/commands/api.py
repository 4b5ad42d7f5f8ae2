"""The command routes: each request becomes one command for the processor (through the command
gateway, services/commands/gateway.py), and the answer is the command's result (docs/api.md).
Ids and idempotency: services/commands/ids.py; request bodies: bodies.py; answers: responses.py.

No `from __future__ import annotations`: FastAPI reads these annotations at run time, and they
name dependencies that only exist inside `command_routes`.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from schemas import (
    MAX_CHUNK,
    Actor,
    AddRecipients,
    CancelMessage,
    Command,
    CopyMessage,
    CreateDraft,
    DiscardDraft,
    EditDraft,
    PauseMessage,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    UnscheduleMessage,
)
from schemas.commands import DraftPatch
from schemas.values import OneLine
from services.commands.bodies import (
    AddRecipientsBody,
    CopyBody,
    CreateMessageBody,
    EditMessageBody,
    EmptyBody,
    ReasonBody,
    RemoveRecipientsBody,
    ScheduleBody,
)
from services.commands.errors import ERROR_RESPONSES, Problem, ProblemError
from services.commands.gateway import CommandRequest, Executor
from services.commands.ids import command_id_for, created_message_id
from services.commands.ports import IdempotencyStore
from services.commands.responses import CommandStatus, Outcome, Pending

__all__ = ["LIFECYCLE", "Caller", "Lifecycle", "command_routes"]

B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True)
class Lifecycle(Generic[B]):
    """A lifecycle route: `POST /v1/messages/{message_id}/<verb>` with an optional body, making
    one command from the command id, the message id and the body."""

    verb: str
    name: str  # the endpoint's name (and so its OpenAPI operation id)
    summary: str
    description: str
    body: type[B]
    make: Callable[[UUID, UUID, B], Command]


#: The lifecycle routes, one table: every row is served the same way (`command_routes`).
LIFECYCLE: tuple[Lifecycle[Any], ...] = (
    Lifecycle(
        "unschedule",
        "unschedule_message",
        "Take a scheduled message back to draft",
        "Only before it started sending. No body, or `{}`.",
        EmptyBody,
        lambda c, m, _: UnscheduleMessage(command_id=c, message_id=m),
    ),
    Lifecycle(
        "discard",
        "discard_draft",
        "Discard a draft",
        "Final: the draft leaves the Drafts list and is never sent (its history stays). Only "
        "in draft. No body, or `{}`.",
        EmptyBody,
        lambda c, m, _: DiscardDraft(command_id=c, message_id=m),
    ),
    Lifecycle(
        "pause",
        "pause_message",
        "Pause a sending message",
        "No further recipient is released; sends already handed to the mail transport finish. "
        'Body optional: `{"reason": ...}`.',
        ReasonBody,
        lambda c, m, body: PauseMessage(command_id=c, message_id=m, reason=body.reason),
    ),
    Lifecycle(
        "resume",
        "resume_message",
        "Resume a paused message",
        "Sending continues (missed zones and throttle slots: see the product rules). No body, "
        "or `{}`.",
        EmptyBody,
        lambda c, m, _: ResumeMessage(command_id=c, message_id=m),
    ),
    Lifecycle(
        "cancel",
        "cancel_message",
        "Cancel a scheduled, sending or paused message for good",
        'Final: nothing more is released. Body optional: `{"reason": ...}`.',
        ReasonBody,
        lambda c, m, body: CancelMessage(command_id=c, message_id=m, reason=body.reason),
    ),
)


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
                body=body,  # fingerprinted as its canonical JSON (ids.fingerprint)
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
        description="A JSON merge patch (RFC 7396; `application/merge-patch+json` or "
        "`application/json`) of the draft's content and plan: only the members given change, "
        '`{"content": {"subject": "New"}}` changes the subject alone; a member set to null goes '
        "back to its default. The result is validated whole (422 naming the field, e.g. "
        "`content.from_address`). 409 in any status but draft. An edit that changes nothing is "
        "accepted without events.",
        response_model=Outcome,
        responses=pending,
    )
    async def edit_message(who: Who, message_id: UUID, body: EditMessageBody) -> JSONResponse:
        return await run(
            who,
            body,
            lambda c: EditDraft(
                command_id=c,
                message_id=message_id,
                patch=DraftPatch.model_validate(body.model_dump(exclude_unset=True)),
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

    def lifecycle_endpoint(row: Lifecycle[Any]) -> Callable[..., Awaitable[JSONResponse]]:
        async def endpoint(who: Who, message_id: UUID, body: Any = None) -> JSONResponse:
            given = body or row.body()
            return await run(who, given, lambda c: row.make(c, message_id, given))

        # The body's model is the row's: FastAPI reads it from the annotation.
        endpoint.__annotations__["body"] = Annotated[row.body | None, Body()]
        return endpoint

    for row in LIFECYCLE:
        router.add_api_route(
            f"/messages/{{message_id}}/{row.verb}",
            lifecycle_endpoint(row),
            methods=["POST"],
            name=row.name,
            summary=row.summary,
            description=row.description,
            response_model=Outcome,
            responses=pending,
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
