"""Where the real servers are. `make test` starts them (scripts/up.sh) and exports these variables;
the defaults are the project's own ports from scripts/lib.sh. A missing server fails the test: it
is never skipped."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.harness.delivery import DeliveryStack


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ.get("DATABASE_URL", "postgresql://mailctl:mailctl@127.0.0.1:15432/mailctl")


@pytest.fixture(scope="session")
def smtp_address() -> tuple[str, int]:
    return os.environ.get("SMTP_HOST", "127.0.0.1"), int(os.environ.get("SMTP_PORT", "10025"))


@pytest.fixture(scope="session")
def smtp_sink_url() -> str:
    return os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:18025")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
async def delivery_stack(
    kafka_bootstrap: str,
    database_url: str,
    smtp_address: tuple[str, int],
    smtp_sink_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[DeliveryStack]:
    """The sending path on topics of the test's own (bench/harness/delivery.py);
    the test spawns the processes it needs. A module that sets `SIMULATED_TIME = True` gets a
    CreateTime commands topic whose records carry their issued_at (processor_harness.Stack)."""
    stack = DeliveryStack(
        kafka_bootstrap,
        database_url,
        smtp_address,
        smtp_sink_url,
        tmp_path,
        simulated_time=getattr(request.module, "SIMULATED_TIME", False),
    )
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()
