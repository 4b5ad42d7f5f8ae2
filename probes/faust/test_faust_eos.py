"""faust-streaming's exactly-once mode on our broker: what a SIGKILL does to it.

The worker is probes/faust/faust_eos_app.py, run as a separate OS process. These tests assert
only what faust really holds to on the pinned versions (a restarted worker carries on to the end
of its input, outputs land in the input's partition), plus two behaviours that break
exactly-once and that we reproduce deterministically (outputs bypassing the transaction, a
commit in the middle of a record). Duplicates, lost inputs, stuck commits, table-count
anomalies and recovery times are measured, printed on a ``FAUST_EOS_FIGURES`` line and discussed
in docs/faust-findings.md, which also explains each hazard from faust's source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.kafka_env import kafka_options

APP_PATH = Path(__file__).with_name("faust_eos_app.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = 6
POLL = 0.05


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Output:
    """One output record as a read_committed consumer saw it."""

    seq: int
    key: str
    count: int
    pid: int
    partition: int
    offset: int
    in_partition: int
    in_offset: int
    received_at: float


@dataclass
class Analysis:
    """What the committed output says about exactly-once (see ``analyse``)."""

    total: int
    distinct: int
    missing: list[int]
    # seq -> the table counts carried by each of its copies, in log order
    duplicates: dict[int, list[int]]
    # Per key, in log order, the count should go 1, 2, 3, ...; a step back means the table lost
    # increments that an output already showed, a step forward means it kept increments whose
    # output is missing or counted an input twice.
    count_steps_back: int
    count_steps_forward: int
    # Sum over keys of (last count seen - number of inputs for the key).
    final_count_drift: int


def analyse(outputs: Iterable[Output], inputs_per_key: Counter[str], n_inputs: int) -> Analysis:
    outs = sorted(outputs, key=lambda o: (o.partition, o.offset))
    copies: dict[int, list[int]] = defaultdict(list)
    per_key: dict[str, list[int]] = defaultdict(list)
    for out in outs:
        copies[out.seq].append(out.count)
        per_key[out.key].append(out.count)
    back = forward = 0
    for counts in per_key.values():
        previous = 0
        for count in counts:
            if count <= previous:
                back += 1
            elif count > previous + 1:
                forward += 1
            previous = count
    drift = sum(counts[-1] - inputs_per_key[key] for key, counts in per_key.items())
    return Analysis(
        total=len(outs),
        distinct=len(copies),
        missing=sorted(set(range(n_inputs)) - set(copies)),
        duplicates={seq: c for seq, c in sorted(copies.items()) if len(c) > 1},
        count_steps_back=back,
        count_steps_forward=forward,
        final_count_drift=drift,
    )


class Worker:
    """One faust worker OS process, with its log file and the markers it writes."""

    def __init__(self, name: str, env: dict[str, str], rundir: Path) -> None:
        self.name = name
        self.env = env
        self.rundir = rundir
        self.log_path = rundir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.spawned_at = time.time()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(APP_PATH),
                "worker",
                "--loglevel",
                "info",
                # The web server would bind port 6066 and collide with any other worker here.
                "--without-web",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def kill(self) -> float:
        """SIGKILL, as a crashed or evicted container; returns when it happened."""
        assert self.proc is not None
        killed_at = time.time()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        return killed_at

    def marker(self, name: str) -> dict[str, Any] | None:
        path = self.rundir / f"{name}-{self.pid}"
        if not path.exists():
            return None
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def log_time(self, needle: str) -> float | None:
        """Wall-clock time of the first log line containing ``needle``."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if needle in line and line.startswith("["):
                stamp = line[1 : line.index("]")]
                return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} (pid {self.proc.pid if self.proc else '-'}) log tail ---\n" + (
            "\n".join(text.splitlines()[-lines:])
        )


class CommittedOutput:
    """Reads the output topic with read_committed from the beginning, in the background."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(
            **kafka_options(bootstrap),
            isolation_level="read_committed",
            enable_auto_commit=False,
            # assign() resets offsets with this policy, possibly after the seek below.
            auto_offset_reset="earliest",
        )
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.records: list[Output] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, messages in batches.items():
                for m in messages:
                    v = json.loads(m.value or b"{}")
                    self.records.append(
                        Output(
                            seq=v["seq"],
                            key=v["key"],
                            count=v["count"],
                            pid=v["pid"],
                            partition=tp.partition,
                            offset=m.offset,
                            in_partition=v["in_partition"],
                            in_offset=v["in_offset"],
                            received_at=now,
                        )
                    )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if not self._task.cancelled() and self._task.exception() is not None:
                raise self._task.exception()  # type: ignore[misc]
        await self.consumer.stop()

    def seqs(self) -> set[int]:
        return {o.seq for o in self.records}

    def from_pid(self, pid: int) -> list[Output]:
        return [o for o in self.records if o.pid == pid]


@dataclass
class Run:
    """Fresh topics and a fresh application id on the shared, persistent broker."""

    bootstrap: str
    rundir: Path
    partitions: int
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[Worker] = field(default_factory=list)

    @property
    def app_id(self) -> str:
        return f"feos-{self.suffix}"

    @property
    def input(self) -> str:
        return f"feos-{self.suffix}-in"

    @property
    def output(self) -> str:
        return f"feos-{self.suffix}-out"

    @property
    def ticks(self) -> str:
        return f"feos-{self.suffix}-ticks"

    @property
    def changelog(self) -> str:
        # faust's naming: "{app id}-{table name}-changelog"
        return f"{self.app_id}-counts-changelog"

    async def create_topics(self, *names: str) -> None:
        admin = AIOKafkaAdminClient(**kafka_options(self.bootstrap))
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(name, num_partitions=self.partitions, replication_factor=1)
                    for name in names
                ]
            )
        finally:
            await admin.close()

    async def produce(self, records: Iterable[tuple[str, int]]) -> dict[int, int]:
        """Produce (key, seq) records; the key decides the partition, as it will for the
        outputs. Returns seq -> input partition."""
        producer = AIOKafkaProducer(
            **kafka_options(self.bootstrap),
            enable_idempotence=True,
            acks="all",
        )
        await producer.start()
        try:
            futures = {
                seq: await producer.send(
                    self.input, json.dumps({"seq": seq}).encode(), key=key.encode()
                )
                for key, seq in records
            }
            return {seq: (await fut).partition for seq, fut in futures.items()}
        finally:
            await producer.stop()

    async def produce_tick(self, partition: int) -> None:
        producer = AIOKafkaProducer(**kafka_options(self.bootstrap))
        await producer.start()
        try:
            await producer.send_and_wait(self.ticks, b"tick", key=b"tick", partition=partition)
        finally:
            await producer.stop()

    async def committed_inputs(self) -> int:
        """Input offsets the app's group has committed (through its transactions)."""
        admin = AIOKafkaAdminClient(**kafka_options(self.bootstrap))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.app_id)
        finally:
            await admin.close()
        return sum(o.offset for tp, o in offsets.items() if tp.topic == self.input and o.offset > 0)

    async def committed_by_partition(self) -> dict[int, int]:
        admin = AIOKafkaAdminClient(**kafka_options(self.bootstrap))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.app_id)
        finally:
            await admin.close()
        return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == self.input}

    async def partition_ends(self, topic: str) -> dict[int, int]:
        """Partition -> high watermark (the offset after the last record)."""
        consumer = AIOKafkaConsumer(**kafka_options(self.bootstrap))
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    async def end_offsets(self, topic: str, isolation_level: str) -> int:
        """Sum over partitions of the high watermark (read_uncommitted) or the last stable
        offset (read_committed): records in a still-open transaction sit between the two."""
        consumer = AIOKafkaConsumer(
            **kafka_options(self.bootstrap),
            isolation_level=isolation_level,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    def worker(self, name: str, **settings: str) -> Worker:
        env = {
            **os.environ,
            # Kept after the repository so a diagnostic sitecustomize can be added from outside.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "FAUST_EOS_APP_ID": self.app_id,
            "FAUST_EOS_BROKER": self.bootstrap,
            "FAUST_EOS_PARTITIONS": str(self.partitions),
            "FAUST_EOS_DATADIR": str(self.rundir),
            "FAUST_EOS_INPUT": self.input,
            "FAUST_EOS_OUTPUT": self.output,
        }
        env.update({f"FAUST_EOS_{k.upper()}": v for k, v in settings.items()})
        worker = Worker(name, env, self.rundir)
        self.workers.append(worker)
        return worker

    async def wait_until(
        self,
        condition: Callable[[], bool],
        within: float,
        what: str,
        *alive: Worker,
        progress: Callable[[], str] = lambda: "",
    ) -> float:
        """Poll ``condition`` until it holds; fail early if a worker that should be running
        died, and with ``progress()`` and the workers' logs at the deadline. Returns when it
        held."""
        deadline = time.monotonic() + within
        while not condition():
            for worker in alive:
                if worker.exited:
                    pytest.fail(f"{worker.name} exited while waiting for {what}\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {within:.0f} s; {progress()}\n{self.tails()}")
            await asyncio.sleep(POLL)
        return time.time()

    async def wait_until_async(
        self,
        condition: Callable[[], Awaitable[bool]],
        within: float,
        what: str,
        *alive: Worker,
    ) -> float:
        """As ``wait_until`` for a condition that needs the broker (a coroutine function)."""
        deadline = time.monotonic() + within
        while not await condition():
            for worker in alive:
                if worker.exited:
                    pytest.fail(f"{worker.name} exited while waiting for {what}\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {within:.0f} s\n{self.tails()}")
            await asyncio.sleep(0.1)
        return time.time()

    def tails(self) -> str:
        return "\n".join(w.tail() for w in self.workers)

    async def kill_all(self) -> None:
        # SIGKILL rather than a graceful stop: every run has its own topics and group, so what a
        # dead worker leaves behind (an open transaction, a group member) concerns nobody, and
        # the broker aborts the transaction when its timeout expires.
        for worker in self.workers:
            if worker.proc is not None and not worker.exited:
                await worker.kill()


def figures_line(name: str, figures: dict[str, Any]) -> None:
    print(f"\nFAUST_EOS_FIGURES {json.dumps({'test': name, **figures}, sort_keys=True)}")


# --------------------------------------------------------------------------- tests

N_INPUTS = 2000
PARTITIONS = 3
# Seconds the agent spends per record, after producing its output, as an agent awaiting I/O
# would; 2,000 records then take about 10 s, so the kill lands mid-stream.
DELAY = "0.005"


@pytest.mark.parametrize(
    "consume_output",
    [
        pytest.param(False, id="output-not-consumed-by-app"),
        pytest.param(True, id="output-consumed-by-app"),
    ],
)
async def test_sigkill_mid_stream_the_restarted_worker_carries_on_to_the_end(
    kafka_bootstrap: str, tmp_path: Path, consume_output: bool
) -> None:
    run = Run(kafka_bootstrap, tmp_path, PARTITIONS)
    await run.create_topics(run.input, run.output)
    records = [(f"k{seq % KEYS}", seq) for seq in range(N_INPUTS)]
    in_partition = await run.produce(records)
    inputs_per_key = Counter(key for key, _ in records)
    output = CommittedOutput(kafka_bootstrap, run.output, PARTITIONS)
    await output.start()
    settings = {"delay": DELAY, "consume_output": "1" if consume_output else "0"}
    first = run.worker("first", **settings)
    try:
        await first.start()
        first_committed_at = await run.wait_until(
            lambda: bool(output.records), 60, "first committed output", first
        )
        # Kill once the group has committed a quarter of the input: the kill then follows at
        # least one transaction commit whatever the configuration (without the app consuming
        # its output, outputs are visible before any commit, so they cannot be the signal).
        committed: list[int] = []

        async def quarter_committed() -> bool:
            committed.append(await run.committed_inputs())
            return committed[-1] >= N_INPUTS // 4

        await run.wait_until_async(quarter_committed, 60, "a quarter of the input committed", first)
        killed_at = await first.kill()
        visible_at_kill = len(output.records)
        committed_at_kill = await run.committed_inputs()
        assert committed_at_kill < N_INPUTS, "the stream ended before the kill: raise DELAY"

        second = run.worker("second", **settings)
        await second.start()
        ends = await run.partition_ends(run.input)

        def reached_the_end() -> bool:
            last = {p: -1 for p in ends}
            for o in output.records:
                last[o.in_partition] = max(last[o.in_partition], o.in_offset)
            return all(last[p] == end - 1 for p, end in ends.items())

        # Carried on to the end: the last input of every partition has a committed output.
        # Neither "an output for every input" nor "every input offset committed": after a
        # restart faust can drop a few queued inputs, and then either commits past them or
        # never commits that partition again (docs/faust-findings.md, "Loss at the end of
        # recovery"); both are measured below.
        await run.wait_until(
            reached_the_end,
            120,
            "a committed output for the last input of every partition",
            second,
            progress=lambda: f"{len(output.seqs())} of {N_INPUTS} seqs have output",
        )
        # Duplicates show up with or before the last output; a short quiet read lets a copy
        # sitting in the same commit reach the collector too.
        await run.wait_until_async(
            lambda: _settled(output), 10, "a settled committed output", second
        )
        # Offsets commit on faust's timer, after the outputs when those are not transactional:
        # give the group a few commit intervals to reach the end before measuring where it
        # stands (a partition whose commits are stuck never gets there).
        deadline = time.monotonic() + 10
        committed_at_end = await run.committed_by_partition()
        while committed_at_end != ends and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            committed_at_end = await run.committed_by_partition()
        assert not second.exited, "the restarted worker died"
    finally:
        await run.kill_all()
        await output.stop()

    result = analyse(output.records, inputs_per_key, N_INPUTS)
    resumed = output.from_pid(second.pid)
    first_resumed_at = min(o.received_at for o in resumed) if resumed else float("nan")
    second_first = second.marker("first")
    figures_line(
        "sigkill-" + ("output-consumed" if consume_output else "output-not-consumed"),
        {
            "cold_start_to_first_committed_output_s": round(
                first_committed_at - first.spawned_at, 2
            ),
            "committed_inputs_at_kill": committed_at_kill,
            "visible_outputs_at_kill": visible_at_kill,
            "recovery_kill_to_first_new_committed_output_s": round(first_resumed_at - killed_at, 2),
            "recovery_kill_to_worker_starting_s": _since(
                killed_at, second.log_time("[^Worker]: Starting")
            ),
            "recovery_kill_to_group_joined_s": _since(killed_at, second.log_time("Joined group")),
            "recovery_kill_to_worker_ready_s": _since(killed_at, second.log_time("Worker]: Ready")),
            "recovery_kill_to_first_record_processed_s": round(second_first["at"] - killed_at, 2)
            if second_first
            else None,
            "outputs_total": result.total,
            "lost_inputs": result.missing,
            "partitions_not_committed_to_the_end": sorted(
                p for p, end in ends.items() if committed_at_end.get(p, 0) < end
            ),
            "duplicate_outputs": result.total - result.distinct,
            "duplicate_seqs_sample": dict(list(result.duplicates.items())[:5]),
            "count_steps_back": result.count_steps_back,
            "count_steps_forward": result.count_steps_forward,
            "final_count_drift": result.final_count_drift,
        },
    )

    # What faust holds to on these versions: the second worker carried on to the end of every
    # partition (waited for above) and produced committed output of its own, and outputs
    # stayed in their input's partition (so faust could put them in that partition's
    # transaction). Losses, stuck commits and duplicates are measured above, not asserted.
    assert resumed, "the restarted worker produced no committed output"
    assert all(o.partition == o.in_partition == in_partition[o.seq] for o in output.records)


async def _settled(output: CommittedOutput) -> bool:
    """True when a second passes without new committed output."""
    seen = len(output.records)
    await asyncio.sleep(1.0)
    return len(output.records) == seen


def _since(start: float, end: float | None) -> float | None:
    return None if end is None else round(end - start, 2)


@pytest.mark.parametrize(
    ("consume_output", "outputs_in_transaction"),
    [
        pytest.param(False, False, id="output-not-consumed-by-app"),
        pytest.param(True, True, id="output-consumed-by-app"),
    ],
)
async def test_outputs_join_the_transaction_only_when_the_app_consumes_the_output_topic(
    kafka_bootstrap: str, tmp_path: Path, consume_output: bool, outputs_in_transaction: bool
) -> None:
    """faust picks the transactional producer from the consumer's metadata for the topic
    (faust/transport/consumer.py, TransactionManager.send): for a topic the app does not
    consume there is none, and the send goes through the plain producer. With commits held off
    for an hour, records in a transaction stay above the last stable offset; records outside
    one are visible to read_committed at once."""
    run = Run(kafka_bootstrap, tmp_path, PARTITIONS)
    await run.create_topics(run.input, run.output)
    n = 30
    await run.produce((f"k{seq % KEYS}", seq) for seq in range(n))
    worker = run.worker(
        "worker", commit_interval="3600", consume_output="1" if consume_output else "0"
    )
    try:
        await worker.start()

        async def all_written() -> bool:
            return (
                await run.end_offsets(run.output, "read_uncommitted") == n
                and await run.end_offsets(run.changelog, "read_uncommitted") == n
            )

        await run.wait_until_async(all_written, 60, "every output and changelog write", worker)
        changelog_stable = await run.end_offsets(run.changelog, "read_committed")
        output_stable = await run.end_offsets(run.output, "read_committed")
        committed = await run.committed_inputs()
    finally:
        await run.kill_all()

    figures_line(
        "transactional-" + ("output-consumed" if consume_output else "output-not-consumed"),
        {"changelog_stable": changelog_stable, "output_stable": output_stable, "n": n},
    )
    assert committed == 0, "a commit happened: the scenario needs none"
    # Table changelog writes are in the open transaction in both cases...
    assert changelog_stable == 0
    # ...outputs only when the app consumes the output topic.
    assert output_stable == (0 if outputs_in_transaction else n)


async def test_a_commit_while_the_agent_is_mid_record_duplicates_the_record_after_sigkill(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """faust commits on a timer, in its own task, while agents may be between producing a
    record's output and finishing the record (the ack comes when the agent asks for the next
    record). A commit then carries the output and the table update but not the input offset;
    after a SIGKILL the input is processed again: the output is duplicated in read_committed
    and the table counts the input twice. Outputs are transactional here (the app consumes its
    output topic), so this is not the non-transactional-output hazard."""
    run = Run(kafka_bootstrap, tmp_path, 2)
    await run.create_topics(run.input, run.output, run.ticks)
    n, stall = 10, 5
    in_partition = await run.produce(("k0", seq) for seq in range(n))
    partition = in_partition[stall]
    output = CommittedOutput(kafka_bootstrap, run.output, run.partitions)
    await output.start()
    common = {"consume_output": "1", "ticks": run.ticks}
    first = run.worker("first", stall_seq=str(stall), **common)
    try:
        await first.start()
        await run.wait_until(
            lambda: first.marker("stalled") is not None, 60, "the agent stalling", first
        )
        # The agent has produced seq 5's output and updated the table, and will never finish
        # the record. A tick in the same partition gives the partition's transaction an offset
        # to commit, and faust's commit timer commits it, output and table write included.
        await run.produce_tick(partition)
        await run.wait_until(
            lambda: stall in output.seqs(), 30, "the stalled record's output committed", first
        )
        await first.kill()
        second = run.worker("second", **common)
        await second.start()
        # Wait for the stalled record's second copy and the last input's output, not for every
        # seq: the restart itself can drop a few queued inputs (docs/faust-findings.md, "Loss at
        # the end of recovery"), which is not what this test is about.
        await run.wait_until(
            lambda: sum(o.seq == stall for o in output.records) >= 2 and n - 1 in output.seqs(),
            90,
            "the stalled record's second copy and the last input's output",
            second,
        )
        await run.wait_until_async(lambda: _settled(output), 10, "a settled output", second)
    finally:
        await run.kill_all()
        await output.stop()

    copies = sorted((o.offset, o.pid, o.count) for o in output.records if o.seq == stall)
    figures_line("mid-record-commit", {"stalled_seq_copies": copies})
    # The first copy came from the stalled worker, the next from the restarted one, which
    # recovered the stalled record's table update from the changelog and added it again. (In
    # one CI run of 20 or so the restarted worker emitted a third copy as well, its own
    # restart duplicate: docs/faust-findings.md. The claim here is the second copy.)
    assert copies[0][1:] == (first.pid, stall + 1)
    assert len(copies) >= 2
    assert copies[1][1:] == (second.pid, stall + 2)
    assert all(pid == second.pid for _, pid, _ in copies[1:])
    # Other records may be duplicated by the restart itself (1-4 per kill, measured in
    # docs/faust-findings.md); they are reported, not asserted: this test is about the record
    # in the middle of which the commit landed.
    others = Counter(o.seq for o in output.records if o.seq != stall)
    figures_line("mid-record-commit", {"other_duplicates": sum(c - 1 for c in others.values())})
