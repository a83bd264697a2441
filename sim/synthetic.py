"""Synthetic traces, from a seed: the demo trace and the benchmark's large replays.

Real traces are what the simulator is for; synthetic ones fill two gaps: a trace that
matches the embedded demo cluster's teams and GPU models (no public trace does), and
traces of any size for benchmarks. Both are labelled synthetic wherever they appear.

Arrivals are a Poisson process whose rate makes the offered load (GPU-seconds asked per
second) a given fraction of the cluster's GPUs; runtimes are log-normal (most jobs short,
a long tail — the shape every public trace shows), capped at ``max_runtime_s``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from scheduler.catalog import MILLI_PER_GPU
from scheduler.defaults import demo_workloads
from scheduler.model import Demand, Workload
from sim.job import Job

__all__ = ["demo_jobs", "uniform_jobs"]


def _gpu_seconds(w: Workload) -> float:
    d = w.demand
    if d.gpus is not None:
        return float(d.gpus * w.pods)
    if d.gpu_milli is not None:
        return d.gpu_milli / MILLI_PER_GPU * w.pods
    return 0.5 * w.pods  # MIG slices and memory-based asks: about half a GPU


def _runtimes(rng: random.Random, count: int, median_s: float, max_s: int) -> list[int]:
    return [
        max(30, min(max_s, int(rng.lognormvariate(math.log(median_s), 1.2)))) for _ in range(count)
    ]


def _arrivals(rng: random.Random, sizes: Sequence[float], gpus: int, load: float) -> list[int]:
    """Poisson arrivals whose mean offered load is ``load`` × ``gpus``."""
    mean_work = sum(sizes) / max(1, len(sizes))
    rate = load * gpus / mean_work if mean_work else 1.0
    t = 0.0
    out = []
    for _ in sizes:
        t += rng.expovariate(rate)
        out.append(int(t))
    return out


def demo_jobs(
    count: int = 2000,
    seed: int = 0,
    gpus: int = 496,
    load: float = 1.1,
    median_runtime_s: float = 1800.0,
    max_runtime_s: int = 6 * 3600,
) -> tuple[Job, ...]:
    """Jobs for the embedded demo cluster's six teams, drawn like its demo backlog
    (``scheduler.defaults.demo_workloads``: gangs, notebooks, MIG, fractional inference,
    priorities per team), arriving over time with log-normal runtimes."""
    rng = random.Random(seed)
    workloads = demo_workloads(seed=seed, count=count, now=0)
    runtimes = _runtimes(rng, count, median_runtime_s, max_runtime_s)
    sizes = [_gpu_seconds(w) * r for w, r in zip(workloads, runtimes, strict=True)]
    arrivals = _arrivals(rng, sizes, gpus, load)
    jobs = [
        Job(
            w.model_copy(update={"created": t, "name": f"{w.queue}-{i:05d}"}),
            float(r),
            tuple(sorted(w.throughput.items())),
        )
        for i, (w, r, t) in enumerate(zip(workloads, runtimes, arrivals, strict=True))
    ]
    return tuple(jobs)


def uniform_jobs(
    count: int,
    gpus: int,
    seed: int = 0,
    queues: int = 8,
    load: float = 0.9,
    median_runtime_s: float = 3600.0,
    max_runtime_s: int = 48 * 3600,
) -> tuple[Job, ...]:
    """Whole-GPU jobs (1, 2, 4 or 8 GPUs; mostly small) from ``queues`` tenants with two
    priorities, for a cluster of ``gpus`` identical GPUs."""
    rng = random.Random(seed)
    sizes = rng.choices((1, 2, 4, 8), (60, 20, 12, 8), k=count)
    runtimes = _runtimes(rng, count, median_runtime_s, max_runtime_s)
    arrivals = _arrivals(rng, [s * r for s, r in zip(sizes, runtimes, strict=True)], gpus, load)
    width = len(str(count - 1))
    names = [f"q{i}" for i in range(queues)]
    demands = {k: Demand(gpus=k) for k in (1, 2, 4, 8)}
    jobs = []
    for i in range(count):
        w = Workload.model_construct(
            name=f"job-{i:0{width}d}",
            queue=names[rng.randrange(queues)],
            namespace="default",
            priority=rng.choice((0, 0, 0, 100)),
            created=arrivals[i],
            pods=1,
            demand=demands[sizes[i]],
            cpu_milli=0,
            memory_mib=0,
            node_selector={},
            tolerations=(),
            throughput={},
            flavor=None,
            placement=None,
            started=None,
        )
        jobs.append(Job(w, float(runtimes[i])))
    return tuple(jobs)
