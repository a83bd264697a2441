"""Room freed during a cycle, and who waits for it: when to offer capacity again.

A preemption or a take-back frees GPUs of some models, quota of a flavor in a cohort, and
CPU and memory on some nodes (counted as GPUs of those nodes' models freed: a workload
refused for capacity watches its models).
The cycle then offers the room again to workloads it left waiting (work conservation), but
only to those it can help: each waiting workload remembers, per option, what must be freed
before that option can fit, and when it was left waiting. Thousands wait at 20,000 pending
workloads; most watch GPUs or quota that nothing freed, and are not tried again.
"""

from __future__ import annotations

from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import Entry
from scheduler.demand import Option
from scheduler.model import Workload
from scheduler.preemption import Running
from scheduler.quota import QuotaBook
from scheduler.reasons import QUOTA_REASONS, Reason
from scheduler.state import Allocation, PodAlloc

__all__ = ["Freed", "FreedRoom", "Watch"]

Freed = str | tuple[str, str] | tuple[str, str, str]
"""What a cycle frees: GPUs of a model (its name), quota of a flavor in a cohort
(``(cohort, flavor)``), or quota one queue holds (``(queue, flavor, "queue")``)."""

_QUEUE = "queue"

Watch = dict[int, tuple[Freed, ...]]
"""Per option of a waiting workload (by id): what must be freed before it can fit."""

_NEVER_WAITED: tuple[int, Watch] = (-1, {})
"""A workload never left waiting (read only)."""


class FreedRoom:
    """What one cycle freed and when, against when each workload was left waiting."""

    __slots__ = (
        "book",
        "freed_at",
        "frees",
        "gpu_model",
        "node_gpus",
        "offered_at",
        "taken_back",
        "waited_at",
        "watchers",
    )

    def __init__(
        self, book: QuotaBook, gpu_model: list[str], node_gpus: list[dict[int, int]]
    ) -> None:
        self.book = book
        self.gpu_model = gpu_model
        """Per GPU id: its model."""
        self.node_gpus = node_gpus
        """Per node: its GPU ids by index (``ClusterState.node_gpus``)."""
        self.frees = 0
        """Counts the times this cycle freed capacity (evictions, take-backs)."""
        self.freed_at: dict[Freed, int] = {}
        """Per GPU model, and per (cohort, flavor) for quota: the count of ``frees`` when it
        last had some freed. Quota freed in one cohort makes no room in another."""
        self.waited_at: dict[str, tuple[int, Watch]] = {}
        """Per workload: the count of ``frees`` when it was last left waiting, and its
        ``Watch``."""
        self.taken_back: dict[str, Entry] = {}
        """Workloads whose admission was taken back and that were not left waiting since:
        what was admitted while they held their place may be in their way now."""
        self.watchers: dict[Freed, dict[str, Entry]] = {}
        """Per thing a waiting workload watches, the workloads left waiting that watched it
        (and may since have been admitted, or watch other things now)."""
        self.offered_at = -1
        """``frees`` when ``woken`` last looked."""

    def waits(self, entry: Entry, watch: Watch) -> None:
        """``entry`` was left waiting now, watching ``watch``."""
        w = entry.workload
        self.waited_at[w.name] = (self.frees, watch)
        self.taken_back.pop(w.name, None)
        for option in entry.options:
            keys = watch.get(id(option))
            for key in self.watch(w, option, None) if keys is None else keys:
                self.watchers.setdefault(key, {})[w.name] = entry

    def forget(self, entry: Entry) -> None:
        """``entry``'s admission was taken back: it may fit anywhere again."""
        self.waited_at.pop(entry.workload.name, None)
        self.taken_back[entry.workload.name] = entry

    def woken(self) -> list[Entry]:
        """Of the workloads left waiting, those room freed since may help (``may_fit_now``);
        the caller skips those admitted since. Looks only at what watches something freed
        since the last call: one whose room was freed before that was offered it then, and
        left waiting again since, or admitted (at 20,000 waiting workloads, asking each one
        took a tenth of the cycle's offers)."""
        since, self.offered_at = self.offered_at, self.frees
        found = dict(self.taken_back)
        for key, at in self.freed_at.items():
            if at > since:
                found.update(self.watchers.get(key, {}))
        return [entry for entry in found.values() if self.may_fit_now(entry)]

    def note(self, released: list[Running], reuse: tuple[str, Allocation, int] | None) -> bool:
        """Record the room ``released`` leaves for others: the GPUs (whole, milli, MIG slices)
        and the quota that ``reuse`` — (queue, allocation, amount charged) of the admission
        made with it — does not take again. A higher priority taking a lower one's place
        leaves nothing, so it does not make the cycle offer that room to everything waiting
        again. True when some room is left."""
        self.frees += 1
        units: dict[tuple[int, int | None], int] = {}
        for r in released:
            for pod in r.allocation.pods:
                for g in pod.gpus:
                    unit = (g, pod.mig_start)
                    units[unit] = units.get(unit, 0) + _units(pod)
        quota: dict[Freed, int] = {}
        for r in released:
            for held in (
                (self.book.cohort(r.workload.queue), r.flavor),
                (r.workload.queue, r.flavor, _QUEUE),
            ):
                quota[held] = quota.get(held, 0) + r.amount
        if reuse is not None:
            queue, reused, charged = reuse
            for pod in reused.pods:
                for g in pod.gpus:
                    unit = (g, pod.mig_start)
                    if unit in units:
                        units[unit] -= _units(pod)
            flavor = reused.option.flavor
            for taken in ((self.book.cohort(queue), flavor), (queue, flavor, _QUEUE)):
                if taken in quota:
                    quota[taken] -= charged
        left_some = False
        for (g, _), left in units.items():
            if left > 0:
                self.freed_at[self.gpu_model[g]] = self.frees
                left_some = True
        for node in self._host_freed(released, reuse):
            for g in self.node_gpus[node].values():
                self.freed_at[self.gpu_model[g]] = self.frees
            left_some = True
        for freed, left in quota.items():
            if left > 0:
                self.freed_at[freed] = self.frees
                left_some = True
        return left_some

    @staticmethod
    def _host_freed(
        released: list[Running], reuse: tuple[str, Allocation, int] | None
    ) -> list[int]:
        """Nodes where ``released`` leaves CPU or memory that ``reuse`` does not take again:
        a workload refused for the host room left beside free GPUs may fit there now."""
        host: dict[int, list[int]] = {}
        for r in released:
            a = r.allocation
            if a.cpu_milli or a.memory_mib:
                for pod in a.pods:
                    held = host.setdefault(pod.node, [0, 0])
                    held[0] += a.cpu_milli
                    held[1] += a.memory_mib
        if reuse is not None and host:
            a = reuse[1]
            for pod in a.pods:
                if pod.node in host:
                    host[pod.node][0] -= a.cpu_milli
                    host[pod.node][1] -= a.memory_mib
        return [node for node, (cpu, memory) in host.items() if cpu > 0 or memory > 0]

    def may_fit_now(self, entry: Entry) -> bool:
        """Was room freed for any of its options since it was last left waiting (or was its
        admission taken back)?"""
        w = entry.workload
        waited = self.waited_at.get(w.name)
        if waited is None:
            return True
        return any(self._freed(w, option, *waited) for option in entry.options)

    def since_waiting(self, w: Workload, option: Option) -> bool:
        """Was capacity ``option`` competes for freed since ``w`` was last left waiting?
        If not, taking back what was admitted after it cannot make it fit: it did not fit in
        the room those admissions took, and nothing was added since. Always, for one whose
        admission was taken back: lower priorities may have been admitted while it held its
        place, and would fit in theirs."""
        if w.name in self.taken_back:
            return True
        return self._freed(w, option, *self.waited_at.get(w.name, _NEVER_WAITED))

    def _freed(self, w: Workload, option: Option, since: int, watch: Watch) -> bool:
        keys = watch.get(id(option))
        if keys is None:
            keys = self.watch(w, option, None)
        freed_at = self.freed_at
        return any(freed_at.get(key, -1) > since for key in keys)

    def watch(self, w: Workload, option: Option, refused: Reason | None) -> tuple[Freed, ...]:
        """What must be freed before ``option`` can fit, when it was ``refused`` for that
        reason: quota its own queue holds, when refused by its queue's borrowing limit
        (quota freed by cohort mates does not lift it, and its queue's may while the cohort
        gains nothing: a take-back for another queue); quota of its flavor in its cohort,
        when refused by the cohort's quota (GPUs freed elsewhere do not lift it); GPUs of
        its models, when refused for capacity (quota allowed it then); nothing, when no node
        can host it; both when unknown."""
        if refused is Reason.BORROWING_LIMIT:
            return ((w.queue, option.flavor, _QUEUE),)
        quota = (self.book.cohort(w.queue), option.flavor)
        if refused in QUOTA_REASONS:  # the borrowing limit is answered above
            return (quota,)
        if refused is Reason.NO_CAPACITY:
            return option.models
        if refused in (Reason.NEVER_FITS, Reason.NO_MATCHING_NODES):
            return ()
        return (quota, *option.models)


def _units(pod: PodAlloc) -> int:
    """What a pod holds of each of its GPUs (or MIG slice): milli for a fraction, else one
    whole unit."""
    return pod.milli if pod.milli is not None else MILLI_PER_GPU
