"""The core is pure: no asyncio, Kafka, Postgres, clock or random ids under core/ or schemas/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("schemas/**/*.py")])
FORBIDDEN_MODULES = {
    "asyncio",
    "aiokafka",
    "faust",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "sqlalchemy",
    "socket",
    "random",
    "secrets",
    "time",
    "os",
    "subprocess",
    "requests",
    "httpx",
    "aiosmtplib",
    "smtplib",
    "structlog",
    "logging",
}
FORBIDDEN_CALLS = {
    "now",
    "utcnow",
    "today",
    "time",
    "time_ns",
    "monotonic",
    "uuid1",
    "uuid4",
    "open",
}


def imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module == "uuid":
                names.update(f"uuid.{alias.name}" for alias in node.names)
    return names


def called(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                names.add(func.attr)
            elif isinstance(func, ast.Name):
                names.add(func.id)
    return names


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_io_clock_or_randomness_is_imported(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = imported(tree)
    assert not names & FORBIDDEN_MODULES
    assert not names & {"uuid.uuid1", "uuid.uuid4"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_clock_or_random_id_is_read(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert not called(tree) & FORBIDDEN_CALLS


def test_the_checker_catches_a_clock_read() -> None:
    tree = ast.parse("import time\nfrom datetime import datetime\nx = datetime.now()\n")
    assert "time" in imported(tree)
    assert "now" in called(tree)
