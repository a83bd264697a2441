"""The cluster's free capacity changed in place: best-fit placement with cheap undo.

Placements are applied and undone in place (``take``/``release``), so "what if" checks
(preemption, trial placements) cost as much as the placement itself, never a deep copy.
What fits where is ``scheduler.capacity``'s, compiled once per snapshot.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scheduler.capacity import UNTRACKED, Capacity
from scheduler.catalog import MILLI_PER_GPU, Catalog
from scheduler.demand import Kind, Option
from scheduler.fragmentation import FragmentationScore
from scheduler.model import PodPlacement, Snapshot, Workload, built
from scheduler.pools import bucket_at, usable_bits

__all__ = ["Allocation", "ClusterState", "PlacementError", "PodAlloc"]

_WHOLE = Kind.WHOLE
"""Read as a global in the placement search: an enum member's read costs several times it."""


class PlacementError(ValueError):
    """A running workload's recorded placement does not match the cluster."""


class PodAlloc(NamedTuple):
    """One pod's spot. A named tuple, not a frozen dataclass: every admission makes one
    and looks its ``PodPlacement`` up by it, and a tuple is made, hashed and compared in C."""

    node: int
    gpus: tuple[int, ...]
    """Global GPU ids (positions in ``ClusterState.gpu_node``)."""
    mig_start: int | None = None
    milli: int | None = None


@dataclass(slots=True)
class Allocation:
    option: Option
    pods: list[PodAlloc]
    cpu_milli: int
    memory_mib: int


def _hold(allocatable: list[int], held: list[int], free: list[int], n: int, more: int) -> None:
    """``hold_outside`` for one resource (CPU or memory) of node ``n``."""
    cap, old = allocatable[n], held[n]
    if cap != UNTRACKED:
        free[n] += max(0, cap - old - more) - max(0, cap - old)
        held[n] = old + more


class ClusterState(Capacity):
    """Free capacity of a snapshot's nodes, mutable, with apply/undo. A subclass, not a
    holder of a ``Capacity``: placement's hot loops read the compiled lists as its own."""

    def __init__(self, snapshot: Snapshot, catalog: Catalog) -> None:
        super().__init__(snapshot, catalog)
        self._placements: dict[PodAlloc, PodPlacement] = {}
        self.scorer: FragmentationScore | None = None
        """Set by the online path: place by least growth of expected fragmentation."""

    # --------------------------------------------------------------- placement
    def tightness(
        self,
        option: Option,
        cpu: int,
        mem: int,
        pools: Sequence[int],
        nodes: frozenset[int] | None = None,
    ) -> tuple[int, int, int]:
        """How snugly one pod of ``option`` would fit its best spot now, smaller = tighter:
        the best-fit key ``place`` uses (a used node before an entirely free one, then
        the smallest remainder, then the lowest node id), found without placing anything.
        (2, …) when nothing fits."""
        spot = self._spot(option, cpu, mem, pools, nodes) if pools else None
        return (2, 1 << 30, 0) if spot is None else (*spot[0], spot[1].node)

    def place(
        self,
        option: Option,
        pods: int,
        cpu: int,
        mem: int,
        pools: Sequence[int],
        nodes: frozenset[int] | None = None,
    ) -> Allocation | None:
        """Place all pods (gang: all or nothing) at best-fit spots; None leaves no trace.

        ``nodes`` restricts the choice further (``node_filter``); the fit count ignores it,
        so it only costs time for the rare workloads that need it."""
        if not pools:
            return None
        # The count only saves work for a gang: one pod's search finds no spot just as fast.
        if (pods > 1 or self.scorer is not None) and self.capacity_bound(
            option, pools, enough=pods
        ) < pods:
            return None
        allocation = Allocation(option, [], cpu, mem)
        for _ in range(pods):
            spot = self._spot(option, cpu, mem, pools, nodes)
            if spot is None:
                self.release(allocation)
                return None
            pod = spot[1]
            self._shift_pod(pod, cpu, mem, taking=True)
            allocation.pods.append(pod)
        return allocation

    def can_place(
        self, option: Option, w: Workload, pools: Sequence[int], nodes: frozenset[int] | None
    ) -> bool:
        """Would ``place`` place all of ``w``'s pods now? Leaves no trace. One pod (most fit
        checks of making room) is looked up without being taken and given back."""
        if w.pods == 1 and self.scorer is None:
            return (
                bool(pools)
                and self._spot(option, w.cpu_milli, w.memory_mib, pools, nodes) is not None
            )
        trial = self.place(option, w.pods, w.cpu_milli, w.memory_mib, pools, nodes)
        if trial is None:
            return False
        self.release(trial)
        return True

    def _spot(
        self,
        option: Option,
        cpu: int,
        mem: int,
        pools: Sequence[int],
        nodes: frozenset[int] | None,
    ) -> tuple[tuple[int, int], PodAlloc] | None:
        """The best-fit spot for one pod and its fit key (smaller = snugger), not taken; with a
        ``scorer``, the spot where expected fragmentation grows least (MIG keeps best-fit)."""
        if self.scorer is not None and option.kind is not Kind.MIG:
            return self.scorer.best_spot(option, cpu, mem, pools, nodes, option.kind is Kind.WHOLE)
        # Whether a node has the CPU, memory and filter for the pod is spelled out in each
        # search: a call per candidate spot was a tenth of the searches' time.
        free_cpu, free_mem = self.free_cpu, self.free_mem
        if option.kind is _WHOLE:
            k = option.per_pod
            best: tuple[bool, int, int, int] | None = None  # (entirely free, free, pool, node)
            for p in pools:
                pool = self.pools[p]
                usable = pool.occupied & usable_bits(k, pool.max_size)
                while usable:  # non-empty buckets that fit, in the rule's order
                    low = usable & -usable
                    usable ^= low
                    bucket = bucket_at(low.bit_length() - 1, pool.max_size)
                    if best is not None and bucket >= best[:2]:
                        break
                    candidates = pool.buckets[bucket]
                    node = candidates.first()
                    if node is not None and not (
                        free_cpu[node] >= cpu
                        and free_mem[node] >= mem
                        and (nodes is None or node in nodes)
                    ):
                        node = next(
                            (
                                n
                                for n in candidates
                                if free_cpu[n] >= cpu
                                and free_mem[n] >= mem
                                and (nodes is None or n in nodes)
                            ),
                            None,
                        )
                    if node is not None:
                        best = (*bucket, p, node)
                        break
            if best is None:
                return None
            _, _, p, n = best
            free_milli = self.gpu_free_milli
            gpus = tuple(
                [g for g in self._node_pool_gpus[(n, p)] if free_milli[g] == MILLI_PER_GPU][:k]
            )
            return (int(best[0]), best[1] - k), PodAlloc(n, gpus)
        if option.kind is Kind.FRACTION:
            m = option.per_pod
            found: tuple[int, int, int, int] | None = None  # (free, node, gpu, pool)
            for p in pools:
                fr = self.pools[p].fractions
                for i in range(bisect_left(fr, (m, -1, -1)), len(fr)):
                    free, n, g = fr[i]
                    if found is not None and (free, n, g) >= found[:3]:
                        break
                    if free_cpu[n] >= cpu and free_mem[n] >= mem and (nodes is None or n in nodes):
                        found = (free, n, g, p)
                        break
            if found is None:
                return None
            return (0, found[0] - m), PodAlloc(found[1], (found[2],), milli=m)
        profile = option.profile or ""
        slot: tuple[int, int, int] | None = None
        for p in pools:
            for entry in self.pools[p].mig_free.get(profile, ()):
                if slot is not None and entry >= slot:
                    break
                n = entry[0]
                if free_cpu[n] >= cpu and free_mem[n] >= mem and (nodes is None or n in nodes):
                    slot = entry
                    break
        if slot is None:
            return None
        return (0, 0), PodAlloc(slot[0], (slot[1],), mig_start=slot[2])

    # ---------------------------------------------- held outside the workloads
    def hold_outside(self, n: int, cpu: int, mem: int) -> None:
        """Pods outside the workloads hold ``cpu`` milli and ``mem`` MiB more of node ``n``
        (less when negative): a CPU-only pod landed on a GPU node, or left it. Its free CPU
        and memory move as compiling the changed node would set them, with what the
        workloads hold still taken; a node that does not report them is left alone."""
        if cpu:
            _hold(self.node_cpu, self.held_cpu, self.free_cpu, n, cpu)
        if mem:
            _hold(self.node_mem, self.held_mem, self.free_mem, n, mem)
        if self.scorer is not None:
            self.scorer.touch(n)

    def resize(self, n: int, cpu: int | None, mem: int | None) -> bool:
        """Node ``n``'s allocatable CPU milli and memory MiB are now these (None: not
        reported), its free CPU and memory moved as compiling it so would set them; False,
        with nothing changed, where one is reported now and was not, or the other way."""
        new = (UNTRACKED if cpu is None else cpu, UNTRACKED if mem is None else mem)
        old = (self.node_cpu[n], self.node_mem[n])
        if any((a == UNTRACKED) != (b == UNTRACKED) for a, b in zip(old, new, strict=True)):
            return False
        if new == old:
            return True
        for allocatable, held, free, size in (
            (self.node_cpu, self.held_cpu, self.free_cpu, new[0]),
            (self.node_mem, self.held_mem, self.free_mem, new[1]),
        ):
            if size != UNTRACKED:
                free[n] += max(0, size - held[n]) - max(0, allocatable[n] - held[n])
                allocatable[n] = size
        self._never_hosts_cache.clear()
        if self.scorer is not None:
            self.scorer.touch(n)
        return True

    def take_held(self, n: int, whole: Iterable[int], slices: Iterable[tuple[int, int]]) -> bool:
        """Pods outside the workloads now hold these whole GPUs and MIG slices ((GPU index,
        start)) of node ``n``: taken as compiling the node with them ``held`` would leave
        them. False, with nothing taken, when one of them is not free here (a workload
        holds it, it is unhealthy, or no such device)."""
        pods = []
        gpus = self.node_gpus[n]
        for index in whole:
            g = gpus.get(index)
            if (
                g is None
                or not self.gpu_healthy[g]
                or self.gpu_mig[g] is not None
                or self.gpu_free_milli[g] != MILLI_PER_GPU
            ):
                return False
            pods.append(PodAlloc(n, (g,)))
        for index, start in slices:
            g = gpus.get(index)
            layout = None if g is None else self.gpu_mig[g]
            if (
                g is None
                or layout is None
                or not self.gpu_healthy[g]
                or layout.get(start, [0, True])[1]
            ):
                return False
            pods.append(PodAlloc(n, (g,), mig_start=start))
        for pod in pods:
            self._shift_pod(pod, 0, 0, taking=True)
        return True

    def give_back_held(
        self, n: int, whole: Iterable[int], slices: Iterable[tuple[int, int]]
    ) -> None:
        """Pods outside the workloads no longer hold these whole GPUs and MIG slices of node
        ``n`` (held until now): free again."""
        gpus = self.node_gpus[n]
        for index in whole:
            self._shift_pod(PodAlloc(n, (gpus[index],)), 0, 0, taking=False)
        for index, start in slices:
            self._shift_pod(PodAlloc(n, (gpus[index],), mig_start=start), 0, 0, taking=False)

    # ------------------------------------------------------------ take/release
    def _set_milli(self, g: int, new: int) -> None:
        """Change a non-MIG GPU's free milli, keeping buckets and fraction lists in step."""
        old = self.gpu_free_milli[g]
        pool = self.pools[self.gpu_pool[g]]
        n = self.gpu_node[g]
        if self.gpu_shared[g]:
            if old:
                del pool.fractions[bisect_left(pool.fractions, (old, n, g))]
            if new:
                insort(pool.fractions, (new, n, g))
        if old == MILLI_PER_GPU and new != MILLI_PER_GPU:
            pool.move(n, -1)
        elif new == MILLI_PER_GPU and old != MILLI_PER_GPU:
            pool.move(n, +1)
        self.gpu_free_milli[g] = new

    def _take_pod(self, pod: PodAlloc, cpu: int, mem: int) -> None:
        self._shift_pod(pod, cpu, mem, taking=True)

    def _shift_pod(self, pod: PodAlloc, cpu: int, mem: int, taking: bool) -> None:
        """Take or give back one pod's share. An unhealthy GPU's capacity is in no free
        list, so a pod still running on it is charged there without touching them."""
        sign = -1 if taking else 1
        n = pod.node
        if self.scorer is not None:
            self.scorer.touch(n)
        self.free_cpu[n] += sign * cpu
        self.free_mem[n] += sign * mem
        gpus = pod.gpus
        whole_pool = self._whole_pool
        p = whole_pool[gpus[0]] if gpus else -1
        if pod.mig_start is None and pod.milli is None and p >= 0:
            for g in gpus:
                if whole_pool[g] != p:
                    break
            else:
                # k whole GPUs of one pool: move the node between buckets once, not k times.
                milli = 0 if taking else MILLI_PER_GPU
                free_milli = self.gpu_free_milli
                for g in gpus:
                    free_milli[g] = milli
                self.pools[p].move(n, sign * len(gpus))
                return
        for g in pod.gpus:
            if pod.mig_start is not None:
                layout = self.gpu_mig[g]
                assert layout is not None
                layout[pod.mig_start][1] = taking
                if not self.gpu_healthy[g]:
                    continue
                free = self.pools[self.gpu_pool[g]].mig_free.setdefault(
                    str(layout[pod.mig_start][0]), []
                )
                entry = (pod.node, g, pod.mig_start)
                if taking:
                    del free[bisect_left(free, entry)]
                else:
                    insort(free, entry)
            elif not self.gpu_healthy[g]:
                continue
            elif pod.milli is not None:
                self._set_milli(g, self.gpu_free_milli[g] + sign * pod.milli)
            else:
                self._set_milli(g, 0 if taking else MILLI_PER_GPU)

    def take(self, allocation: Allocation) -> None:
        for pod in allocation.pods:
            self._take_pod(pod, allocation.cpu_milli, allocation.memory_mib)

    def release(self, allocation: Allocation) -> None:
        cpu, mem = allocation.cpu_milli, allocation.memory_mib
        for pod in reversed(allocation.pods):
            self._shift_pod(pod, cpu, mem, taking=False)

    # ------------------------------------------------------- running workloads
    def allocation_of(self, workload: Workload, option: Option) -> Allocation:
        """The Allocation a running workload's recorded placement describes (not applied)."""
        assert workload.placement is not None
        pods = []
        for i, placement in enumerate(workload.placement):
            n = self.node_index.get(placement.node)
            if n is None:
                raise PlacementError(
                    f"workload {workload.name} pod {i}: "
                    f"node {placement.node!r} is not in the cluster"
                )
            gpus = []
            for index in placement.gpus:
                g = self.node_gpus[n].get(index)
                if g is None:
                    raise PlacementError(
                        f"workload {workload.name} pod {i}: "
                        f"node {placement.node} has no GPU {index}"
                    )
                gpus.append(g)
            pods.append(PodAlloc(n, tuple(gpus), placement.mig_start, placement.milli))
        return Allocation(option, pods, workload.cpu_milli, workload.memory_mib)

    def apply_running(self, allocation: Allocation, name: str) -> None:
        """Charge a running workload's recorded placement, checking it is possible: all of
        it, or (``PlacementError``) nothing, so that a caller may go on with this state."""
        cpu, mem = allocation.cpu_milli, allocation.memory_mib
        for i, pod in enumerate(allocation.pods):
            clash = self._running_clash(pod, name)
            if clash is not None:
                for taken in reversed(allocation.pods[:i]):
                    self._shift_pod(taken, cpu, mem, taking=False)
                raise PlacementError(clash)
            self._take_pod(pod, cpu, mem)

    def overdrawn(self, allocation: Allocation) -> str | None:
        """Why ``allocation``, applied, leaves a node short of the CPU or memory its pods
        ask, or None. ``place`` never does that; a placement chosen on an older state may.
        A pod asking none of one fits any node, as the kube-scheduler counts it."""
        cpu, mem = allocation.cpu_milli, allocation.memory_mib
        count: dict[int, int] = {}
        for pod in allocation.pods:
            count[pod.node] = count.get(pod.node, 0) + 1
        for n, pods in count.items():
            free, asked = [], []
            if cpu and self.free_cpu[n] < 0:
                free.append(f"{max(0, self.free_cpu[n] + pods * cpu) / 1000:g} CPU")
                asked.append(f"{pods * cpu / 1000:g} CPU")
            if mem and self.free_mem[n] < 0:
                free.append(f"{max(0, self.free_mem[n] + pods * mem) / 1024:g} GiB memory")
                asked.append(f"{pods * mem / 1024:g} GiB")
            if free:
                return (
                    f"node {self.node_names[n]} has {' and '.join(free)} free; its {pods} "
                    f"pod(s) there ask {' and '.join(asked)}"
                )
        return None

    def _running_clash(self, pod: PodAlloc, name: str) -> str | None:
        """Why ``pod`` of running workload ``name`` cannot be charged now, or None."""
        for g in pod.gpus:
            layout = self.gpu_mig[g]
            if pod.mig_start is not None:
                if layout is None or pod.mig_start not in layout:
                    return (
                        f"workload {name}: GPU {self.gpu_index[g]} on "
                        f"{self.node_names[pod.node]} has no MIG slice at {pod.mig_start}"
                    )
                if layout[pod.mig_start][1]:
                    return f"workload {name}: MIG slice used twice"
            elif layout is not None:
                return f"workload {name}: GPU is MIG-partitioned"
        need = pod.milli if pod.milli is not None else MILLI_PER_GPU
        if pod.mig_start is None and any(
            self.gpu_healthy[g] and self.gpu_free_milli[g] < need for g in pod.gpus
        ):
            return f"workload {name}: GPU capacity on {self.node_names[pod.node]} used twice"
        return None

    def placement_of(self, allocation: Allocation) -> tuple[PodPlacement, ...]:
        return tuple([self._pod_placement(pod) for pod in allocation.pods])

    def _pod_placement(self, pod: PodAlloc) -> PodPlacement:
        """A pod's (immutable) PodPlacement, built once per spot: requests reuse few spots."""
        placement = self._placements.get(pod)
        if placement is None:
            if len(self._placements) >= 1 << 16:
                self._placements.clear()
            placement = self._placements[pod] = built(
                PodPlacement,
                {
                    "node": self.node_names[pod.node],
                    "gpus": tuple(self.gpu_index[g] for g in pod.gpus),
                    "mig_start": pod.mig_start,
                    "milli": pod.milli,
                },
            )
        return placement
