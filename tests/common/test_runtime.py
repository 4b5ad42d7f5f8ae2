"""The interpreter's start-up settings (services/common/runtime.py)."""

from __future__ import annotations

import ast
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common import runtime
from services.common.runtime import GC_YOUNG_THRESHOLD, tune_gc, use_huge_pages, with_huge_pages

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_raises_the_young_threshold_and_keeps_the_collector_on() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    assert GC_YOUNG_THRESHOLD > 30_000  # above what one 10,000-contact chunk keeps alive
    assert gc.isenabled()


def _calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.value.func.id
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
    ]


@pytest.mark.parametrize(
    "main", sorted(SERVICES.glob("*/__main__.py")), ids=lambda p: p.parent.name
)
def test_every_service_process_tunes_the_gc_before_anything_else(main: Path) -> None:
    calls = _calls(main)
    # The dispatcher asks for huge pages first of all (it may start the process again).
    first = ["use_huge_pages", "tune_gc"] if main.parent.name == "dispatcher" else ["tune_gc"]
    assert calls[: len(first)] == first, calls


def test_the_dispatcher_asks_for_huge_pages_before_it_imports_anything_heavy() -> None:
    tree = ast.parse((SERVICES / "dispatcher" / "__main__.py").read_text())
    before = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            break
        before.append(node)
    imports = [n for n in before if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [n.module for n in imports if isinstance(n, ast.ImportFrom)] == [
        "services.common.runtime"
    ], ast.dump(tree)
    assert all(isinstance(n, ast.ImportFrom | ast.Expr) for n in before)


@pytest.mark.parametrize(
    ("tunables", "expected"),
    [
        (None, "glibc.malloc.hugetlb=1"),
        ("", "glibc.malloc.hugetlb=1"),
        ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
        ("glibc.malloc.arena_max=2::", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
        # The operator's own setting, whatever its value, is kept: nothing to change.
        ("glibc.malloc.hugetlb=0", None),
        ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", None),
        ("glibc.malloc.hugetlb=1", None),
        # A name that only begins like it is another tunable.
        ("glibc.malloc.hugetlbx=0", "glibc.malloc.hugetlbx=0:glibc.malloc.hugetlb=1"),
    ],
)
def test_with_huge_pages_adds_the_tunable_only_when_it_is_not_set(
    tunables: str | None, expected: str | None
) -> None:
    assert with_huge_pages(tunables) == expected


def test_use_huge_pages_restarts_the_interpreter_with_the_tunable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str], str]] = []

    def execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv, os.environ["GLIBC_TUNABLES"]))

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(runtime, "_glibc", lambda: True)
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "services.dispatcher"])
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    use_huge_pages()
    assert calls == [
        (
            sys.executable,
            [sys.executable, "-m", "services.dispatcher"],
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
        )
    ]
    # Started again with it set: nothing happens (no loop).
    calls.clear()
    use_huge_pages()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    use_huge_pages()
    # Not glibc: nothing either.
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(runtime, "_glibc", lambda: False)
    use_huge_pages()
    assert calls == []
    assert "GLIBC_TUNABLES" not in os.environ


_CHILD = """
import os, sys
from services.common.runtime import use_huge_pages
use_huge_pages()
block = bytearray(64 << 20)
block[:: 4096] = b"x" * len(block[:: 4096])
huge = next(
    int(line.split()[1])
    for line in open("/proc/self/smaps_rollup")
    if line.startswith("AnonHugePages:")
)
print(os.getpid(), os.environ["GLIBC_TUNABLES"], huge, len(block) >> 20)
"""


def test_a_process_that_uses_huge_pages_gets_them_and_keeps_its_pid() -> None:
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(SERVICES.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    pid, tunables, huge_kb, size = out.split()
    assert int(pid) == child.pid  # re-executed in place, not a new process
    assert tunables == "glibc.malloc.hugetlb=1"
    assert size == "64"
    if "[never]" in mode:  # the kernel gives no huge pages to anyone
        assert int(huge_kb) == 0
    else:  # [madvise] (Debian's default, this machine's) or [always]
        assert int(huge_kb) >= 32 << 10, out  # most of the 64 MiB block
