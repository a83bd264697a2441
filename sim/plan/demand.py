"""The demand a plan is for: a trace, grown by a factor and repeated out to a horizon.

Growth adds copies of jobs (every job ``floor(g)`` times, plus a seeded random
``g − floor(g)`` share once more), each copy arriving a few seeded seconds after its
original: more of the same work at the same times of day; below 1 that share of the jobs
is kept (none may be: the planner refuses a demand grown to nothing). A horizon longer
than the trace repeats it, shifted by its span, so a week can be planned from a day's
trace; a shorter one keeps the jobs that arrive within it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

from sim.job import Job

__all__ = [
    "GROWTH_WHY",
    "HORIZON_WHY",
    "MAX_GROWTH",
    "MAX_HORIZON_HOURS",
    "MAX_PLANNED_JOBS",
    "grow",
    "planned_size",
]

MAX_GROWTH = 100.0
"""--growth: a hundredfold. Teams plan for growth of a few times; a millionfold demand was
a million copies of every job, built and then simulated for ever."""
GROWTH_WHY = "a hundredfold demand is a new cluster to design, not growth to plan for"
"""Why, in the error past ``MAX_GROWTH``."""

MAX_HORIZON_HOURS = 8760.0
"""--horizon-hours: a year. Past it, a longer horizon plans nothing new (it repeats the
trace again), and 1e308 hours overflowed into a traceback."""
HORIZON_WHY = "a year: capacity is planned a year ahead at most, and longer only repeats the trace"
"""Why, in the error past ``MAX_HORIZON_HOURS``."""

MAX_PLANNED_JOBS = 1_000_000
"""Jobs a plan is for: a trace's own, or what --growth and --horizon-hours make of it.
Every simulated candidate replays them all: the demo's 600 jobs take a few seconds a
simulation, so a million take hours each (and about 1.5 GB to hold). Planned demand past
it is refused before it is built."""


def _copy(job: Job, suffix: str, shift: int) -> Job:
    w = job.workload
    return replace(
        job, workload=w.model_copy(update={"name": w.name + suffix, "created": w.created + shift})
    )


def grow(
    jobs: Sequence[Job], growth: float = 1.0, horizon_s: int | None = None, seed: int = 0
) -> tuple[Job, ...]:
    """``jobs`` scaled by ``growth`` and repeated to cover ``horizon_s`` (sorted by arrival)."""
    if growth <= 0:
        raise ValueError(f"growth {growth} must be positive")
    if not jobs:
        return ()
    rng = random.Random(seed)
    span = _span(jobs)
    repeats = _repeats(span, horizon_s)
    whole, part = int(growth), growth - int(growth)
    out: list[Job] = []
    for r in range(repeats):
        for job in jobs:
            copies = whole + (1 if rng.random() < part else 0)
            for c in range(copies):
                if r == 0 and c == 0:
                    out.append(job)
                    continue
                jitter = 0 if c == 0 else rng.randint(1, 300)
                out.append(_copy(job, f"~{r}.{c}", r * span + jitter))
    if horizon_s is not None:
        out = [j for j in out if j.submit < horizon_s]
    return tuple(sorted(out, key=lambda j: (j.submit, j.name)))


def planned_size(
    jobs: Sequence[Job], growth: float = 1.0, horizon_s: int | None = None
) -> tuple[int, int]:
    """About how many jobs ``grow`` makes, and how many times it repeats the trace: known
    before a single copy is made (``MAX_PLANNED_JOBS``)."""
    if not jobs:
        return (0, 1)
    repeats = _repeats(_span(jobs), horizon_s)
    return (round(len(jobs) * growth) * repeats, repeats)


def _span(jobs: Sequence[Job]) -> int:
    """Seconds the trace's arrivals cover: a repeat is shifted by as much."""
    return max(j.submit for j in jobs) + 1


def _repeats(span: int, horizon_s: int | None) -> int:
    return 1 if horizon_s is None else max(1, math.ceil(horizon_s / span))
