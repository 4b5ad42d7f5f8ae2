"""Value objects used inside commands and events: contacts, content and the delivery plan."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, Field, model_validator

from schemas.base import Record

__all__ = [
    "IN_FLIGHT_SECONDS",
    "Contact",
    "ContactId",
    "Content",
    "DeliveryMode",
    "DeliveryPlan",
    "EmailAddress",
    "FailedRecipient",
    "MissedZonePolicy",
    "ReturnedSend",
    "SkipReason",
    "Throttle",
    "TimeZoneName",
    "is_valid_time_zone",
    "normalize_address",
]

# A deliberately plain syntactic check: one "@", no whitespace, a dotted domain of DNS-like labels.
# Deliverability is the transport's business; no lookup happens here (no I/O in schemas).
_EMAIL = re.compile(
    r"^[^\s@\"(),:;<>\[\\\]]{1,64}@"
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9-]{2,63}$"
)


def normalize_address(email: str) -> str:
    """The form two addresses are compared in for dedupe and exclusion: stripped, lower-cased."""
    return email.strip().lower()


def _check_email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or _EMAIL.match(value) is None:
        raise ValueError("not a syntactically valid email address")
    return value


@lru_cache(maxsize=1024)
def is_valid_time_zone(name: str) -> bool:
    """True when ``name`` is an IANA zone known to zoneinfo (tzdata), e.g. ``Europe/London``."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_zone(value: str) -> str:
    if not is_valid_time_zone(value):
        raise ValueError(f"unknown IANA time zone {value!r}")
    return value


EmailAddress = Annotated[str, Field(min_length=3, max_length=300), AfterValidator(_check_email)]
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_zone)]
ContactId = Annotated[str, Field(min_length=1, max_length=200)]
AttributeValue = str | int | float | bool | None

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
    attributes: dict[str, AttributeValue] = Field(default_factory=dict, max_length=100)


class Content(Record):
    """What the message says. The body may contain merge fields such as ``{{first_name}}``."""

    name: str = Field(min_length=1, max_length=200)
    from_address: EmailAddress
    from_name: str | None = Field(default=None, max_length=200)
    subject: str = Field(min_length=1, max_length=998)
    body: str = Field(max_length=2_000_000)


class Throttle(Record):
    """Batches of ``batch_size`` recipients, one batch per ``interval_seconds`` from the send time.

    ``end_at``: no batch is released at or after it; recipients still pending then are skipped
    with reason ``end_date_passed``. It must lie after the send time (checked at scheduling, when
    the send time is known).
    """

    batch_size: int = Field(ge=1, le=1_000_000)
    interval_seconds: int = Field(ge=60, le=7 * 24 * 3600)
    end_at: AwareDatetime | None = None


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
    throttle: Throttle | None = None
    missed_zone_policy: MissedZonePolicy = "send_on_resume"
    release_rate: int = Field(default=1000, ge=1, le=10_000)
    #: The most recipients released and still awaiting their delivery outcome: the planner
    #: releases no more until outcomes come back, so releases follow what delivery achieves and
    #: the backlog of released sends stays small. Not given: IN_FLIGHT_SECONDS seconds of the
    #: release rate (written into the record, so a stored plan never changes meaning); ``None``
    #: (explicit, and in every plan stored before this default): no bound.
    max_in_flight: int | None = Field(default=None, ge=1, le=1_000_000)

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
                raise ValueError("throttle is only available in fixed delivery mode")
            if self.throttle.batch_size > self.release_rate * self.throttle.interval_seconds:
                raise ValueError(
                    "throttle.batch_size cannot be released within interval_seconds "
                    "at release_rate recipients per second"
                )
        return self


class FailedRecipient(Record):
    """A permanent delivery failure for one recipient, with the transport's reason."""

    contact_id: ContactId
    reason: str = Field(min_length=1, max_length=1000)


class ReturnedSend(Record):
    """A released recipient the delivery worker did not hand to SMTP because the message was
    paused or canceled (the fence, docs/delivery.md). ``release`` is the sequence number of the
    ``RecipientsReleased`` event the send came from: a return for an older release of the same
    contact (already returned and released again) is ignored."""

    contact_id: ContactId
    release: int = Field(ge=1)
