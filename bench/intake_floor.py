"""The intake's ceiling on one core: the raw libraries doing a decider's per-contact work.

A message's chunks are decided in order by the one dispatcher that owns its partition, on one
core. Whatever the decider's code, an ``AddRecipients`` chunk that keeps the product's promise
costs it at least, per contact, the library calls this bench makes on one chunk of the commands
topic's bytes (the contacts of bench/bench_scale.py), each step timed alone with no Python of
the product around it:

* parse and check: the record's JSON parsed and every contact checked against the input rules
  in one pydantic-core call (the fast path's strict schema, `schemas.fast`); beside it, for
  reference only, orjson's parse with no check at all;
* the id's key: one BLAKE2b-128 digest of the contact id (the id table's hash, core/index.py);
* the address's key: the address lowered and one BLAKE2b-96 digest (the dedupe key,
  core/book.py ``address_key``);
* the data's fingerprint: the address, zone and attributes as one sorted JSON array (orjson) and
  one BLAKE2b-64 digest (core/book.py ``fingerprint``);
* the id table's insert: one dict insert per id (the cheapest table Python has);
* the event's encoding: the chunk's contacts written as JSON by one orjson call.

The floor is the sum of these (microseconds per contact; the parse-and-check step, not the bare
parse), and the ceiling is the contacts per second one core could decide at that floor: the
decider's real cost per contact (``bench.bench_memory``: ``add_contacts_per_cpu_s``) is the floor
plus the Python that makes the decision, builds the contacts and folds them. Each step's figure
is the least of ``runs`` timings (``time.process_time()``).

Usage: ``python -m bench.intake_floor [--runs N] [--contacts C]``.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

import orjson

from bench.cpu import least_cpu_ms
from bench.harness.processor import generated, unchecked_add
from schemas import Actor
from schemas.fast import _plain_text, _record_of_chunk
from schemas.wire import CommandRecord

_ACTOR = Actor(kind="service", account_id="acct-bench", service="bench")
_T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

PARSE_AND_CHECK = "parse and check (pydantic-core, the fast path's strict schema)"
BARE_PARSE = "parse alone, no check (orjson; reference, not in the floor)"


def chunk_record(contacts: int) -> bytes:
    """The commands topic's bytes of one ``AddRecipients`` of ``contacts`` generated contacts."""
    command = unchecked_add(uuid.uuid4(), generated(0, contacts))
    record = CommandRecord(command=command, actor=_ACTOR, issued_at=_T0)
    return record.model_dump_json().encode()


def _least_us(runs: int, per: int, step: Callable[[], Any]) -> float:
    """The least CPU microseconds per item of ``runs`` calls of ``step`` over ``per`` items."""
    return least_cpu_ms(runs, step) * 1000 / per


def measure(runs: int, contacts: int) -> dict[str, Any]:
    """Each step's least CPU microseconds per contact, the floor and the ceiling."""
    value = chunk_record(contacts)
    validator = _record_of_chunk(_plain_text(value))
    checked = validator.validate_json(value)["command"]["contacts"]
    assert len(checked) == contacts, "every generated contact passes the strict schema"
    parsed = orjson.loads(value)["command"]["contacts"]
    ids = [c["contact_id"] for c in parsed]
    emails = [c["email"] for c in parsed]
    data = [(c["email"], c.get("time_zone"), c["attributes"]) for c in parsed]
    sort = orjson.OPT_SORT_KEYS
    steps = {
        PARSE_AND_CHECK: _least_us(runs, contacts, lambda: validator.validate_json(value)),
        "id key (BLAKE2b-128)": _least_us(
            runs, contacts, lambda: [blake2b(i.encode(), digest_size=16).digest() for i in ids]
        ),
        "address key (lower, BLAKE2b-96)": _least_us(
            runs,
            contacts,
            lambda: [blake2b(e.lower().encode(), digest_size=12).digest() for e in emails],
        ),
        "fingerprint (sorted JSON, BLAKE2b-64)": _least_us(
            runs,
            contacts,
            lambda: [blake2b(orjson.dumps(d, option=sort), digest_size=8).digest() for d in data],
        ),
        "id table insert (dict)": _least_us(
            runs, contacts, lambda: {cid: slot for slot, cid in enumerate(ids)}
        ),
        "event encoding (orjson)": _least_us(runs, contacts, lambda: orjson.dumps(parsed)),
    }
    floor = sum(steps.values())
    steps[BARE_PARSE] = _least_us(runs, contacts, lambda: orjson.loads(value))
    return {
        "contacts": contacts,
        "steps_us": {name: round(us, 3) for name, us in steps.items()},
        "floor_us": round(floor, 3),
        "ceiling_contacts_per_s": round(1e6 / floor),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--contacts", type=int, default=10_000)
    args = parser.parse_args(argv)
    found = measure(args.runs, args.contacts)
    for name, us in found["steps_us"].items():
        print(f"{us:7.2f} us  {name}")
    print(f"{found['floor_us']:7.2f} us  floor a contact (the sum, without the bare parse)")
    print(f"{found['ceiling_contacts_per_s']:,} contacts/s: the ceiling of one core at the floor")


if __name__ == "__main__":
    main()
