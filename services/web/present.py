"""What the lists, menus and popovers show (pure). Which actions a row's menu offers is the
core's rule (:data:`core.ALLOWED_COMMANDS`); this module only names and orders them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import ALLOWED_COMMANDS, MessageStatus, wall_clock

__all__ = ["MENU", "Action", "actor_name", "menu", "plain_error"]


@dataclass(frozen=True)
class Action:
    """One menu entry: the command it issues, its label, and how the UI asks first."""

    command: str
    name: str  # the URL segment: /ui/messages/{id}/{name}
    label: str
    ask: str | None = None  # the id of the dialog that asks first (confirmation, options)


#: Every menu action, in menu order. Audience commands are not menu entries (the editor adds).
MENU: tuple[Action, ...] = (
    Action("EditDraft", "edit", "Edit"),
    Action("ScheduleMessage", "schedule", "Schedule or send now"),
    Action("PauseMessage", "pause", "Pause"),
    Action("ResumeMessage", "resume", "Resume"),
    Action("UnscheduleMessage", "unschedule", "Unschedule…", ask="unschedule"),
    Action("CancelMessage", "cancel", "Cancel…", ask="cancel"),
    Action("CopyMessage", "copy", "Copy as draft…", ask="copy"),
    Action("DiscardDraft", "discard", "Discard…", ask="discard"),
)
BY_NAME = {a.name: a for a in MENU}
BY_COMMAND = {a.command: a for a in MENU}


STATUS_LABEL = {
    "draft": "Draft",
    "scheduled": "Scheduled",
    "sending": "Sending",
    "paused": "Paused",
    "sent": "Sent",
    "canceled": "Canceled",
    "discarded": "Discarded",
}

COMMAND_WORDS = {
    "EditDraft": "edit",
    "ScheduleMessage": "schedule",
    "UnscheduleMessage": "unschedule",
    "PauseMessage": "pause",
    "ResumeMessage": "resume",
    "CancelMessage": "cancel",
    "CopyMessage": "copy",
    "DiscardDraft": "discard",
    "AddRecipients": "add recipients",
    "RemoveRecipients": "remove recipients",
}


def menu(status: str) -> list[Action]:
    """The actions a message's menu offers: exactly the commands its status allows."""
    allowed = set(ALLOWED_COMMANDS[MessageStatus(status)])
    return [a for a in MENU if a.command in allowed]


def actor_name(actor: dict[str, Any] | None, names: dict[str, str] | None = None) -> str:
    """A person's name for a user actor (recorded, else looked up), the service's otherwise."""
    if not actor:
        return "—"
    if actor.get("kind") == "user":
        user = str(actor.get("user_id") or "")
        return str(actor.get("display_name") or (names or {}).get(user) or user)
    return f"the {actor.get('service', 'system')} service"


def plain_error(status: int, body: dict[str, Any]) -> str:
    """An API error in plain words: a 409 `not_allowed` names the status and what is allowed,
    a 422 and a 409 `conflict` (a rule of the state or the clock: a send time now past) the
    field."""
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else {}
    assert isinstance(detail, dict)
    code = detail.get("code")
    if status == 409 and code == "not_allowed":
        now = STATUS_LABEL.get(str(detail.get("status")), str(detail.get("status"))).lower()
        allowed = [COMMAND_WORDS.get(c, c) for c in detail.get("allowed") or []]
        return (
            f"Not possible: the message is {now} now. "
            f"Allowed while {now}: {', '.join(allowed) or 'nothing'}."
        )
    if status == 422 or code == "conflict":
        where = detail.get("field")
        message = str(detail.get("message", "invalid input"))
        return f"Check {where}: {message}" if where else message
    if status == 404:
        return "This message does not exist (or belongs to another account)."
    if status in (202, 503):
        return "The service is busy: the action was not confirmed yet. Reload in a moment."
    return str(detail.get("message") or f"The action failed (HTTP {status}).")


def in_zone(instant: datetime | None, zone: str) -> str:
    if instant is None:
        return "—"
    return f"{wall_clock(instant, zone):%Y-%m-%d %H:%M} {zone}"


def utc(instant: datetime | None) -> str:
    return "—" if instant is None else f"{wall_clock(instant, 'UTC'):%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


def bars(points: list[tuple[datetime, int]], width: int = 600, height: int = 120) -> list[Bar]:
    """The deliveries-per-minute chart as SVG rectangles (one per minute that had deliveries)."""
    if not points:
        return []
    top = max(n for _, n in points) or 1
    step = width / max(len(points), 30)  # at least 30 minutes wide: one bar is not a wall
    return [
        Bar(
            x=round(i * step + 1, 1),
            y=round(height - n * height / top, 1),
            width=round(max(step - 2, 1), 1),
            height=round(n * height / top, 1),
            label=f"{wall_clock(minute, 'UTC'):%H:%M} UTC: {n} delivered",
        )
        for i, (minute, n) in enumerate(points)
    ]
