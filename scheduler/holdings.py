"""Workloads holding quota and GPUs, per queue, indexed by the flavor and GPU models they hold.

A cycle keeps two: its own admissions (a queue within its nominal quota may take back what
was admitted earlier in the same cycle: nothing has started yet) and the running workloads
(what a preemption may evict). It asks for those that compete with an option — hold quota
of its flavor or GPUs of one of its models — thousands of times a cycle; at 20,000 pending
workloads a queue and its cohort mates hold about a thousand admissions, and scanning them
all was a tenth of the cycle. The index answers from the few that qualify.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from scheduler.preemption import Running

__all__ = ["Holdings"]

_Held = dict[str, dict[int, Running]]
"""Flavor (or GPU model) → admissions holding it, by ``id``: removal is O(1)."""


class Holdings:
    """Workloads held, by queue; the order within the index is not meaningful (victims and
    take-backs are ordered by ``preemption.preference_order``)."""

    __slots__ = ("_by_flavor", "_by_model")

    def __init__(self) -> None:
        self._by_flavor: dict[str, _Held] = {}
        self._by_model: dict[str, _Held] = {}

    def add(self, r: Running) -> None:
        queue = r.workload.queue
        self._by_flavor.setdefault(queue, {}).setdefault(r.flavor, {})[id(r)] = r
        by_model = self._by_model.setdefault(queue, {})
        for model in r.models:
            by_model.setdefault(model, {})[id(r)] = r

    def remove(self, r: Running) -> None:
        queue = r.workload.queue
        del self._by_flavor[queue][r.flavor][id(r)]
        for model in r.models:
            del self._by_model[queue][model][id(r)]

    def competing(self, queue: str, flavor: str, models: Sequence[str]) -> Iterator[Running]:
        """Workloads of ``queue`` that hold quota of ``flavor`` or GPUs of one of ``models``
        (``Running.competes_for``), each once."""
        found = dict(self._by_flavor.get(queue, {}).get(flavor, {}))
        by_model = self._by_model.get(queue)
        if by_model:
            for model in models:
                held = by_model.get(model)
                if held:
                    found.update(held)
        return iter(found.values())
