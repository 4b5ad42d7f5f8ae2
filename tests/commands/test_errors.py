"""Every rejection code maps to one HTTP status, in one place, and reaches the client whole."""

from __future__ import annotations

import uuid
from typing import get_args

from schemas.wire import CommandResult, Rejection
from services.commands.app import Adapters, create_app
from services.commands.errors import ProblemCode, http_status
from services.commands.responses import render
from services.common.settings import Settings
from tests.commands.conftest import Api
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore

EXPECTED = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "not_allowed": 409,
    "already_exists": 409,
    "too_large": 413,
    "invalid": 422,
    "idempotency_key_reused": 422,
    "unavailable": 503,
    "not_caught_up": 409,
    "conflict": 409,
}


def test_every_problem_code_has_its_status() -> None:
    assert {code: http_status(code) for code in get_args(ProblemCode)} == EXPECTED


def test_every_rejection_code_is_a_problem_code() -> None:
    rejection_codes = get_args(Rejection.model_fields["code"].annotation)
    assert set(rejection_codes) <= set(get_args(ProblemCode))


def test_a_rejected_result_renders_as_its_problem() -> None:
    command_id = uuid.uuid4()
    result = CommandResult(
        command_id=command_id,
        message_id=uuid.uuid4(),
        command_type="PauseMessage",
        outcome="rejected",
        status="draft",
        rejection=Rejection(
            code="not_allowed",
            message="PauseMessage is not allowed while the message is draft",
            status="draft",
            allowed=("EditDraft", "ScheduleMessage"),
        ),
    )

    status, body = render(result, created=False, new_message_id=None)

    assert status == 409
    assert body == {
        "detail": {
            "code": "not_allowed",
            "message": "PauseMessage is not allowed while the message is draft",
            "status": "draft",
            "allowed": ["EditDraft", "ScheduleMessage"],
            "command_id": str(command_id),
        }
    }


async def test_a_command_not_allowed_names_the_status_and_the_allowed_commands(api: Api) -> None:
    message = await api.create()

    answer = await api.call("POST", f"/v1/messages/{message}/resume")

    problem = answer.json()["detail"]
    assert answer.status_code == 409
    assert problem["code"] == "not_allowed" and problem["status"] == "draft"
    assert "ScheduleMessage" in problem["allowed"]
    assert "ResumeMessage is not allowed while the message is draft" in problem["message"]


async def test_an_unknown_message_is_404(api: Api) -> None:
    answer = await api.call("PATCH", f"/v1/messages/{uuid.uuid4()}", {"plan": {}})

    assert answer.status_code == 404 and answer.json()["detail"]["code"] == "not_found"


async def test_openapi_lists_the_error_responses_of_every_command() -> None:
    app = create_app(Settings(), Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys({})))
    paths = app.openapi()["paths"]
    commands = [
        op
        for path, operations in paths.items()
        if path.startswith("/v1/messages")
        for op in operations.values()
    ]

    assert len(commands) == 11
    for op in commands:
        assert op["summary"]
        assert {"202", "401", "404", "409", "413", "422", "503"} <= set(op["responses"])
