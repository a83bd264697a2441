"""The FGD paper's placement baselines, scored over all nodes at once from the occupancy.

Each ``Placer`` picks a node (and GPUs on it) for one pod, or None when no node fits.
Feasibility is the paper's: a whole-GPU pod needs that many entirely free GPUs on one
node, a shared pod one GPU with enough free milli; CPU and memory must fit; the demand's
GPU models restrict the node's model. Ties between equal scores go to the lowest node
index (the cluster file's order, which for openb is node-name order) and, on a node, to
the lowest GPU index — the tie rule FGD's published numbers rely on; ``random`` draws
from a seeded generator instead.

- ``random``: a uniformly random feasible node and GPU.
- ``best-fit``: the node left with the least resources, the sum of its free GPU and CPU
  shares after placement (each normalized by the node's capacity); the fullest fitting GPU.
- ``dot-product``: Tetris's alignment, the largest dot product of the request and the
  node's free resources (each normalized by the node's capacity); the fullest fitting GPU.
- ``gpu-packing``: GPUs already partly used first, then nodes already in use, then idle
  nodes.
- ``gpu-clustering``: nodes whose GPUs already host pods asking the same milli per GPU
  first (so like shares pack together), then the rest as gpu-packing.
Gangs (several pods) are placed pod by pod; if a later pod fails, the earlier ones are
given back and the gang does not start.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import PodPlacement
from sim.job import Job
from sim.occupancy import UNTRACKED, Occupancy
from sim.policy import Actions, Context, JobState, Start

__all__ = ["PLACERS", "PlacementPolicy", "Placer", "Request", "request_of"]


@dataclass(frozen=True, slots=True)
class Request:
    """One pod's ask, in the occupancy's terms."""

    gpus: int
    milli: int
    """Per GPU: 1000 for whole GPUs, less for a share of one GPU."""
    cpu: int
    mem: int
    models: frozenset[str]
    """Empty = any model."""

    @property
    def shared(self) -> bool:
        return self.milli < MILLI_PER_GPU


def request_of(job: Job) -> Request | None:
    """The pod request, or None for demands the baselines cannot place (MIG, memory)."""
    w = job.workload
    d = w.demand
    if d.gpus is not None:
        return Request(d.gpus, MILLI_PER_GPU, w.cpu_milli, w.memory_mib, frozenset(d.models))
    if d.gpu_milli is not None:
        return Request(1, d.gpu_milli, w.cpu_milli, w.memory_mib, frozenset(d.models))
    return None


class Placer:
    """Base: feasibility and the gang loop; subclasses choose among feasible nodes."""

    name = "placer"
    tie_rule = "lowest node index, then lowest GPU index"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self._model_ids: dict[frozenset[str], np.ndarray] = {}

    # -- the gang loop
    def place(self, occ: Occupancy, job: Job) -> tuple[PodPlacement, ...] | None:
        req = request_of(job)
        if req is None:
            return None
        placed: list[PodPlacement] = []
        for _ in range(job.workload.pods):
            pod = self.place_pod(occ, req)
            if pod is None:
                for p in reversed(placed):
                    occ.release((p,), req.cpu, req.mem)
                return None
            occ.take(job.name, (pod,), req.cpu, req.mem)
            placed.append(pod)
        for p in reversed(placed):
            occ.release((p,), req.cpu, req.mem)
        return tuple(placed)

    def place_pod(self, occ: Occupancy, req: Request) -> PodPlacement | None:
        slots = self.slots(occ)
        ok = self.feasible(occ, slots, req)
        if not ok.any():
            return None
        n = self.choose_node(occ, slots, ok, req)
        return self.pod_on(occ, slots, n, req)

    def placed(self, job: Job, placement: tuple[PodPlacement, ...], occ: Occupancy) -> None:
        """Told after the placement was applied (for placers that remember pods)."""

    def released(self, job: Job, placement: tuple[PodPlacement, ...], occ: Occupancy) -> None:
        """Told after a placement was given back."""

    # -- shared pieces
    @staticmethod
    def slots(occ: Occupancy) -> np.ndarray:
        """[N, W] free milli per GPU slot; −1 where a node has no such GPU."""
        free = occ.usable_free()
        return np.where(occ.node_gpus >= 0, free[np.maximum(occ.node_gpus, 0)], -1)

    def model_mask(self, occ: Occupancy, models: frozenset[str]) -> np.ndarray:
        mask = self._model_ids.get(models)
        if mask is None:
            ok = [not models or name in models for name in occ.model_names]
            mask = np.array([*ok, False], dtype=bool)  # index −1: a node without GPUs
            self._model_ids[models] = mask
        return mask[occ.node_model]

    def feasible(self, occ: Occupancy, slots: np.ndarray, req: Request) -> np.ndarray:
        ok = (occ.free_cpu >= req.cpu) & (occ.free_mem >= req.mem)
        ok &= self.model_mask(occ, req.models)
        if req.shared:
            ok &= slots.max(axis=1) >= req.milli
        else:
            ok &= (slots == MILLI_PER_GPU).sum(axis=1) >= req.gpus
        return ok

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        return int(np.flatnonzero(ok)[0])

    def pod_on(self, occ: Occupancy, slots: np.ndarray, n: int, req: Request) -> PodPlacement:
        row = slots[n]
        indices = occ.node_gpus[n]
        if req.shared:
            j = self.choose_gpu(row, req)
            return PodPlacement(
                node=occ.node_names[n], gpus=(int(occ.gpu_index[indices[j]]),), milli=req.milli
            )
        free = np.flatnonzero(row == MILLI_PER_GPU)[: req.gpus]
        return PodPlacement(
            node=occ.node_names[n], gpus=tuple(int(occ.gpu_index[indices[j]]) for j in free)
        )

    def choose_gpu(self, row: np.ndarray, req: Request) -> int:
        """Best fit on the node: the GPU with the least free milli that still fits."""
        fits = np.where(row >= req.milli, row, 1 << 30)
        return int(np.argmin(fits))


def _capacity_share(occ: Occupancy, slots: np.ndarray, req: Request) -> tuple[np.ndarray, ...]:
    """Free GPU and CPU of every node as shares of the node's capacity, and the request's."""
    gpu_cap = np.maximum((slots >= 0).sum(axis=1), 1) * MILLI_PER_GPU
    gpu_free = np.maximum(slots, 0).sum(axis=1) / gpu_cap
    gpu_req = req.gpus * req.milli / gpu_cap
    cpu_cap = occ.cpu_capacity
    tracked = cpu_cap < UNTRACKED
    cpu_free = np.where(tracked, occ.free_cpu / np.maximum(cpu_cap, 1), 0.0)
    cpu_req = np.where(tracked, req.cpu / np.maximum(cpu_cap, 1), 0.0)
    return gpu_free, gpu_req, cpu_free, cpu_req


class RandomPlacer(Placer):
    name = "random"
    tie_rule = "none: a uniformly random feasible node and GPU from a seeded generator"

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        nodes = np.flatnonzero(ok)
        return int(nodes[self.rng.randrange(len(nodes))])

    def choose_gpu(self, row: np.ndarray, req: Request) -> int:
        fits = np.flatnonzero(row >= req.milli)
        return int(fits[self.rng.randrange(len(fits))])

    def pod_on(self, occ: Occupancy, slots: np.ndarray, n: int, req: Request) -> PodPlacement:
        if req.shared:
            return super().pod_on(occ, slots, n, req)
        row = slots[n]
        free = sorted(self.rng.sample(list(np.flatnonzero(row == MILLI_PER_GPU)), req.gpus))
        indices = occ.node_gpus[n]
        return PodPlacement(
            node=occ.node_names[n], gpus=tuple(int(occ.gpu_index[indices[j]]) for j in free)
        )


class BestFitPlacer(Placer):
    name = "best-fit"
    tie_rule = "lowest node index among equal leftovers; fullest fitting GPU, then lowest index"

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        gpu_free, gpu_req, cpu_free, cpu_req = _capacity_share(occ, slots, req)
        left = (gpu_free - gpu_req) + (cpu_free - cpu_req)
        return int(np.argmin(np.where(ok, left, np.inf)))


class DotProductPlacer(Placer):
    name = "dot-product"
    tie_rule = "lowest node index among equal alignments; fullest fitting GPU, then lowest index"

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        gpu_free, gpu_req, cpu_free, cpu_req = _capacity_share(occ, slots, req)
        align = gpu_free * gpu_req + cpu_free * cpu_req
        return int(np.argmax(np.where(ok, align, -np.inf)))


class GpuPackingPlacer(Placer):
    name = "gpu-packing"
    tie_rule = "lowest node index within a class; fullest fitting GPU, then lowest index"

    def classes(self, occ: Occupancy, slots: np.ndarray, req: Request) -> np.ndarray:
        """0: a partly used GPU can take it (shared pods); 1: node in use; 2: idle node."""
        real = slots >= 0
        used_node = ((slots < MILLI_PER_GPU) & real).any(axis=1)
        cls = np.where(used_node, 1, 2)
        if req.shared:
            partial = ((slots >= req.milli) & (slots < MILLI_PER_GPU)).any(axis=1)
            cls = np.where(partial, 0, cls)
        return cls

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        cls = self.classes(occ, slots, req)
        return int(np.argmin(np.where(ok, cls, 1 << 20)))


class GpuClusteringPlacer(GpuPackingPlacer):
    name = "gpu-clustering"
    tie_rule = (
        "nodes already hosting pods with the same milli per GPU first, then as gpu-packing; "
        "lowest node index within a class"
    )

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.kinds: dict[int, dict[int, int]] = {}
        """milli per GPU → node → pods of that kind on it."""

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        cls = self.classes(occ, slots, req) + 1
        same = self.kinds.get(req.milli, {})
        if same:
            nodes = np.fromiter(same.keys(), dtype=np.int64)
            cls[nodes] = 0
        return int(np.argmin(np.where(ok, cls, 1 << 20)))

    def placed(self, job: Job, placement: tuple[PodPlacement, ...], occ: Occupancy) -> None:
        self._count(job, placement, occ, +1)

    def released(self, job: Job, placement: tuple[PodPlacement, ...], occ: Occupancy) -> None:
        self._count(job, placement, occ, -1)

    def _count(
        self, job: Job, placement: tuple[PodPlacement, ...], occ: Occupancy, sign: int
    ) -> None:
        req = request_of(job)
        if req is None:
            return
        per = self.kinds.setdefault(req.milli, {})
        for pod in placement:
            n = occ.node_index[pod.node]
            per[n] = per.get(n, 0) + sign
            if per[n] <= 0:
                del per[n]


PLACERS: dict[str, Callable[[int], Placer]] = {
    "random": RandomPlacer,
    "best-fit": BestFitPlacer,
    "dot-product": DotProductPlacer,
    "gpu-packing": GpuPackingPlacer,
    "gpu-clustering": GpuClusteringPlacer,
}
"""Name → constructor taking a seed. ``fgd`` is added by ``sim.policies.fgd``."""


class PlacementPolicy:
    """A placement baseline in a replay: jobs in arrival order, each placed by the baseline
    if it fits (later jobs may pass one that does not: backfill), no quotas."""

    tick_s = 0

    def __init__(self, placer: Placer) -> None:
        self.placer = placer
        self.name = placer.name
        self.tie_rule = f"arrival order with backfill; {placer.tie_rule}"
        self.failed: set[tuple[object, ...]] = set()

    def schedule(self, ctx: Context) -> Actions:
        occ = ctx.occupancy
        for s in ctx.released:
            self.placer.released(s.job, s.last_placement, occ)
        if ctx.released or ctx.health_changed:
            self.failed.clear()
            candidates = list(ctx.pending.values())
        else:
            candidates = ctx.arrived
        actions = Actions()
        taken: list[tuple[JobState, tuple[PodPlacement, ...]]] = []
        # Starts of this call are charged to the occupancy while deciding, and given back
        # before returning: the engine applies (and checks) them.
        try:
            for s in sorted(candidates, key=lambda s: (s.job.workload.created, s.name)):
                key = (request_of(s.job), s.job.workload.pods)
                if key in self.failed:
                    continue
                placement = self.placer.place(occ, s.job)
                if placement is None:
                    self.failed.add(key)
                    continue
                w = s.job.workload
                occ.take(s.name, placement, w.cpu_milli, w.memory_mib)
                taken.append((s, placement))
                self.placer.placed(s.job, placement, occ)
                actions.starts.append(Start(s.name, placement))
        finally:
            for s, placement in reversed(taken):
                w = s.job.workload
                occ.release(placement, w.cpu_milli, w.memory_mib)
        return actions
