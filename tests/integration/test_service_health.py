"""Each service process, started as `python -m ...` against the real servers, answers
GET /health with 200 (its checks really talked to Kafka, Postgres, SMTP), writes its log as JSON
lines, and shuts down cleanly on SIGTERM. Each runs on free ports of its own, so a stack started
with `make run` on the default ports does not get in the way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness.spawn import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port_variable: str
    checks: frozenset[str]


SERVICES = [
    Service("commands", "services.commands", "COMMANDS_PORT", frozenset({"kafka", "postgres"})),
    Service(
        "dispatcher",
        "services.dispatcher",
        "DISPATCHER_HEALTH_PORT",
        frozenset({"kafka", "processor", "intake"}),
    ),
    Service(
        "delivery",
        "services.delivery",
        "DELIVERY_HEALTH_PORT",
        frozenset({"kafka", "postgres", "smtp", "worker"}),
    ),
    Service(
        "projections",
        "services.projections",
        "PROJECTIONS_HEALTH_PORT",
        frozenset({"kafka", "postgres", "migrations"}),
    ),
    Service("smtp_sink", "services.smtp_sink", "SMTP_SINK_HTTP_PORT", frozenset({"store", "smtp"})),
]


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


@pytest.fixture
def environment(
    kafka_bootstrap: str,
    database_url: str,
    smtp_address: tuple[str, int],
    tmp_path: Path,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        DATABASE_URL=database_url,
        SMTP_HOST=smtp_address[0],
        SMTP_PORT=str(smtp_address[1]),
        # Topics of its own: the dispatcher must not join a running development stack's group.
        TOPIC_PREFIX=f"health{uuid.uuid4().hex[:10]}",
    )
    return env


@pytest.fixture
def start(tmp_path: Path, environment: dict[str, str]) -> Iterator[Any]:
    started: list[Running] = []

    def start_service(service: Service, **overrides: str) -> Running:
        port = free_port()
        env = {**environment, service.port_variable: str(port), **overrides}
        if service.name == "smtp_sink":
            # A private sink: its own SMTP port and store, not the shared one.
            env.update(SMTP_PORT=str(free_port()), SMTP_SINK_DB=str(tmp_path / "sink.sqlite3"))
        log = tmp_path / f"{service.name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", service.module],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        running = Running(process, f"http://127.0.0.1:{port}", log)
        started.append(running)
        return running

    yield start_service
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def poll_health(running: Running, want: int, within: float = 60.0) -> httpx.Response:
    """GET /health until it answers `want`; fail with the log if the process dies first."""
    deadline = time.monotonic() + within
    last: str = "no answer"
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            pytest.fail(f"exited with {running.process.returncode}:\n{running.log.read_text()}")
        try:
            response = httpx.get(f"{running.base_url}/health", timeout=10)
        except httpx.TransportError as exc:
            last = repr(exc)  # not listening yet
        else:
            if response.status_code == want:
                return response
            last = f"{response.status_code} {response.text}"
        time.sleep(0.1)
    pytest.fail(f"/health did not answer {want} within {within:g}s (last: {last})")


def stop(running: Running) -> int:
    running.process.send_signal(signal.SIGTERM)
    return running.process.wait(timeout=20)


def json_lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"log line is not JSON: {line!r}")
    return parsed


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_service_is_healthy_against_the_real_servers_and_logs_json(
    service: Service, start: Any
) -> None:
    running: Running = start(service)

    report = poll_health(running, 200).json()

    assert report["service"] == service.name
    assert report["status"] == "ok"
    # Every named check, and nothing else but the dispatcher's one entry per owned partition.
    assert service.checks <= set(report["checks"])
    assert all(name.startswith("partition-") for name in set(report["checks"]) - service.checks)
    assert all(check["ok"] for check in report["checks"].values())
    assert stop(running) == 0, running.log.read_text()
    entries = json_lines(running.log)
    assert entries, "the service wrote no log line"
    for entry in entries:
        assert entry["service"] == service.name
        assert {"event", "level", "timestamp"} <= set(entry)


def test_commands_publishes_its_openapi_document(start: Any) -> None:
    running: Running = start(SERVICES[0])
    poll_health(running, 200)

    document = httpx.get(f"{running.base_url}/openapi.json", timeout=10).json()
    docs = httpx.get(f"{running.base_url}/docs", timeout=10)

    assert "/health" in document["paths"]
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


@pytest.mark.parametrize("service", SERVICES[:4], ids=[s.name for s in SERVICES[:4]])
def test_health_is_503_when_kafka_is_unreachable(service: Service, start: Any) -> None:
    # Nothing listens on a port just freed: the Kafka check must fail, not pretend.
    running: Running = start(service, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")

    report = poll_health(running, 503).json()

    assert report["status"] == "unavailable"
    assert report["checks"]["kafka"]["ok"] is False
    assert report["checks"]["kafka"]["error"]
    assert stop(running) == 0


def _environ(process: subprocess.Popen[bytes]) -> list[str]:
    return Path(f"/proc/{process.pid}/environ").read_bytes().decode().split("\0")


@pytest.mark.parametrize(
    ("given", "running_with"),
    [(None, "glibc.malloc.hugetlb=1"), ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0")],
    ids=["default", "operator-off"],
)
def test_the_dispatcher_runs_with_huge_pages_for_malloc_unless_told_otherwise(
    given: str | None, running_with: str, start: Any, environment: dict[str, str]
) -> None:
    # services/common/runtime.py: the dispatcher starts itself again with the tunable, in place
    # (same pid: whoever launched it still holds it), unless the operator set it.
    environment.pop("GLIBC_TUNABLES", None)
    overrides = {} if given is None else {"GLIBC_TUNABLES": given}
    running: Running = start(SERVICES[1], **overrides)

    poll_health(running, 200)

    assert f"GLIBC_TUNABLES={running_with}" in _environ(running.process)
    assert stop(running) == 0, running.log.read_text()
