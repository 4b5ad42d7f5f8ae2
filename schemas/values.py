"""Value objects used inside commands and events: contacts, content and the delivery plan."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import idna
from pydantic import (
    AfterValidator,
    Field,
    TypeAdapter,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.base import JSON_INT, JsonInt, Record
from schemas.text import ONE_LINE, TEXT, breaks_one_line, breaks_text, first_unsafe, is_stored
from schemas.times import SendInstant

__all__ = [
    "BETWEEN_MEMBERS",
    "IN_FLIGHT_SECONDS",
    "AttributeValue",
    "Contact",
    "ContactId",
    "ContactRef",
    "Content",
    "DeliveryMode",
    "DeliveryPlan",
    "EmailAddress",
    "FailedRecipient",
    "MissedZonePolicy",
    "OneLine",
    "ReturnedSend",
    "SkipReason",
    "Throttle",
    "TimeZoneName",
    "between_members",
    "is_valid_time_zone",
    "normalize_address",
]

# A deliberately plain syntactic check: one "@", a local part without whitespace or the specials
# that would need quoting (any other Unicode is allowed: RFC 6531 internationalized addresses such
# as zoë@example.org), and a dotted domain of DNS-like labels, checked on its A-label (punycode)
# form so that IDN domains (bücher.example) are valid too. Deliverability is the transport's
# business; no lookup happens here (no I/O in schemas). Control characters are the text rule's
# business (schemas/text.py): this pattern must keep accepting what old histories hold.
_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]]{1,64}$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$"
)
# The common case in one expression (an ASCII address, checked at input: no control character
# either, surrounding spaces stripped): audiences come 10,000 contacts a command.
_ASCII_INPUT = re.compile(
    r"^ *([^\s@\"(),:;<>\[\\\]\x00-\x1f\x7f]{1,64}@"
    r"(?=[A-Za-z0-9.-]{1,253} *$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9-]{2,63}) *$"
)


def normalize_address(email: str) -> str:
    """The form two addresses are compared in for dedupe and exclusion: stripped, lower-cased."""
    return email.strip().lower()


@lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str | None:
    """The domain as DNS knows it: itself when ASCII, else its IDNA 2008 A-label form
    (``bücher.example`` -> ``xn--bcher-kva.example``); None when it is no valid IDN."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def _check_email(value: str, info: ValidationInfo) -> str:
    stored = is_stored(info)
    if not stored:
        if value.isascii() and len(value) <= 254 and (fast := _ASCII_INPUT.match(value)):
            return fast.group(1)
        if breaks_one_line(value) is not None:
            raise ValueError(first_unsafe(value, multiline=False))
    value = value.strip()
    local, at, domain = value.rpartition("@")
    ascii_form = ascii_domain(domain) if at and local else None
    if (
        len(value) > 254
        or ascii_form is None
        or _LOCAL.match(local) is None
        or _DOMAIN.match(ascii_form) is None
    ):
        raise ValueError("not a syntactically valid email address")
    return value


#: The IANA zone names: those of the pinned tzdata package (its `zones` list), the same on every
#: machine, so the document's enum and the check agree whatever the host's /usr/share/zoneinfo
#: holds (a host's extra files such as `posix/...` or `localtime` are not zones of the API).
ZONE_NAMES: tuple[str, ...] = tuple(
    sorted(files("tzdata").joinpath("zones").read_text(encoding="utf-8").split())
)
_ZONES = frozenset(ZONE_NAMES)


@lru_cache(maxsize=1024)
def is_valid_time_zone(name: str) -> bool:
    """True when ``name`` is an IANA zone of tzdata's list, e.g. ``Europe/London``."""
    if name not in _ZONES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=1024)
def _loads_as_zone(name: str) -> bool:
    """The rule before the zones were tzdata's list: any name zoneinfo loads."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_zone(value: str, info: ValidationInfo) -> str:
    if is_stored(info) and _loads_as_zone(value):
        # A record read back from the log was accepted under the rule of its day: a zone the
        # host's zoneinfo loads. Refusing it now would make its partition impossible to fold.
        return value
    if not is_valid_time_zone(value):
        # No zone name holds a control character, so the one-line rule needs no check of its
        # own on the way in (a validator call less per contact); it only words the refusal.
        reason = first_unsafe(value, multiline=False)
        raise ValueError(reason or f"unknown IANA time zone {value!r}")
    return value


#: One line of text (schemas/text.py): no control character, no line break.
OneLine = Annotated[str, ONE_LINE]
EmailAddress = Annotated[
    str,
    Field(min_length=3, max_length=300, json_schema_extra={"format": "email"}),
    AfterValidator(_check_email),
]
#: An IANA zone name; the JSON Schema lists them (an enum), so a name the check refuses is not
#: schema-valid either.
TimeZoneName = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra={"enum": list(ZONE_NAMES)}),
    AfterValidator(_check_zone),
]
#: A contact id as the audience's owner gives it (one line).
ContactId = Annotated[str, Field(min_length=1, max_length=200), ONE_LINE]
#: A contact id the service refers to again (released, delivered, failed): it was checked when it
#: came in, and one from an old history must still be named, so no text rule applies here.
ContactRef = Annotated[str, Field(min_length=1, max_length=200)]
AttributeValue = str | int | float | bool | None


def _check_attributes(
    value: dict[str, AttributeValue], info: ValidationInfo
) -> dict[str, AttributeValue]:
    # One check over the mapping rather than validators inside the union: the error then names
    # the attribute instead of pydantic's union branches. The keys and the text values are each
    # tested as one string (the common case: nothing found); the culprit is looked for after.
    if not value or is_stored(info):
        return value
    if breaks_one_line("".join(value)) is None and not any(
        type(item) is str and breaks_text(item) for item in value.values()
    ):
        return value
    for key, item in value.items():
        reason = first_unsafe(key, multiline=False)
        if reason is not None:
            raise ValueError(f"attribute name {key!r} {reason}")
        if isinstance(item, str) and (reason := first_unsafe(item, multiline=True)) is not None:
            raise ValueError(f"attribute {key!r} {reason}")
    return value


def _attributes_schema(schema: dict[str, Any]) -> None:
    """The attributes' text rules in the document (`_check_attributes`): a name is one line, a
    text value has no control character but line breaks and tabs."""
    schema["propertyNames"] = {"pattern": _pattern(ONE_LINE)}
    values = schema.get("additionalProperties", {}).get("anyOf", [])
    for kind in values:
        if kind.get("type") == "string":
            kind["pattern"] = _pattern(TEXT)


def _pattern(rule: Any) -> str:
    pattern: str = TypeAdapter(Annotated[str, rule]).json_schema()["pattern"]
    return pattern


#: The error type of a rule between members that JSON Schema cannot state (a product of two
#: members, a member allowed only with another's value): each member is valid alone, so the API
#: answers 409 `conflict`, not 422 (services/commands/errors.py).
BETWEEN_MEMBERS = "conflict"


def between_members(message: str) -> PydanticCustomError:
    return PydanticCustomError(BETWEEN_MEMBERS, message)


DeliveryMode = Literal["fixed", "recipient_timezone"]
MissedZonePolicy = Literal["send_on_resume", "skip"]
#: Why a recipient was not released. Each reason is decided by the planner:
#: ``missed_zone_skip_policy``: their local send time fell inside a pause and the message's
#: missed-zone policy is ``skip``; ``end_date_passed``: the throttle's end date passed before their
#: turn; ``duplicate_address``: another contact with the same normalized address was released.
SkipReason = Literal["missed_zone_skip_policy", "end_date_passed", "duplicate_address"]


class Contact(Record):
    """A recipient: an id chosen by the audience's owner, an address, an optional zone, merge data.

    Recipients without a zone are sent at the account's default zone in ``recipient_timezone``
    mode.
    """

    contact_id: ContactId
    email: EmailAddress
    time_zone: TimeZoneName | None = None
    attributes: Annotated[dict[str, AttributeValue], AfterValidator(_check_attributes)] = Field(
        default_factory=dict, max_length=100, json_schema_extra=_attributes_schema
    )


class Content(Record):
    """What the message says. The bodies may contain merge fields such as ``{{first_name}}``.

    Two parts (docs/core.md, "Content: text and HTML bodies"): ``body`` is the text part and
    ``html_body`` the HTML part. A record without ``html_body`` (every record written before the
    field existed) keeps its old meaning: a single body, sent as HTML when its first non-blank
    character is ``<`` and as plain text otherwise (``core.render.parts``).
    """

    name: Annotated[str, Field(min_length=1, max_length=200), ONE_LINE]
    from_address: EmailAddress
    from_name: Annotated[str, Field(max_length=200), ONE_LINE] | None = None
    subject: Annotated[str, Field(min_length=1, max_length=998), ONE_LINE]
    body: Annotated[str, Field(max_length=2_000_000), TEXT] = ""
    html_body: Annotated[str, Field(max_length=2_000_000), TEXT] | None = None


class Throttle(Record):
    """Batches of ``batch_size`` recipients, one batch per ``interval_seconds`` from the send time.

    ``end_at``: no batch is released at or after it; recipients still pending then are skipped
    with reason ``end_date_passed``. It must lie after the send time (checked at scheduling, when
    the send time is known).
    """

    batch_size: JsonInt = Field(ge=1, le=1_000_000)
    interval_seconds: JsonInt = Field(
        ge=60, le=7 * 24 * 3600, description="at least 60 seconds, at most a week"
    )
    end_at: SendInstant | None = None


#: The default in-flight window, in seconds of the release rate (docs/delivery.md, "Flow control").
IN_FLIGHT_SECONDS = 5


class DeliveryPlan(Record):
    """How the message goes out (the send time itself comes with the schedule command).

    ``release_rate`` is the most recipients released per second of clock (the planner's drip), so
    a pause stops releases within one tick. Throttling is only offered in ``fixed`` mode (as
    Mailchimp offers batch delivery only without Timewarp): a batch spanning 38 time zones has no
    meaningful slot time. A batch must fit its interval at the release rate.
    """

    mode: DeliveryMode = "fixed"
    throttle: Throttle | None = Field(
        default=None,
        description="fixed mode only; throttle.batch_size must be releasable in one interval: "
        "at most release_rate * throttle.interval_seconds (else 422 naming plan)",
    )
    missed_zone_policy: MissedZonePolicy = "send_on_resume"
    release_rate: JsonInt = Field(default=1000, ge=1, le=10_000)
    #: The most recipients released and still awaiting their delivery outcome: the planner
    #: releases no more until outcomes come back, so releases follow what delivery achieves and
    #: the backlog of released sends stays small. Not given: IN_FLIGHT_SECONDS seconds of the
    #: release rate (written into the record, so a stored plan never changes meaning); ``None``
    #: (explicit, and in every plan stored before this default): no bound.
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000), JSON_INT] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_window(cls, data: object) -> object:
        """``max_in_flight`` not given: the default window, written into the record explicitly
        (so a stored plan never changes meaning when this default does)."""
        if not isinstance(data, dict) or "max_in_flight" in data:
            return data
        try:
            rate = int(data.get("release_rate", 1000))
        except (TypeError, ValueError):
            return data  # the field's own validation reports it
        if rate < 1:
            return data
        return {**data, "max_in_flight": min(1_000_000, IN_FLIGHT_SECONDS * rate)}

    @model_validator(mode="after")
    def _sane(self) -> DeliveryPlan:
        if self.throttle is not None:
            if self.mode != "fixed":
                raise between_members("throttle is only available in fixed delivery mode")
            if self.throttle.batch_size > self.release_rate * self.throttle.interval_seconds:
                raise between_members(
                    "throttle.batch_size cannot be released within interval_seconds "
                    "at release_rate recipients per second"
                )
        return self


class FailedRecipient(Record):
    """A permanent delivery failure for one recipient, with the transport's reason."""

    contact_id: ContactRef
    reason: Annotated[str, Field(min_length=1, max_length=1000), ONE_LINE]


class ReturnedSend(Record):
    """A released recipient the delivery worker did not hand to SMTP because the message was
    paused or canceled (the fence, docs/delivery.md). ``release`` is the sequence number of the
    ``RecipientsReleased`` event the send came from: a return for an older release of the same
    contact (already returned and released again) is ignored."""

    contact_id: ContactRef
    release: int = Field(ge=1)
