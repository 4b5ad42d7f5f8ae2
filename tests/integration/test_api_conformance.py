"""The commands API against its own OpenAPI document: schemathesis (every check, every phase,
the stateful one included) drives the real commands service, with the processor and the
projections behind it on topics of the test's own, real Kafka and Postgres (docs/api.md,
"Conformance").

Bounded for `make test`: a fixed seed, few examples per operation and a time budget
(`CONFORMANCE_MAX_TIME_S`, 75 s). The longer run is the same test with `CONFORMANCE_EXAMPLES` and
`CONFORMANCE_MAX_TIME_S` raised (docs/api.md). No failure is accepted: there is no baseline, and
any failure of any check fails the test (issue 11).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bench.harness.processor import REPO_ROOT, Stack
from bench.harness.projections import spawn_projections
from tests.integration.test_api_commands import cli

EXAMPLES = int(os.environ.get("CONFORMANCE_EXAMPLES", "2"))
#: The run's time budget in `make test` (the longer run: docs/api.md, "Conformance").
MAX_TIME_S = int(os.environ.get("CONFORMANCE_MAX_TIME_S", "75"))
SEED = int(os.environ.get("CONFORMANCE_SEED", "11"))


@pytest.fixture
async def service(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """The commands service (a subprocess, as deployed), the processor and the projections on
    the stack's topics; yields the service's base URL once it answers /health."""
    stack = Stack(kafka_bootstrap, tmp_path)
    await stack.start()
    # Reads with min_sequence wait at most 1 s here (the setting read_max_wait_s), so a fuzzed
    # wait on a sequence never reached stays short.
    env = {"COMMAND_WAIT_S": "10", "READ_MAX_WAIT_S": "1"}
    try:
        stack.spawn(DATABASE_URL=database_url, **env)
        spawn_projections(stack, database_url, **env)
        _, url = await stack.start_api(database_url, within=60, **env)
        yield url
    finally:
        await stack.close()


async def test_the_api_conforms_to_its_openapi_document(
    service: str, database_url: str, tmp_path: Path
) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    key = cli(database_url, "create", "--account", account)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[auth.openapi.bearer]\nbearer = "{key}"\n', encoding="utf-8")
    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            # The key through the document's security scheme, not as a header of every request:
            # schemathesis then knows it is the credential, and its "missing required header"
            # check really leaves it out (a global --header would put it back, so a 200 looked
            # like an unauthenticated request accepted).
            "--config-file",
            str(config),
            "run",
            f"{service}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES),
            "--max-time",
            str(MAX_TIME_S),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--no-shrink",
            "--include-path-regex",
            "^/v1/",
            "--request-timeout",
            "30",
        ],
        cwd=tmp_path,  # schemathesis keeps a cache of past crashes in .schemathesis/ there
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "SCHEMATHESIS_HOOKS": "tests.integration.conformance_hooks",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-4000:]
    # The run was authenticated (a wrong credential would make every answer a 401, which
    # conforms too): its drafts reached the views of its account.
    drafts = 0
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(100):  # bounded: 10 s for the projections to catch up
            drafts = await conn.fetchval(
                "SELECT count(*) FROM view_messages WHERE account_id = $1", account
            )
            if drafts:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert drafts > 0, "no message of the run's account reached the views: was it authenticated?"
