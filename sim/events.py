"""What can happen in a simulation besides arrivals: outages and metric changes.

Outages take a node (or some of its GPUs) out of service: the jobs on it are killed and
requeued, losing the work since their last checkpoint, and the capacity returns when the
outage ends. ``Utilization`` is a metric change: a running job's measured GPU use, which
the replay reports as reserved-but-idle capacity while other work waits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_OUTAGES", "Outage", "Utilization", "random_outages"]

MAX_OUTAGES = 1_000_000
"""Random node failures a replay may draw. Each is an event that kills and requeues the
jobs on its node: a million is far past any failure study (a 1,000-node cluster failing
every hour per node for 40 days), and ``--mtbf-hours 0.00001`` asked for billions, drawn
one by one before the replay began."""


@dataclass(frozen=True, slots=True)
class Outage:
    at: int
    node: str
    duration: int
    """Seconds until the node recovers."""
    reason: str = "node failure"


@dataclass(frozen=True, slots=True)
class Utilization:
    at: int
    job: str
    util: float
    """Measured GPU utilization 0..1 from this time on."""


def random_outages(
    nodes: Sequence[str], horizon: int, mtbf_s: float, mttr_s: int, seed: int
) -> tuple[Outage, ...]:
    """Independent node failures: exponential gaps with mean ``mtbf_s`` per node, each
    lasting ``mttr_s``, up to ``horizon``. The same seed gives the same outages.
    ValueError, before any is drawn, where about ``MAX_OUTAGES`` or more would be."""
    expected = len(nodes) * horizon / (mtbf_s + mttr_s)
    if expected >= MAX_OUTAGES:
        raise ValueError(
            f"a mean time between failures of {mtbf_s / 3600:g} h (--mtbf-hours) makes about "
            f"{expected:,.0f} node failures over "
            f"{horizon:,} s on {len(nodes):,} nodes; at most {MAX_OUTAGES:,} (each kills and "
            "requeues the jobs on its node): give a longer mean time between failures"
        )
    rng = random.Random(seed)
    out: list[Outage] = []
    for node in nodes:
        t = 0.0
        while True:
            t += rng.expovariate(1.0 / mtbf_s)
            if t >= horizon:
                break
            out.append(Outage(int(t), node, mttr_s))
            t += mttr_s
    return tuple(sorted(out, key=lambda o: (o.at, o.node)))
