"""The FGD paper's placement baselines, scored over all nodes at once from the occupancy.

Each ``Placer`` picks a node (and GPUs on it) for one pod, or None when no node fits.
Feasibility is the paper's: a whole-GPU pod needs that many entirely free GPUs on one
node, a shared pod one time-shared GPU with enough free milli; CPU and memory must fit;
the demand's GPU models restrict the node's model. Demands the paper has none of go
through the core's options (``scheduler.demand``), tried cheapest first: a MIG profile
needs a free slice of it, a GPU-memory need the cheapest device that holds it (a slice
or a whole GPU); slices go to the lowest node, GPU and slice start (``random``: any free
one), as the baselines score GPU shares, which a slice does not change. Ties between
equal scores go to the lowest node index (the cluster file's order, which for openb is
node-name order) and, on a node, to the lowest GPU index — the tie rule FGD's published
numbers rely on; ``random`` draws from a seeded generator instead.

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
from scheduler.demand import Kind
from scheduler.model import PodPlacement
from sim.job import Job
from sim.occupancy import UNTRACKED, Occupancy
from sim.policy import Actions, Context, JobState, Start

__all__ = ["PLACERS", "PlacementPolicy", "Placer", "Request", "requests_of"]


@dataclass(frozen=True, slots=True)
class Request:
    """One pod's ask, in the occupancy's terms."""

    gpus: int
    milli: int
    """Per GPU: 1000 for whole GPUs, less for a share of one GPU."""
    cpu: int
    mem: int
    models: frozenset[str]
    """The GPU models (catalog names) that may serve it."""
    profile: str | None = None
    """A slice of this MIG profile (``gpus`` 1) instead of GPUs or a share."""

    @property
    def shared(self) -> bool:
        return self.profile is None and self.milli < MILLI_PER_GPU


def requests_of(occ: Occupancy, job: Job) -> tuple[Request, ...]:
    """The pod requests to try in turn, from the core's options for the demand: whole GPUs
    or a share of one on any model it accepts (the paper's rule: one request), else each
    option, cheapest first (a MIG slice, or a whole GPU holding a memory need); none when
    no model of the cluster serves it."""
    w = job.workload
    d = w.demand
    options = occ.options(w)
    if not options:
        return ()
    if d.gpus is not None or d.gpu_milli is not None:
        models = frozenset(m for o in options for m in o.models)
        milli = MILLI_PER_GPU if d.gpu_milli is None else d.gpu_milli
        return (Request(d.gpus or 1, milli, w.cpu_milli, w.memory_mib, models),)
    return tuple(
        Request(
            o.per_pod if o.kind is Kind.WHOLE else 1,
            MILLI_PER_GPU,
            w.cpu_milli,
            w.memory_mib,
            frozenset(o.models),
            o.profile if o.kind is Kind.MIG else None,
        )
        for o in options
    )


class Placer:
    """Base: feasibility and the gang loop; subclasses choose among feasible nodes."""

    name = "placer"
    tie_rule = "lowest node index, then lowest GPU index"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self._model_ids: dict[frozenset[str], np.ndarray] = {}

    # -- the gang loop
    def place(self, occ: Occupancy, job: Job) -> tuple[PodPlacement, ...] | None:
        """The first of the job's requests (``requests_of``) that all its pods fit."""
        for req in requests_of(occ, job):
            placement = self._gang(occ, job, req)
            if placement is not None:
                return placement
        return None

    def _gang(self, occ: Occupancy, job: Job, req: Request) -> tuple[PodPlacement, ...] | None:
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

    def host_node(self, occ: Occupancy, cpu: int, mem: int) -> int | None:
        """The node for a pod asking no GPU (the fill's CPU-only pods), by this policy's own
        node choice for a request of no GPUs; None when no node has the CPU and memory."""
        req = Request(0, MILLI_PER_GPU, cpu, mem, frozenset())
        slots = self.slots(occ)
        ok = self.feasible(occ, slots, req)
        return self.choose_node(occ, slots, ok, req) if ok.any() else None

    def place_pod(self, occ: Occupancy, req: Request) -> PodPlacement | None:
        if req.profile is not None:
            return self.place_slice(occ, req)
        slots = self.slots(occ)
        ok = self.feasible(occ, slots, req)
        if not ok.any():
            return None
        n = self.choose_node(occ, slots, ok, req)
        return self.pod_on(occ, slots, n, req)

    def place_slice(self, occ: Occupancy, req: Request) -> PodPlacement | None:
        """A free slice of the profile on a healthy GPU of an accepted model, on a node with
        the CPU and memory for the pod (``choose_slice`` picks among them)."""
        room = (occ.free_cpu >= req.cpu) & (occ.free_mem >= req.mem)
        free = [
            (g, start)
            for g, profiles in occ.mig_profile.items()
            if occ.gpu_healthy[g]
            and room[occ.gpu_node[g]]
            and occ.model_names[occ.gpu_model[g]] in req.models
            for start in sorted(profiles)
            if profiles[start] == req.profile and start not in occ.mig_used[g]
        ]
        if not free:
            return None
        g, start = self.choose_slice(free)
        return PodPlacement(
            node=occ.node_names[occ.gpu_node[g]], gpus=(int(occ.gpu_index[g]),), mig_start=start
        )

    def choose_slice(self, free: list[tuple[int, int]]) -> tuple[int, int]:
        """(GPU, slice start) among the free ones, in node, GPU and start order: the first."""
        return free[0]

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

    @staticmethod
    def open_slots(occ: Occupancy, slots: np.ndarray, req: Request) -> np.ndarray:
        """[N, W]: where one of the pod's GPUs may go: an entirely free GPU (shared or not,
        as in the core) for whole GPUs, enough free milli on a time-shared GPU for a share."""
        result: np.ndarray = (
            (slots >= req.milli) & occ.node_shared if req.shared else slots == MILLI_PER_GPU
        )
        return result

    def feasible(self, occ: Occupancy, slots: np.ndarray, req: Request) -> np.ndarray:
        ok = (occ.free_cpu >= req.cpu) & (occ.free_mem >= req.mem)
        ok &= self.model_mask(occ, req.models)
        ok &= self.open_slots(occ, slots, req).sum(axis=1) >= req.gpus
        return ok

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        return int(np.flatnonzero(ok)[0])

    def pod_on(self, occ: Occupancy, slots: np.ndarray, n: int, req: Request) -> PodPlacement:
        row = slots[n]
        indices = occ.node_gpus[n]
        if req.shared:
            j = self.choose_gpu(row, (row >= req.milli) & occ.node_shared[n])
            return PodPlacement(
                node=occ.node_names[n], gpus=(int(occ.gpu_index[indices[j]]),), milli=req.milli
            )
        free = np.flatnonzero(row == MILLI_PER_GPU)[: req.gpus]
        return PodPlacement(
            node=occ.node_names[n], gpus=tuple(int(occ.gpu_index[indices[j]]) for j in free)
        )

    def choose_gpu(self, row: np.ndarray, fits: np.ndarray) -> int:
        """Best fit on the node: the GPU with the least free milli that still fits."""
        return int(np.argmin(np.where(fits, row, 1 << 30)))


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

    def choose_gpu(self, row: np.ndarray, fits: np.ndarray) -> int:
        where = np.flatnonzero(fits)
        return int(where[self.rng.randrange(len(where))])

    def choose_slice(self, free: list[tuple[int, int]]) -> tuple[int, int]:
        return free[self.rng.randrange(len(free))]

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
            partial = (self.open_slots(occ, slots, req) & (slots < MILLI_PER_GPU)).any(axis=1)
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
        for pod in placement:
            if pod.mig_start is not None:
                continue  # a slice is no share of a GPU: no kind to cluster
            per = self.kinds.setdefault(pod.milli or MILLI_PER_GPU, {})
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
                key = (requests_of(occ, s.job), s.job.workload.pods)
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
