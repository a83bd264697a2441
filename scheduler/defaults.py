"""The reference cluster and a reproducible pending queue for it.

The demo, the tests and the benchmarks need the same realistic input: hundreds of GPUs of
mixed generations, MIG and time-sliced nodes, two cohorts of teams with unequal weights, and
a backlog that mixes gangs, notebooks, MIG and fractional inference. Toy clusters hide
exactly the problems (fragmentation, borrowing, MIG fit) the allocator exists to solve, and
one shared input keeps results comparable across all of them.

The cluster lives in ``data/default-cluster.yaml`` and goes through the same loader as user
files, so it is also a worked example of the format. Workloads are generated, not stored:
``random.Random(seed)`` makes any backlog size reproducible without a fixture per size.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TypeVar

from scheduler.catalog import default_catalog
from scheduler.loading import load_snapshot_text
from scheduler.model import Demand, Snapshot, Workload

__all__ = ["DEMO_NOW", "default_snapshot", "demo_snapshot", "demo_workloads"]

DEMO_NOW = 1_767_225_600
"""The demo's clock: 2026-01-01T00:00:00Z in seconds; workloads are created before it."""

_CLUSTER_FILE = "data/default-cluster.yaml"

_T = TypeVar("_T")

# (kind, weight): the share of each kind of workload in the backlog.
_KINDS: tuple[tuple[str, int], ...] = (
    ("train", 40),
    ("gang", 10),
    ("notebook", 15),
    ("mig", 15),
    ("inference", 20),
)

# Which teams submit each kind, and how often.
_SUBMITTERS: dict[str, tuple[tuple[str, int], ...]] = {
    "train": (
        ("team-a", 3),
        ("team-b", 2),
        ("team-c", 2),
        ("team-d", 1),
        ("team-e", 1),
        ("team-f", 1),
    ),
    "gang": (("team-a", 3), ("team-b", 2), ("team-d", 1)),
    "notebook": (("team-a", 1), ("team-b", 1), ("team-c", 2), ("team-e", 1)),
    "mig": (
        ("team-a", 1),
        ("team-b", 1),
        ("team-c", 1),
        ("team-d", 2),
        ("team-e", 1),
        ("team-f", 1),
    ),
    "inference": (("team-d", 3), ("team-e", 2), ("team-f", 2)),
}

# Priority classes (batch 0, standard 100, production-critical 1000) and their odds per
# team; team-c's queue caps priority at 100.
_PRIORITIES: dict[str, tuple[tuple[int, int], ...]] = {
    "team-a": ((0, 3), (100, 4), (1000, 1)),
    "team-b": ((0, 3), (100, 4), (1000, 1)),
    "team-c": ((0, 1), (100, 1)),
    "team-d": ((0, 1), (100, 2), (1000, 3)),
    "team-e": ((0, 1), (100, 2), (1000, 2)),
    "team-f": ((0, 2), (100, 2), (1000, 1)),
}

_TRAIN_MODELS: tuple[tuple[str, ...], ...] = (
    ("H100-80GB", "A100-80GB"),
    ("H100-80GB",),
    ("A100-80GB",),
    ("A100-80GB", "L40S"),
    (),
)
_GANG_MODELS: tuple[tuple[str, ...], ...] = (("H100-80GB",), ("H100-80GB", "A100-80GB"))
_INFERENCE_MODELS: tuple[tuple[str, ...], ...] = (("T4",), ("L40S",), ("T4", "L40S"))

# Host resources per GPU sized to fit every GPU node type, including 4-GPU T4 nodes.
_CPU_PER_GPU = 8000
_MEMORY_PER_GPU = 40 * 1024
_MAX_AGE = 12 * 3600


@cache
def default_snapshot() -> Snapshot:
    """The default cluster and its queues, without workloads (shared: do not mutate)."""
    text = resources.files("scheduler").joinpath(_CLUSTER_FILE).read_text(encoding="utf-8")
    return load_snapshot_text(text, source=_CLUSTER_FILE)


def demo_workloads(seed: int = 0, count: int = 120, now: int = DEMO_NOW) -> tuple[Workload, ...]:
    """A pending backlog for the default cluster, the same for the same arguments.

    Oldest first; every workload is pending (no flavor, no placement) and created within
    the twelve hours before ``now``.
    """
    if count < 0:
        raise ValueError(f"count: {count} is negative")
    rng = random.Random(seed)
    workloads = []
    for i in range(count):
        kind = _pick(rng, _KINDS)
        queue = _pick(rng, _SUBMITTERS[kind])
        workloads.append(
            _workload(
                rng,
                kind,
                name=f"{queue}-{kind}-{i:03d}",
                queue=queue,
                priority=_pick(rng, _PRIORITIES[queue]),
                created=max(0, now - rng.randint(30, _MAX_AGE)),
            )
        )
    return tuple(sorted(workloads, key=lambda w: (w.created, w.name)))


def demo_snapshot(seed: int = 0, count: int = 120, now: int = DEMO_NOW) -> Snapshot:
    """The default cluster with ``demo_workloads(seed, count, now)`` pending on it."""
    return default_snapshot().model_copy(
        update={"workloads": demo_workloads(seed, count, now), "now": now}
    )


def _pick(rng: random.Random, weighted: Sequence[tuple[_T, int]]) -> _T:
    return rng.choices([option for option, _ in weighted], [w for _, w in weighted])[0]


def _workload(
    rng: random.Random, kind: str, *, name: str, queue: str, priority: int, created: int
) -> Workload:
    pods = 1
    throughput: dict[str, float] = {}
    if kind == "train":
        gpus = rng.choice((1, 1, 2, 2, 4, 4, 8))
        models = rng.choice(_TRAIN_MODELS)
        demand = Demand(gpus=gpus, models=models)
        if len(models) > 1:
            catalog = default_catalog()
            throughput = {m: catalog[m].relative_throughput for m in models}
        cpu, memory = _CPU_PER_GPU * gpus, _MEMORY_PER_GPU * gpus
    elif kind == "gang":
        pods = rng.randint(2, 8)
        demand = Demand(gpus=8, models=rng.choice(_GANG_MODELS))
        cpu, memory = _CPU_PER_GPU * 8, _MEMORY_PER_GPU * 8
    elif kind == "notebook":
        demand = Demand(gpu_memory_mib=rng.randint(9, 18) * 1024)
        cpu, memory = 4000, 32 * 1024
    elif kind == "mig":
        profile = rng.choices(("1g.10gb", "2g.20gb", "3g.40gb"), (6, 3, 2))[0]
        demand = Demand(mig_profile=profile)
        cpu, memory = 4000, 16 * 1024
    else:
        pods = rng.choice((1, 1, 2))
        demand = Demand(
            gpu_milli=rng.choice((100, 200, 250, 500)), models=rng.choice(_INFERENCE_MODELS)
        )
        cpu, memory = 2000, 8 * 1024
    return Workload(
        name=name,
        queue=queue,
        namespace=queue,
        priority=priority,
        created=created,
        pods=pods,
        demand=demand,
        cpu_milli=cpu,
        memory_mib=memory,
        throughput=throughput,
    )
