"""How long an extraction will take, said once its first batch is done.

A region-level extraction can spend half a minute on one large image on a CPU; the progress
bar's rate says so only in passing, so the first batch's pace becomes one log line with the
time the rest will take, in the log file too.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def duration_text(seconds: float) -> str:
    """`40 s`, `12 min`, `3.5 h`: as precise as an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class FirstBatchEstimate:
    """A progress callback: passes each batch's count on to `update`, and after the first one
    logs the time it took and how long the rest of `total` items will take at that pace."""

    def __init__(self, desc: str, total: int, update: Callable[[int], object]):
        self.desc = desc
        self.total = total
        self.update = update
        self.started = time.perf_counter()
        self.done = 0

    def __call__(self, count: int) -> None:
        self.update(count)
        first = self.done == 0
        self.done += count
        if first and 0 < self.done < self.total:
            elapsed = time.perf_counter() - self.started
            rest = elapsed / self.done * (self.total - self.done)
            log.info("%s: %d of %d items done in %s; the other %d will take about %s", self.desc, self.done, self.total,
                     duration_text(elapsed), self.total - self.done, duration_text(rest))
