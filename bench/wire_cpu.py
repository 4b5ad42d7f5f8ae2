"""The CPU of one import chunk's wire work, in process: the costs of docs/api.md "Import speed".

One chunk of 10,000 generated CSV rows (the rows of bench/bench_import.py) goes through each step
the three processes pay for it, without servers: the API parses and checks the rows
(`CsvContacts`), builds and encodes the command record and the chunk's digest; the dispatcher
decodes the record (`decode_input`), decides and folds it (`decide_record`, of which the
contact file's `FileContacts.observe` and the fold are core/book.py's and the store's) and
encodes the event; the projection worker decodes the stored event (`decode_event`). Each step's
figure is the minimum over N runs of `time.process_time()` (the least disturbed run), in ms per
10,000 rows. Run it under `nice -n 19` on a shared machine.

Usage: ``python -m bench.wire_cpu [--runs N] [--rows R]``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import TypeAdapter

from bench.cpu import least_cpu_ms
from bench.harness.processor import unchecked_add
from schemas import Actor, Contact, Content, CreateDraft, decode_event
from schemas.wire import CommandRecord, decode_input
from services.commands.csv_rows import CsvContacts, ParsedRow
from services.dispatcher.contacts import FileContacts
from services.dispatcher.decider import Input, PartitionState, Rules, decide_record, key_of

_ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "")
_ACTOR = Actor(kind="service", account_id="acct-bench", service="api")
_T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
_RULES = Rules(partitions=1)


def csv_chunk(rows: int) -> bytes:
    """The file of bench/bench_import.py: a header and ``rows`` rows."""
    lines = ["contact_id,email,time_zone,first_name,plan\r\n"]
    lines += [f"c{i},person{i}@example.org,{_ZONES[i % 4]},Name{i},gold\r\n" for i in range(rows)]
    return "".join(lines).encode()


def _encoders() -> tuple[Callable[[Any], bytes], Callable[[Any], bytes]]:
    """The encoders of a record and of a chunk's contacts the code uses; in a checkout from
    before the fast path (the "before" figures of docs/api.md), pydantic's."""
    try:
        fast = importlib.import_module("schemas.fast")
    except ImportError:
        adapter = TypeAdapter(tuple[Contact, ...])
        return (lambda record: record.model_dump_json().encode()), adapter.dump_json
    return fast.dump_json, fast.contacts_json


def _record(message_id: uuid.UUID, contacts: tuple[Contact, ...]) -> CommandRecord:
    command = unchecked_add(message_id, contacts)
    return CommandRecord.model_construct(
        type="CommandRecord",
        schema_version=1,
        command=command,
        actor=_ACTOR,
        issued_at=_T0,
        correlation_id=command.command_id,
        default_time_zone="UTC",
    )


def _input(value: bytes, message_id: uuid.UUID) -> Input:
    return Input("t.commands", 0, 0, key_of(message_id), value, int(_T0.timestamp() * 1000), 1, ())


def _drafted() -> tuple[PartitionState, uuid.UUID]:
    state, message_id = PartitionState(0, contacts=FileContacts()), uuid.uuid4()
    content = Content(name="News", from_address="news@example.org", subject="Hi", body="Hello")
    create = CreateDraft(command_id=uuid.uuid4(), message_id=message_id, content=content)
    record = CommandRecord(command=create, actor=_ACTOR, issued_at=_T0)
    decide_record(state, _input(record.model_dump_json().encode(), message_id), _RULES)
    return state, message_id


def measure(runs: int, rows: int) -> dict[str, float]:
    data = csv_chunk(rows)
    dump_json, contacts_json = _encoders()

    def parse() -> list[Any]:
        parser = CsvContacts()
        return [*parser.feed(data), *parser.finish()]

    parsed = parse()
    contacts = tuple(r.contact for r in parsed if isinstance(r, ParsedRow))
    assert len(contacts) == rows, "every generated row is valid"
    _, message_id = _drafted()
    record = _record(message_id, contacts)
    value = record.model_dump_json().encode()
    out: dict[str, float] = {}
    out["api: parse and check the rows"] = least_cpu_ms(runs, parse)
    out["api: encode the command record"] = least_cpu_ms(
        runs, lambda: dump_json(_record(message_id, contacts))
    )
    out["api: the chunk's digest"] = least_cpu_ms(
        runs, lambda: hashlib.sha256(contacts_json(contacts)).hexdigest()
    )
    out["dispatcher: decode the record"] = least_cpu_ms(runs, lambda: decode_input(value))

    decided: list[Any] = []

    def decide() -> None:
        fresh, fresh_id = _drafted()
        again = _record(fresh_id, contacts).model_dump_json().encode()
        gc.collect()
        start = time.process_time()
        decision = decide_record(fresh, _input(again, fresh_id), _RULES)
        spent = time.process_time() - start
        decided.append(spent)
        events = [w.event for w in decision.writes if hasattr(w, "event")]
        assert events and events[0].type == "RecipientsAdded", decision.writes
        event_holder[:] = [events[0], fresh]

    event_holder: list[Any] = []
    for _ in range(runs):
        decide()
    out["dispatcher: decide_record (decode, decide, fold, store)"] = min(decided) * 1000
    event, folded = event_holder

    def observe() -> None:
        store = FileContacts()
        store.observe(event, folded.messages[event.message_id])
        store.close()

    out["dispatcher: FileContacts.observe"] = least_cpu_ms(runs, observe)
    out["dispatcher: encode the event"] = least_cpu_ms(runs, lambda: dump_json(event))
    stored = event.model_dump_json().encode()
    out["projections: decode_event"] = least_cpu_ms(runs, lambda: decode_event(stored))
    return out


def main(argv: list[str] | None = None) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    for name, ms in measure(args.runs, args.rows).items():
        print(f"{ms:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
