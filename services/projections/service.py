"""The projections process: brings the schema up to date, then keeps the read views (Email Sent,
Scheduled, Drafts, Recipients, History) up to date from the events topic
(services/projections/consumer.py). Serves `GET /health` (with one entry per owned partition,
failing with the reason while it retries a failed write, could not be taken, is stuck on a write,
or lags past a bound) and `GET /metrics` (Prometheus text: lag, retries, dead letters).
"""

from __future__ import annotations

import asyncio

import structlog

from services.common.checks import KafkaCheck, PostgresCheck
from services.common.health import Check, PartitionChecks, lag_problem
from services.common.settings import Settings
from services.common.startup import migrate_when_reachable, topics_when_reachable
from services.common.topics import Topics
from services.common.worker import run_worker
from services.projections.consumer import ViewsWorker

SERVICE = "projections"

#: A partition whose views are more than this many events behind fails /health.
MAX_LAG = 10_000

log = structlog.get_logger(__name__)


class MigrationsPendingError(Exception):
    """Raised by the health check while the schema has not been brought up to date yet."""


class SchemaStatus:
    """Whether this process has brought the schema up to date; doubles as a health check."""

    def __init__(self) -> None:
        self.up_to_date = False

    async def __call__(self) -> None:
        if not self.up_to_date:
            raise MigrationsPendingError("migrations not applied yet")


def health_checks(fixed: dict[str, Check], worker: ViewsWorker) -> PartitionChecks:
    """Postgres, Kafka, migrations, and one entry per assigned partition (read at every
    request), failing when the partition is retrying a failed write, could not be taken, is
    stuck on a write (`ViewsWorker.problem`), or its views lag by more than MAX_LAG events."""

    def problem(number: int) -> str | None:
        trouble = worker.problem(number)  # retrying a failed write, not taken, or stuck
        if trouble is not None:
            return trouble
        return lag_problem(worker.lag().get(number), MAX_LAG, "events")

    return PartitionChecks(fixed, lambda: {*worker.owned(), *worker.orphans}, problem)


def metrics_text(worker: ViewsWorker) -> str:
    """The worker's figures in the Prometheus text exposition format."""
    lines = [
        "# HELP mailctl_projection_lag_events Committed events not yet in the views.",
        "# TYPE mailctl_projection_lag_events gauge",
    ]
    for number, lag in worker.lag().items():
        if lag is not None:
            lines.append(f'mailctl_projection_lag_events{{partition="{number}"}} {lag}')
    lines += [
        "# HELP mailctl_projection_next_offset The next offset of the events topic to project.",
        "# TYPE mailctl_projection_next_offset gauge",
    ]
    for number, part in sorted(worker.partitions.items()):
        lines.append(f'mailctl_projection_next_offset{{partition="{number}"}} {part.stored}')
    lines += [
        "# HELP mailctl_projection_retrying Whether the partition's last write failed and is"
        " being retried (1) or not (0).",
        "# TYPE mailctl_projection_retrying gauge",
    ]
    for number in sorted({*worker.owned(), *worker.orphans}):
        retrying = 1 if number in worker.retrying else 0
        lines.append(f'mailctl_projection_retrying{{partition="{number}"}} {retrying}')
    lines += [
        "# HELP mailctl_projection_dead_letters Dead letters of the partition stored in Postgres"
        " (whichever process wrote them; survives restarts).",
        "# TYPE mailctl_projection_dead_letters gauge",
    ]
    for number, part in sorted(worker.partitions.items()):
        lines.append(f'mailctl_projection_dead_letters{{partition="{number}"}} {part.dead_stored}')
    for name, value, text in (
        ("events_total", worker.events, "Events written to the views by this process."),
        ("batches_total", worker.batches, "Transactions committed by this process."),
        (
            "dead_letters_total",
            worker.dead_letters,
            "Records kept as dead letters by this process (0 after a restart).",
        ),
        ("retries_total", worker.retries, "Batches that failed to write and were retried."),
    ):
        lines += [
            f"# HELP mailctl_projection_{name} {text}",
            f"# TYPE mailctl_projection_{name} counter",
            f"mailctl_projection_{name} {value}",
        ]
    return "\n".join(lines) + "\n"


async def serve(settings: Settings) -> None:
    status = SchemaStatus()
    kafka = KafkaCheck(settings)
    postgres = PostgresCheck(settings.database_url)
    worker = ViewsWorker(
        settings, Topics(settings.topic_prefix), max_batch_rows=settings.projections_max_batch_rows
    )

    async def main(stop: asyncio.Event) -> None:
        if not await migrate_when_reachable(settings.database_url, stop):
            return
        status.up_to_date = True
        if await topics_when_reachable(settings, stop):
            await worker.run(stop)

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.projections_health_port,
        checks=health_checks({"postgres": postgres, "kafka": kafka, "migrations": status}, worker),
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close, postgres.close],
        details=("projection", worker.status),
        metrics=lambda: metrics_text(worker),
    )
