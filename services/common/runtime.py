"""The interpreter's settings every service process starts with: call `tune_gc` once at start
(and the dispatcher `use_huge_pages` before it).

**The cyclic garbage collector's young-generation threshold.** CPython 3.11 runs a young
collection every 700 net container allocations and a full one whenever the objects promoted
since the last full collection reach a quarter of the old generation. Deciding or encoding a
chunk of 10,000 contacts keeps ~30,000 containers alive until the chunk is done (the decoded
dicts, the Contacts, their attributes): at 700 they are walked and promoted again and again, and
the full collections they trigger walk every old object as well. Measured on the dispatcher's add
path (`python -m bench.bench_memory --recipients 500000`, this machine): 32,188 contacts per
CPU-second at the default against 52,717 with a young threshold of 200,000 (docs/scale.md,
"Intake"). The collector is not turned off: cyclic garbage is still found, after at most
200,000 net allocations (tens of MB at the worst), and reference counting frees everything else
at once, as before. The long-lived states are frozen out of the collector's reach where they are
built (`services.dispatcher.processor.freeze_taken_state`, the projections' fold).

**Transparent huge pages for malloc's large blocks (the dispatcher).** A restarted dispatcher's
take is mostly the first touch of fresh memory: the arrays of a 10,000,000-recipient snapshot,
about a gigabyte, each page faulted in and zeroed by the kernel (docs/scale.md, "Stop 16"). With
glibc's tunable ``glibc.malloc.hugetlb=1`` malloc asks for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on the memory it maps, so the kernel faults 2 MiB at a time instead
of 4 KiB: measured here, growing a 688 MiB array by appends took 0.30 s against 0.61–0.67 s
(docs/scale.md, "Stop 17"). The kernel's THP mode on this machine, and Debian's default, is
``madvise``: nothing gets huge pages unless it asks. glibc reads its tunables once, as the
process starts, so `use_huge_pages` re-executes the interpreter with the tunable added when it is
missing: the dispatcher gets it however it is launched (make run, the tests, a unit file). An
operator's own ``glibc.malloc.hugetlb`` setting (``=0`` turns it off) is kept as it is; on a libc
other than glibc nothing happens.
"""

from __future__ import annotations

import gc
import os
import sys

#: Net container allocations between two young collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 200_000


def tune_gc() -> None:
    """Set the collector's young threshold (the older generations' keep CPython's defaults)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


#: The glibc tunable that makes malloc ask for transparent huge pages on the memory it maps.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"


def with_huge_pages(tunables: str | None) -> str | None:
    """``GLIBC_TUNABLES`` with ``glibc.malloc.hugetlb=1`` added, or None when it already sets
    that tunable (to any value: the operator's choice) and nothing needs to change."""
    entries = [entry for entry in (tunables or "").split(":") if entry]
    if any(entry.partition("=")[0] == HUGE_PAGES_TUNABLE for entry in entries):
        return None
    return ":".join([*entries, f"{HUGE_PAGES_TUNABLE}=1"])


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # not a glibc system: the name or the value is unknown
        return False


def use_huge_pages() -> None:
    """Re-execute this interpreter, same arguments, with `with_huge_pages` in its environment
    when the tunable is not set yet (call it first: nothing before it runs twice). The process
    keeps its pid, open files and signals; the second start costs an interpreter's start-up
    (0.06 s measured here, `python -c` with and without the tunable set), not the imports."""
    tunables = with_huge_pages(os.environ.get("GLIBC_TUNABLES"))
    if tunables is None or not _glibc():
        return
    os.environ["GLIBC_TUNABLES"] = tunables
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
