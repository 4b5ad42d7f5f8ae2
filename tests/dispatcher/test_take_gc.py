"""After a take the processor freezes the folded state out of the cyclic GC's reach, and runs the
full collection before the freeze only when the take folded or loaded something large
(services/dispatcher/processor.py `freeze_taken_state`)."""

from __future__ import annotations

import gc

import pytest

from services.dispatcher import processor
from services.dispatcher.processor import GC_COLLECT_AFTER_RECORDS, freeze_taken_state


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(processor.gc, "collect", lambda: seen.append("collect") or 0)
    monkeypatch.setattr(processor.gc, "freeze", lambda: seen.append("freeze"))
    return seen


def test_a_small_take_is_frozen_without_a_collection(calls: list[str]) -> None:
    assert freeze_taken_state(GC_COLLECT_AFTER_RECORDS - 1, restored=False) is False
    assert calls == ["freeze"]


def test_a_take_that_folded_much_collects_before_it_freezes(calls: list[str]) -> None:
    assert freeze_taken_state(GC_COLLECT_AFTER_RECORDS, restored=False) is True
    assert calls == ["collect", "freeze"]


def test_a_take_from_a_snapshot_collects_before_it_freezes(calls: list[str]) -> None:
    assert freeze_taken_state(3, restored=True) is True
    assert calls == ["collect", "freeze"]


def test_the_real_freeze_moves_the_objects_out_of_the_collectors_reach() -> None:
    before = gc.get_freeze_count()
    state = [{"contact": i} for i in range(1000)]
    try:
        freeze_taken_state(0, restored=False)
        assert gc.get_freeze_count() >= before + len(state)
    finally:
        gc.unfreeze()
