"""`make bench`: every benchmark of the project, one after the other, with the machine's facts.

Each benchmark module under bench/ named `bench_*.py` exposes `main(argv)`; the figures they print
are the ones quoted in docs/.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path


def main() -> int:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        print(f"\n== {path.stem} ==", flush=True)
        importlib.import_module(f"bench.{path.stem}").main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
