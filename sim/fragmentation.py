"""GPU fragmentation as the FGD paper measures it, vectorized over nodes.

Weng et al. (ATC'23) measure a node's fragmentation *with respect to a target workload*:
for each task type m, if the node cannot run m at all (CPU, memory, GPU model or GPU
capacity short), all of its free GPU capacity is a fragment for m; if it can, the free
capacity on GPUs with less free than m needs per GPU is. A node's fragmentation is the
popularity-weighted sum over task types; the cluster's is the sum over nodes. The FGD
policy places each task where this sum grows least; the replay and fill reports show it
as a share of the free capacity.

Inputs are arrays: free milli per GPU slot ``[N, W]`` (−1 pads nodes with fewer GPUs;
failed and MIG GPUs count 0), free CPU and memory ``[N]``, model id per node ``[N]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.catalog import MILLI_PER_GPU
from sim.job import Job

__all__ = ["TaskMix", "fragmentation", "mix_of"]


@dataclass(frozen=True)
class TaskMix:
    """The target workload: task types and their popularity."""

    cpu: np.ndarray
    mem: np.ndarray
    gpus: np.ndarray
    """GPUs per pod (1 for a share of a GPU)."""
    milli: np.ndarray
    """Milli-GPU per GPU (1000 for whole GPUs)."""
    model_ok: np.ndarray
    """[M, models]: may task type m run on model id k?"""
    weight: np.ndarray
    """Popularity, summing to 1."""
    levels: np.ndarray
    """The distinct milli-per-GPU values (few), so stranded capacity is computed once per
    value rather than once per task type."""
    level_of: np.ndarray
    """[M]: index of each task type's milli in ``levels``."""

    @property
    def size(self) -> int:
        return int(self.weight.size)


def mix_of(jobs: Iterable[Job], model_names: Sequence[str]) -> TaskMix:
    """Task types (CPU, memory, GPUs, milli, models) and how often each occurs, per pod.
    Jobs without a plain GPU demand (MIG, memory-based) are left out of the mix."""
    counts: dict[tuple[int, int, int, int, tuple[str, ...]], int] = {}
    for job in jobs:
        w = job.workload
        d = w.demand
        if d.gpus is not None:
            key = (w.cpu_milli, w.memory_mib, d.gpus, MILLI_PER_GPU, d.models)
        elif d.gpu_milli is not None:
            key = (w.cpu_milli, w.memory_mib, 1, d.gpu_milli, d.models)
        else:
            continue
        counts[key] = counts.get(key, 0) + w.pods
    keys = sorted(counts)
    total = sum(counts.values()) or 1
    ok = np.ones((len(keys), max(1, len(model_names))), dtype=bool)
    for i, key in enumerate(keys):
        if key[4]:
            ok[i] = [m in key[4] for m in model_names] or [True]
    milli = np.array([k[3] for k in keys], dtype=np.int32)
    levels, level_of = np.unique(milli, return_inverse=True)
    return TaskMix(
        cpu=np.array([k[0] for k in keys], dtype=np.int64),
        mem=np.array([k[1] for k in keys], dtype=np.int64),
        gpus=np.array([k[2] for k in keys], dtype=np.int32),
        milli=milli,
        model_ok=ok,
        weight=np.array([counts[k] / total for k in keys], dtype=np.float64),
        levels=levels.astype(np.int32),
        level_of=level_of.astype(np.int64),
    )


def fragmentation(
    free: np.ndarray,
    free_cpu: np.ndarray,
    free_mem: np.ndarray,
    node_model: np.ndarray,
    mix: TaskMix,
) -> np.ndarray:
    """Expected fragmented milli-GPU per node (or per candidate state: any leading shape
    ``[..., W]`` with matching ``[...]`` CPU, memory and model arrays)."""
    if mix.size == 0:
        return np.zeros(free.shape[:-1])
    f = np.maximum(free, 0).astype(np.int64)
    total = f.sum(axis=-1)
    full = (f == MILLI_PER_GPU).sum(axis=-1)
    top = f.max(axis=-1)
    # [..., M]
    cpu_ok = (free_cpu[..., None] >= mix.cpu) & (free_mem[..., None] >= mix.mem)
    model_ok = mix.model_ok[:, np.maximum(node_model, 0)]
    model_ok = np.moveaxis(model_ok, 0, -1) & (node_model[..., None] >= 0)
    whole = mix.milli == MILLI_PER_GPU
    gpu_ok = np.where(whole, full[..., None] >= mix.gpus, top[..., None] >= mix.milli)
    runs = cpu_ok & model_ok & gpu_ok
    # Free capacity on GPUs with less free than the task needs per GPU.
    below = (f[..., :, None] < mix.levels) * f[..., :, None]
    stranded = below.sum(axis=-2)[..., mix.level_of]
    frag = np.where(runs, stranded, total[..., None])
    result: np.ndarray = frag @ mix.weight
    return result
