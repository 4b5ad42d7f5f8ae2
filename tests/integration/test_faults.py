"""The reduced fault matrix of `make test` (issue 18): the rows of faults/scenarios.py REDUCED,
one run each, 10,000 recipients, on the stack the project's scripts run; every checker of
faults/checkers.py must pass (0 duplicates, 0 lost). The full matrix is `make faults`."""

from __future__ import annotations

import pytest

from faults.run import run_row
from faults.scenarios import REDUCED, matrix

RECIPIENTS = 10_000


@pytest.mark.parametrize("name", REDUCED)
async def test_a_row_of_the_fault_matrix_loses_and_duplicates_nothing(name: str) -> None:
    (scenario,) = [s for s in matrix() if s.name == name]
    row = await run_row(scenario, RECIPIENTS, seed=18, within=300)
    print(f"\n{row.as_json()} in {row.seconds:.0f} s")
    assert row.verdict.passed, row.verdict.violations
    assert (row.verdict.duplicates, row.verdict.lost) == (0, 0)
