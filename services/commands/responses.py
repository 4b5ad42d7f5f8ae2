"""The answers of the command endpoints: an accepted command, a pending one, a command's stored
outcome, and how a processor's result becomes an HTTP status and body (docs/api.md)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from schemas.wire import CommandResult, EventRef
from services.commands.audience_answer import AudienceAnswer
from services.commands.errors import http_status, problem_of

__all__ = ["CommandStatus", "Outcome", "Pending", "headers_for", "render"]


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
