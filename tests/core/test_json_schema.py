"""The topic contract for non-Python clients: schemas/json/*.json are the models' JSON Schema
(regenerate with `python -m schemas.json_schema`), and records the services write validate
against them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import jsonschema_rs

from schemas import Actor, CreateDraft, PauseMessage, encode
from schemas.json_schema import DIRECTORY, rendered
from schemas.wire import CommandRecord

from .dsl import CONTENT, cmd
from .test_schemas import every_kind_of_event

ACTOR = Actor(kind="service", account_id="acct-demo", service="crm")


def test_the_files_are_what_the_models_generate() -> None:
    expected = rendered()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DIRECTORY.glob("*.json")}

    assert set(on_disk) == set(expected), "run: python -m schemas.json_schema"
    for name, text in expected.items():
        assert on_disk[name] == text, (
            f"{name} drifted from the models: python -m schemas.json_schema"
        )


def validator(name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(json.loads((DIRECTORY / name).read_text()))


def test_records_validate_and_a_bad_one_is_refused() -> None:
    record = CommandRecord(
        command=CreateDraft(command_id=uuid4(), message_id=uuid4(), content=CONTENT),
        actor=ACTOR,
        issued_at=datetime.now(UTC),
    )
    good = json.loads(record.model_dump_json())
    bad_name = json.loads(record.model_dump_json())
    bad_name["command"]["content"]["name"] = "a\nb"  # one line only
    unknown = {**good, "command": {**good["command"], "type": "PauseEverything"}}

    records = validator("command-record.json")
    assert records.is_valid(good)
    assert not records.is_valid(bad_name)
    assert not records.is_valid(unknown)
    assert validator("command.json").is_valid(json.loads(encode(cmd(PauseMessage, reason="x"))))


def test_every_kind_of_event_validates() -> None:
    events = validator("event.json")
    for event in every_kind_of_event():
        assert events.is_valid(json.loads(encode(event))), event  # type: ignore[arg-type]
