"""The batch limit of a catch-up (no servers): a short first batch, doubling while batches fill
up, back to the short one once a batch closes before its limit (caught up)."""

from __future__ import annotations

from services.projections.consumer import FIRST_BATCH_ROWS, Partition
from services.projections.store import PartitionBatch


def _fill(part: Partition, rows: int) -> None:
    part.pending = PartitionBatch(part.number, part.submitted, part.submitted + 1)
    part.pending.batch.patched = rows


def test_the_limit_doubles_while_batches_fill_up_and_restarts_when_caught_up() -> None:
    part = Partition(0, 0)
    limits = []
    for _ in range(5):
        limit = part.limit(200_000)
        limits.append(limit)
        _fill(part, limit - 1)
        assert not part.full(200_000)
        _fill(part, limit)
        assert part.full(200_000)
        part.close_batch(200_000)
    assert limits == [
        FIRST_BATCH_ROWS,
        2 * FIRST_BATCH_ROWS,
        4 * FIRST_BATCH_ROWS,
        200_000,
        200_000,
    ]
    _fill(part, 10)  # a batch closed before its limit: the partition had caught up
    part.close_batch(200_000)
    assert part.limit(200_000) == FIRST_BATCH_ROWS
    assert part.limit(100) == 100  # never above the configured limit
