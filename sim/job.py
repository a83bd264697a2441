"""A trace job: the core's ``Workload`` plus what only a simulation knows (when it arrives,
how much work it is, how fast it runs on each GPU model).

Every loader produces ``Job``s, so the engine and the policies never see a trace format.
Time is integer seconds from the trace's start. ``work`` is in the trace's own unit:
seconds at rate 1.0 for most traces, iterations for Gavel (whose throughput table gives
iterations per second per GPU type).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.model import Workload

__all__ = ["DEFAULT_QUEUE", "HostPod", "Job", "from_origin"]

DEFAULT_QUEUE = "default"
"""The queue of a job whose trace names none: an empty or missing ``queue`` in our
CSV/JSONL, every pod of an openb list."""


@dataclass(frozen=True, slots=True)
class Job:
    workload: Workload
    """The pending form the core sees; ``created`` is the arrival time."""
    work: float
    """Work to do, in units of ``rates`` × seconds (seconds when no rates are given)."""
    rates: tuple[tuple[str, float], ...] = ()
    """Per GPU model (catalog name): work per second. Missing models run at ``default_rate``."""
    default_rate: float = 1.0
    gpu_util: float | None = None
    """Average GPU utilization 0..1 when the trace gives it, the rest of its allocation
    reserved but idle. Only our own CSV/JSONL does (``gpu_util``): no public trace's loader
    reads utilization (PAI's sensor table, Philly's ``cluster_gpu_util``: hundreds of MB,
    not bundled), so idle-but-reserved GPU-hours are 0 on those traces."""

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def submit(self) -> int:
        return self.workload.created

    def rate_on(self, models: frozenset[str] | tuple[str, ...]) -> float:
        """Work per second on these GPU models: a gang runs at its slowest pod's pace."""
        table = dict(self.rates)
        return min((table.get(m, self.default_rate) for m in models), default=self.default_rate)

    def seconds_for(self, work: float, rate: float) -> int:
        """Whole seconds to do ``work`` at ``rate`` (rounded up; at least 1 if any work)."""
        if work <= 0:
            return 0
        return max(1, math.ceil(work / rate - 1e-9))


@dataclass(frozen=True, slots=True)
class HostPod:
    """A pod asking no GPU, on the trace's GPU nodes (openb's CPU-only pods). Replays leave
    it out; the fill experiment places it, as the FGD paper's simulator does, since the CPU
    and memory it takes can leave a node's free GPUs unusable."""

    name: str
    submit: int
    """Arrival, on the same clock as the jobs' (the order before the fill's shuffle)."""
    cpu_milli: int
    memory_mib: int


def from_origin(parsed: Iterable[tuple[float, Workload, float]]) -> tuple[Job, ...]:
    """Jobs from (arrival in seconds on the trace's clock, workload, runtime in seconds):
    arrivals become seconds after the earliest one, runtimes at least one second."""
    items = list(parsed)
    if not items:
        return ()
    origin = min(t for t, _, _ in items)
    return tuple(
        Job(w.model_copy(update={"created": int(t - origin)}), float(max(1.0, d)))
        for t, w, d in items
    )
