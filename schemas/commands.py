"""Commands: what people and services ask the message to do (imperative names).

Each command has a literal ``type`` that never changes and a ``schema_version``. The acting actor
and the clock are not part of a command: the shell knows them (authentication, its clock) and hands
them to the core in a context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from schemas.base import MAX_CHUNK, CommandBase, Record
from schemas.text import ONE_LINE
from schemas.times import LocalDateTime, SendInstant
from schemas.values import (
    Contact,
    ContactId,
    ContactRef,
    Content,
    DeliveryPlan,
    EmailAddress,
    FailedRecipient,
    ReturnedSend,
    between_members,
)

__all__ = [
    "AddRecipients",
    "CancelMessage",
    "Command",
    "CopyMessage",
    "CreateDraft",
    "DiscardDraft",
    "DraftPatch",
    "EditDraft",
    "PauseMessage",
    "Reason",
    "RecordDeliveryOutcomes",
    "RemoveRecipients",
    "ResumeMessage",
    "ScheduleMessage",
    "SendTestMessage",
    "SendTime",
    "UnscheduleMessage",
]


#: Why an operator paused or canceled: one line, shown in the history and the pause details.
Reason = Annotated[str, Field(max_length=1000), ONE_LINE]


def _plan_rules(patch: Any) -> Any:
    """DeliveryPlan's own rule on what a plan patch gives itself (a patch naming both the mode
    and a throttle): refused at the edge like a whole plan; the rest is checked on the result."""
    throttle = getattr(patch, "throttle", None)
    if getattr(patch, "mode", None) == "recipient_timezone" and throttle is not None:
        raise between_members("throttle is only available in fixed delivery mode")
    rate = getattr(patch, "release_rate", None)
    size = getattr(throttle, "batch_size", None)
    interval = getattr(throttle, "interval_seconds", None)
    if rate is not None and size is not None and interval is not None and size > rate * interval:
        raise between_members(
            "throttle.batch_size cannot be released within interval_seconds "
            "at release_rate recipients per second"
        )
    return patch


class _Given(Record):
    """A patch: it serializes only the members given (a null given stays, it removes), so the
    patch that travels in the command (JSON on Kafka) means what the client sent; dumping every
    field would turn each member not given into a null, which removes it."""

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {name: value for name, value in data.items() if name in self.model_fields_set}


def _not_null(schema: dict[str, Any]) -> None:
    """A patch member that cannot be null (a required member, or the content itself): the
    schema states the type alone, without null and without the default of `None`."""
    kinds = [k for k in schema.pop("anyOf", []) if k != {"type": "null"}]
    if len(kinds) == 1:
        schema.update(kinds[0])
    elif kinds:
        schema["anyOf"] = kinds
    schema.pop("default", None)


def _partial(model: type[Record], rules: Any = None) -> type[Record]:
    """``model`` with every field optional and no model-level rule: the members a merge patch
    may give, each checked with its field's own type and rules (a nested model is partial too).
    What the members make together is checked on the merged result (core/patch.py)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        nested = [a for a in get_args(annotation) or (annotation,) if _is_record(a)]
        if nested:
            annotation = _partial(nested[0])
        elif info.metadata:
            annotation = Annotated[annotation, *info.metadata]
        # The field's own schema words (`format: email` ...) stay in the document.
        fields[name] = (
            annotation | None,
            Field(
                default=None,
                description=info.description,
                json_schema_extra=info.json_schema_extra,
            ),
        )
    # A required member can be changed, not removed: null is not schema-valid for it (the core
    # refuses the result without it, core/patch.py), only for a member with a default.
    required = [name for name, info in model.model_fields.items() if info.is_required()]

    def no_null_for_required(schema: dict[str, Any], _: Any) -> None:
        for name in required:
            _not_null(schema["properties"][name])

    def kept(value: Any) -> Any:
        if value is None:
            raise ValueError("a required member can be changed, not removed (null)")
        return value

    validators: dict[str, Any] = {}
    if required:
        validators["kept"] = field_validator(*required, mode="before")(kept)
    if rules:
        validators["rules"] = model_validator(mode="after")(rules)

    class Base(_Given):
        model_config = ConfigDict(json_schema_extra=no_null_for_required)

    partial: type[Record] = create_model(
        f"{model.__name__}Patch",
        __base__=Base,
        __doc__=f"Members of {model.__name__} to change; null: back to the default.",
        __validators__=validators,
        **fields,
    )
    return partial


def _is_record(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Record)


if TYPE_CHECKING:  # built at run time: to the type checker, records
    ContentPatch = Record
    PlanPatch = Record
else:
    ContentPatch = _partial(Content)
    PlanPatch = _partial(DeliveryPlan, _plan_rules)


class DraftPatch(_Given):
    """A partial edit of a draft as a JSON merge patch (RFC 7396) of ``{"content": ..., "plan":
    ...}``: only the members given change, a member set to null goes back to its default. Each
    given member is checked with its field's rules here; the core applies the patch to the
    draft it holds and validates the result whole (core/patch.py). One rule for the command and
    for the API's PATCH body (services/commands/bodies.py)."""

    #: Not nullable: a draft keeps its content.
    content: ContentPatch | None = Field(default=None, json_schema_extra=_not_null)
    #: `null` sets the whole plan back to its defaults (RFC 7396: the member is removed).
    plan: PlanPatch | None = None

    @model_validator(mode="after")
    def _something(self) -> DraftPatch:
        if "content" in self.model_fields_set and self.content is None:
            raise ValueError("a draft keeps its content: give the members to change")
        if not self.model_fields_set & {"content", "plan"}:
            raise ValueError("an edit changes content, plan or both")
        return self

    def members(self) -> dict[str, Any]:
        """The patch as JSON, only what was given (explicit nulls kept: they remove)."""
        given: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True)
        return given


class SendTime(Record):
    """When to send: exactly one of ``send_at`` (an instant), ``send_at_local`` (a wall-clock
    time) and ``send_now``. One rule for the command and for the API's request body."""

    send_at: SendInstant | None = None
    send_at_local: LocalDateTime | None = None
    send_now: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _one_time(self) -> SendTime:
        given = (self.send_at is not None) + (self.send_at_local is not None) + self.send_now
        if given != 1:
            raise ValueError("give exactly one of send_at, send_at_local, send_now")
        return self


class CreateDraft(CommandBase):
    """Create a new draft with its content and delivery plan."""

    type: Literal["CreateDraft"] = "CreateDraft"
    schema_version: Literal[1] = 1
    content: Content
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)


class EditDraft(CommandBase):
    """Change a draft: replace its content and/or plan (only what is given changes), or apply a
    merge patch to them (``patch``)."""

    type: Literal["EditDraft"] = "EditDraft"
    schema_version: Literal[1] = 1
    content: Content | None = None
    plan: DeliveryPlan | None = None
    patch: DraftPatch | None = None

    @model_validator(mode="after")
    def _something(self) -> EditDraft:
        whole = self.content is not None or self.plan is not None
        if whole == (self.patch is not None):
            raise ValueError("an edit changes content, plan or both (whole, or as a patch)")
        return self


class ScheduleMessage(SendTime, CommandBase):
    """Schedule a draft: at an instant, at a local wall-clock time, or now.

    Exactly one of ``send_at`` (an instant), ``send_at_local`` (a wall-clock time read in the
    account's default zone, or in each recipient's zone in ``recipient_timezone`` mode) and
    ``send_now`` is given.
    """

    type: Literal["ScheduleMessage"] = "ScheduleMessage"
    schema_version: Literal[1] = 1


class UnscheduleMessage(CommandBase):
    """Take a scheduled message that has not started back to draft."""

    type: Literal["UnscheduleMessage"] = "UnscheduleMessage"
    schema_version: Literal[1] = 1


class DiscardDraft(CommandBase):
    """Throw a draft away: it leaves the Drafts list for good (its history stays)."""

    type: Literal["DiscardDraft"] = "DiscardDraft"
    schema_version: Literal[1] = 1


class PauseMessage(CommandBase):
    """Stop releasing recipients of a sending message at once."""

    type: Literal["PauseMessage"] = "PauseMessage"
    schema_version: Literal[1] = 1
    reason: Reason | None = None


class ResumeMessage(CommandBase):
    """Continue sending a paused message."""

    type: Literal["ResumeMessage"] = "ResumeMessage"
    schema_version: Literal[1] = 1


class CancelMessage(CommandBase):
    """Stop a scheduled, sending or paused message for good."""

    type: Literal["CancelMessage"] = "CancelMessage"
    schema_version: Literal[1] = 1
    reason: Reason | None = None


class CopyMessage(CommandBase):
    """Copy any message as a new draft under ``new_message_id`` (chosen by the shell).

    With ``exclude_delivered`` the copy excludes every contact (by id and by normalized address)
    that may have received the original: released, delivered, or with an unknown outcome.
    """

    type: Literal["CopyMessage"] = "CopyMessage"
    schema_version: Literal[1] = 1
    new_message_id: UUID
    exclude_delivered: bool = False


class AddRecipients(CommandBase):
    """Add a chunk of contacts to the audience."""

    type: Literal["AddRecipients"] = "AddRecipients"
    schema_version: Literal[1] = 1
    contacts: tuple[Contact, ...] = Field(min_length=1, max_length=MAX_CHUNK)


class RemoveRecipients(CommandBase):
    """Remove a chunk of contacts (by id) from the audience."""

    type: Literal["RemoveRecipients"] = "RemoveRecipients"
    schema_version: Literal[1] = 1
    contact_ids: tuple[ContactId, ...] = Field(min_length=1, max_length=MAX_CHUNK)


class RecordDeliveryOutcomes(CommandBase):
    """Record what the mail transport answered for released recipients (from the delivery step)."""

    type: Literal["RecordDeliveryOutcomes"] = "RecordDeliveryOutcomes"
    schema_version: Literal[1] = 1
    # Contacts by reference (ContactRef): outcomes name contacts the history already holds,
    # whatever the text rules were when they came in.
    delivered: tuple[ContactRef, ...] = Field(default=(), max_length=MAX_CHUNK)
    failed: tuple[FailedRecipient, ...] = Field(default=(), max_length=MAX_CHUNK)
    unknown: tuple[ContactRef, ...] = Field(default=(), max_length=MAX_CHUNK)
    #: Sends not handed to SMTP because of a pause or cancel: back to the message, not sent.
    #: Optional with a default, so records written before it existed read the same.
    returned: tuple[ReturnedSend, ...] = Field(default=(), max_length=MAX_CHUNK)

    @model_validator(mode="after")
    def _bounded(self) -> RecordDeliveryOutcomes:
        total = len(self.delivered) + len(self.failed) + len(self.unknown) + len(self.returned)
        if total == 0 or total > MAX_CHUNK:
            raise ValueError(f"between 1 and {MAX_CHUNK} outcomes per command")
        return self


class SendTestMessage(CommandBase):
    """Send the message as it stands (draft or scheduled) to a few test addresses.

    A test is outside the audience and the never-twice promise: it never counts among the
    recipients and changes nothing of the real send. The addresses are checked against the
    account's allowed test addresses by the shell (a Postgres list); ``contact_id`` optionally
    names an audience contact whose merge data the test renders.
    """

    type: Literal["SendTestMessage"] = "SendTestMessage"
    schema_version: Literal[1] = 1
    addresses: tuple[EmailAddress, ...] = Field(min_length=1, max_length=10)
    contact_id: ContactId | None = None


Command = Annotated[
    CreateDraft
    | EditDraft
    | ScheduleMessage
    | UnscheduleMessage
    | DiscardDraft
    | PauseMessage
    | ResumeMessage
    | CancelMessage
    | CopyMessage
    | AddRecipients
    | RemoveRecipients
    | RecordDeliveryOutcomes
    | SendTestMessage,
    Field(discriminator="type"),
]
