"""The reduced fault matrix of `make test` (issue 18): the rows of faults/scenarios.py REDUCED
(every row with FAULTS_REDUCED=all), one run each, 10,000 recipients, on the stack the
project's scripts run, one harness shared by the rows (faults/run.py Matrix); every checker of
faults/checkers.py must pass (0 duplicates, 0 lost). The full matrix is `make faults`."""

from __future__ import annotations

import os

from faults.run import Matrix
from faults.scenarios import REDUCED, matrix

RECIPIENTS = 10_000


async def test_every_row_of_the_reduced_fault_matrix_loses_and_duplicates_nothing() -> None:
    every = os.environ.get("FAULTS_REDUCED") == "all"
    # The cluster rows need the three-broker cluster: `make faults` runs them.
    scenarios = [s for s in matrix() if (every and not s.cluster) or s.name in REDUCED]
    assert every or sorted(s.name for s in scenarios) == sorted(REDUCED)
    failed: dict[str, tuple[str, ...]] = {}
    async with Matrix(within=300) as runner:
        for scenario in scenarios:
            row = await runner.run(scenario, RECIPIENTS, seed=18)
            print(f"\n{row.as_json()} in {row.seconds:.0f} s {row.phases}")
            if not row.verdict.passed or (row.verdict.duplicates, row.verdict.lost) != (0, 0):
                failed[scenario.name] = row.verdict.violations
    assert not failed, failed
