"""JSON Schema of every record on the topics, generated from the pydantic models, for clients
that are not Python (docs/integrators.md#json-schema). The files live in schemas/json/ and a test
(tests/core/test_json_schema.py) fails when they drift from the models.

    python -m schemas.json_schema          # rewrite schemas/json/*.json from the models
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.commands import Command
from schemas.events import Event
from schemas.sends import SendTopicRecord
from schemas.ticks import Tick
from schemas.wire import CommandRecord, CommandResult, DeadLetter

__all__ = ["DIRECTORY", "documents", "main", "rendered"]

DIRECTORY = Path(__file__).parent / "json"

#: file name -> (the model or union, what it is)
_RECORDS: dict[str, tuple[Any, str]] = {
    "command-record": (
        CommandRecord,
        "A value of the commands topic and of an integrator's intake topic: one command with "
        "its actor and issue time.",
    ),
    "command": (Command, "Any command (the `command` of a CommandRecord), by its `type`."),
    "event": (Event, "A value of the events topic: any event of a message, by its `type`."),
    "command-result": (
        CommandResult,
        "A value of the command-results topic (and an integrator's intake-results topic).",
    ),
    "tick": (Tick, "A clock tick on the commands topic (written by the dispatcher only)."),
    "send": (SendTopicRecord, "A value of the sends topic (dispatcher to delivery)."),
    "dead-letter": (DeadLetter, "A value of the dead-letter topic: a record that was refused."),
}


def documents() -> dict[str, dict[str, Any]]:
    """Every record's JSON Schema (2020-12), by file name (without `.json`)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (model, description) in _RECORDS.items():
        schema = TypeAdapter(model).json_schema(mode="validation")
        out[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"mailctl/{name}.json",
            "title": name,
            "description": description,
            **{k: v for k, v in schema.items() if k not in ("title", "description")},
        }
    return out


def rendered() -> dict[str, str]:
    """The files' text, as written (sorted keys, two-space indent, final newline)."""
    return {
        f"{name}.json": json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, doc in documents().items()
    }


def main() -> None:
    DIRECTORY.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (DIRECTORY / name).write_text(text, encoding="utf-8")
        print(f"wrote {DIRECTORY / name}")


if __name__ == "__main__":
    main()
