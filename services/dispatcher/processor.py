"""The processor: the one writer of every message in the partitions it owns (docs/architecture.md,
docs/dispatcher.md).

It consumes `<prefix>.commands` (commands, copied events and clock ticks) in a consumer group and,
for each batch of one partition, in ONE Kafka transaction that also carries the batch's input
offsets:

* decides each command with the core (`decide`) and writes its events and its result;
* plans each tick with the core (`plan`) for the partition's active messages;
* appends the events a copy forwarded to the new message's partition;
* writes anything it cannot decode to the dead-letter topic, and goes on; a dead-lettered
  command whose ids can be read still gets a rejected result, so its caller is answered.

Time is the service's: a command is decided at its record's timestamp, which the broker stamps
when it appends the record (the commands topic is `LogAppendTime`, services/common/topics.py).
That instant is in the log, so a rebuild or a replay decides the same; the publisher's
`issued_at` is kept in the record as information only.

Its state (every message of the partition, folded with `evolve`, and the result of every command
already decided) is a cache of the committed log: built on assignment from `<prefix>.events` and
`<prefix>.command-results`, dropped and rebuilt after any failed or doubtful transaction.

A record of those two topics that does not decode (bytes that are no JSON, a schema-invalid or
oversized record, an unknown version) is not folded: the take sets it aside on
`<prefix>.dead-letter` with its error and goes on, so one such record never keeps a partition
from being owned. Only the dispatcher's principal may write these topics, in its transactions,
so such a record was written by an operator with admin rights or by a bug. The rebuild reads it
again on every take: its dead letter is written once, identified by its source
(services/common/deadletters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, assert_never

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced
from pydantic import ValidationError

from core import EventOutOfOrderError
from schemas import decode_event
from schemas.fast import dump_json
from schemas.wire import CommandResult, DeadLetter
from services.common import deadletters
from services.common.kafka import client_options
from services.common.ownership import Ownership
from services.common.reading import end_offset, read_range
from services.common.settings import Settings
from services.common.topics import Topics
from services.dispatcher.clock import Clock
from services.dispatcher.contacts import FileContacts
from services.dispatcher.decider import (
    Decision,
    Input,
    PartitionState,
    Rules,
    Write,
    WriteContent,
    WriteDeadLetter,
    WriteEvent,
    WriteFence,
    WriteForward,
    WriteResult,
    WriteSends,
    decide_record,
    key_of,
)
from services.dispatcher.snapshots import (
    Blocks,
    Checkpoint,
    SnapshotError,
    StateDirectory,
    close_contacts,
    dump,
)
from services.dispatcher.snapshots import read as read_snapshot

log = structlog.get_logger(__name__)

#: A producer that sees one of these has been replaced by a newer owner of its partition.
FENCED = (ProducerFenced, InvalidProducerEpoch)

#: How long one batch's transaction may take, from its first send to the end of its commit.
#: aiokafka's commit waits without a bound; past this the outcome is unknown (see `_process`).
#: Below the producer's transaction timeout (60 s), after which the broker aborts it anyway.
TRANSACTION_DEADLINE_S = 45.0

#: A take that folded at least this many events and results (or loaded a snapshot) runs a full
#: collection before it freezes the state (`freeze_taken_state`).
GC_COLLECT_AFTER_RECORDS = 10_000


def freeze_taken_state(records: int, *, restored: bool) -> bool:
    """Freeze what a take built out of the cyclic GC's reach; returns whether it collected first.

    Why this is here at all: a partition's folded state lives as long as the partition and is
    millions of objects for a large message; left to the GC, every full collection walks all of
    them again (docs/core.md, measured figures). `gc.freeze()` moves every object tracked now
    into the permanent generation, which no collection walks (it is undone by the
    `gc.unfreeze()` of a drop). The `gc.collect()` before it is there so that the fold's cyclic
    garbage (decoded records, the rebuild's temporaries) is freed instead of frozen with the
    state until the next drop. That collection walks every tracked object of the process, the
    states of the partitions already owned included, so it runs only when the take folded or
    loaded something large: a small take's garbage is small, and frozen it costs less than a
    walk of the whole heap on every take of a rebalance.
    """
    collect = restored or records >= GC_COLLECT_AFTER_RECORDS
    if collect:
        gc.collect()
    gc.freeze()
    return collect


#: How long closing a producer may take (it flushes first, which never ends with no broker).
CLOSE_DEADLINE_S = 10.0

#: The wait between two snapshots of a partition is at least this many times the last one's
#: duration (so snapshots take at most a tenth of the partition's time).
SNAPSHOT_WAIT_PER_COST = 9.0

#: The most input records one fetch brings (one partition's share is handled in order).
MAX_BATCH = 500

#: A transaction that has written this many output records commits before it takes the next
#: input record: a bound on its size and duration whatever the ticks release.
MAX_TRANSACTION_OUTPUT = 20_000


#: The fold of a take gives the event loop a turn every this many records: a fetch brings up to
#: 5,000 at once, and folding them without a pause starved the consumer's heartbeat on a loaded
#: machine (the session ran out mid-take, the group rebalanced, the take was abandoned, again).
YIELD_EVERY = 100

#: A record of the events or results topic that the rebuild cannot fold, and why.
SetAside = tuple[ConsumerRecord[Any, Any], Exception]


@dataclass
class Folded:
    """What a fold of the events and results read: how many of each were folded, the records
    set aside, and the offsets after the last record read of each topic."""

    events: int = 0
    results: int = 0
    bad: list[SetAside] = field(default_factory=list)
    events_next: int = 0
    results_next: int = 0


class TransactionInDoubtError(Exception):
    """A transaction did not end within TRANSACTION_DEADLINE_S: committed or not is unknown."""


@dataclass
class Partition:
    """What the processor holds for one owned input partition: its producer and its state."""

    number: int
    producer: AIOKafkaProducer
    state: PartitionState
    # The input offset after the last committed batch (for the lag on /health).
    next_offset: int | None = None
    # Its locked state directory (snapshots, the contact file); None: no snapshots.
    directory: StateDirectory | None = None
    snapshot_at: float = 0.0
    snapshot_took: float = 0.0  # how long its last snapshot took (s)
    folded_at_snapshot: int = 0
    # The offsets of the events and results topics up to which every record was read by this
    # owner (folded, written by it, or set aside): a snapshot's checkpoint may pass only
    # records examined, or a restore from it would hide a foreign one (see `snapshot`).
    events_seen: int = 0
    results_seen: int = 0
    # The events and results this owner committed since then: when the records read there
    # are as many, none is foreign and none needs decoding again.
    events_written: int = 0
    results_written: int = 0


def as_input(record: ConsumerRecord[Any, Any]) -> Input:
    return Input(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp=record.timestamp,
        timestamp_type=record.timestamp_type,
        headers=tuple(record.headers or ()),
    )


class Processor:
    """Owns partitions of the commands topic and decides everything about their messages."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        # The shared ownership piece (services/common/ownership.py): the rebalance listener,
        # takes with retries, owned partitions and their lag. Its lock is held while a batch is
        # processed, so a revocation never drops a partition in the middle of its transaction.
        self.ownership: Ownership[Partition] = Ownership(
            topics.commands,
            take=self._take,
            drop=self._drop,
            position=lambda part: part.next_offset,
            fenced=FENCED,
            # Takes run in the loop, not in the rebalance callback: a large partition's take
            # outlasts the session timeout (no heartbeat is sent during the callback).
            deferred=True,
        )
        self.partitions = self.ownership.partitions
        self.orphans = self.ownership.orphans
        self._lock = self.ownership.lock
        self._consumer: AIOKafkaConsumer | None = None
        self.running = False
        self.decided = 0
        #: Records of the events and results topics the rebuilds set aside (new dead letters
        #: written, and those found already written by an earlier take).
        self.set_aside = 0
        self.set_aside_written = 0
        self.clock = Clock(settings, topics, self.owned)

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.topics.group,
            # Static membership: a restarted process with the same id is given its partitions
            # back without waiting for the session of its dead predecessor to time out.
            group_instance_id=self.settings.dispatcher_instance_id,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.settings.max_record_bytes,
        )
        self._consumer = consumer
        self.ownership.attach(consumer)
        consumer.subscribe([self.topics.commands], listener=self.ownership.listener())
        await consumer.start()
        clock = asyncio.create_task(
            self.clock.run(stop) if self.settings.clock_enabled else stop.wait()
        )
        self.running = True
        try:
            while not stop.is_set():
                if clock.done():
                    clock.result()  # the clock died: end the process rather than never tick
                await self.ownership.retake_orphans()
                batches = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
                for tp, records in batches.items():
                    async with self._lock:
                        await self._process(tp, records)
        finally:
            self.running = False
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            async with self._lock:
                await self.ownership.drop_all()
            await consumer.stop()

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        part = self.partitions.get(tp.partition)
        if part is None:
            # Revoked, fenced or orphaned since the fetch: whoever takes the partition next
            # starts from the committed offset, so skipping these loses nothing.
            return
        # The transaction runs as a task of its own so that a commit that never answers can be
        # left behind: aiokafka waits for the end of a commit without a bound.
        try:
            while records:
                task = asyncio.create_task(self._transaction(part, tp, records))
                task.add_done_callback(_retrieve)
                finished, _ = await asyncio.wait({task}, timeout=TRANSACTION_DEADLINE_S)
                if not finished:
                    task.cancel()
                    raise TransactionInDoubtError(
                        f"no end of the transaction after {TRANSACTION_DEADLINE_S:g}s"
                    )
                taken, events, results = task.result()
                part.next_offset = records[taken - 1].offset + 1
                part.events_written += events
                part.results_written += results
                records = records[taken:]
                # Committed: the state is exactly the log's. Between the transactions of a
                # batch too, or a release of a whole backlog of ticks would go without one.
                await self._maybe_snapshot(tp.partition)
        except FENCED:
            # Another owner initialised this partition's transactional id after us: it owns
            # the partition now (or will once the group rebalances). Stop reading it until the
            # group gives it back; our transaction was aborted by the broker.
            log.warning("fenced: another owner took the partition", partition=tp.partition)
            await self.ownership.fenced_out(tp.partition)
        except Exception:
            # Aborted, or a commit with an unknown outcome: the in-memory state may hold what
            # the log does not (evolve folds in place), and the consumer does not rewind by
            # itself. Never retry the batch on the same producer: a new one (its init fences
            # the old one and settles its transaction either way) rebuilds from the committed
            # log and rewinds the input to the committed offset.
            log.exception("transaction failed; rebuilding the partition", partition=tp.partition)
            await self.ownership.rebuild(tp.partition)

    async def _transaction(
        self, part: Partition, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]
    ) -> tuple[int, int, int]:
        """One transaction: the events, results, sends, forwarded copies and dead letters of a
        run of the batch's records, with the offset after the last of them, commit together or
        not at all. The run ends early once it wrote MAX_TRANSACTION_OUTPUT records (ticks of
        large messages release thousands each); returns how many input records it took, and
        how many events and results it wrote."""
        rules = Rules(
            partitions=self.settings.kafka_partitions,
            timestamp_type=self.settings.kafka_commands_timestamp_type,
        )
        events = results = 0
        async with part.producer.transaction():
            written = 0
            taken = 0
            for record in records:
                with structlog.contextvars.bound_contextvars(
                    partition=part.number, offset=record.offset
                ):
                    decision = decide_record(part.state, as_input(record), rules)
                await self._write(part, decision)
                written += decision.output_count()
                for write in decision.writes:
                    events += isinstance(write, WriteEvent)
                    results += isinstance(write, WriteResult)
                taken += 1
                if written >= MAX_TRANSACTION_OUTPUT:
                    break
            await part.producer.send_offsets_to_transaction(
                {tp: records[taken - 1].offset + 1}, self.topics.group
            )
        return taken, events, results

    # ------------------------------------------------------------------ the writers

    async def _write(self, part: Partition, decision: Decision) -> None:
        """Send what the decider decided, in its order, in the open transaction. The message's
        own records go to the input's partition number, explicitly: they must be where this
        partition's rebuild and the delivery workers read them, whatever partitioner an external
        producer used."""
        if decision.decided:
            self.decided += 1
        for write in decision.writes:
            await self._send(part, write)

    async def _send(self, part: Partition, write: Write) -> None:
        send = part.producer.send
        number = part.number
        match write:
            case WriteEvent(event=event):
                await send(
                    self.topics.events,
                    value=dump_json(event),  # model_dump_json's bytes (schemas/fast.py)
                    key=key_of(event.message_id),
                    partition=number,
                    headers=[("type", event.type.encode())],
                )
            case WriteResult(result=result, integrator=integrator):
                # A command an integrator sent through the intake relay is also answered on
                # that integrator's own answers topic (the relay made sure it exists).
                value = result.model_dump_json().encode()
                headers = [("command_id", str(result.command_id).encode())]
                topics = [self.topics.results]
                if integrator is not None:
                    topics.append(self.topics.intake_results(integrator))
                for topic in topics:
                    await send(
                        topic,
                        value=value,
                        key=key_of(result.message_id),
                        partition=number,
                        headers=headers,
                    )
            case WriteFence(fence=fence):
                # On a topic of its own: the delivery workers read it apart from the sends, so
                # a pause or cancel reaches them however far behind they are there.
                await send(
                    self.topics.control,
                    value=fence.model_dump_json().encode(),
                    key=key_of(fence.message_id),
                    partition=number,
                )
            case WriteContent(content=content):
                # Before any send of the message, in the same partition: the delivery worker
                # stores it before it reads the sends that need it.
                await send(
                    self.topics.sends,
                    value=content.model_dump_json().encode(),
                    key=key_of(content.message_id),
                    partition=number,
                    headers=[("type", b"MailContent")],
                )
            case WriteSends(message_id=message_id, values=values):
                # The sends exist if and only if the release does (same transaction).
                topic = self.topics.sends
                key = key_of(message_id)
                headers = [("type", b"Send")]
                for value in values:
                    await send(topic, value=value, key=key, partition=number, headers=headers)
            case WriteForward(copied=copied, partition=partition):
                # The copy's forwarded events exist if and only if the original's MessageCopied
                # does; the new message's partition appends them in order.
                await send(
                    self.topics.commands,
                    value=copied.model_dump_json().encode(),
                    key=key_of(copied.event.message_id),
                    partition=partition,
                )
            case WriteDeadLetter(letter=letter, key=key):
                # Same partition number as the input: a reader of the dead letters finds a
                # partition's letters in input order.
                await send(
                    self.topics.dead_letter,
                    value=letter.model_dump_json().encode(),
                    key=key,
                    partition=number,
                )
            case _:
                assert_never(write)

    # ------------------------------------------------------------------ ownership

    async def _take(self, number: int) -> Partition:
        """Own a partition: fence its previous owner and rebuild its state (the ownership
        piece moves the input back to the committed offset when it retakes a partition)."""
        started = time.perf_counter()
        producer = AIOKafkaProducer(
            **client_options(self.settings),
            transactional_id=self.topics.transactional_id(number),
            max_request_size=self.settings.max_record_bytes,
        )
        try:
            # start() initialises the transactional id: the broker bumps its epoch, which
            # fences a zombie holding the same id and settles whatever transaction it left open
            # (InitProducerId answers only once that transaction is complete). Only then is the
            # log read: what the zombie committed is in it, what it did not is gone.
            await producer.start()
            init_s = time.perf_counter() - started
            directory = self._directory(number)
            try:
                state, folded, source = await self._rebuild(number, directory)
                # Before the partition is owned (so before any snapshot of it): a record set
                # aside has its dead letter whatever the next take restores from.
                await self._set_aside(producer, number, folded.bad)
            except BaseException:
                if directory is not None:
                    directory.release()
                raise
            part = Partition(number, producer, state, directory=directory)
            part.events_seen, part.results_seen = folded.events_next, folded.results_next
            part.snapshot_at = time.monotonic()
            part.folded_at_snapshot = state.folded
        except BaseException:
            await _close(producer)
            raise
        collected = freeze_taken_state(folded.events + folded.results, restored=source != "log")
        self.clock.wake.set()
        log.info(
            "partition taken",
            partition=number,
            messages=len(part.state.messages),
            active=len(part.state.active),
            events=folded.events,
            results=folded.results,
            source=source,
            set_aside=len(folded.bad),
            init_s=round(init_s, 3),
            take_s=round(time.perf_counter() - started, 3),
            gc_collected=collected,
        )
        return part

    async def _drop(self, number: int, part: Partition) -> None:
        await _close(part.producer)
        close_contacts(part.state)  # its contact file (services/dispatcher/contacts.py)
        if part.directory is not None:
            part.directory.release()
        # Let the dropped state be collected (it was frozen when the partition was taken).
        gc.unfreeze()

    def _directory(self, number: int) -> StateDirectory | None:
        """The partition's state directory, locked; None without snapshots or when another
        owner on this host holds it (a zombie: we fold from the log, never share its files)."""
        root = self.settings.dispatcher_state_dir
        if root is None:
            return None
        directory = StateDirectory(root, self.topics.prefix, number)
        if not directory.acquire():
            log.warning("state directory locked by another owner; no snapshots", partition=number)
            return None
        return directory

    async def _rebuild(
        self, number: int, directory: StateDirectory | None
    ) -> tuple[PartitionState, Folded, str]:
        """The partition's state: from the newest valid snapshot and the records after it, or
        folded from the beginning. Returns it, what the fold read, and its source."""
        if directory is not None:
            for path in directory.snapshots():
                restored = await self._restore(number, path)
                if restored is not None:
                    state, checkpoint = restored
                    try:
                        folded = await self._fold_tail(
                            state,
                            checkpoint.events_end,
                            checkpoint.results_end,
                            after_snapshot=True,
                        )
                    except EventOutOfOrderError as error:
                        # The log after the snapshot does not follow it: not this log's state.
                        log.warning(
                            "snapshot not used", partition=number, file=path.name, reason=str(error)
                        )
                        close_contacts(state)
                        continue
                    except BaseException:
                        close_contacts(state)
                        raise
                    return state, folded, path.name
            # None could be used: they go (the contact file is rewritten from the beginning).
            directory.clear()
        contacts = FileContacts(None if directory is None else directory.contacts_path)
        state = PartitionState(number, contacts=contacts)
        try:
            folded = await self._fold_tail(state, 0, 0, after_snapshot=False)
        except BaseException:
            contacts.close()
            raise
        return state, folded, "log"

    async def _restore(self, number: int, path: Path) -> tuple[PartitionState, Checkpoint] | None:
        """The state of one snapshot file, or None (said in the log) when it cannot be used."""
        try:
            # Off the event loop (a large partition's snapshot takes seconds to read).
            state, checkpoint = await asyncio.to_thread(
                read_snapshot, path, self.topics.prefix, number
            )
        except (SnapshotError, OSError) as error:
            log.warning("snapshot not used", partition=number, file=path.name, reason=str(error))
            return None
        events_end = await end_offset(self.settings, self.topics.events, number)
        results_end = await end_offset(self.settings, self.topics.results, number)
        if checkpoint.events_end > events_end or checkpoint.results_end > results_end:
            # Beyond the log's end: a log deleted or recreated since. Never a wrong state.
            log.warning("snapshot not used", partition=number, file=path.name, reason="stale")
            close_contacts(state)
            return None
        return state, checkpoint

    async def _fold_tail(
        self, part: PartitionState, events_start: int, results_start: int, *, after_snapshot: bool
    ) -> Folded:
        """Fold the partition's committed events and results from the given offsets to the end;
        a record that does not decode is left out and returned with its error, and so is, in the
        fold of the whole log (not ``after_snapshot``), an event out of its message's sequence."""
        folded = Folded(events_next=events_start, results_next=results_start)
        async for record in read_range(
            self.settings, self.topics.events, part.number, start=events_start
        ):
            folded.events_next = record.offset + 1
            if folded.events % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # see YIELD_EVERY
            try:
                event = decode_event(record.value or b"")
            except (ValidationError, ValueError) as error:
                folded.bad.append((record, error))
                continue
            try:
                part.fold(event)
            except EventOutOfOrderError as error:
                # A decoded event that does not follow its message's history. After a snapshot
                # it says the snapshot is not this log's (_rebuild falls back); in the fold of
                # the whole log only a foreign writer can have put it there (the dispatcher
                # writes each message's events in sequence, in transactions): it is set aside
                # like an undecodable record (the projections do the same), so it never stalls
                # the partition. evolve refuses it before changing anything.
                if after_snapshot:
                    raise
                folded.bad.append((record, error))
                continue
            folded.events += 1
        async for record in read_range(
            self.settings, self.topics.results, part.number, start=results_start
        ):
            folded.results_next = record.offset + 1
            if folded.results % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                result = CommandResult.model_validate_json(record.value or b"")
            except (ValidationError, ValueError) as error:
                folded.bad.append((record, error))
                continue
            part.remember(result)
            folded.results += 1
        return folded

    async def _examine(self, part: Partition, events_end: int, results_end: int) -> None:
        """Before a snapshot up to these ends: read what was appended since this owner last
        looked and set aside what does not decode. Without this a snapshot would pass a bad
        record someone else wrote meanwhile, which no take read, and every restore from it
        would hide it. When the records are exactly as many as this owner committed, all are
        its own and nothing is decoded. Decoded records are not folded: the state holds this
        owner's own (a foreign record that decodes is not told apart here)."""
        bad: list[SetAside] = []
        for topic, start, end, written in (
            (self.topics.events, part.events_seen, events_end, part.events_written),
            (self.topics.results, part.results_seen, results_end, part.results_written),
        ):
            records = [r async for r in read_range(self.settings, topic, part.number, start, end)]
            if len(records) == written:
                continue
            for record in records:
                value = record.value or b""
                try:
                    if topic == self.topics.events:
                        decode_event(value)
                    else:
                        CommandResult.model_validate_json(value)
                except (ValidationError, ValueError) as error:
                    bad.append((record, error))
        await self._set_aside(part.producer, part.number, bad)
        part.events_seen, part.results_seen = events_end, results_end
        part.events_written = part.results_written = 0

    async def _set_aside(
        self, producer: AIOKafkaProducer, number: int, bad: list[SetAside]
    ) -> None:
        """Write the dead letters of the records the rebuild could not fold, those not written
        by an earlier take: read after the producer's init, so no previous owner of the
        partition writes meanwhile; in one transaction, so they are there or the take fails
        and is retried."""
        if not bad:
            return
        sources = (self.topics.events, self.topics.results)
        known = await deadletters.recorded(self.settings, self.topics.dead_letter, number, sources)
        new = [(r, e) for r, e in bad if (r.topic, r.partition, r.offset) not in known]
        if new:
            async with producer.transaction():
                for record, error in new:
                    letter = DeadLetter.of(record, error)
                    await producer.send(
                        self.topics.dead_letter,
                        value=letter.model_dump_json().encode(),
                        key=record.key,
                        partition=number,
                    )
        self.set_aside += len(bad)
        self.set_aside_written += len(new)
        written = {(r.topic, r.offset) for r, _ in new}
        for record, error in bad:
            log.error(
                "record of the log set aside: not folded",
                partition=number,
                topic=record.topic,
                offset=record.offset,
                error=f"{type(error).__name__}: {error}"[:500],
                dead_letter="written" if (record.topic, record.offset) in written else "known",
            )

    async def _maybe_snapshot(self, number: int) -> None:
        """Write the partition's snapshot when it is due: its state is then exactly the
        committed log (called between transactions, under the lock)."""
        part = self.partitions.get(number)
        if part is None or part.directory is None:
            return
        state = part.state
        if state.folded - part.folded_at_snapshot < self.settings.snapshot_min_events:
            return
        # At most every snapshot_interval_s, and never more than a tenth of the time: a large
        # partition's snapshot takes seconds, and the partition waits meanwhile.
        wait = max(self.settings.snapshot_interval_s, SNAPSHOT_WAIT_PER_COST * part.snapshot_took)
        if time.monotonic() - part.snapshot_at < wait:
            return
        try:
            await self.snapshot(part)
        except OSError as error:
            # A snapshot only saves a later take some folding: without it nothing is wrong.
            part.snapshot_at = time.monotonic()
            log.warning("snapshot not written", partition=part.number, error=str(error))

    async def snapshot(self, part: Partition) -> None:
        """Write a snapshot of ``part`` now (its state must be the committed log's)."""
        directory = part.directory
        if directory is None:
            return
        started = time.perf_counter()
        started_at = time.monotonic()
        state = part.state
        contacts = state.contacts
        if isinstance(contacts, FileContacts):
            contacts.flush()
        # We are the only writer of these partitions and nothing is open: the ends are ours
        # (what another writer appended meanwhile is examined first).
        events_end = await end_offset(self.settings, self.topics.events, part.number)
        results_end = await end_offset(self.settings, self.topics.results, part.number)
        await self._examine(part, events_end, results_end)
        checkpoint = Checkpoint(
            prefix=self.topics.prefix,
            partition=part.number,
            events_end=events_end,
            results_end=results_end,
            input_offset=part.next_offset,
            contacts_length=contacts.length if isinstance(contacts, FileContacts) else 0,
        )
        # In a thread, so the consumer's heartbeats go on; the state does not change meanwhile
        # (every change happens under the lock this runs under).
        written = 0

        def fill(out: BinaryIO, blocks: Blocks) -> None:
            nonlocal written
            written = dump(state, checkpoint, out, blocks)

        path = await asyncio.to_thread(directory.write, checkpoint.events_end, fill)
        part.snapshot_at = time.monotonic()
        part.snapshot_took = part.snapshot_at - started_at
        part.folded_at_snapshot = state.folded
        log.info(
            "snapshot written",
            partition=part.number,
            file=path.name,
            bytes=written,
            block_bytes=directory.written,
            events_end=checkpoint.events_end,
            took_s=round(time.perf_counter() - started, 3),
        )

    # ------------------------------------------------------------------ reporting

    def owned(self) -> list[int]:
        return self.ownership.owned()

    def status(self) -> dict[str, Any]:
        """Owned partitions and their lag, from what the consumer already knows (no request)."""
        return {
            "running": self.running,
            **self.ownership.status(),
            "decided": self.decided,
            "ticks_written": self.clock.written,
            "set_aside": self.set_aside,
            "set_aside_written": self.set_aside_written,
        }

    async def check(self) -> None:
        """The processor's health check: raises (with what is wrong) unless it consumes and
        owns every partition the group gave it."""
        if not self.running:
            raise RuntimeError("the processor is not consuming")
        self.ownership.check()


async def _close(producer: AIOKafkaProducer) -> None:
    # stop() flushes first, which never ends when the broker is gone; the producer is being
    # thrown away (its transaction is settled by the next owner's init either way).
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), CLOSE_DEADLINE_S)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # A transaction task left behind after its deadline ends later with an error nobody
    # awaits; read it so asyncio does not report it as never retrieved.
    if not task.cancelled():
        task.exception()
