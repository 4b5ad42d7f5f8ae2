"""bench/intake_floor.py: the intake's ceiling is the sum of the steps it names, on the very
records the decider takes."""

from __future__ import annotations

import pytest

from bench import intake_floor
from schemas import AddRecipients
from schemas.wire import decode_input


def test_the_chunk_is_one_the_decider_takes_with_every_contact() -> None:
    record = decode_input(intake_floor.chunk_record(300))
    assert isinstance(record.command, AddRecipients)
    assert [c.contact_id for c in record.command.contacts] == [f"s{i}" for i in range(300)]


def test_the_floor_is_the_sum_of_its_steps_and_the_ceiling_one_core_at_it() -> None:
    found = intake_floor.measure(runs=2, contacts=500)
    steps = found["steps_us"]
    assert intake_floor.PARSE_AND_CHECK in steps and intake_floor.BARE_PARSE in steps
    assert len(steps) == 7 and all(us > 0 for us in steps.values()), steps
    in_floor = [us for name, us in steps.items() if name != intake_floor.BARE_PARSE]
    assert found["floor_us"] == pytest.approx(sum(in_floor), abs=0.01)
    assert found["ceiling_contacts_per_s"] == pytest.approx(1e6 / found["floor_us"], rel=0.01)
    assert found["contacts"] == 500
