"""The demand a plan is for: a trace, grown by a factor and repeated out to a horizon.

Growth adds copies of jobs (every job ``floor(g)`` times, plus a seeded random
``g − floor(g)`` share once more), each copy arriving a few seeded seconds after its
original: more of the same work at the same times of day. A horizon longer than the
trace repeats it, shifted by its span, so a week can be planned from a day's trace.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

from sim.job import Job

__all__ = ["grow"]


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
    span = max(j.submit for j in jobs) + 1
    repeats = 1 if horizon_s is None else max(1, math.ceil(horizon_s / span))
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
