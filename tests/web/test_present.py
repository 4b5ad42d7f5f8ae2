"""What the UI offers and says: menus are the core's allowed commands, errors in plain words."""

from __future__ import annotations

import pytest

from core import ALLOWED_COMMANDS, MessageStatus
from services.web.present import MENU, bars, menu, plain_error


@pytest.mark.parametrize("status", list(MessageStatus))
def test_a_menu_offers_exactly_the_commands_the_core_allows(status: MessageStatus) -> None:
    offered = {a.command for a in menu(status.value)}
    menu_commands = {a.command for a in MENU}
    assert offered == set(ALLOWED_COMMANDS[status]) & menu_commands


def test_the_menus_of_the_spec() -> None:
    labels = {s: [a.label for a in menu(s.value)] for s in MessageStatus}
    assert labels[MessageStatus.SENDING] == ["Pause", "Cancel…", "Copy as draft…"]
    assert labels[MessageStatus.PAUSED] == ["Resume", "Cancel…", "Copy as draft…"]
    assert labels[MessageStatus.SENT] == labels[MessageStatus.CANCELED] == ["Copy as draft…"]
    assert labels[MessageStatus.SCHEDULED] == ["Unschedule…", "Cancel…", "Copy as draft…"]
    assert labels[MessageStatus.DRAFT] == [
        "Edit",
        "Schedule or send now",
        "Copy as draft…",
        "Discard…",
    ]


def test_final_and_confirming_actions_ask_first() -> None:
    asking = {a.name: a.ask for a in MENU if a.ask}
    assert asking == {
        "unschedule": "unschedule",
        "cancel": "cancel",
        "copy": "copy",
        "discard": "discard",
    }


def test_a_409_names_the_status_and_what_is_allowed() -> None:
    body = {
        "detail": {
            "code": "not_allowed",
            "message": "PauseMessage is not allowed while the message is canceled",
            "status": "canceled",
            "allowed": ["CopyMessage"],
        }
    }
    assert plain_error(409, body) == (
        "Not possible: the message is canceled now. Allowed while canceled: copy."
    )


def test_a_422_names_the_field() -> None:
    body = {"detail": {"code": "invalid", "field": "send_at", "message": "not an instant"}}
    assert plain_error(422, body) == "Check send_at: not an instant"


def test_a_409_conflict_names_the_field_like_a_422() -> None:
    body = {
        "detail": {
            "code": "conflict",
            "field": "send_at",
            "message": "the send time is in the past",
        }
    }
    assert plain_error(409, body) == "Check send_at: the send time is in the past"


def test_a_404_does_not_say_whether_the_message_exists() -> None:
    assert "another account" in plain_error(404, {"detail": {"code": "not_found"}})


def test_the_chart_scales_bars_to_the_busiest_minute() -> None:
    from datetime import UTC, datetime

    t = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    found = bars([(t, 10), (t.replace(minute=1), 5)], width=600, height=100)
    assert [b.height for b in found] == [100.0, 50.0]
    assert found[0].label == "09:00 UTC: 10 delivered"
    assert bars([]) == []
