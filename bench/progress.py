"""Progress lines of `make bench`: which figure, what it is doing, how far (to stderr, flushed)."""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()


def say(figure: str, what: str, done: float | None = None, total: float | None = None) -> None:
    elapsed = time.monotonic() - _STARTED
    far = ""
    if done is not None and total:
        far = f" {done:,.0f}/{total:,.0f} ({100 * done / total:.0f} %)"
    print(
        f"[{elapsed // 60:02.0f}:{elapsed % 60:04.1f}] {figure}: {what}{far}",
        file=sys.stderr,
        flush=True,
    )
