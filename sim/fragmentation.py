"""GPU fragmentation as the FGD paper measures it, vectorized over nodes.

Weng et al. (ATC'23) measure a node's fragmentation *with respect to a target workload*:
for each task type m, if the node cannot run m at all (CPU, memory, GPU model or GPU
capacity short), all of its free GPU capacity is a fragment for m; if it can, the free
capacity on GPUs with less free than m needs per GPU is. A node's fragmentation is the
popularity-weighted sum over task types; the cluster's is the sum over nodes. The FGD
policy places each task where this sum grows least; the replay and fill reports show it
as a share of the free capacity.

The measure itself lives in the core (``scheduler.fragmentation``), which the online
path's fragmentation-aware placement also uses; here the target workload is the trace's
own task mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler.fragmentation import Shape, TaskMix, fragmentation, shape_of, task_mix
from sim.job import Job

__all__ = ["TaskMix", "fragmentation", "mix_of"]


def mix_of(jobs: Iterable[Job], model_names: Sequence[str]) -> TaskMix:
    """Task types (CPU, memory, GPUs, milli, models) and how often each occurs, per pod.
    Jobs without a plain GPU demand (MIG, memory-based) are left out of the mix."""
    counts: dict[Shape, float] = {}
    for job in jobs:
        shape = shape_of(job.workload)
        if shape is not None:
            counts[shape] = counts.get(shape, 0) + job.workload.pods
    return task_mix(counts, model_names)
