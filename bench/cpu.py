"""CPU seconds of processes (/proc/PID/stat): which process a figure's time went to, in a unit
that does not depend on how loaded the machine is (CPU milliseconds per item)."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def least_cpu_ms(runs: int, step: Callable[[], Any]) -> float:
    """The least CPU milliseconds of this process over ``runs`` calls of ``step`` (the least
    disturbed run), each after a garbage collection."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best * 1000


def pidfile(name: str) -> int | None:
    """The pid of a server started by scripts/up.sh (.state/run/NAME.pid)."""
    try:
        return int((ROOT / ".state" / "run" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Meter:
    """CPU seconds used by named processes between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.before: dict[str, float | None] = {}

    def start(self) -> None:
        self.before = {name: cpu_s(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        used = {}
        for name, pid in self.pids.items():
            now, then = cpu_s(pid), self.before.get(name)
            if now is not None and then is not None:
                used[name] = now - then
        return used

    @staticmethod
    def per_item_ms(used: dict[str, float], items: int) -> dict[str, float]:
        return {name: round(s * 1000 / max(1, items), 3) for name, s in used.items()}
