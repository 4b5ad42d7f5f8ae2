"""The compose form and the pasted audience, turned into the API's request bodies (pure: no I/O,
no clock). Every problem names the form field it belongs to, in plain words."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from core import local_to_instant, wall_clock
from core.render import parts
from schemas import MAX_CHUNK, Contact, Content, DeliveryPlan, is_valid_time_zone
from schemas.values import normalize_address

__all__ = ["AUDIENCE_LIMIT", "ComposeForm", "Problem", "parse_audience"]

#: The most contacts one paste may hold (a larger audience is a CSV import: another issue).
AUDIENCE_LIMIT = MAX_CHUNK

_SPLIT = re.compile(r"\s*[,;\t]\s*")

# pydantic's location of a value -> the form field that holds it.
_FIELDS = {
    ("name",): "name",
    ("from_address",): "from_address",
    ("from_name",): "from_name",
    ("subject",): "subject",
    ("body",): "body",
    ("throttle", "batch_size"): "batch_size",
    ("throttle", "interval_seconds"): "interval_minutes",
    ("throttle", "end_at"): "end_at",
    ("release_rate",): "release_rate",
}


@dataclass(frozen=True)
class Problem:
    field: str | None
    message: str


def _problems(error: ValidationError, default: str) -> list[Problem]:
    found = []
    for e in error.errors(include_url=False):
        loc = tuple(str(p) for p in e.get("loc", ()))
        message = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        found.append(Problem(_FIELDS.get(loc, default), message))
    return found


def parse_audience(text: str) -> tuple[list[Contact], list[Problem]]:
    """One contact a line: ``email``, ``email, name`` or ``contact id, email, name`` (commas,
    semicolons or tabs). Without an id the normalized address is the contact's id, so a paste
    that repeats an address adds it once. Blank lines and lines starting with ``#`` are skipped."""
    contacts: dict[str, Contact] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip().strip('"') for p in _SPLIT.split(line)]
        if "@" in parts[0]:
            cid, email, rest = None, parts[0], parts[1:]
        elif len(parts) > 1 and "@" in parts[1]:
            cid, email, rest = parts[0], parts[1], parts[2:]
        else:
            problems.append(Problem("audience", f"line {number}: no email address in {line!r}"))
            continue
        name = " ".join(p for p in rest if p)
        try:
            contact = Contact(
                contact_id=cid or normalize_address(email),
                email=email,
                attributes={"name": name} if name else {},
            )
        except ValidationError:
            problems.append(Problem("audience", f"line {number}: {email!r} is not a valid address"))
            continue
        contacts.setdefault(contact.contact_id, contact)
    if len(contacts) > AUDIENCE_LIMIT:
        problems.append(
            Problem(
                "audience",
                f"{len(contacts)} contacts pasted; at most {AUDIENCE_LIMIT} at a time",
            )
        )
    return list(contacts.values()), problems


def _local(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=None, second=0, microsecond=0)


@dataclass
class ComposeForm:
    """The compose / edit form as the operator filled it (strings, as posted)."""

    name: str = ""
    from_address: str = ""
    from_name: str = ""
    subject: str = ""
    body: str = ""
    html_body: str = ""
    mode: str = "fixed"
    throttle: bool = False
    batch_size: str = ""
    interval_minutes: str = ""
    end_at: str = ""
    missed_zone_policy: str = "send_on_resume"
    when: str = "now"
    send_at: str = ""
    zone: str = "UTC"
    audience: str = ""
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def from_post(cls, data: dict[str, str], default_zone: str) -> ComposeForm:
        names = {f for f in cls.__dataclass_fields__ if f not in ("problems", "throttle")}
        values: dict[str, Any] = {k: data.get(k, "").strip() for k in names if k in data}
        for body in ("body", "html_body"):
            if body in data:
                values[body] = data[body]  # the bodies keep their whitespace
        values["throttle"] = data.get("throttle") == "on"
        values.setdefault("zone", default_zone)
        return cls(**values)

    @classmethod
    def from_draft(cls, content: Content, plan: DeliveryPlan, zone: str) -> ComposeForm:
        """The form of a draft's current content and plan (times shown in `zone`)."""
        throttle = plan.throttle
        # An old single body shows in the field of the part it is sent as (core.render.parts),
        # so that saving the form keeps its meaning.
        text, html_part = parts(content)
        end_at = throttle.end_at if throttle is not None else None
        return cls(
            name=content.name,
            from_address=content.from_address,
            from_name=content.from_name or "",
            subject=content.subject,
            body=text or "",
            html_body=html_part or "",
            mode=plan.mode,
            throttle=throttle is not None,
            batch_size=str(throttle.batch_size) if throttle is not None else "",
            interval_minutes=str(throttle.interval_seconds // 60) if throttle is not None else "",
            end_at=wall_clock(end_at, zone).isoformat(timespec="minutes") if end_at else "",
            missed_zone_policy=plan.missed_zone_policy,
            zone=zone,
        )

    def error_for(self, name: str) -> str | None:
        return next((p.message for p in self.problems if p.field == name), None)

    def _zone(self) -> str | None:
        if not is_valid_time_zone(self.zone):
            self.problems.append(Problem("zone", f"unknown time zone {self.zone!r}"))
            return None
        return self.zone

    def content(self) -> Content | None:
        """The content of the form. ``html_body`` is always sent (empty: no HTML part), so the
        text body is the text part as written, never read as HTML because it begins with ``<``."""
        if not self.body.strip() and not self.html_body.strip():
            self.problems.append(Problem("body", "write a text body, an HTML body, or both"))
            return None
        try:
            return Content(
                name=self.name,
                from_address=self.from_address,
                from_name=self.from_name or None,
                subject=self.subject,
                body=self.body,
                html_body=self.html_body,
            )
        except ValidationError as error:
            self.problems.extend(_problems(error, "name"))
            return None

    def plan(self) -> DeliveryPlan | None:
        throttle: dict[str, Any] | None = None
        if self.throttle:
            zone = self._zone()
            try:
                batch = int(self.batch_size)
                minutes = int(self.interval_minutes)
            except ValueError:
                self.problems.append(
                    Problem("batch_size", "batch size and interval must be whole numbers")
                )
                return None
            end = _local(self.end_at)
            if self.end_at and end is None:
                self.problems.append(Problem("end_at", "not a date and time"))
                return None
            throttle = {
                "batch_size": batch,
                "interval_seconds": minutes * 60,
                "end_at": local_to_instant(end, zone) if end and zone else None,
            }
        try:
            return DeliveryPlan.model_validate(
                {
                    "mode": self.mode,
                    "throttle": throttle,
                    "missed_zone_policy": self.missed_zone_policy,
                }
            )
        except ValidationError as error:
            self.problems.extend(_problems(error, "mode"))
            return None

    def schedule_body(self) -> dict[str, Any] | None:
        """The body of `PUT /v1/messages/{id}/schedule` for the chosen send time."""
        if self.when == "now":
            return {"send_now": True}
        local = _local(self.send_at)
        if local is None:
            self.problems.append(Problem("send_at", "choose a send date and time"))
            return None
        if self.mode == "recipient_timezone":
            # The wall-clock time in each recipient's own zone.
            return {"send_at_local": local.isoformat()}
        zone = self._zone()
        if zone is None:
            return None
        return {"send_at": local_to_instant(local, zone).isoformat()}

    def audience_contacts(self) -> list[Contact]:
        contacts, problems = parse_audience(self.audience)
        self.problems.extend(problems)
        return contacts


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)
