"""The scale case (issue 15 item 5): one message of N recipients end to end on the real stack.

`make bench-scale` runs it at 10,000,000 recipients (not in CI; it needs several GB of RAM and
most of an hour on this machine); `tests/integration/test_scale.py` runs the same path at
100,000 as a correctness check. On topics of its own, with one partition (the whole message in
one dispatcher partition), the real dispatcher (`python -m services.dispatcher`, its clock off,
snapshots every SNAPSHOT_INTERVAL_S) and the real broker:

1. **intake**: the audience is published to the commands topic as AddRecipients commands of
   10,000 contacts (built beforehand, not timed) and timed from the first publish to the last
   command's result committed: contacts/s into committed events;
2. **release**: the message is scheduled (release_rate 10,000/s, no in-flight window: no delivery
   worker runs here) and every tick is written at once, one simulated second apart, so the figure
   is the dispatcher's speed: send records committed per second;
3. **restart**: once half of the send records are committed the dispatcher is SIGKILLed and
   started again (same static-membership id): time from the SIGKILL to the next send record
   committed; the restart loads the newest snapshot and folds the records after it;
4. **memory**: the dispatcher's resident set, sampled every 0.5 s over the whole run (both
   processes): the peak divided by N;
5. **exactly once**: every contact is released exactly once (the release events, read back), and
   the send records committed are N (with `verify`, each contact's send record is read back).

Usage: ``python -m bench.bench_scale [--recipients N]`` (make bench-scale); the figures go to
``bench/results/scale-latest.json`` (and a dated copy) and are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.bench_dispatch import Ends, rss_mb
from bench.harness.kafka import committed, kafka_options
from bench.harness.processor import CONTENT, Stack, generated, ids, record, taken
from bench.harness.servers import servers
from bench.progress import say
from schemas import (
    AddRecipients,
    CreateDraft,
    DeliveryPlan,
    RecipientsReleased,
    ScheduleMessage,
    Tick,
    decode_event,
)

CHUNK = 10_000
RATE = 10_000
ROOT = Path(__file__).resolve().parent.parent


def _adds(message: uuid.UUID, n: int) -> Iterator[tuple[uuid.UUID, bytes]]:
    at = datetime.now(UTC)
    for start in range(0, n, CHUNK):
        command = AddRecipients.model_construct(
            type="AddRecipients",
            schema_version=1,
            command_id=ids(),
            message_id=message,
            contacts=generated(start, min(n, start + CHUNK)),
        )
        yield command.command_id, record(command, at=at).model_dump_json().encode()


class Sampler:
    """The peak resident set of the dispatcher processes, sampled every 0.5 s."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for pid in self.pids:
                self.peak_mb = max(self.peak_mb, rss_mb(pid) or 0.0)
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _last_result(stack: Stack, command_id: uuid.UUID, within: float) -> None:
    """Wait for `command_id`'s result on the results topic, reading only the headers."""
    wanted = str(command_id).encode()
    consumer = AIOKafkaConsumer(
        **kafka_options(stack.bootstrap),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tp = TopicPartition(stack.topics.results, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for found in batches.get(tp, []):
                if dict(found.headers or ()).get("command_id") == wanted:
                    return
        raise AssertionError(f"no result of {command_id} within {within}s")
    finally:
        await consumer.stop()


async def _released(stack: Stack, message: uuid.UUID, verify: bool) -> tuple[int, int]:
    """(contacts released in total, distinct contacts released) from the release events."""
    total = 0
    seen: set[str] = set()
    async for found in committed(stack.bootstrap, stack.topics.events, [0]):
        if dict(found.headers or ()).get("type") != b"RecipientsReleased":
            continue
        event = decode_event(found.value)
        assert isinstance(event, RecipientsReleased) and event.message_id == message
        total += len(event.contact_ids)
        if verify:
            seen.update(event.contact_ids)
    return total, len(seen) if verify else total


async def _send_records(stack: Stack) -> tuple[int, int]:
    """(send records committed, distinct contacts among them) on the sends topic."""
    count = 0
    seen: set[str] = set()
    async for found in committed(stack.bootstrap, stack.topics.sends, [0]):
        if dict(found.headers or ()).get("type") == b"Send":
            count += 1
            seen.add(json.loads(found.value)["contact"]["contact_id"])
    return count, len(seen)


async def run(
    n: int, tmp: Path, bootstrap: str, *, verify: bool = False, snapshot_interval_s: float = 5
) -> dict[str, Any]:
    """Every figure of the scale case at `n` recipients (see the module's docstring)."""
    name = f"scale {n:,}"
    stack = Stack(bootstrap, tmp, partitions=1)
    await stack.start()
    sampler = Sampler()
    ends = Ends(bootstrap)
    await ends.__aenter__()
    env = {
        "CLOCK_ENABLED": "false",
        "DISPATCHER_INSTANCE_ID": f"{stack.settings.topic_prefix}-scale",
        "DISPATCHER_STATE_DIR": str(tmp / "state"),
        "SNAPSHOT_INTERVAL_S": str(snapshot_interval_s),
    }
    try:
        dispatcher = stack.spawn("dispatcher", **env)
        sampler.pids.append(dispatcher.pid)
        sampler.start()
        message = ids()
        issued = datetime.now(UTC)
        await stack.decide(
            record(
                CreateDraft(
                    command_id=ids(),
                    message_id=message,
                    content=CONTENT,
                    plan=DeliveryPlan(release_rate=RATE, max_in_flight=None),
                ),
                at=issued,
            ),
            within=300,
        )
        say(name, "building the audience's commands")
        adds = list(_adds(message, n))
        assert stack.producer is not None
        say(name, f"intake: {len(adds)} commands through the commands topic")
        started = time.perf_counter()
        key = str(message).encode()
        for _, value in adds:
            await stack.producer.send(stack.topics.commands, value=value, key=key)
        await stack.producer.flush()
        last = adds[-1][0]
        del adds
        await _last_result(stack, last, within=max(600, n / 1000))
        intake_s = time.perf_counter() - started
        say(name, f"intake: {n / intake_s:,.0f} contacts/s")

        at = issued.replace(microsecond=0) + timedelta(hours=1)
        await stack.decide(
            record(ScheduleMessage(command_id=ids(), message_id=message, send_at=at), at=issued),
            within=300,
        )
        base = await ends.of(stack.topics.sends, 0)
        say(name, "releasing (every tick written at once)")
        started = time.perf_counter()
        for k in range(n // RATE + 2):
            tick = Tick(tick_id=uuid.uuid4(), at=at + timedelta(seconds=k))
            await stack.producer.send(
                stack.topics.commands, value=tick.model_dump_json().encode(), partition=0
            )
        await stack.producer.flush()

        async def half() -> bool:
            return await ends.of(stack.topics.sends, 0) - base >= n // 2

        await stack.wait_for("half of the send records", half, max(600, n / 500), every=0.2)
        half_s = time.perf_counter() - started
        before = await ends.of(stack.topics.sends, 0)
        say(name, "restart: SIGKILL of the dispatcher in the middle of the send")
        stack.kill(dispatcher)
        killed = time.perf_counter()
        dispatcher = stack.spawn("dispatcher", **env)
        sampler.pids.append(dispatcher.pid)

        async def again() -> bool:
            return await ends.of(stack.topics.sends, 0) > before

        await stack.wait_for("a send record after the restart", again, max(600, n / 1000))
        restart_s = time.perf_counter() - killed

        async def everyone() -> bool:
            total, _ = await _released(stack, message, verify=False)
            return total >= n

        await stack.wait_for("every contact released", everyone, max(900, n / 200), every=0.5)
        release_s = time.perf_counter() - started - restart_s
        total, distinct = await _released(stack, message, verify=verify)
        sends, distinct_sends = await _send_records(stack) if verify else (None, None)
        takes = taken(stack.log_of(dispatcher))
        result = {
            "recipients": n,
            "intake_s": round(intake_s, 3),
            "intake_rate": round(n / intake_s, 1),
            "release_s": round(release_s, 3),
            "release_rate": round(n / release_s, 1),
            "half_released_s": round(half_s, 3),
            "restart_s": round(restart_s, 3),
            "restart_source": takes[0].get("source") if takes else None,
            "restart_folded_events": takes[0].get("events") if takes else None,
            "peak_rss_mb": round(sampler.peak_mb, 1),
            "memory_per_recipient": round(sampler.peak_mb * 1024 * 1024 / n, 1),
            "released": total,
            "released_distinct": distinct,
            "send_records": sends,
            "send_records_distinct": distinct_sends,
        }
        say(name, f"done: {result}")
        return result
    finally:
        await sampler.stop()
        await ends.__aexit__()
        await stack.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=10_000_000)
    parser.add_argument("--verify", action="store_true", help="read every send record back")
    args = parser.parse_args(argv)
    bootstrap = servers().bootstrap
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        result = asyncio.run(run(args.recipients, Path(tmp), bootstrap, verify=args.verify))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {"started_at": stamp, "scale": result}
    for path in (out / "scale-latest.json", out / f"scale-{stamp}.json"):
        path.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
