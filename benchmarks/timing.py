"""Timing shared by the benchmarks: interleaved repeats, so that load from other processes on a shared CPU
hits every timed setting alike; report medians of these, never a single time."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


def paired_times(fns: dict[Hashable, Callable[[], object]], repeats: int) -> dict[Hashable, list[float]]:
    """Seconds per call of each function, `repeats` rounds of one call each, interleaved; the first round is
    a warm-up and is dropped."""
    times: dict[Hashable, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[k].append(time.perf_counter() - t0)
    return times
