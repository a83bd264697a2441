"""The one interface every simulated policy implements, and what the engine shows it.

At each scheduling point the engine hands the policy a ``Context`` — the clock, the
cluster's current occupancy and health, what waits and what runs, and what changed since
the last call — and applies the ``Actions`` it returns (evictions first, then starts),
checking each against the cluster. Policies never touch the engine's state directly, and
the core never learns it is being simulated: there are no simulation flags anywhere in
``scheduler``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Protocol

from scheduler.model import Node, PodPlacement, Workload
from sim.cluster import Cluster
from sim.job import Job
from sim.occupancy import Occupancy

__all__ = ["Actions", "Context", "JobState", "Phase", "Policy", "Start"]


class Phase(IntEnum):
    WAITING = 0
    """Also before the job arrives (the engine's pending jobs are the ones that did)."""
    RUNNING = 1
    DONE = 2


@dataclass(slots=True)
class JobState:
    """One job's life in the simulation (owned by the engine; read-only to policies)."""

    job: Job
    name: str = field(init=False)
    """The workload's name (a field: the engine and the policies ask it several times a
    start)."""
    phase: Phase = Phase.WAITING
    placement: tuple[PodPlacement, ...] = ()
    flavor: str | None = None
    view: Workload | None = None
    """Cache of ``running`` (built on first use: most policies never ask)."""
    started: int = -1
    first_start: int = -1
    end: int = -1
    done_work: float = 0.0
    rate: float = 1.0
    run_id: int = 0
    gpu_milli: int = 0
    """GPU capacity held while running, milli-GPU-equivalents."""
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    util: float | None = None
    last_placement: tuple[PodPlacement, ...] = ()
    """Where it ran last (kept after it stops, for policies that remember placements)."""
    earlier_runs: tuple[tuple[int, int, int], ...] = ()
    """(start, stop, gpu_milli) of each run a preemption or outage ended; the current or
    last run is ``started`` … now or ``end``. A tuple, empty for most jobs: no list each."""

    def __post_init__(self) -> None:
        self.name = self.job.workload.name

    @property
    def running(self) -> Workload | None:
        """The core's view of the job while it runs: placement, flavor and start time set."""
        if self.phase is not Phase.RUNNING:
            return None
        if self.view is None:
            self.view = Workload.model_construct(
                **{
                    **self.job.workload.__dict__,
                    "placement": self.placement,
                    "flavor": self.flavor,
                    "started": self.started,
                }
            )
        return self.view


class Start(NamedTuple):
    """Start a waiting job here (a named tuple: a policy makes one per admission)."""

    job: str
    placement: tuple[PodPlacement, ...]
    flavor: str | None = None


@dataclass(slots=True)
class Actions:
    starts: list[Start] = field(default_factory=list)
    evictions: list[tuple[str, str]] = field(default_factory=list)
    """(job, reason) pairs; applied before the starts."""


@dataclass(slots=True)
class Context:
    now: int
    cluster: Cluster
    occupancy: Occupancy
    pending: dict[str, JobState]
    """Waiting jobs in the order they (re)entered the queue."""
    running: dict[str, JobState]
    arrived: list[JobState]
    """Jobs that entered the queue since the last call: new, or killed by an outage."""
    released: list[JobState]
    """Jobs whose capacity the engine gave back since the last call (finished or killed);
    evictions the policy itself asked for are not repeated here."""
    health_changed: bool
    nodes: Callable[[], tuple[Node, ...]]
    """The cluster's nodes with their current GPU health."""


class Policy(Protocol):
    name: str
    tie_rule: str
    """How the policy breaks ties between equally good choices (stated in every report)."""
    tick_s: int
    """Also call me every this many simulated seconds while work waits (0 = only on events);
    with the engine's ``interval`` set, every policy is called on its grid alone."""

    def schedule(self, ctx: Context) -> Actions: ...
