"""bench/results.py on canned numbers: the JSON other tools read, its dated copy, the PNG and
the docs table (no server; the real figures come from `make bench`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.results import (
    DOCS_BEGIN,
    DOCS_END,
    FIGURE_KEYS,
    NAMES,
    Figure,
    check,
    document,
    failed,
    machine,
    median_recovery,
    recovery,
    table,
    write_all,
    write_scale,
)

STARTED = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


def canned() -> dict[str, Figure]:
    figures = {name: Figure(value=1.0, unit="s") for name in NAMES}
    figures["dispatch"] = Figure(
        value=40_000, unit="sends/s", ceiling=70_000, ratio=0.571, target=0.5, target_of="ratio"
    )
    figures["command_commit_p99"] = Figure(value=80.0, unit="ms", target=50, better="lower")
    figures["projections"] = Figure(
        value=100_000,
        unit="sends/s",
        ceiling=350_000,
        ratio=0.286,
        target=0.33,
        target_of="ratio",
        runs=[{"value": 90_000}, {"value": 100_000}, {"value": 110_000}],
    )
    figures["growth"] = Figure(
        value=None,
        unit="sends/s",
        runs=[
            {"recipients": 10_000, "rate": 20_000, "rss_mb": 80},
            {"recipients": 1_000_000, "rate": 40_000, "rss_mb": 900},
        ],
    )
    figures["recovery_delivery"] = failed("s", RuntimeError("the worker never came back"))
    return figures


def test_the_written_json_has_every_figure_in_the_documented_form(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nprose\n\n{DOCS_BEGIN}\nold\n{DOCS_END}\n\nmore prose\n")
    doc = document(
        canned(), started_at=STARTED, finished_at=STARTED, quick=True, machine_facts=machine()
    )
    written = write_all(doc, tmp_path / "results", page)

    latest = json.loads((tmp_path / "results" / "latest.json").read_text())
    dated = json.loads((tmp_path / "results" / "results-20261201T103000Z.json").read_text())
    assert latest == dated
    assert check(latest) == []
    assert set(latest) >= {"machine", "started_at", "figures"}
    assert list(latest["figures"]) == list(NAMES)
    for figure in latest["figures"].values():
        assert set(figure) >= set(FIGURE_KEYS)
    assert latest["figures"]["dispatch"]["met"] is True
    assert latest["figures"]["command_commit_p99"]["met"] is False
    assert latest["figures"]["projections"]["met"] is False
    assert latest["figures"]["recovery_delivery"]["value"] is None
    assert "never came back" in latest["figures"]["recovery_delivery"]["error"]

    png = tmp_path / "results" / "latest.png"
    assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = page.read_text()
    assert "old" not in text and text.startswith("# Benchmarks") and "more prose" in text
    assert "| dispatch | 40,000 sends/s | 70,000 sends/s | 0.571 | ratio ≥ 0.5 | yes |" in text
    assert "| command_commit_p99 | 80.00 ms | — | — | ≤ 50 ms | **no** (+60 %) |" in text
    assert "| recovery_delivery | — |" in text and "never came back" in text


def test_check_names_what_breaks_the_form() -> None:
    doc = document(canned(), started_at=STARTED, finished_at=STARTED, quick=True, machine_facts={})
    del doc["figures"]["dispatch"]["ceiling"]
    doc["figures"]["planner"]["value"] = "fast"
    doc["figures"]["made_up"] = doc["figures"]["growth"]
    assert check(doc) == [
        "dispatch: missing ceiling",
        "planner: value is not a number or null",
        "unknown figure made_up",
    ]


def test_an_unknown_figure_is_refused_and_a_table_needs_no_ceiling() -> None:
    with pytest.raises(ValueError, match="unknown figures"):
        document(
            {"speed": Figure(1, "x")},
            started_at=STARTED,
            finished_at=STARTED,
            quick=False,
            machine_facts={},
        )
    doc = document(
        {"planner": Figure(450_000, "recipients/CPU-s", target=300_000)},
        started_at=STARTED,
        finished_at=STARTED,
        quick=False,
        machine_facts={"cores": 2},
    )
    assert "| planner | 450,000 recipients/CPU-s | — | — | ≥ 300000 recipients/CPU-s | yes |" in (
        table(doc)
    )


def test_the_fence_figures_of_issue_12_are_registered_beside_the_pause_reaction() -> None:
    fence = ("pause_mails_after", "cancel_reaction", "cancel_mails_after", "window_throughput")
    assert set(fence) <= set(NAMES)
    at = NAMES.index("pause_reaction")
    assert NAMES[at : at + 1 + len(fence)] == ("pause_reaction", *fence)
    # A pool of 8: nine mails after the pause misses the target, eight meets it.
    assert Figure(value=9, unit="mails", target=8, better="lower").met is False
    assert Figure(value=8, unit="mails", target=8, better="lower").met is True
    # The window's cost: within -10 % of no window is a ratio of at least 0.9.
    cost = Figure(
        value=850, unit="mails/s", ceiling=1000, ratio=0.85, target=0.9, target_of="ratio"
    )
    assert cost.met is False


def test_every_recovery_figure_is_seconds_after_a_kill_against_five_seconds() -> None:
    one = recovery(3.5, "SIGKILL to the next send", [{"value": 3.5}], {"recipients": [1]})
    assert (one.value, one.unit, one.target, one.better, one.met) == (3.5, "s", 5, "lower", True)
    assert one.sizes == {"recipients": [1]} and one.note == "SIGKILL to the next send"
    kills = median_recovery([7.0, 2.0, 6.0], "SIGKILL to the next mail (median)")
    assert (kills.value, kills.met, kills.runs) == (
        6.0,
        False,
        [{"value": 7.0}, {"value": 2.0}, {"value": 6.0}],
    )
    none = median_recovery([], "no kill measured")
    assert none.value is None and none.met is None and none.runs == []


def test_a_scale_run_of_one_section_keeps_the_other_in_scale_latest(tmp_path: Path) -> None:
    """Given scale-latest.json with both sections, when a scale-out run alone writes its
    section, then the new scaleout replaces the old, the scale section stays, and the dated
    copy holds the same document."""
    write_scale({"scale": {"recipients": 10}, "scaleout": {"speedup": 1.0}}, tmp_path)
    latest, dated = write_scale({"scaleout": {"speedup": 1.5}}, tmp_path)
    doc = json.loads(latest.read_text())
    assert doc["scale"] == {"recipients": 10} and doc["scaleout"] == {"speedup": 1.5}
    assert json.loads(dated.read_text()) == doc
    assert dated.name.startswith("scale-") and "machine" in doc
