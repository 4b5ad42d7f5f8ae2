"""Delivery scales out by processes (issue 15 item 4): one delivery worker against two sharing
the sends topic's partitions, on a slice of S sends (`make bench-scale`: 200,000), each send
delivered exactly once.

Each configuration (one worker, then two) on a stack of its own (topics, sender and ledger rows of
its own; the real Kafka, the Postgres ledger and the SMTP sink, as bench_delivery uses them; the
stack's 4 partitions):

1. the dispatcher and the delivery worker(s) (`python -m services.delivery`, `SMTP_POOL_SIZE`
   connections each, their own rate limit lifted, one consumer group) start, and the bench waits
   until the group's assignment has settled (each worker owns its share of the partitions in
   `delivery_owners`), so no partition moves during the send;
2. the S sends are four messages, one in each partition (S/4 recipients each), added as drafts
   and then scheduled at once (release_rate 10,000/s, no in-flight window): the releases outrun
   delivery, so the workers (and the sink) set the pace;
3. **rate**: mails between the first and the last arrival at the sink (the sink's own receive
   times, as bench_delivery measures) per second; per worker, the same over the mails of the
   partitions it owns;
4. **exactly once**: the ledger holds S rows of the slice, every one delivered; the sink holds S
   mails from the stack's sender, no Message-ID twice, every recipient once; the partitions did
   not move during the send.

`speedup` is the two workers' rate over the one worker's. The machine has 2 cores, and the sink,
Kafka and the dispatcher share them with the workers: what a second process adds is bounded by
the CPU left and by the sink's own ceiling (bench_delivery's "sink ceiling").

    bash scripts/with_env.sh .venv/bin/python -m bench.bench_scaleout [--sends 200000] [--pool 8]

(`make bench-scaleout`; `make bench-scale` runs it as its `--delivery-slice` phase). Writes the
"scaleout" section of bench/results/scale-latest.json (and a dated copy) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from bench import results
from bench.bench_delivery import arrival_rate
from bench.bench_dispatch import audience
from bench.cpu import Meter, pidfile
from bench.harness.delivery import DeliveryStack
from bench.harness.processor import ids
from bench.harness.servers import Servers, servers
from bench.progress import say
from schemas import DeliveryPlan
from services.dispatcher.decider import key_of, partition_of

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (1, 2)
POOL = 8  # SMTP connections per worker, as bench_delivery's figure


async def owners(stack: DeliveryStack) -> dict[int, str]:
    """Who owns each partition of the stack's sends topic (`delivery_owners`)."""
    assert stack.db is not None
    rows = await stack.db.fetch(
        "SELECT partition, owner FROM delivery_owners WHERE topic = $1", stack.topics.sends
    )
    return {int(row["partition"]): str(row["owner"]) for row in rows}


def one_per_partition(partitions: int) -> list[UUID]:
    """A message id in each partition, in partition order."""
    found: dict[int, UUID] = {}
    while len(found) < partitions:
        candidate = ids()
        found.setdefault(partition_of(key_of(candidate), partitions), candidate)
    return [found[p] for p in range(partitions)]


async def configuration(
    workers: int, sends: int, pool: int, tmp: Path, server: Servers
) -> dict[str, Any]:
    """`workers` delivery workers delivering a slice of `sends` sends (see the docstring)."""
    name = f"scale-out, {workers} worker(s)"
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    stack = DeliveryStack(*server, tmp)
    await stack.start()
    try:
        partitions = stack.settings.kafka_partitions
        stack.spawn_dispatcher(TICK_INTERVAL_S="0.2")
        names = [f"w{k}" for k in range(workers)]
        procs = {
            n: stack.spawn_delivery(n, DELIVERY_RATE="1000000", SMTP_POOL_SIZE=str(pool))
            for n in names
        }
        # The owner column holds DELIVERY_INSTANCE_ID: "<prefix>-<name>" (spawn_delivery).
        instance = {f"{stack.settings.topic_prefix}-{n}": n for n in names}
        share = dict.fromkeys(instance, partitions // workers)

        async def settled() -> bool:
            owned = Counter((await owners(stack)).values())
            return sum(owned.values()) == partitions and owned == share

        say(name, "waiting for the workers to share the partitions")
        await stack.wait_for("the workers to share the partitions", settled, 180, every=0.5)
        owner_of = {p: instance[o] for p, o in (await owners(stack)).items()}
        messages = one_per_partition(partitions)
        sizes = [sends // partitions + (k < sends % partitions) for k in range(partitions)]
        plan = DeliveryPlan(release_rate=10_000, max_in_flight=None)
        say(name, f"adding {sends:,} recipients in {partitions} messages (drafts)")
        for k, (message, size) in enumerate(zip(messages, sizes, strict=True)):
            await stack.add_message(message, audience(size, prefix=f"m{k}-"), plan)
        meter = Meter(
            {
                **{f"worker {n}": p.pid for n, p in procs.items()},
                "sink": pidfile("smtp_sink"),
                "kafka": pidfile("kafka"),
            }
        )
        meter.start()
        started = time.perf_counter()
        await stack.schedule_now(*messages)
        last = [time.monotonic()]

        async def delivered() -> bool:
            count = sum([await stack.delivered_count(m) for m in messages])
            if time.monotonic() - last[0] > 10:
                say(name, "delivering", count, sends)
                last[0] = time.monotonic()
            return count >= sends

        await stack.wait_for("every send delivered", delivered, max(600, sends / 50), every=0.5)
        wall_s = time.perf_counter() - started
        cpu = Meter.per_item_ms(meter.stop(), sends)
        moved = {p: instance.get(o, o) for p, o in (await owners(stack)).items()} != owner_of

        mails = await stack.deliveries()
        by_worker: dict[str, list[datetime]] = defaultdict(list)
        for _, _, rcpt, at in mails:  # "m<k>-<i>@...": message k, in partition k
            by_worker[owner_of[int(rcpt.split("-", 1)[0][1:])]].append(at)
        ledger_rows = 0
        ledger_delivered = 0
        for message in messages:
            ledger = await stack.ledger(message)
            ledger_rows += len(ledger)
            ledger_delivered += sum(row["state"] == "delivered" for row in ledger.values())
        message_ids = Counter(mid for _, mid, _, _ in mails)
        found: dict[str, Any] = {
            "workers": workers,
            "sends": sends,
            "pool": pool,
            "rate": arrival_rate([at for *_, at in mails]),
            "wall_s": round(wall_s, 3),
            "per_worker": {
                n: {
                    "partitions": sorted(p for p, o in owner_of.items() if o == n),
                    "mails": len(by_worker[n]),
                    "rate": arrival_rate(by_worker[n]),
                }
                for n in names
            },
            "ledger_rows": ledger_rows,
            "ledger_delivered": ledger_delivered,
            "sink_mails": len(mails),
            "sink_recipients": len({rcpt for _, _, rcpt, _ in mails}),
            "sink_repeated_message_ids": sum(1 for c in message_ids.values() if c > 1),
            "partitions_moved": moved,
            "cpu_ms_per_mail": cpu,
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        }
        found["exactly_once"] = (
            ledger_rows == ledger_delivered == len(mails) == found["sink_recipients"] == sends
            and found["sink_repeated_message_ids"] == 0
            and not moved
        )
        say(name, f"done: {found}")
        return found
    finally:
        await stack.close()


async def run(sends: int, tmp: Path, server: Servers, pool: int = POOL) -> dict[str, Any]:
    """One worker, then two, each on a slice of `sends` sends of its own (the docstring)."""
    found: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "sends": sends,
        "pool": pool,
    }
    for workers in WORKERS:
        found[f"workers_{workers}"] = await configuration(
            workers, sends, pool, tmp / f"scaleout-{workers}", server
        )
    one, two = found["workers_1"]["rate"], found["workers_2"]["rate"]
    found["speedup"] = round(two / one, 3) if one and two else None
    found["exactly_once"] = all(found[f"workers_{w}"]["exactly_once"] for w in WORKERS)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sends", type=int, default=200_000)
    parser.add_argument("--pool", type=int, default=POOL, help="SMTP connections per worker")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        found = asyncio.run(run(args.sends, Path(tmp), servers(), args.pool))
    for path in results.write_scale({"scaleout": found}, args.out):
        say("scale-out", f"wrote {path}")
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
