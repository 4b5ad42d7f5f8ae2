"""Where the real servers are. `make test` starts them (scripts/up.sh) and exports these variables;
the defaults are the project's own ports from scripts/lib.sh. A missing server fails the test: it
is never skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import Stack
from bench.harness.projections import drop_schema, new_schema
from bench.harness.servers import servers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return servers().bootstrap


@pytest.fixture(scope="session")
def database_url() -> str:
    return servers().database_url


@pytest.fixture(scope="session")
def smtp_address() -> tuple[str, int]:
    return servers().smtp


@pytest.fixture(scope="session")
def smtp_sink_url() -> str:
    return servers().sink_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A Postgres schema of the test's own for the views (dropped after it). Modules with another
    kind of schema define a `schema` fixture of their own."""
    name = await new_schema(database_url)
    try:
        yield name
    finally:
        await drop_schema(database_url, name)


@pytest.fixture
async def stack(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """Topics of the test's own (bench/harness/processor.py), `STACK_PARTITIONS` of the module
    partitions (default 4); the test spawns the processes it needs. Modules with another kind
    of stack define a `stack` fixture of their own."""
    stack = Stack(
        kafka_bootstrap, tmp_path, partitions=getattr(request.module, "STACK_PARTITIONS", 4)
    )
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


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
