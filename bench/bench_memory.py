"""Dispatcher memory per recipient (issue 15 item 1): the partition decider holding one message.

The decider (services/dispatcher/decider.py) is fed the way the processor feeds it: a CreateDraft,
then AddRecipients commands of 10,000 contacts as the bytes of the commands topic's records
(decoded and validated by the decider, decided, folded), with the dispatcher's own contact store
(`FileContacts`, a temporary file: the contacts' data is not held in memory). Measured: the
process's resident set (VmRSS) before the first add and after the last (after a garbage
collection), divided by the audience: what holding the message costs per recipient, without
the process's base (the interpreter, the imports) nor the Kafka client's buffers. Also the CPU
time of the adds (``time.process_time()``), per contact.

The contacts are those of bench/bench_scale.py (``s<i>``, ``s<i>@example.org``, one attribute).
Each chunk's record is built just before it is decided and dropped after, so the figure is not
inflated by the bench's own input. The garbage collector is tuned as in the services
(`services.common.runtime.tune_gc`).

Usage: ``python -m bench.bench_memory [--recipients N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bench.harness.processor import generated, unchecked_add
from schemas import Actor, AddRecipients, Content, CreateDraft
from schemas.wire import CommandRecord
from services.common.runtime import tune_gc
from services.dispatcher.contacts import FileContacts
from services.dispatcher.decider import Input, PartitionState, Rules, decide_record, key_of

CHUNK = 10_000
_ACTOR = Actor(kind="user", account_id="acct-bench", user_id="bench")
_CONTENT = Content(name="bench", from_address="news@example.org", subject="Hi", body="Hello")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _record(command: CreateDraft | AddRecipients, offset: int) -> Input:
    at = datetime.now(UTC)
    item = CommandRecord(command=command, actor=_ACTOR, issued_at=at)
    return Input(
        topic="bench.commands",
        partition=0,
        offset=offset,
        key=key_of(command.message_id),
        value=item.model_dump_json().encode(),
        timestamp=int(at.timestamp() * 1000),
        timestamp_type=1,
    )


def run(recipients: int) -> dict[str, float]:
    """Feed ``recipients`` contacts to one message; returns the figures."""
    rules = Rules(partitions=1)
    state = PartitionState(number=0, contacts=FileContacts())
    message = uuid.uuid4()
    create = CreateDraft(command_id=uuid.uuid4(), message_id=message, content=_CONTENT)
    decide_record(state, _record(create, 0), rules)
    gc.collect()
    base = rss_bytes()
    cpu = 0.0
    for offset, start in enumerate(range(0, recipients, CHUNK), start=1):
        add = unchecked_add(message, generated(start, min(start + CHUNK, recipients)))
        record = _record(add, offset)
        del add
        started = time.process_time()
        decision = decide_record(state, record, rules)
        cpu += time.process_time() - started
        del record, decision
    gc.collect()
    grown = rss_bytes() - base
    book = state.messages[message].book
    assert len(book) == recipients, (len(book), recipients)
    return {
        "recipients": recipients,
        "rss_growth_mb": round(grown / 2**20, 1),
        "bytes_per_recipient": round(grown / recipients, 1),
        "add_cpu_s": round(cpu, 2),
        "add_contacts_per_cpu_s": round(recipients / cpu) if cpu else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    tune_gc()  # as every service process does (services/common/runtime.py)
    # The decider logs every command decided: not part of what is measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = run(args.recipients)
    print(json.dumps(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
