"""The projections' fold and rows of added contacts, in process (docs/projections.md "Cost of an
add"): no Kafka, no Postgres.

A message's history is built with the core (bench/harness/histories.py: a draft, then
``--recipients`` contacts of bench/harness/processor.py ``generated`` added in chunks of 10,000:
one merge attribute each). Each ``RecipientsAdded`` event is then folded by the projections'
:class:`~services.projections.views.Projector` into a fresh :class:`Batch` and the batch's new
rows are built (``Batch.inserts``: what the store COPYs), the way the worker does per event.
Measured with ``time.process_time()``: CPU ms per 10,000 contacts of the fold (``apply``) and of
the rows (``inserts``), the median over the chunks (the first one, which warms up, left out).

Usage: ``python -m bench.bench_project_add [--recipients N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.harness.histories import Simulator
from bench.harness.processor import generated
from schemas import RecipientsAdded
from services.projections.views import Batch, Projector


def run(recipients: int) -> dict[str, float]:
    sim = Simulator()
    message = sim.create()
    sim.add(message, list(generated(0, recipients)))
    projector = Projector()
    fold: list[float] = []
    rows: list[float] = []
    for event in sim.events:
        batch = Batch()
        started = time.process_time()
        projector.apply(event, batch)
        folded = time.process_time()
        inserts = batch.inserts()
        done = time.process_time()
        if isinstance(event, RecipientsAdded):
            per = 10_000 / len(event.contacts) * 1000
            fold.append((folded - started) * per)
            rows.append((done - folded) * per)
            assert len(inserts) == len(event.contacts)
    fold, rows = fold[1:] or fold, rows[1:] or rows
    return {
        "recipients": recipients,
        "fold_ms_per_10k": round(statistics.median(fold), 1),
        "rows_ms_per_10k": round(statistics.median(rows), 1),
        "total_ms_per_10k": round(
            statistics.median(f + r for f, r in zip(fold, rows, strict=True)), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=200_000)
    args = parser.parse_args()
    print(json.dumps(run(args.recipients)))


if __name__ == "__main__":
    main()
