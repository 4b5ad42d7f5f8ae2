"""bench_scale.problems on canned figures: what makes `make bench-scale` (and bench-smoke's
small run of it) exit non-zero. No server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bench import bench_scale
from bench.bench_scale import problems

N = 1_000


def scale(**changed: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "recipients": N,
        "released": N,
        "released_distinct": N,
        "send_records": N,
        "send_records_distinct": N,
        "view_states": {"released": N},
        "pages": 20,
        "page_items": 2_000,
    }
    return {**figures, **changed}


def test_a_correct_run_has_no_problem() -> None:
    assert problems({"scale": scale(), "scaleout": {"exactly_once": True}}) == []
    assert problems({"scale": scale(send_records=None, send_records_distinct=None)}) == []


def test_a_contact_released_twice_is_a_problem() -> None:
    assert problems({"scale": scale(released=N + 1)})


def test_a_send_record_missing_is_a_problem() -> None:
    assert problems({"scale": scale(send_records=N - 1, send_records_distinct=N - 1)})


def test_a_view_not_in_its_final_state_is_a_problem() -> None:
    assert problems({"scale": scale(view_states={"released": N - 1, "pending": 1})})
    assert problems({"scale": scale(view_states={"released": N - 1})})


def test_empty_pages_are_a_problem() -> None:
    assert problems({"scale": scale(page_items=0)})


def test_a_scale_out_send_not_exactly_once_is_a_problem() -> None:
    assert problems({"scale": scale(), "scaleout": {"exactly_once": False}})


def test_restart_parts_split_the_restart_into_its_pieces() -> None:
    killed_at = datetime(2026, 12, 2, 15, 0, 0, tzinfo=UTC)
    take = {"timestamp": "2026-12-02T15:00:03.000000Z", "take_s": 1.5, "init_s": 0.1}
    parts = bench_scale._restart_parts(take, killed_at, spawned_s=0.25, restart_s=3.75)
    assert parts == {
        "restart_init_s": 0.1,
        "restart_take_s": 1.5,
        # SIGKILL → spawn 0.25, spawn → take start 1.25, the take 1.5 (taken 3.0 s after the
        # SIGKILL), then 0.75 until the release was seen.
        "restart_spawn_s": 0.25,
        "restart_start_s": 1.25,
        "restart_after_take_s": 0.75,
    }
    assert sum(parts[k] for k in parts if k != "restart_init_s") == 3.75


def test_restart_parts_without_a_take_line_say_only_the_spawn() -> None:
    killed_at = datetime(2026, 12, 2, 15, 0, 0, tzinfo=UTC)
    parts = bench_scale._restart_parts(None, killed_at, spawned_s=0.5, restart_s=2.0)
    assert parts["restart_spawn_s"] == 0.5
    assert parts["restart_take_s"] is None and parts["restart_start_s"] is None
