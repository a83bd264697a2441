"""One arriving workload against the current state, in microseconds: the webhook's request path.

No ILP here: the snapshot is compiled once, and each arrival is checked against quota
and placed best-fit with the same hard constraints and the same fragmentation rule as
the global cycle (it *is* the global cycle's admission step, without preemption —
evictions are the controller's job). Admitted workloads are charged immediately so the
next request sees them; ``release`` undoes one when its pods go away — also one that was
already running in the snapshot the allocator was built from, so a driver that rebuilds it
(after a global decision, or a node failure) can keep releasing what finishes.
``hold_decided`` charges a global decision's admission taken on an older state only where it
still fits this one, checked as the decision checked it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.capacity import UNTRACKED
from scheduler.compiled import (
    Entry,
    charge_quota,
    charge_running,
    compile_snapshot,
    recorded_allocation,
)
from scheduler.fragmentation import FragmentationScore, ObservedMix
from scheduler.greedy import Cycle
from scheduler.model import PodPlacement, Snapshot, Workload, WorkloadDecision, built
from scheduler.preemption import Running
from scheduler.reasons import Outcome, Reason
from scheduler.verdicts import Verdict

__all__ = ["IncrementalAllocator", "Overtaken"]

_ADMIT = Outcome.ADMIT
"""Read as a global on the request path: an enum member's read costs several times it."""


@dataclass(frozen=True, slots=True)
class Overtaken:
    """Why an admission decided on an older state no longer fits (``hold_decided``)."""

    reason: Reason
    """``NO_CAPACITY``: a node's CPU or memory; else the quota check's reason."""
    message: str


class IncrementalAllocator:
    """Admission decisions one workload at a time against a live, mutable state."""

    def __init__(self, snapshot: Snapshot, fragmentation_aware: bool = False) -> None:
        """``fragmentation_aware``: place whole-GPU and shared-GPU pods where the expected
        fragmentation against the mix of workloads seen so far grows least
        (``scheduler.fragmentation``), on clusters with shared GPUs or tracked CPU/memory;
        otherwise best-fit. It strands less capacity, but a decision then costs about a
        millisecond on a thousand nodes instead of tens of microseconds."""
        self._compiled = compile_snapshot(snapshot, snapshot.catalog())
        self._cycle = Cycle(self._compiled, preempt=False)
        self._admitted: dict[str, Verdict] = {}
        self._running: dict[str, Running] = {r.workload.name: r for r in self._compiled.running}
        state = self._compiled.state
        self._mix: ObservedMix | None = None
        if fragmentation_aware and (
            any(state.gpu_shared) or any(c < UNTRACKED for c in (*state.free_cpu, *state.free_mem))
        ):
            # Shares of GPUs, or CPU and memory that can run out before the GPUs do: where
            # plain best-fit strands capacity, place against the mix of workloads seen.
            self._mix = ObservedMix(state.models_present)
            for w in snapshot.workloads:
                self._mix.observe(w)
            state.scorer = FragmentationScore(state, self._mix)

    def decide(self, workload: Workload) -> WorkloadDecision:
        """Admit now (and charge it) or explain why it must wait."""
        if workload.name in self._admitted or workload.name in self._running:
            raise ValueError(f"workload {workload.name} is already admitted")
        compiled = self._compiled
        if self._mix is not None:
            self._mix.observe(workload)
        entry = Entry(workload, compiled.options(workload))
        verdict = self._cycle.admit_or_explain(entry)
        # The live path keeps only what it admitted: a long-lived allocator answering
        # thousands of requests must not accumulate the ones that wait.
        self._cycle.outcomes.pop(workload.name)
        placement: tuple[PodPlacement, ...] = ()
        if verdict.outcome is _ADMIT and verdict.allocation is not None:
            self._admitted[workload.name] = verdict
            placement = compiled.state.placement_of(verdict.allocation)
        return _decision(
            workload.name,
            workload.queue,
            verdict.outcome,
            verdict.reason,
            verdict.text,
            verdict.option.flavor if verdict.option is not None else None,
            placement,
        )

    def holds(self, name: str) -> bool:
        """Whether a workload of this name holds capacity here (admitted here, or running in
        the snapshot): ``decide`` and ``hold`` refuse a second one."""
        return name in self._admitted or name in self._running

    def hold(self, workload: Workload) -> None:
        """Charge a workload that started elsewhere (a global decision) at its recorded
        placement, as if it had been running in the snapshot: a driver need not rebuild
        the allocator after each global decision. A placement no longer free here raises
        ``PlacementError`` and charges nothing: a driver can check that a decision taken on
        an older state still stands, and keep the allocator either way."""
        if workload.name in self._admitted or workload.name in self._running:
            raise ValueError(f"workload {workload.name} is already admitted")
        c = self._compiled
        self._running[workload.name] = charge_running(workload, c.catalog, c.state, c.book)

    def hold_decided(self, workload: Workload) -> Overtaken | None:
        """``hold`` for an admission a global decision took on an older state (the
        controller's, while the webhook admitted at creation): charged only if it still
        fits as the decision checked it, else why not (devices no longer free raise
        ``PlacementError``; out of service since, ``NO_CAPACITY``), with nothing charged.
        Devices first, then its nodes' CPU and memory, then its queue's quota (nominal,
        borrowing limit, the cohort's lending).

        Nothing here is counted as freed by evictions: a decision that evicts admits its
        beneficiary once the victims have ended (the controller gates it until then), and
        until then they hold all they held, here as on their nodes."""
        if workload.name in self._admitted or workload.name in self._running:
            raise ValueError(f"workload {workload.name} is already admitted")
        c = self._compiled
        option, allocation = recorded_allocation(workload, c.catalog, c.state)
        state = c.state
        for pod in allocation.pods:
            for g in pod.gpus:
                if not state.gpu_healthy[g]:  # charged to what runs there, never given
                    where = f"GPU {state.gpu_index[g]} on node {state.node_names[pod.node]}"
                    return Overtaken(Reason.NO_CAPACITY, f"{where} is out of service")
        c.state.apply_running(allocation, workload.name)
        short = c.state.overdrawn(allocation)
        check = c.book.check(workload.queue, option.flavor, option.quota_per_pod * workload.pods)
        if short is not None or not check.ok:
            c.state.release(allocation)
            if short is not None:
                return Overtaken(Reason.NO_CAPACITY, short)
            return Overtaken(check.reason, check.message)
        self._running[workload.name] = charge_quota(
            workload, option, allocation, c.catalog, c.state, c.book
        )
        return None

    def hold_outside(self, node: str, cpu_milli: int, memory_mib: int) -> bool:
        """Pods outside the workloads now hold that much more of ``node`` (less when
        negative), as ``Node.cpu_held_milli`` would say after a rebuild: a CPU-only pod came
        to a GPU node or left it. False if the node is not in this allocator's snapshot."""
        n = self._compiled.state.node_index.get(node)
        if n is None:
            return False
        self._compiled.state.hold_outside(n, cpu_milli, memory_mib)
        return True

    def relabel(self, node: str, labels: dict[str, str]) -> bool:
        """``node``'s labels are now ``labels`` (GPU feature discovery, a MIG or driver
        state, a team's own), as a rebuild would compile them. False, with nothing changed,
        where a label its pools key on changed, or the node is not in this allocator's
        snapshot."""
        n = self._compiled.state.node_index.get(node)
        return n is not None and self._compiled.state.relabel(n, labels)

    def resize(self, node: str, cpu_milli: int | None, memory_mib: int | None) -> bool:
        """``node``'s allocatable CPU and memory are now these (``Node.cpu_milli``,
        ``memory_mib``), as a rebuild would compile them. False, with nothing changed,
        where one is reported now and was not (or the other way), or the node is not in
        this allocator's snapshot."""
        n = self._compiled.state.node_index.get(node)
        return n is not None and self._compiled.state.resize(n, cpu_milli, memory_mib)

    def take_held(self, node: str, whole: Iterable[int], slices: Iterable[tuple[int, int]]) -> bool:
        """Pods outside the workloads now hold these whole GPUs and MIG slices ((GPU index,
        start)) of ``node``, as ``Gpu.held`` and ``MigSlice.held`` would say after a
        rebuild: a foreign GPU pod came. False, with nothing taken, if one is not free here
        or the node is not in this allocator's snapshot."""
        n = self._compiled.state.node_index.get(node)
        return n is not None and self._compiled.state.take_held(n, whole, slices)

    def give_back_held(
        self, node: str, whole: Iterable[int], slices: Iterable[tuple[int, int]]
    ) -> bool:
        """These devices of ``node``, held by pods outside the workloads until now, are free:
        a foreign GPU pod went. False if the node is not in this allocator's snapshot."""
        n = self._compiled.state.node_index.get(node)
        if n is None:
            return False
        self._compiled.state.give_back_held(n, whole, slices)
        return True

    def release(self, name: str) -> bool:
        """Give back what a workload holds (admitted here, or running in the snapshot);
        False if this allocator does not know it."""
        held = self._running.pop(name, None)
        if held is not None:
            self._compiled.state.release(held.allocation)
            self._compiled.book.charge(held.workload.queue, held.flavor, -held.amount)
            return True
        verdict = self._admitted.pop(name, None)
        if verdict is None or verdict.allocation is None or verdict.option is None:
            return False
        self._compiled.state.release(verdict.allocation)
        amount = verdict.option.quota_per_pod * verdict.entry.workload.pods
        self._compiled.book.charge(verdict.entry.workload.queue, verdict.option.flavor, -amount)
        return True


def _decision(
    name: str,
    queue: str,
    outcome: Outcome,
    reason: Reason,
    message: str,
    flavor: str | None,
    placement: tuple[PodPlacement, ...],
) -> WorkloadDecision:
    """The decision built from the allocator's own values, without validation (``built``:
    model_construct's cost was a tenth of a decision)."""
    return built(
        WorkloadDecision,
        {
            "workload": name,
            "queue": queue,
            "outcome": outcome,
            "reason": reason,
            "message": message,
            "flavor": flavor,
            "placement": placement,
        },
    )
