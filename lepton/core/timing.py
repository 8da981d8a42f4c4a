"""Per-call cost that means as nearly as it can the same on a quiet machine and a loaded one.

Whatever reads a time to decide (the optimiser's latency budget, the deploy stage's latency gate)
times a call by the CPU time of the calling thread (``time.thread_time_ns``), not the wall clock: a
machine busy with other work, or a run busy with its own Dask trials in other threads, stretches
wall time by descheduling the thread but leaves the work the call does unchanged. Single-row
scoring runs in the calling thread (NumPy, XGBoost on one row), so its thread time is its cost.
Wall time is measured beside it and reported, never used to decide.

Calls are timed warm, in blocks. Load only ever adds CPU time to a call (caches and cores shared
with other work), so the figure is the median of the two quietest blocks, and their disagreement
is the noise stated with it. When it stays above ``MAX_SPREAD`` after ``ATTEMPTS`` measurements,
the figure is not reliable and says so (``reliable`` False). As load only adds, a figure within a
budget passes whatever its spread; only one over a budget needs ``reliable`` to fail, and a gate
withholds its decision otherwise. The choice among models reads no time at all
(``lepton.tasks.pareto``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCKS = 5
MAX_SPREAD = 0.5  # between the two quietest blocks' medians
ATTEMPTS = 3


@dataclass(frozen=True)
class CallTiming:
    """Milliseconds per call: thread CPU time (decides) and wall time (reported)."""

    cpu_p50_ms: float  # the median of the two quietest blocks
    cpu_p99_ms: float
    wall_p50_ms: float
    wall_p99_ms: float
    spread: float  # how far the two quietest blocks' medians disagree, relative
    calls: int

    @property
    def reliable(self) -> bool:
        return self.spread <= MAX_SPREAD


def _measure(call: Callable[[int], object], calls: int, warmup: int) -> CallTiming:
    for i in range(warmup):
        call(i)
    cpu = np.empty(calls)
    wall = np.empty(calls)
    for i in range(calls):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        call(warmup + i)
        wall[i] = time.perf_counter_ns() - w0
        cpu[i] = time.thread_time_ns() - c0
    cpu /= 1e6
    wall /= 1e6
    # Interference only ever adds CPU time (caches and cores shared with other work), so the two
    # quietest blocks carry the call's own cost; they must agree for the figure to decide.
    quiet = sorted(float(np.median(block)) for block in np.array_split(cpu, min(BLOCKS, calls)))[:2]
    figure = float(np.mean(quiet))
    spread = (quiet[-1] - quiet[0]) / figure if figure > 0 else 0.0
    return CallTiming(
        cpu_p50_ms=figure,
        cpu_p99_ms=float(np.quantile(cpu, 0.99)),
        wall_p50_ms=float(np.median(wall)),
        wall_p99_ms=float(np.quantile(wall, 0.99)),
        spread=spread,
        calls=calls,
    )


def time_calls(call: Callable[[int], object], calls: int, warmup: int = 5) -> CallTiming:
    """Time ``call(i)`` for ``calls`` values of ``i`` after ``warmup`` untimed ones; measured
    again (up to ``ATTEMPTS`` times) while the blocks disagree, the steadiest measurement kept."""
    best: CallTiming | None = None
    for _ in range(ATTEMPTS):
        timing = _measure(call, calls, warmup)
        if best is None or timing.spread < best.spread:
            best = timing
        if best.reliable:
            break
    assert best is not None
    return best
