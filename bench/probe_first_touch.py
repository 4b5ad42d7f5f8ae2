"""The first touch of fresh memory, with and without huge pages (docs/scale.md, "Stop 17").

Grows an ``array('q')`` by appends of 4 MiB blocks, as ``services.dispatcher.snapshots.Blocks.read``
restores a snapshot's arrays, then makes one zeroed ``bytearray`` of the same size, and prints
each one's time and the process's ``Rss`` and ``AnonHugePages``. Run it twice to compare:

    GLIBC_TUNABLES=glibc.malloc.hugetlb=0 .venv/bin/python -m bench.probe_first_touch
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python -m bench.probe_first_touch

(the dispatcher runs with ``=1`` by default: ``services.common.runtime.use_huge_pages``).
Usage: ``python -m bench.probe_first_touch [MiB]`` (default 688).
"""

from __future__ import annotations

import array
import os
import sys
import time
from pathlib import Path

BLOCK = bytes(range(256)) * (1 << 14)  # 4 MiB


def memory() -> str:
    lines = Path("/proc/self/smaps_rollup").read_text().splitlines()
    return ", ".join(
        " ".join(line.split()) for line in lines if line.startswith(("Rss:", "AnonHugePages:"))
    )


def main() -> None:
    size = (int(sys.argv[1]) if len(sys.argv) > 1 else 688) << 20
    print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')}")
    started = time.perf_counter()
    grown = array.array("q")
    while len(grown) * grown.itemsize < size:
        grown.frombytes(BLOCK)
    print(f"array grown by appends: {time.perf_counter() - started:.3f} s; {memory()}")
    started = time.perf_counter()
    zeroed = bytearray(size)
    zeroed[::4096] = b"\1" * len(range(0, size, 4096))  # every page touched
    print(f"bytearray of zeros, touched: {time.perf_counter() - started:.3f} s; {memory()}")


if __name__ == "__main__":
    main()
