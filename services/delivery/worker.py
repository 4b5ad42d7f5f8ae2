"""The delivery worker's loop (docs/delivery.md).

It reads `<prefix>.sends` in the consumer group `<prefix>-delivery` with read_committed (only
sends whose release committed), and for each partition it owns, in order:

1. `MailContent` records are stored in Postgres (`delivery_content`) before any send needs them;
2. sends are claimed in the ledger in small chunks (a unique send id: a send claimed before, by
   anyone, in any state, is never handed over again), then handed to SMTP through the pool at
   the configured overall rate, and their outcomes written back to the ledger;
3. the consumer's offsets are committed once the chunk's outcomes are in the ledger.

Two loops run beside it: deferred sends (4xx, or no connection) are claimed again when their
backoff is due, and final outcomes not yet reported are published to `<prefix>.commands` as
`RecordDeliveryOutcomes` commands (an outbox: the ledger row is marked reported only after the
broker acknowledged the command; a repeat is a no-op in the core).

No single send stops the worker: a send that cannot be composed (a header that would carry a
line break, an address that does not encode) or handed to SMTP ends `failed` with its reason
(`unknown` only if DATA had begun), and the chunk and the worker go on. A helper loop logs and
counts an error of one step and runs the next (`status()["helper_errors"]`).

The fence (docs/delivery.md): a reader of its own follows `<prefix>.control` (the pauses, resumes
and cancels, written in the transactions of their events) into a message id -> status map, apart
from the sends, so it is current however far behind the sends are. A send whose message was
paused or canceled after its release is not handed off: before the claim it is recorded
`returned` at once; after it, the pool asks the fence again once a connection is ready and right
before DATA. Returned sends are reported like outcomes and go back to the message as not sent.

Taking a partition bumps its owner epoch in Postgres and marks every send the previous owner left
`claimed` as `unknown`: it may or may not have reached SMTP, and a second copy is worse than none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas import (
    MAX_CHUNK,
    Actor,
    Content,
    FailedRecipient,
    RecordDeliveryOutcomes,
    ReturnedSend,
)
from schemas.sends import FenceRecord, MailContent, SendRecord, decode_send_topic
from schemas.text import STORED, one_line
from schemas.wire import CommandRecord, DeadLetter
from services.common import deadletters
from services.common.kafka import client_options
from services.common.ownership import Ownership
from services.common.settings import Settings
from services.common.topics import Topics
from services.delivery.ledger import (
    Claim,
    FencedError,
    Ledger,
    Outcome,
    Reportable,
    retry_at,
)
from services.delivery.mail import compose
from services.delivery.smtp import Answer, RateLimiter, SmtpPool

log = structlog.get_logger(__name__)
#: Ids bound for a unit of work: every log line inside it carries them (docs/delivery.md).
bound = structlog.contextvars.bound_contextvars

#: The service the outcome commands are issued by.
DELIVERY = "delivery"
#: Sends claimed at once: small, so a crash leaves few claims without an outcome (each becomes
#: `unknown`), large enough to keep the pool's connections busy.
CLAIM_CHUNK = 32
#: The most records one fetch brings (one partition's share is handled in order).
MAX_FETCH = 256
REPORT_INTERVAL_S = 0.2
RETRY_POLL_S = 0.5
#: A namespace for the outcome commands' ids (uuid5 of the send ids they report).
OUTCOMES_NAMESPACE = uuid.UUID("5b0f6a4e-2f53-4c1e-9a51-6f1b7d7d2c01")
#: How long the fence reader's fetch waits at most for a new record on the broker (the control
#: topic is quiet: this is the extra delay before a pause reaches the worker, not a poll rate).
FENCE_FETCH_WAIT_MS = 10
#: A server failing under the loop (Postgres or Kafka): the first wait before the next try, doubled
#: with each failure in a row up to STALL_MAX_S.
STALL_FIRST_S = 0.2
STALL_MAX_S = 5.0
#: The failures of a server, not of a record: the loop waits and tries again (it never ends for
#: them). Anything else is a bug and ends the process, so that a supervisor sees it.
SERVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresError,
    asyncpg.InterfaceError,  # the connection was lost in the middle of an operation
    KafkaError,
)


def backoff(attempts: int) -> float:
    """The wait before try ``attempts + 1`` after ``attempts`` failures in a row."""
    return float(min(STALL_MAX_S, STALL_FIRST_S * 2 ** min(max(attempts, 1) - 1, 16)))


@dataclass
class Stall:
    """Why the worker cannot make progress right now, since when, after how many tries."""

    reason: str
    since: float
    attempts: int


class FenceReader:
    """The latest fence of every message, read from `<prefix>.control` (all partitions, from the
    beginning: one small record per pause, resume or cancel) with read_committed, so a fence
    exists if and only if its event does. ``ready`` is set once the records committed before
    the worker started have been read: the worker hands nothing off before that.

    A record that is no fence (undecodable, schema-invalid, an unknown version, oversized) is
    set aside on `<prefix>.dead-letter` with its error through ``dead_letter`` and the reader
    goes on. It reads the topic from the beginning at every start, so a letter is written only
    when the dead-letter partition does not hold one of that source yet
    (services/common/deadletters.py; two workers starting at once may both write it)."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        dead_letter: Callable[[ConsumerRecord[Any, Any], Exception], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.fences: dict[str, FenceRecord] = {}
        self.ready = asyncio.Event()
        self.read = 0
        #: Why the reader is not following the control topic right now (None: it is).
        self.problem: str | None = None
        self.dead_letter = dead_letter
        #: Records set aside (each time it is read) and the dead letters written for them.
        self.set_aside = 0
        self.set_aside_written = 0
        # Per control partition: the sources whose dead letter is known to be written (read
        # once per process, at its first bad record; kept across the reader's restarts).
        self._recorded: dict[int, set[deadletters.Source]] = {}

    def stops(self, send: SendRecord) -> bool:
        """True when ``send`` must not be handed to SMTP: paused or canceled after its release."""
        fence = self.fences.get(str(send.message_id))
        return fence is not None and fence.stops(send.release_sequence)

    def apply(self, fence: FenceRecord) -> None:
        key = str(fence.message_id)
        seen = self.fences.get(key)
        if seen is None or seen.sequence < fence.sequence:
            self.fences[key] = fence
        self.read += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the control topic until ``stop``; when Kafka fails, read it again from the
        beginning once it answers (the fences kept meanwhile: a record applies only if newer)."""
        failures = 0
        while not stop.is_set():
            try:
                await self._follow(stop)
            except SERVER_ERRORS as error:
                failures += 1
                self.problem = f"the control topic is not read: {error!r}"[:500]
                log.warning("fence reader failed; reading again", error=repr(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff(failures))

    async def _follow(self, stop: asyncio.Event) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            **client_options(settings),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FENCE_FETCH_WAIT_MS,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topics.control, n) for n in range(settings.kafka_partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            self.problem = None
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for record in records:
                        try:
                            fence = FenceRecord.model_validate_json(record.value or b"")
                        except (ValidationError, ValueError) as error:
                            await self._set_aside(record, error)
                            continue
                        self.apply(fence)
                if not self.ready.is_set() and all(
                    [await consumer.position(tp) >= end[tp] for tp in tps]
                ):
                    self.ready.set()
                    log.info("fences read", messages=len(self.fences), records=self.read)
        finally:
            await consumer.stop()

    async def _set_aside(self, record: ConsumerRecord[Any, Any], error: Exception) -> None:
        source = (record.topic, record.partition, record.offset)
        known = self._recorded.get(record.partition)
        if known is None:
            known = await deadletters.recorded(
                self.settings, self.topics.dead_letter, record.partition, (self.topics.control,)
            )
            self._recorded[record.partition] = known
        first = source not in known
        if first:
            await self.dead_letter(record, error)
            known.add(source)
            self.set_aside_written += 1
        self.set_aside += 1
        log.error(
            "control record set aside: no fence",
            partition=record.partition,
            offset=record.offset,
            error=f"{type(error).__name__}: {error}"[:300],
            dead_letter="written" if first else "known",
        )


@dataclass
class Owned:
    """A sends partition this worker owns, and the epoch it owns it under."""

    number: int
    epoch: int
    next_offset: int | None = None


class DeliveryWorker:
    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.owner = settings.delivery_instance_id or (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        # The shared ownership piece (services/common/ownership.py): a take that fails (the
        # ledger or Kafka down during a rebalance) leaves the partition paused and reported
        # unowned on /health, and is retried; the retry re-reads from the committed offset.
        self.ownership: Ownership[Owned] = Ownership(
            topics.sends,
            take=self.take,
            drop=self._drop,
            position=lambda owned: owned.next_offset,
            concurrent=False,
        )
        self.owned = self.ownership.partitions
        self.contents: dict[str, Content] = {}
        self.running = False
        self.handed = 0
        self.reported = 0
        self.helper_errors = 0
        self.last_helper_error: str | None = None
        self.returned = 0
        #: Set while a server fails under the loop (the worker retries; /health says why).
        self.stalled: Stall | None = None
        self.stalls = 0
        self.fence = FenceReader(settings, topics, self._dead_letter)
        self._stop: asyncio.Event | None = None
        # Per partition: the outcome write in flight (see _deliver).
        self._recording: dict[int, asyncio.Task[None]] = {}
        # Per partition: send ids of claims whose answer was lost (see _claim).
        self._unsure: dict[int, set[str]] = {}
        self._lock = self.ownership.lock
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ledger: Ledger | None = None
        self._pool: SmtpPool | None = None
        self._limiter = RateLimiter(settings.delivery_rate)

    # ------------------------------------------------------------------ the loops

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        self._stop = stop
        self._ledger = await Ledger.connect(settings.database_url)
        self._pool = SmtpPool(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_pool_size,
            settings.smtp_timeout_s,
            max_age_s=settings.smtp_connection_max_age_s,
        )
        self._producer = AIOKafkaProducer(
            **client_options(settings),
            acks="all",
            enable_idempotence=True,
            max_request_size=settings.max_record_bytes,
        )
        await self._producer.start()
        fences = asyncio.create_task(self.fence.run(stop))
        ready = asyncio.create_task(self.fence.ready.wait())
        # Nothing is handed off before the fences committed so far are known.
        await asyncio.wait({fences, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if fences.done():
            fences.result()  # the reader died before it was ready: end the process
        consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=self.topics.delivery_group,
            group_instance_id=settings.delivery_instance_id,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_record_bytes,
        )
        self._consumer = consumer
        self.ownership.attach(consumer)
        consumer.subscribe([self.topics.sends], listener=self.ownership.listener())
        await consumer.start()
        helpers = [
            fences,
            asyncio.create_task(self._every(stop, REPORT_INTERVAL_S, self.report_once)),
            asyncio.create_task(self._every(stop, RETRY_POLL_S, self.retry_once)),
        ]
        self.running = True
        try:
            while not stop.is_set():
                for task in helpers:
                    if task.done():
                        task.result()  # a helper loop died: end the process, do not limp on
                await self.ownership.retake_orphans()
                try:
                    batches = await consumer.getmany(timeout_ms=200, max_records=MAX_FETCH)
                except KafkaError as error:
                    await self._wait(self._stall("the sends are not read", error))
                    continue
                if not batches:
                    continue
                async with self._lock:
                    failed = await self._batches(consumer, batches)
                if failed is not None:
                    # A server failed under the batch: what it handed over is claimed in the
                    # ledger (and its outcome kept until recorded), the rest is read again
                    # after the wait (the position went back to the batch's first record).
                    await self._wait(self._stall("sends not handed over", failed))
                else:
                    self._progressed()
        finally:
            self.running = False
            for task in helpers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await consumer.stop()
            await self._producer.stop()
            await self._pool.close()
            await self._ledger.close()

    async def _batches(
        self,
        consumer: AIOKafkaConsumer,
        batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
    ) -> BaseException | None:
        """Hand over one fetch, a partition's share each in order; commit what is done. A
        partition whose share a server failed under goes back to the share's first record (the
        ledger's claims keep what it handed over from going out again). Returns that failure."""
        items = list(batches.items())
        done = await asyncio.gather(
            *(self._partition_batch(tp, records) for tp, records in items),
            return_exceptions=True,
        )
        offsets: dict[TopicPartition, int] = {}
        failed: BaseException | None = None
        for (tp, records), result in zip(items, done, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, SERVER_ERRORS):
                    raise result
                failed = result
                if tp in consumer.assignment():
                    consumer.seek(tp, records[0].offset)
            elif result[1] is not None:
                offsets[tp] = result[1]
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as error:
                # A rebalance took partitions meanwhile (or Kafka fails): their next reader
                # re-reads from the last commit, and the ledger skips what was handed over.
                log.warning("offsets not committed", error=repr(error))
        return failed

    def _stall(self, what: str, error: BaseException) -> float:
        """Note that the worker cannot make progress (shown on /health); returns the wait
        before the next try."""
        now = time.monotonic()
        was = self.stalled
        attempts = 1 if was is None else was.attempts + 1
        if was is None:
            self.stalls += 1
        self.stalled = Stall(
            f"{what}: {type(error).__name__}: {error}"[:500],
            now if was is None else was.since,
            attempts,
        )
        delay = backoff(attempts)
        log.warning(
            "delivery cannot make progress; retrying",
            what=what,
            error=repr(error),
            attempts=attempts,
            retry_in_s=delay,
        )
        return delay

    def _progressed(self) -> None:
        was, self.stalled = self.stalled, None
        if was is not None:
            log.info(
                "delivery progressing again",
                stalled_s=round(time.monotonic() - was.since, 3),
                attempts=was.attempts,
            )

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the worker is stopped meanwhile."""
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _claim(self, owned: Owned, sends: Sequence[SendRecord]) -> set[str]:
        """Claim the sends (the ledger's guard); returns the send ids claimed now.

        When the claim's answer is lost (the connection fails), the statement may have
        committed or not: its send ids are remembered, and once the batch is read again those
        the ledger holds as freshly claimed by this epoch (never answered, attempts 0) are this
        worker's to hand over; nobody else can hand them over (the claim guard), and no other
        step of this worker touches such a row. Without this they would stay `claimed` until
        the next take made them `unknown`."""
        assert self._ledger is not None
        topic = self.topics.sends
        ids = [str(send.send_id) for send in sends]
        unsure = self._unsure.setdefault(owned.number, set())
        try:
            claimed = await self._ledger.claim(
                topic, owned.number, owned.epoch, [_claim(send) for send in sends]
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            unsure.update(ids)
            raise
        doubt = [send_id for send_id in ids if send_id in unsure and send_id not in claimed]
        if doubt:
            found = await self._ledger.unanswered_claims(topic, owned.number, owned.epoch, doubt)
            if found:
                log.info("claims whose answer was lost are ours", sends=len(found))
            claimed |= found
        unsure.difference_update(ids)
        return claimed

    async def _record(self, owned: Owned, outcomes: Sequence[Outcome]) -> None:
        """Write the outcomes of sends just handed to SMTP. The mails are out: their outcomes
        are kept and written again until the ledger takes them. If the worker is stopped first
        they stay `claimed`, which the partition's next take makes `unknown` (never sent again:
        a second copy is worse than none)."""
        assert self._ledger is not None
        while True:
            try:
                await self._ledger.record(self.topics.sends, owned.number, owned.epoch, outcomes)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                delay = self._stall(
                    f"the outcomes of {len(outcomes)} sends handed to SMTP are not recorded yet",
                    error,
                )
                if self._stop is None or self._stop.is_set():
                    raise
                await self._wait(delay)
                if self._stop.is_set():
                    raise

    async def _every(self, stop: asyncio.Event, seconds: float, step: Any) -> None:
        while not stop.is_set():
            try:
                await step()
            except (KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                # The ledger is read again at the next step: nothing is lost by skipping one.
                log.warning("delivery helper step failed; retrying", error=repr(error))
            except Exception as error:  # one bad row must not end delivery
                # Not a failure of the servers: a bug or a record the step cannot handle. The
                # step's rows stay as they were (nothing was marked), so the next step meets them
                # again: counted and shown in status() for an operator, never the end of delivery.
                self.helper_errors += 1
                self.last_helper_error = f"{type(error).__name__}: {error}"[:500]
                log.exception("delivery helper step raised; retrying", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    async def _partition_batch(
        self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]
    ) -> tuple[TopicPartition, int | None]:
        owned = self.owned.get(tp.partition)
        if owned is None:
            return tp, None  # revoked or fenced since the fetch: the next owner reads them
        # The unit of work: one partition's records of one fetch. Its lines carry the partition
        # (each send's hand-off adds its own ids: _hand_off); the per-record offset is bound
        # only where a line names one record (a dead letter, a content record), not for every
        # send, whose ids say more and cost nothing extra there.
        with bound(partition=tp.partition):
            return await self._partition_records(tp, owned, records)

    async def _partition_records(
        self, tp: TopicPartition, owned: Owned, records: list[ConsumerRecord[Any, Any]]
    ) -> tuple[TopicPartition, int | None]:
        chunk: list[tuple[SendRecord, str]] = []
        try:
            for record in records:
                try:
                    item = decode_send_topic(record.value)
                    raw = bytes(record.value).decode() if isinstance(item, SendRecord) else ""
                except (ValidationError, ValueError, TypeError) as error:
                    await self._deliver(owned, chunk)
                    chunk = []
                    with bound(offset=record.offset):
                        await self._dead_letter(record, error)
                    continue
                if isinstance(item, MailContent):
                    await self._deliver(owned, chunk)
                    chunk = []
                    with bound(offset=record.offset, message_id=str(item.message_id)):
                        await self._store_content(item)
                    continue
                chunk.append((item, raw))
                if len(chunk) >= CLAIM_CHUNK:
                    await self._deliver(owned, chunk)
                    chunk = []
            await self._deliver(owned, chunk)
            await self._recorded(tp.partition)
        except FencedError as error:
            await self._recorded(tp.partition, quiet=True)
            log.warning("fenced: another worker owns the partition", error=str(error))
            await self.ownership.fenced_out(tp.partition)
            return tp, None
        except BaseException:
            # The chunk before still writes its outcomes (its mails are out) before the error
            # goes on: nothing of this partition is left running.
            await self._recorded(tp.partition, quiet=True)
            raise
        owned.next_offset = records[-1].offset + 1
        return tp, owned.next_offset

    async def _deliver(self, owned: Owned, chunk: Sequence[tuple[SendRecord, str]]) -> None:
        """Claim a chunk of sends, hand the ones claimed now to SMTP, record the outcomes."""
        if not chunk:
            return
        assert self._ledger is not None
        unstorable = [send for send, _ in chunk if not _storable(send)]
        if unstorable:
            await self._fail_unstorable(unstorable)
            chunk = [(send, raw) for send, raw in chunk if _storable(send)]
            if not chunk:
                return
        topic = self.topics.sends
        # The fence before the claim: a send of a message paused or canceled since its release
        # is recorded returned (unless it was claimed before: then it stays as it was).
        stops = [self.fence.stops(send) for send, _ in chunk]
        if any(stops):
            stopped = [_claim(send) for (send, _), stop in zip(chunk, stops, strict=True) if stop]
            returned = await self._ledger.claim(
                topic, owned.number, owned.epoch, stopped, state="returned"
            )
            self.returned += len(returned)
            chunk = [item for item, stop in zip(chunk, stops, strict=True) if not stop]
            if not chunk:
                return
        claimed = await self._claim(owned, [send for send, _ in chunk])
        todo = [(send, raw) for send, raw in chunk if str(send.send_id) in claimed]
        if not todo:
            return
        await self._limiter.take(len(todo))
        answers = await asyncio.gather(*(self._hand_off(send) for send, _ in todo))
        self.returned += sum(1 for answer in answers if answer.verdict == "returned")
        outcomes = [
            outcome_for(str(send.send_id), answer, 0, self.settings, raw)
            for (send, raw), answer in zip(todo, answers, strict=True)
        ]
        # The outcomes are written while the next chunk is claimed and handed over (the pool
        # would sit idle during the write otherwise: a chunk's ledger writes cost about as much
        # as its SMTP conversations). One write in flight per partition at most, so a crash
        # leaves at most two chunks claimed without an outcome; the offset is committed only
        # after the last write (`_recorded`).
        await self._recorded(owned.number)
        self._recording[owned.number] = asyncio.create_task(self._record(owned, outcomes))

    async def _recorded(self, number: int, *, quiet: bool = False) -> None:
        """Wait for the partition's outcome write in flight (``quiet``: its failure is not
        raised, for a partition that is failing already)."""
        task = self._recording.pop(number, None)
        if task is None:
            return
        if quiet:
            with contextlib.suppress(Exception):
                await task
        else:
            await task

    async def _hand_off(self, send: SendRecord) -> Answer:
        """One send's answer; never raises for anything the send brings (its content, address,
        merge values): what cannot be composed is failed, with the reason."""
        # One unit of work (a task of its own: gather), so the ids stay with this send's lines,
        # SMTP's included.
        with bound(message_id=str(send.message_id), send_id=str(send.send_id)):
            answer = await self._answer(send)
            if answer.verdict == "failed":
                log.info("send failed", detail=answer.detail[:300])
        return answer

    async def _answer(self, send: SendRecord) -> Answer:
        assert self._pool is not None
        try:
            content = await self._content(str(send.message_id))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # The ledger did not answer: nothing was sent, so the send can be asked again.
            return Answer("deferred", f"content not loaded: {type(error).__name__}: {error}")
        if content is None:
            return Answer("failed", "the message's content never reached delivery")
        try:
            mail = compose(
                send_id=send.send_id,
                message_id=send.message_id,
                content=content,
                contact=send.contact,
                domain=self.settings.message_id_domain,
            )
        except Exception as error:  # one send's fault must not end the worker
            return Answer("failed", f"the mail cannot be composed: {error}")
        answer = await self._pool.deliver(mail, lambda: self.fence.stops(send))
        if answer.verdict != "returned":
            self.handed += 1
        return answer

    async def retry_once(self) -> None:
        """Hand over again the deferred sends whose backoff is due, in every owned partition."""
        assert self._ledger is not None
        for owned in list(self.owned.values()):
            with bound(partition=owned.number):
                await self._retry_partition(owned)

    async def _retry_partition(self, owned: Owned) -> None:
        assert self._ledger is not None
        try:
            rows = await self._ledger.reclaim_due(
                self.topics.sends, owned.number, owned.epoch, CLAIM_CHUNK
            )
            if not rows:
                return
            await self._limiter.take(len(rows))
            answers = await asyncio.gather(*(self._retry(payload) for _, payload, _ in rows))
            await self._record(
                owned,
                [
                    outcome_for(send_id, answer, attempts, self.settings, payload)
                    for (send_id, payload, attempts), answer in zip(rows, answers, strict=True)
                ],
            )
        except FencedError:
            # Another worker owns it: stop reading it until the group gives it back.
            self.owned.pop(owned.number, None)
            self.ownership.pause(owned.number)

    async def _retry(self, payload: str) -> Answer:
        try:
            send = SendRecord.model_validate_json(payload, context=STORED)
        except ValidationError as error:
            return Answer("failed", f"the deferred send no longer decodes: {error}")
        return await self._hand_off(send)

    async def report_once(self) -> int:
        """Publish the final outcomes of owned partitions not reported yet; returns how many."""
        assert self._ledger is not None and self._producer is not None
        partitions = sorted(self.owned)
        if not partitions:
            return 0
        rows = await self._ledger.unreported(self.topics.sends, partitions, MAX_CHUNK)
        if not rows:
            return 0
        by_message: dict[tuple[str, str], list[Reportable]] = defaultdict(list)
        for row in rows:
            by_message[(row.message_id, row.account_id)].append(row)
        await self._publish_outcomes(by_message)
        await self._ledger.mark_reported(rows)
        self.reported += len(rows)
        return len(rows)

    async def _publish_outcomes(self, by_message: dict[tuple[str, str], list[Reportable]]) -> None:
        """One RecordDeliveryOutcomes command per message, acknowledged by the broker."""
        assert self._producer is not None
        futures = []
        for (message_id, account_id), group in by_message.items():
            # One unit of work per message's command: its lines carry the message id, and the
            # command id once the command is made.
            with bound(message_id=message_id):
                try:
                    command = outcomes_command(message_id, group)
                    item = CommandRecord(
                        command=command,
                        actor=Actor(kind="service", account_id=account_id, service=DELIVERY),
                        issued_at=datetime.now(UTC),
                    )
                except ValidationError as error:
                    # Only a history written around the input rules holds such a message (an
                    # account id with a control character): the processor would refuse the
                    # command anyway. Dropped with a trace, so that it never holds up other
                    # messages' rows.
                    log.error(
                        "outcomes cannot be published",
                        sends=[row.send_id for row in group],
                        error=str(error)[:500],
                    )
                    continue
                with bound(command_id=str(command.command_id)):
                    futures.append(
                        await self._producer.send(
                            self.topics.commands,
                            value=item.model_dump_json().encode(),
                            key=message_id.encode(),
                        )
                    )
        await asyncio.gather(*futures)

    async def _fail_unstorable(self, sends: Sequence[SendRecord]) -> None:
        """Sends the ledger cannot hold (a NUL in the contact or account id, from a history
        older than the input rules; Postgres text cannot store it) are never handed to SMTP:
        each is reported failed at once, straight to the command topic. The command's id derives
        from the send ids, so reading the records again after a crash repeats the same command,
        a no-op in the core."""
        by_message: dict[tuple[str, str], list[Reportable]] = defaultdict(list)
        for send in sends:
            by_message[(str(send.message_id), send.account_id)].append(
                Reportable(
                    str(send.send_id),
                    str(send.message_id),
                    send.account_id,
                    send.contact.contact_id,
                    "failed",
                    UNSTORABLE,
                )
            )
        await self._publish_outcomes(by_message)
        log.warning("unstorable sends failed", sends=len(sends))

    # ------------------------------------------------------------------ helpers

    async def _store_content(self, item: MailContent) -> None:
        assert self._ledger is not None
        key = str(item.message_id)
        await self._ledger.store_content(key, item.account_id, item.content.model_dump_json())
        self.contents[key] = item.content

    async def _content(self, message_id: str) -> Content | None:
        content = self.contents.get(message_id)
        if content is None:
            assert self._ledger is not None
            stored = await self._ledger.load_content(message_id)
            if stored is None:
                return None
            content = self.contents[message_id] = Content.model_validate_json(
                stored, context=STORED
            )
        return content

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: Exception) -> None:
        assert self._producer is not None
        letter = DeadLetter.of(record, error)
        await self._producer.send_and_wait(
            self.topics.dead_letter,
            value=letter.model_dump_json().encode(),
            key=record.key,
            partition=record.partition,
        )
        # The partition and offset are bound by the caller.
        what = "send record" if record.topic == self.topics.sends else "control record"
        log.warning(f"{what} dead-lettered", error=letter.error[:300])

    # ------------------------------------------------------------------ ownership

    async def take(self, number: int) -> Owned:
        """Take a sends partition in the ledger (a new epoch fences its previous owner)."""
        assert self._ledger is not None
        started = time.perf_counter()
        epoch, marked = await self._ledger.take(self.topics.sends, number, self.owner)
        self._unsure.pop(number, None)  # the previous epoch's claims are `unknown` now
        log.info(
            "sends partition taken",
            partition=number,
            epoch=epoch,
            marked_unknown=marked,
            take_s=round(time.perf_counter() - started, 3),
        )
        return Owned(number, epoch)

    async def _drop(self, number: int, owned: Owned) -> None:
        pass  # nothing held but the epoch: the next owner's take fences it in the ledger

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "owner": self.owner,
            **self.ownership.status(),
            "handed_to_smtp": self.handed,
            "returned": self.returned,
            "outcomes_reported": self.reported,
            "helper_errors": self.helper_errors,
            "last_helper_error": self.last_helper_error,
            "fences": len(self.fence.fences),
            "fences_ready": self.fence.ready.is_set(),
            "fence_problem": self.fence.problem,
            "fences_set_aside": self.fence.set_aside,
            "fences_set_aside_written": self.fence.set_aside_written,
            "stalled": self._stalled_text(),
            "stall_tries": 0 if self.stalled is None else self.stalled.attempts,
            "stalls": self.stalls,
        }

    def _stalled_text(self) -> str | None:
        stall = self.stalled
        if stall is None:
            return None
        return (
            f"stalled: no progress for {time.monotonic() - stall.since:.1f}s"
            f" ({stall.attempts} tries), retrying; last: {stall.reason}"
        )

    async def check(self) -> None:
        if not self.running:
            raise RuntimeError("the delivery worker is not consuming")
        stalled = self._stalled_text()
        if stalled is not None:
            raise RuntimeError(stalled)
        if self.fence.problem is not None:
            raise RuntimeError(f"fences: {self.fence.problem}")
        self.ownership.check()


#: The reason of a send whose ids the ledger cannot store.
UNSTORABLE = "the contact id or account id holds a NUL character, which the ledger cannot store"


def _storable(send: SendRecord) -> bool:
    return "\x00" not in send.contact.contact_id and "\x00" not in send.account_id


def outcome_for(
    send_id: str, answer: Answer, attempts_before: int, settings: Settings, raw: str
) -> Outcome:
    """The ledger outcome of one hand-off. A deferral at the last allowed attempt is a failure."""
    # The detail becomes a failure's reason, which is one line (an SMTP reply may have several)
    # and must be storable in Postgres text (no NUL).
    said = one_line(answer.detail)
    if answer.verdict != "deferred":
        return Outcome(send_id, answer.verdict, said[:1000])
    attempts = attempts_before + 1
    if attempts >= settings.delivery_max_attempts:
        detail = f"gave up after {attempts} transient failures: {said}"
        return Outcome(send_id, "failed", detail[:1000])
    next_at = retry_at(attempts, settings.delivery_retry_base_s)
    return Outcome(send_id, "deferred", said[:1000], next_at, raw)


def outcomes_command(message_id: str, rows: Sequence[Reportable]) -> RecordDeliveryOutcomes:
    """One message's final outcomes as a command (at most MAX_CHUNK of them). Its id is derived
    from the send ids, so publishing the same rows again repeats the same command. A returned
    send is reported again after its re-release (its delivery, say): its state and release
    number are part of the id, else that second report would repeat the first's id and the
    processor would answer it with the first result, dropping the outcome."""
    ids = sorted(
        # A row claimed before release numbers existed (0) keeps the id it had: a republish
        # after the upgrade repeats the command published before it.
        row.send_id if row.release == 0 else f"{row.send_id}:{row.state}:{row.release}"
        for row in rows
    )
    return RecordDeliveryOutcomes(
        command_id=uuid.uuid5(OUTCOMES_NAMESPACE, ",".join(ids)),
        message_id=uuid.UUID(message_id),
        delivered=tuple(r.contact_id for r in rows if r.state == "delivered"),
        failed=tuple(
            FailedRecipient(
                contact_id=r.contact_id, reason=one_line(r.detail or "refused")[:1000] or "refused"
            )
            for r in rows
            if r.state == "failed"
        ),
        unknown=tuple(r.contact_id for r in rows if r.state == "unknown"),
        returned=tuple(
            # A row claimed before the ledger had release numbers (0) cannot name its release.
            ReturnedSend(contact_id=r.contact_id, release=max(1, r.release))
            for r in rows
            if r.state == "returned"
        ),
    )


def _claim(send: SendRecord) -> Claim:
    return Claim(
        send_id=str(send.send_id),
        message_id=str(send.message_id),
        contact_id=send.contact.contact_id,
        account_id=send.account_id,
        release=send.release_sequence,
    )
