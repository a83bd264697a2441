"""The simulated cluster's ground truth: which GPU capacity is taken, as numpy arrays.

The engine owns one ``Occupancy`` and applies every policy's starts and stops to it,
checking each against what is free and against the cluster's rules — a policy that
double-books a GPU, puts a share on a GPU that is not shared, or places other devices
than the demand asks is a bug the simulation reports, never a result it records. The
placement baselines (best-fit, FGD, …) score nodes straight from these arrays, vectorized
over all nodes at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import numpy as np

from scheduler.catalog import MILLI_PER_GPU, Catalog
from scheduler.demand import Kind, OptionsByDemand
from scheduler.model import Demand, Node, PodPlacement, Workload
from scheduler.verdicts import describe, describe_demand

__all__ = ["Occupancy", "SimulationError"]

_WHOLE, _MIG, _FRACTION = int(Kind.WHOLE), int(Kind.MIG), int(Kind.FRACTION)
"""Kinds of device as plain ints: an enum member's hash is a Python call, and every start
looks its pods up by kind."""
UNTRACKED = 1 << 60
"""Free CPU/memory of a node whose allocatable is not tracked: never the constraint."""


class SimulationError(RuntimeError):
    """A policy asked for something impossible (a bug in the policy, not in the trace)."""


class Occupancy:
    """Free milli-GPU per GPU, MIG slices in use, free CPU and memory per node."""

    def __init__(self, nodes: Sequence[Node], catalog: Catalog) -> None:
        self.node_names = [n.name for n in nodes]
        self.node_index = {name: i for i, name in enumerate(self.node_names)}
        self.model_names: list[str] = []
        model_id: dict[str, int] = {}
        gpu_node: list[int] = []
        gpu_model: list[int] = []
        gpu_index: list[int] = []
        shared: list[bool] = []
        healthy: list[bool] = []
        self.gpu_id: dict[tuple[int, int], int] = {}
        self.mig_layout: dict[int, dict[int, float]] = {}
        """MIG GPU → slice start → the slice's GPU-equivalents (compute share)."""
        self.mig_profile: dict[int, dict[int, str]] = {}
        """MIG GPU → slice start → the slice's profile."""
        self.mig_used: dict[int, set[int]] = {}
        per_node: list[list[int]] = []
        self._gpu_at: list[dict[int, int]] = []
        """Per node: GPU index → global id (``gpu_id`` without a tuple to build per GPU)."""
        for n, node in enumerate(nodes):
            ids = []
            at: dict[int, int] = {}
            self._gpu_at.append(at)
            for gpu in node.gpus:
                model = catalog[gpu.model]
                if model.name not in model_id:
                    model_id[model.name] = len(self.model_names)
                    self.model_names.append(model.name)
                g = len(gpu_node)
                self.gpu_id[(n, gpu.index)] = g
                at[gpu.index] = g
                gpu_node.append(n)
                gpu_index.append(gpu.index)
                gpu_model.append(model_id[model.name])
                shared.append(gpu.shared)
                healthy.append(gpu.healthy)
                if gpu.mig is not None:
                    self.mig_layout[g] = {
                        s.start: _mig_share(catalog, model.name, s.profile) for s in gpu.mig
                    }
                    self.mig_profile[g] = {s.start: s.profile for s in gpu.mig}
                    self.mig_used[g] = set()
                ids.append(g)
            per_node.append(ids)
        self.gpu_node = np.array(gpu_node, dtype=np.int32)
        self.gpu_model = np.array(gpu_model, dtype=np.int32)
        self.gpu_index = np.array(gpu_index, dtype=np.int32)
        """The node-local GPU index (``Gpu.index``) of every global GPU id."""
        self.gpu_shared = np.array(shared, dtype=bool)
        self.gpu_healthy = np.array(healthy, dtype=bool)
        self.gpu_mig = np.zeros(len(gpu_node), dtype=bool)
        for g in self.mig_layout:
            self.gpu_mig[g] = True
        # Plain-list copies of the flags every start checks per GPU: reading a numpy
        # element costs several times a list's (the policies' vectorized scoring reads
        # the arrays). ``set_node_health`` keeps both.
        self._healthy: list[bool] = healthy
        self._mig: list[bool] = [g in self.mig_layout for g in range(len(gpu_node))]
        self._shared: list[bool] = shared
        self._model: list[str] = [self.model_names[m] for m in gpu_model]
        self._mixed: list[bool] = [len({gpu_model[g] for g in ids}) > 1 for ids in per_node]
        """Per node: it has GPUs of more than one model (a pod's may differ)."""
        self.catalog = catalog
        self.options = OptionsByDemand(catalog, tuple(self.model_names))
        """The core's options for a workload's demand (``scheduler.demand``), best first."""
        self._accepted: dict[Demand, frozenset[tuple[str, int, int | str | None]]] = {}
        """Demand → the (GPU model, kind, GPUs per pod, milli or MIG profile) its pods may
        take: the core's options, whose set does not depend on the workload's throughput
        table (which only orders them)."""
        self.free_milli: list[int] = np.where(self.gpu_mig, 0, MILLI_PER_GPU).tolist()
        """Free milli per GPU, the truth: every start and stop changes a few elements, and a
        list's cost a fraction of a numpy array's. ``gpu_free`` is its array, brought up
        to date when read (the placement baselines read it once per pod); the replay's
        fragmentation reads the few elements an event changed straight from the list. The
        same list for the whole run: changes are made in place."""
        self._free_array = np.array(self.free_milli, dtype=np.int32)
        self._stale: set[int] = set()
        width = max((len(ids) for ids in per_node), default=0)
        self.node_gpus = np.full((len(nodes), max(1, width)), -1, dtype=np.int32)
        for n, ids in enumerate(per_node):
            self.node_gpus[n, : len(ids)] = ids
        self.node_shared = np.where(
            self.node_gpus >= 0, self.gpu_shared[np.maximum(self.node_gpus, 0)], False
        )
        """[N, W]: the GPU in each slot is time-shared (may host fractional pods)."""
        self.node_model = np.array(
            [self.gpu_model[ids[0]] if ids else -1 for ids in per_node], dtype=np.int32
        )
        self.cpu_capacity = np.array(
            [UNTRACKED if n.cpu_milli is None else n.cpu_milli for n in nodes], dtype=np.int64
        )
        # What pods outside the workloads hold (Node.cpu_held_milli) is never free here.
        held = [0 if n.cpu_milli is None else n.cpu_held_milli for n in nodes]
        self.free_cpu = np.maximum(self.cpu_capacity - np.array(held, dtype=np.int64), 0)
        self.free_mem = np.array(
            [
                UNTRACKED if n.memory_mib is None else max(0, n.memory_mib - n.memory_held_mib)
                for n in nodes
            ],
            dtype=np.int64,
        )
        self.allocated_milli = 0
        """GPU capacity in use, in milli-GPU-equivalents (a MIG slice counts its share)."""
        self.changed_nodes: set[int] = set()
        """Nodes a start or stop changed since the replay's fragmentation measure last read
        them (``sim.metrics``, which empties the set): found here, where each pod's node is
        looked up anyway."""

    # ----------------------------------------------------------------- capacity
    @property
    def gpu_count(self) -> int:
        return int(self.gpu_node.size)

    def healthy_capacity_milli(self) -> int:
        return int(self.gpu_healthy.sum()) * MILLI_PER_GPU

    @property
    def gpu_free(self) -> np.ndarray:
        """Free milli per non-MIG GPU (a failed GPU keeps its number; ``usable_free`` masks it)."""
        if self._stale:
            ids = list(self._stale)
            self._free_array[ids] = [self.free_milli[g] for g in ids]
            self._stale.clear()
        return self._free_array

    def usable_free(self) -> np.ndarray:
        """Free milli per GPU that a new non-MIG pod could use (failed and MIG GPUs: 0)."""
        return np.where(self.gpu_healthy & ~self.gpu_mig, self.gpu_free, 0)

    # ----------------------------------------------------------------- changes
    def start(self, w: Workload, placement: Sequence[PodPlacement]) -> None:
        """Charge a workload's start, or raise ``SimulationError`` without changing
        anything: one pod per pod of the workload, each on devices its demand asks for (the
        core's options: whole GPUs, a share of a shared GPU, a slice of the profile) of a
        model it accepts, and all of it free. The engine and the fill experiment start
        every workload here, so no policy can run what the cluster would refuse."""
        self._check(w.name, placement, w.cpu_milli, w.memory_mib)
        self._obeys(w, placement)
        self._shift(placement, w.cpu_milli, w.memory_mib, taking=True)

    def take(self, name: str, placement: Sequence[PodPlacement], cpu: int, mem: int) -> None:
        """Charge a placement that fits, whatever it is for (a policy trying pods of a gang
        one by one), or raise ``SimulationError`` without changing anything."""
        self._check(name, placement, cpu, mem)
        self._shift(placement, cpu, mem, taking=True)

    def release(self, placement: Sequence[PodPlacement], cpu: int, mem: int) -> None:
        self._shift(placement, cpu, mem, taking=False)

    def take_host(self, name: str, n: int, cpu: int, mem: int) -> None:
        """Charge node ``n`` the CPU and memory of a pod asking no GPU (the fill's CPU-only
        pods), or raise ``SimulationError`` without changing anything."""
        if self.free_cpu[n] < cpu or self.free_mem[n] < mem:
            raise SimulationError(f"{name}: not enough CPU or memory on {self.node_names[n]}")
        self.free_cpu[n] -= cpu
        self.free_mem[n] -= mem
        self.changed_nodes.add(n)

    def set_node_health(self, node: str, healthy: bool) -> None:
        n = self.node_index[node]
        ids = self.node_gpus[n]
        self.gpu_healthy[ids[ids >= 0]] = healthy
        for g in ids[ids >= 0].tolist():
            self._healthy[g] = healthy

    def gpus_of(self, pod: PodPlacement) -> list[int]:
        at = self._gpu_at[self.node_index[pod.node]]
        return [at[i] for i in pod.gpus]

    def _check(self, name: str, placement: Sequence[PodPlacement], cpu: int, mem: int) -> None:
        need_cpu: dict[int, int] = {}
        need_milli: dict[int, int] = {}
        node_index, gpu_at, healthy, mig = self.node_index, self._gpu_at, self._healthy, self._mig
        for pod in placement:
            n = node_index.get(pod.node)
            if n is None:
                raise SimulationError(f"{name}: node {pod.node!r} is not in the cluster")
            need_cpu[n] = need_cpu.get(n, 0) + 1
            at = gpu_at[n]
            for index in pod.gpus:
                g = at.get(index)
                if g is None:
                    raise SimulationError(f"{name}: {pod.node} has no GPU {index}")
                if not healthy[g]:
                    raise SimulationError(f"{name}: GPU {index} on {pod.node} has failed")
                if pod.mig_start is not None:
                    layout = self.mig_layout.get(g, {})
                    if pod.mig_start not in layout or pod.mig_start in self.mig_used[g]:
                        raise SimulationError(
                            f"{name}: MIG slice {pod.mig_start} of GPU {index} on {pod.node} "
                            "does not exist or is in use"
                        )
                    continue
                if mig[g]:
                    raise SimulationError(f"{name}: GPU {index} on {pod.node} is partitioned")
                need_milli[g] = need_milli.get(g, 0) + (pod.milli or MILLI_PER_GPU)
        free = self.free_milli
        for g, milli in need_milli.items():
            if milli > free[g]:
                raise SimulationError(
                    f"{name}: GPU {int(self.gpu_index[g])} on "
                    f"{self.node_names[int(self.gpu_node[g])]} has {free[g]}m "
                    f"free, needs {milli}m"
                )
        if not cpu and not mem:
            return  # free CPU and memory never go below zero: nothing can be short
        for n, pods in need_cpu.items():
            if self.free_cpu[n] < cpu * pods or self.free_mem[n] < mem * pods:
                raise SimulationError(f"{name}: not enough CPU or memory on {self.node_names[n]}")

    def demand_milli(self, w: Workload) -> int:
        """The GPU capacity a workload asks, in milli-GPU-equivalents: a MIG slice or a
        memory need its first (best) option's compute share, as the same slice is charged
        when it runs (``allocated_milli``); 1,000 per pod when no model here serves it."""
        d = w.demand
        if d.gpus is not None:
            return d.gpus * MILLI_PER_GPU * w.pods
        if d.gpu_milli is not None:
            return d.gpu_milli * w.pods
        options = self.options(w)
        if not options:
            return MILLI_PER_GPU * w.pods
        return round(options[0].gpu_equivalents_per_pod(self.catalog) * MILLI_PER_GPU) * w.pods

    def _obeys(self, w: Workload, placement: Sequence[PodPlacement]) -> None:
        """Raise ``SimulationError`` unless every pod is what the workload's demand asks
        (``_check`` found its node and GPUs): a set lookup per pod, as every start is
        checked; a refusal is worded apart."""
        accepted = self._accepted_for(w)
        if len(placement) != w.pods or not all(
            self._signature(pod) in accepted for pod in placement
        ):
            self._refuse(w, placement, accepted)

    def _accepted_for(self, w: Workload) -> frozenset[tuple[str, int, int | str | None]]:
        accepted = self._accepted.get(w.demand)
        if accepted is None:
            accepted = self._accepted[w.demand] = frozenset(
                (model, int(o.kind), o.profile if o.kind is Kind.MIG else o.per_pod)
                for o in self.options(w)
                for model in o.models
            )
        return accepted

    def _signature(self, pod: PodPlacement) -> tuple[str, int, int | str | None] | None:
        """(GPU model, kind, GPUs or milli or MIG profile) of what a pod takes, as
        ``_accepted`` lists a demand's; None for a share of a GPU that is not shared, or
        GPUs of two models."""
        n = self.node_index[pod.node]
        at = self._gpu_at[n]
        g = at[pod.gpus[0]]
        model = self._model[g]
        if pod.mig_start is not None:
            return (model, _MIG, self.mig_profile[g][pod.mig_start])
        if pod.milli is not None:
            return (model, _FRACTION, pod.milli) if self._shared[g] else None
        if self._mixed[n] and any(self._model[at[i]] != model for i in pod.gpus):
            return None
        return (model, _WHOLE, len(pod.gpus))

    def _refuse(
        self,
        w: Workload,
        placement: Sequence[PodPlacement],
        accepted: frozenset[tuple[str, int, int | str | None]],
    ) -> NoReturn:
        """Raise ``SimulationError`` naming the first pod that is not what the workload's
        demand asks, and what it asks (``_obeys`` found one)."""
        if len(placement) != w.pods:
            raise SimulationError(f"{w.name}: {len(placement)} pod(s) placed, it has {w.pods}")
        options = self.options(w)
        for k, pod in enumerate(placement):
            if self._signature(pod) in accepted:
                continue
            at = self._gpu_at[self.node_index[pod.node]]
            gpus = [at[i] for i in pod.gpus]
            models = {self._model[g] for g in gpus}
            mine = [o for o in options if models <= set(o.models)]
            if not mine:
                served = ", ".join(dict.fromkeys(m for o in options for m in o.models))
                raise SimulationError(
                    f"{w.name}: pod {k} is on {'/'.join(sorted(models))} GPU(s) on {pod.node}; "
                    f"{describe_demand(w)} accepts {served or 'none of the cluster models'}"
                )
            raise SimulationError(
                f"{w.name}: pod {k} takes {self._pod(pod, gpus)}; it asks "
                + " or ".join(describe(o) for o in mine)
            )
        raise AssertionError(f"{w.name}: refused, yet every pod is what it asks")

    def _pod(self, pod: PodPlacement, gpus: list[int]) -> str:
        """A pod's devices, as an error names them."""
        index = pod.gpus[0]
        if pod.mig_start is not None:
            profile = self.mig_profile[gpus[0]][pod.mig_start]
            return f"MIG slice {pod.mig_start} ({profile}) of GPU {index} on {pod.node}"
        if pod.milli is not None:
            shared = "" if self._shared[gpus[0]] else ", which is not shared (time-sliced)"
            return f"{pod.milli}m of GPU {index} on {pod.node}{shared}"
        return f"{len(gpus)} whole GPU(s) on {pod.node}"

    def _shift(self, placement: Sequence[PodPlacement], cpu: int, mem: int, taking: bool) -> None:
        sign = -1 if taking else 1
        free, stale, changed = self.free_milli, self._stale, self.changed_nodes
        for pod in placement:
            n = self.node_index[pod.node]
            changed.add(n)
            at = self._gpu_at[n]
            if cpu:  # adding zero to a numpy element still costs as much as adding
                self.free_cpu[n] += sign * cpu
            if mem:
                self.free_mem[n] += sign * mem
            if pod.mig_start is not None:
                for index in pod.gpus:
                    g = at[index]
                    used = self.mig_used[g]
                    share = round(self.mig_layout[g][pod.mig_start] * MILLI_PER_GPU)
                    if taking:
                        used.add(pod.mig_start)
                    else:
                        used.discard(pod.mig_start)
                    self.allocated_milli -= sign * share
                continue
            milli = sign * (pod.milli or MILLI_PER_GPU)
            for index in pod.gpus:
                g = at[index]
                free[g] += milli
                stale.add(g)
            self.allocated_milli -= milli * len(pod.gpus)


def _mig_share(catalog: Catalog, model: str, profile: str) -> float:
    gpu = catalog[model]
    spec = gpu.mig_profile(profile)
    if spec is None:
        return 0.0
    return spec.compute_slices / gpu.mig_compute_slices
