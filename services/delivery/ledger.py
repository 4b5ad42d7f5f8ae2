"""The delivery ledger in Postgres (services/common/sql/0001, 0004 and 0008, docs/delivery.md).

Every write checks, under a FOR SHARE lock of the partition's `delivery_owners` row, that the
writer's epoch is still the partition's: a worker that lost the partition (a zombie) is refused
with :class:`FencedError` before it can claim a send, so it never reaches SMTP with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

__all__ = ["Claim", "FencedError", "Ledger", "Outcome", "Reportable"]


class FencedError(Exception):
    """Another worker took the partition (a higher epoch): this one must stop touching it."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A send to claim."""

    send_id: str
    message_id: str
    contact_id: str
    account_id: str
    #: The release number (the RecipientsReleased event's sequence) the send came from.
    release: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a claimed send: delivered, failed, unknown, or deferred (with when it is
    tried next, and the send record to try it from)."""

    send_id: str
    state: str
    detail: str
    next_attempt_at: datetime | None = None
    payload: str | None = None


@dataclass(frozen=True, slots=True)
class Reportable:
    """A final outcome not yet published as a RecordDeliveryOutcomes command."""

    send_id: str
    message_id: str
    account_id: str
    contact_id: str
    state: str
    detail: str | None
    release: int = 0


#: How long a ledger transaction may sit idle (its client stopped) before the server ends it.
IDLE_IN_TRANSACTION_S = 10

_CHECK_EPOCH = """
SELECT epoch FROM delivery_owners WHERE topic = $1 AND partition = $2 FOR SHARE
"""


class Ledger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str) -> Ledger:
        # A worker frozen in the middle of a transaction (SIGSTOP, a VM pause) holds its FOR
        # SHARE lock on the owner row, and the takeover's epoch bump would wait for it forever:
        # the server ends such a transaction after IDLE_IN_TRANSACTION_S, the takeover goes on,
        # and the frozen worker, once awake, finds its connection gone and its epoch replaced.
        return cls(
            await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=6,
                server_settings={
                    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_S * 1000)
                },
            )
        )

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def _owned(
        self, topic: str, partition: int, epoch: int
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in which `epoch` owns the partition (else FencedError). When the
        connection is lost midway (ended by the server after the worker was frozen, or Postgres
        failing), the epoch is read again: replaced means fenced; still ours, the error stands."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._check(conn, topic, partition, epoch)
                yield conn
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.IdleInTransactionSessionTimeoutError,
            asyncpg.InterfaceError,
            OSError,
        ) as error:
            current = await self.pool.fetchval(
                "SELECT epoch FROM delivery_owners WHERE topic = $1 AND partition = $2",
                topic,
                partition,
            )
            if current != epoch:
                raise FencedError(
                    f"{topic}[{partition}] belongs to epoch {current}, this worker has {epoch}"
                ) from error
            raise

    async def _check(
        self, conn: asyncpg.Connection, topic: str, partition: int, epoch: int
    ) -> None:
        current = await conn.fetchval(_CHECK_EPOCH, topic, partition)
        if current != epoch:
            raise FencedError(
                f"{topic}[{partition}] belongs to epoch {current}, this worker has {epoch}"
            )

    async def take(self, topic: str, partition: int, owner: str) -> tuple[int, int]:
        """Own a partition: bump its epoch (fencing the previous owner) and mark every send it
        left claimed as unknown (its outcome was lost with it). Returns (epoch, marked)."""
        async with self.pool.acquire() as conn, conn.transaction():
            epoch = await conn.fetchval(
                """
                INSERT INTO delivery_owners (topic, partition, epoch, owner)
                VALUES ($1, $2, 1, $3)
                ON CONFLICT (topic, partition) DO UPDATE
                    SET epoch = delivery_owners.epoch + 1, owner = $3, taken_at = now()
                RETURNING epoch
                """,
                topic,
                partition,
                owner,
            )
            marked = await conn.execute(
                """
                UPDATE delivery_ledger
                SET state = 'unknown', updated_at = now(), reported = false,
                    detail = 'claimed by a worker that stopped before the SMTP answer was '
                             'recorded; not sent again (a second copy is worse than none)'
                WHERE topic = $1 AND partition = $2 AND state = 'claimed'
                """,
                topic,
                partition,
            )
        return int(epoch), int(marked.split()[-1])

    async def claim(
        self,
        topic: str,
        partition: int,
        epoch: int,
        claims: Sequence[Claim],
        state: str = "claimed",
    ) -> set[str]:
        """Claim the sends no one has claimed before; returns their send ids. A send already in
        the ledger is not claimed again: that is the exactly-once guard. The one exception is a
        `returned` row (never handed to SMTP) and a send of a NEWER release of it (the message
        was resumed and released the contact again): that claim takes the row over, once.

        With `state='returned'` the sends are recorded as returned instead (the fence stopped
        them before the claim): the same guard, so a send handed off before stays as it was."""
        if not claims:
            return set()
        # One row per send id per statement (an upsert may not touch a row twice): the newest
        # release of a send wins, an older one in the same chunk was returned before.
        newest: dict[str, Claim] = {}
        for claim in claims:
            seen = newest.get(claim.send_id)
            if seen is None or seen.release < claim.release:
                newest[claim.send_id] = claim
        unique = list(newest.values())
        async with self._owned(topic, partition, epoch) as conn:
            rows = await conn.fetch(
                """
                INSERT INTO delivery_ledger AS l
                    (send_id, message_id, contact_id, account_id, topic, partition, epoch, state,
                     release)
                SELECT s.send_id, s.message_id, s.contact_id, s.account_id, $1, $2, $3, $4,
                       s.release
                FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[])
                    AS s(send_id, message_id, contact_id, account_id, release)
                ON CONFLICT (send_id) DO UPDATE
                    SET state = EXCLUDED.state, epoch = EXCLUDED.epoch,
                        release = EXCLUDED.release, topic = EXCLUDED.topic,
                        partition = EXCLUDED.partition, reported = false, attempts = 0,
                        detail = NULL, next_attempt_at = NULL, payload = NULL,
                        claimed_at = now(), updated_at = now()
                    WHERE l.state = 'returned' AND l.release < EXCLUDED.release
                RETURNING send_id
                """,
                topic,
                partition,
                epoch,
                state,
                [c.send_id for c in unique],
                [c.message_id for c in unique],
                [c.contact_id for c in unique],
                [c.account_id for c in unique],
                [c.release for c in unique],
            )
        return {row["send_id"] for row in rows}

    async def unanswered_claims(
        self, topic: str, partition: int, epoch: int, send_ids: Sequence[str]
    ) -> set[str]:
        """Of ``send_ids``, those a claim statement of this epoch claimed and nothing has
        touched since (`claimed`, no outcome recorded ever: attempts 0). For a claim whose answer
        was lost with the connection: the worker learns which of its sends it did claim. (A
        deferred send claimed again by `reclaim_due` has attempts >= 1 and is not one of them.)"""
        if not send_ids:
            return set()
        async with self._owned(topic, partition, epoch) as conn:
            rows = await conn.fetch(
                """
                SELECT send_id FROM delivery_ledger
                WHERE send_id = ANY($1::text[]) AND topic = $2 AND partition = $3
                  AND epoch = $4 AND state = 'claimed' AND attempts = 0
                """,
                list(send_ids),
                topic,
                partition,
                epoch,
            )
        return {row["send_id"] for row in rows}

    async def record(
        self, topic: str, partition: int, epoch: int, outcomes: Sequence[Outcome]
    ) -> None:
        """Write the outcomes of sends this epoch claimed. A send a newer owner has marked
        unknown meanwhile keeps that mark (the row is no longer 'claimed')."""
        if not outcomes:
            return
        async with self._owned(topic, partition, epoch) as conn:
            await conn.execute(
                """
                UPDATE delivery_ledger AS l
                SET state = o.state, detail = o.detail, next_attempt_at = o.next_at,
                    attempts = l.attempts + 1, updated_at = now(),
                    payload = o.payload
                FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                    AS o(send_id, state, detail, next_at, payload)
                WHERE l.send_id = o.send_id AND l.state = 'claimed' AND l.epoch = $1
                """,
                epoch,
                [o.send_id for o in outcomes],
                [o.state for o in outcomes],
                [o.detail for o in outcomes],
                [o.next_attempt_at for o in outcomes],
                [o.payload for o in outcomes],
            )

    async def reclaim_due(
        self, topic: str, partition: int, epoch: int, limit: int
    ) -> list[tuple[str, str, int]]:
        """Claim again deferred sends whose next attempt is due: (send_id, payload, attempts)."""
        async with self._owned(topic, partition, epoch) as conn:
            rows = await conn.fetch(
                """
                UPDATE delivery_ledger
                SET state = 'claimed', epoch = $3, updated_at = now()
                WHERE send_id IN (
                    SELECT send_id FROM delivery_ledger
                    WHERE topic = $1 AND partition = $2 AND state = 'deferred'
                      AND next_attempt_at <= now()
                    ORDER BY next_attempt_at
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING send_id, payload, attempts
                """,
                topic,
                partition,
                epoch,
                limit,
            )
        return [(row["send_id"], row["payload"], row["attempts"]) for row in rows]

    async def unreported(
        self, topic: str, partitions: Sequence[int], limit: int
    ) -> list[Reportable]:
        rows = await self.pool.fetch(
            """
            SELECT send_id, message_id, account_id, contact_id, state, detail, release
            FROM delivery_ledger
            WHERE topic = $1 AND partition = ANY($2::int[]) AND NOT reported
              AND state IN ('delivered', 'failed', 'unknown', 'returned')
            ORDER BY message_id, updated_at
            LIMIT $3
            """,
            topic,
            list(partitions),
            limit,
        )
        return [Reportable(**dict(row)) for row in rows]

    async def mark_reported(self, rows: Sequence[Reportable]) -> None:
        """Mark rows reported, as they were read: a returned row claimed again meanwhile (a
        newer release) is a new claim whose outcome is still to be reported."""
        await self.pool.execute(
            """
            UPDATE delivery_ledger AS l SET reported = true
            FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(send_id, state, release)
            WHERE l.send_id = r.send_id AND l.state = r.state AND l.release = r.release
            """,
            [r.send_id for r in rows],
            [r.state for r in rows],
            [r.release for r in rows],
        )

    async def store_content(self, message_id: str, account_id: str, content: str) -> None:
        await self.pool.execute(
            """
            INSERT INTO delivery_content (message_id, account_id, content) VALUES ($1, $2, $3)
            ON CONFLICT (message_id) DO NOTHING
            """,
            message_id,
            account_id,
            content,
        )

    async def load_content(self, message_id: str) -> str | None:
        value = await self.pool.fetchval(
            "SELECT content FROM delivery_content WHERE message_id = $1", message_id
        )
        return None if value is None else str(value)


def retry_at(attempts: int, base_s: float) -> datetime:
    """When a send deferred for the `attempts`-th time is tried again: base * 2^(attempts-1)."""
    return datetime.now(UTC) + timedelta(seconds=base_s * 2 ** max(0, attempts - 1))
