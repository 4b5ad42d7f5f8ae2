"""The delivery worker process (`python -m services.dispatcher.delivery`).

It will claim each due send in the Postgres ledger, then hand the mail to SMTP. Until that lands
it reports whether all three of the servers it needs answer: Kafka, Postgres and the SMTP server.
"""

from __future__ import annotations

import asyncio

from services.common.checks import KafkaCheck, PostgresCheck, SmtpCheck
from services.common.logs import configure_logging
from services.common.settings import Settings
from services.common.worker import run_worker

SERVICE = "delivery"


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    postgres = PostgresCheck(settings.database_url)
    smtp = SmtpCheck(settings.smtp_host, settings.smtp_port)
    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.delivery_health_port,
        checks={"kafka": kafka, "postgres": postgres, "smtp": smtp},
        check_timeout=settings.health_check_timeout,
        closers=[kafka.close, postgres.close],
    )


def main() -> None:
    settings = Settings()
    configure_logging(SERVICE, level=settings.log_level, fmt=settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
