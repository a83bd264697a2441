"""Fragmentation Gradient Descent (Weng et al., ATC'23), from the paper's description.

For a pod, every feasible (node, GPU) choice is scored by how much it *grows* the
expected fragmentation of its node (``sim.fragmentation``) with respect to the target
workload — the popularity of each task type in the trace — and the pod goes where the
growth is least: the steepest descent of fragmentation. A whole-GPU pod takes entirely
free GPUs, which are interchangeable, so each node has one candidate; a shared pod has
one candidate per distinct free amount on the node.

Speed: nodes in the same state (model, free CPU, free memory, free milli per GPU) score
the same, so each distinct state is scored once and the result spread back; ties go to
the lowest node index and then the lowest GPU index, the rule the paper's published
numbers rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scheduler.catalog import MILLI_PER_GPU
from scheduler.fragmentation import TaskMix, distinct_rows, fragmentation
from scheduler.model import PodPlacement
from sim.occupancy import Occupancy
from sim.policies.placement import PLACERS, Placer, Request

__all__ = ["FgdPlacer"]


class FgdPlacer(Placer):
    name = "fgd"
    tie_rule = "lowest node index among equal fragmentation growth, then lowest GPU index"

    def __init__(self, seed: int = 0, mix: TaskMix | None = None) -> None:
        super().__init__(seed)
        self.mix = mix

    def place_pod(self, occ: Occupancy, req: Request) -> PodPlacement | None:
        mix = self._target()
        if req.profile is not None:
            return self.place_slice(occ, req)
        if not req.shared:  # whole GPUs: ``choose_node``
            return super().place_pod(occ, req)
        slots = self.slots(occ)
        ok = self.feasible(occ, slots, req)
        nodes = np.flatnonzero(ok)
        if nodes.size == 0:
            return None
        first, inverse, U, ucpu, umem, umodel, before = self._states(occ, slots, nodes, req, mix)
        # Candidates: the first GPU of each distinct free amount that fits, per state.
        fits = (req.milli <= U) & occ.node_shared[nodes[first]]
        first_of_value = np.ones_like(fits)
        for j in range(1, U.shape[1]):
            first_of_value[:, j] = (U[:, :j] != U[:, j : j + 1]).all(axis=1)
        ci, cj = np.nonzero(fits & first_of_value)
        after_slots = U[ci].copy()
        after_slots[np.arange(ci.size), cj] -= req.milli
        after = fragmentation(after_slots, ucpu[ci] - req.cpu, umem[ci] - req.mem, umodel[ci], mix)
        # Rounded so that equal growths tie exactly, whatever the float summation order.
        growth = np.round(after - before[ci], 6)
        # Per state: least growth, then lowest GPU index.
        order = np.lexsort((cj, growth, ci))
        lead = np.r_[True, ci[order][1:] != ci[order][:-1]]
        chosen = order[lead]
        best_growth = np.full(U.shape[0], np.inf)
        best_gpu = np.zeros(U.shape[0], dtype=np.int64)
        best_growth[ci[chosen]] = growth[chosen]
        best_gpu[ci[chosen]] = cj[chosen]
        per_node = best_growth[inverse]
        pick = int(np.argmin(per_node))
        n = int(nodes[pick])
        j = int(best_gpu[inverse[pick]])
        return PodPlacement(
            node=occ.node_names[n],
            gpus=(int(occ.gpu_index[occ.node_gpus[n, j]]),),
            milli=req.milli,
        )

    def choose_node(self, occ: Occupancy, slots: np.ndarray, ok: np.ndarray, req: Request) -> int:
        """Whole GPUs (or none: a CPU-only pod's CPU and memory can leave a node's GPUs
        unusable to the mix): the node whose fragmentation grows least."""
        mix = self._target()
        nodes = np.flatnonzero(ok)
        _, inverse, U, ucpu, umem, umodel, before = self._states(occ, slots, nodes, req, mix)
        full = U == MILLI_PER_GPU
        take = full & (np.cumsum(full, axis=1) <= req.gpus)
        after_slots = np.where(take, 0, U)
        after = fragmentation(after_slots, ucpu - req.cpu, umem - req.mem, umodel, mix)
        per_node = np.round(after - before, 6)[inverse]
        return int(nodes[int(np.argmin(per_node))])

    def _target(self) -> TaskMix:
        if self.mix is None:
            raise ValueError("fgd needs the target workload (a TaskMix) before placing")
        return self.mix

    def _states(
        self, occ: Occupancy, slots: np.ndarray, nodes: np.ndarray, req: Request, mix: TaskMix
    ) -> tuple[Any, ...]:
        """The distinct states of ``nodes`` (the first node of each, each node's state),
        their free milli per GPU, CPU, memory and model, and their fragmentation now."""
        cpu = occ.free_cpu[nodes]
        mem = occ.free_mem[nodes]
        model = occ.node_model[nodes].astype(np.int64)
        S = slots[nodes]
        columns = [S.astype(np.int64), cpu[:, None], mem[:, None], model[:, None]]
        if req.shared:
            columns.append(occ.node_shared[nodes])  # which GPUs may take the share
        first, inverse = distinct_rows(np.concatenate(columns, 1))
        U = S[first]
        ucpu, umem, umodel = cpu[first], mem[first], model[first]
        before = fragmentation(U, ucpu, umem, umodel, mix)
        return first, inverse, U, ucpu, umem, umodel, before


PLACERS["fgd"] = FgdPlacer
