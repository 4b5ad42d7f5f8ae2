"""The fence reader sets a control record that is no fence aside once per source: it reads the
control topic from the beginning at every start, so a letter already in the dead-letter
partition is not written again (services/common/deadletters.py). The dead letters' partition is
a fake here; tests/integration/test_log_dead_letters.py runs it on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from schemas.sends import FenceRecord
from services.common import deadletters
from services.common.settings import Settings
from services.common.topics import Topics
from services.delivery.worker import FenceReader

TOPICS = Topics("t")


def control(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPICS.control, 2, offset, 0, 0, b"k", value, None, 1, len(value), [])


def error_of(value: bytes) -> Exception:
    try:
        FenceRecord.model_validate_json(value)
    except ValidationError as error:
        return error
    raise AssertionError("the value decodes")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> set[deadletters.Source]:
    """The sources whose letter the fake dead-letter partition holds (a test adds to it)."""
    held: set[deadletters.Source] = set()

    async def fake(
        settings: Settings, topic: str, partition: int, sources: Collection[str]
    ) -> set[deadletters.Source]:
        assert topic == TOPICS.dead_letter and partition == 2
        assert list(sources) == [TOPICS.control]
        return set(held)

    monkeypatch.setattr(deadletters, "recorded", fake)
    return held


async def test_a_bad_control_record_gets_one_dead_letter_however_often_it_is_read(
    recorded: set[deadletters.Source],
) -> None:
    written: list[tuple[int, str]] = []

    async def dead_letter(record: ConsumerRecord[Any, Any], error: Exception) -> None:
        written.append((record.offset, type(error).__name__))

    reader = FenceReader(Settings(), TOPICS, dead_letter)
    bad = control(5, b"\xff not json")
    for _ in range(3):  # the reader's restarts read it again
        await reader._set_aside(bad, error_of(bad.value))
    assert written == [(5, "ValidationError")]
    assert (reader.set_aside, reader.set_aside_written) == (3, 1)


async def test_a_letter_written_by_an_earlier_start_is_not_written_again(
    recorded: set[deadletters.Source],
) -> None:
    recorded.add((TOPICS.control, 2, 7))
    written: list[int] = []

    async def dead_letter(record: ConsumerRecord[Any, Any], error: Exception) -> None:
        written.append(record.offset)

    reader = FenceReader(Settings(), TOPICS, dead_letter)
    for offset in (7, 8):
        value = f'{{"type": "Fence", "schema_version": 99, "message_id": "{uuid.uuid4()}"}}'
        record = control(offset, value.encode())
        await reader._set_aside(record, error_of(record.value))
    assert written == [8]
    assert reader.fences == {}
