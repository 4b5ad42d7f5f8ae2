"""The interpreter's settings every service process starts with: call `tune_gc` once at start.

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
"""

from __future__ import annotations

import gc

#: Net container allocations between two young collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 200_000


def tune_gc() -> None:
    """Set the collector's young threshold (the older generations' keep CPython's defaults)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
