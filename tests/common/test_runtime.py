"""The interpreter's start-up settings (services/common/runtime.py)."""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.runtime import GC_YOUNG_THRESHOLD, tune_gc

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_raises_the_young_threshold_and_keeps_the_collector_on() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    assert GC_YOUNG_THRESHOLD > 30_000  # above what one 10,000-contact chunk keeps alive
    assert gc.isenabled()


def _calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.value.func.id
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
    ]


@pytest.mark.parametrize(
    "main", sorted(SERVICES.glob("*/__main__.py")), ids=lambda p: p.parent.name
)
def test_every_service_process_tunes_the_gc_before_anything_else(main: Path) -> None:
    calls = _calls(main)
    assert calls and calls[0] == "tune_gc", calls
