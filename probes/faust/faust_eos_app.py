"""A small faust-streaming worker used by test_faust_eos.py to probe exactly-once on our broker.

It runs as its own OS process (``python probes/faust/faust_eos_app.py worker``) so the test
can SIGKILL it like a crashed container. Everything it needs comes from ``FAUST_EOS_*``
environment variables, because faust builds the app at import time and every test run needs
fresh topic names and a fresh application id (the broker is shared and persistent).

What it does, per input record (key = raw bytes, value = JSON ``{"seq": n}``):

* ``counts[key] += 1`` in a faust Table whose changelog is co-partitioned with the input;
* sends one record to the output topic with the same key (so faust puts it in the
  input partition's transaction) carrying the input's seq and the count after the update.

Optional behaviours, each switched on by one variable, let the test build a scenario
deterministically instead of hoping a random SIGKILL lands in the right place:

* ``FAUST_EOS_DELAY``: seconds to spend per record, so a kill lands mid-stream;
* ``FAUST_EOS_STALL_SEQ``: after sending the output of that seq, write a marker file and stall
  (as an agent awaiting SMTP or Postgres would) without finishing the record;
* ``FAUST_EOS_TICKS``: a second, co-partitioned input topic whose records are only consumed and
  acknowledged (the dispatcher's clock ticks have this shape);
* ``FAUST_EOS_CONSUME_OUTPUT=1``: the app also consumes its own output topic and discards it.
  faust only routes a send through a partition's transactional producer when its consumer knows
  the topic (see docs/faust-findings.md), so this switch decides whether outputs are
  transactional at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import faust

from tests.integration.kafka_env import kafka_options


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(f"FAUST_EOS_{name}", default)
    if value is None:
        raise SystemExit(f"FAUST_EOS_{name} must be set")
    return value


APP_ID = _env("APP_ID")
BROKER = _env("BROKER", "127.0.0.1:19092")
PARTITIONS = int(_env("PARTITIONS"))
DATADIR = _env("DATADIR")
MARKER_DIR = Path(_env("MARKER_DIR", DATADIR))
DELAY = float(_env("DELAY", "0"))
STALL_SEQ = int(_env("STALL_SEQ", "-1"))
TICKS = _env("TICKS", "")
CONSUME_OUTPUT = _env("CONSUME_OUTPUT", "0") == "1"
# The defaults below are faust's own, except the session timeout: faust's 60 s would keep a
# SIGKILLed member in the group for a minute before anyone may take its partitions.
COMMIT_INTERVAL = float(_env("COMMIT_INTERVAL", "2.8"))
SESSION_TIMEOUT = float(_env("SESSION_TIMEOUT", "10"))
HEARTBEAT_INTERVAL = float(_env("HEARTBEAT_INTERVAL", "1"))
GROUP_INSTANCE_ID = _env("GROUP_INSTANCE_ID", "") or None


def _credentials() -> faust.SASLCredentials | None:
    """faust's form of the login every Kafka client of the project uses (client_options)."""
    options = kafka_options(BROKER)
    if "sasl_mechanism" not in options:
        return None
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        mechanism=options["sasl_mechanism"],
    )


app = faust.App(
    APP_ID,
    broker=f"kafka://{BROKER}",
    broker_credentials=_credentials(),
    processing_guarantee="exactly_once",
    store="memory://",
    datadir=DATADIR,
    web_enabled=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    broker_commit_interval=COMMIT_INTERVAL,
    broker_session_timeout=SESSION_TIMEOUT,
    broker_heartbeat_interval=HEARTBEAT_INTERVAL,
    consumer_group_instance_id=GROUP_INSTANCE_ID,
    consumer_auto_offset_reset="earliest",
)

input_topic = app.topic(
    _env("INPUT"),
    partitions=PARTITIONS,
    key_serializer="raw",
    value_serializer="json",
)
output_topic = app.topic(
    _env("OUTPUT"),
    partitions=PARTITIONS,
    key_serializer="raw",
    value_serializer="json",
)
counts = app.Table("counts", default=int, partitions=PARTITIONS)


def _marker(name: str, payload: dict[str, Any]) -> None:
    # Written to a temporary name and renamed, so the test never reads half a file.
    path = MARKER_DIR / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**payload, "pid": os.getpid(), "at": time.time()}))
    tmp.replace(path)


@app.agent(input_topic)
async def count(stream: faust.StreamT[Any]) -> None:
    first = True
    async for event in stream.events():
        key: bytes = event.key
        seq = int(event.value["seq"])
        name = key.decode()
        counts[name] += 1
        record = {
            "seq": seq,
            "key": name,
            "count": counts[name],
            "pid": os.getpid(),
            "in_partition": event.message.partition,
            "in_offset": event.message.offset,
        }
        await output_topic.send(key=key, value=record)
        if first:
            first = False
            _marker(f"first-{os.getpid()}", {"seq": seq})
        if seq == STALL_SEQ:
            _marker(f"stalled-{os.getpid()}", {"seq": seq})
            # Stall mid-record, long after every commit the test waits for.
            await asyncio.sleep(3600)
        if DELAY:
            await asyncio.sleep(DELAY)


if TICKS:

    @app.agent(app.topic(TICKS, partitions=PARTITIONS, key_serializer="raw"))
    async def ticks(stream: faust.StreamT[Any]) -> None:
        # Only consumed: faust acknowledges each tick, which gives the partition's transaction
        # a new offset to commit while the counting agent may be stalled.
        async for _tick in stream:
            pass


if CONSUME_OUTPUT:

    @app.agent(output_topic)
    async def discard_output(stream: faust.StreamT[Any]) -> None:
        # Subscribing is the point: it puts the output topic in the consumer's metadata and in
        # the input's co-partitioned topic group, which faust needs to pick a transactional
        # producer for it.
        async for _output in stream:
            pass


if __name__ == "__main__":
    app.main()
