"""bench_scale.problems on canned figures: what makes `make bench-scale` (and bench-smoke's
small run of it) exit non-zero. No server."""

from __future__ import annotations

from typing import Any

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
