"""The core's ``Snapshot`` of the live cluster, built from a view ``LiveCluster`` takes
under its lock.

The build reads nothing but the view, so the controller's snapshot is built outside the
lock the webhook's answers wait for: 0.35 s at 20,000 pods ((b)'s cluster,
``benchmarks/live_bench.py``) when every workload is made, the first build after a relist.
What it makes of each pod group is kept with the group, for the next build on any thread
(``observed.workload_of``): a build remakes only the workloads whose pods changed, or whose
nomination ended or devices moved (every build after: 0.03–0.04 s at 20,000 pods).

Admissions not yet seen whole go in first, where they were placed; one whose devices are
not free is left out and returned with those that hold them, for the caller to warn of
(``LeftOut``).
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable
from dataclasses import dataclass

from scheduler.model import Node, PodPlacement, Queue, Snapshot, Workload
from scheduler.telemetry.report import TelemetryReport
from webhook.kubeobjects import FreeDevices, Ledgers, NodeLedger
from webhook.observed import (
    PodGroup,
    replaced_gang,
    replacements_of,
    without_closed_queues,
    workload_of,
)

log = logging.getLogger("apportion.cluster")

__all__ = ["Clash", "LeftOut", "View", "build", "sharing"]

Clash = tuple[str, tuple[str, ...]]
"""An admission left out of a build, and by name what holds its devices."""


@dataclass(frozen=True, slots=True)
class View:
    """What a snapshot is built from, taken under the lock (``LiveCluster._view``)."""

    nodes: dict[str, Node]
    """Less what foreign pods and pods asking no GPU hold."""
    groups: dict[str, PodGroup]
    """The caller's own (``PodIndex.all_groups``): building changes it."""
    intents: list[Workload]
    queues: dict[str, Queue]
    now: float
    telemetry: TelemetryReport | None
    free: FreeDevices
    """The caller's own: its nodes' free devices, kept for the next build."""


def build(view: View, base: Snapshot, running_only: bool = False) -> tuple[Snapshot, list[Clash]]:
    """The snapshot of ``view`` (``base`` with its nodes, queues, workloads and time), and
    the admissions left out of it for a clash. ``running_only``: without the waiting
    workloads (the incremental allocator's view; at 20,000 mostly waiting pods building
    them was most of a rebuild)."""
    nodes = view.nodes
    ledgers = Ledgers(nodes, view.free)
    workloads: list[Workload] = []
    clashes: list[Clash] = []
    grouped = view.groups
    # Intents first: their placements were chosen by the allocator and must stay put;
    # an admitted intent stands for its pods until they are all observed admitted.
    for intended in view.intents:
        name = intended.name
        if intended.placement is None and (running_only or name in grouped):
            continue
        grouped.pop(name, None)
        if intended.placement is not None:
            # The gang's pods that wait apart are among those its admission placed.
            grouped.pop(replacements_of(name), None)
        gang = replaced_gang(name)
        if gang in grouped and intended.placement is not None:
            # Replacements already seen where the intent placed them are its own.
            taken = set(intended.placement)
            kept = [p for p in grouped[gang].pods if p.placement not in taken]
            if kept:
                grouped[gang] = PodGroup(kept, admitted=True)
            else:
                del grouped[gang]
        if intended.placement is not None and not _claim(ledgers, intended.placement):
            # Not the controller's reservations, which hold only what is free: a node
            # that lost the devices, or a foreign pod bound since and counted on them
            # (which of its node's GPUs it has is unknown).
            held = ((w.name, w.placement or ()) for w in workloads)
            clashes.append((name, tuple(sharing(intended.placement, held))))
            continue
        workloads.append(intended)
    for name in sorted(grouped):
        if running_only and not grouped[name].admitted:
            continue
        workload = workload_of(name, grouped[name], ledgers, view.now)
        if workload is not None:
            workloads.append(workload)
    workloads, nodes = without_closed_queues(workloads, nodes, view.queues)
    snapshot = base.model_copy(
        update={
            "nodes": tuple(nodes[n] for n in sorted(nodes)),
            "queues": tuple(view.queues[q] for q in sorted(view.queues)),
            "workloads": tuple(workloads),
            "now": int(view.now),
        }
    )
    if view.telemetry is None:
        return snapshot, clashes
    return view.telemetry.apply(snapshot), clashes


def _claim(ledgers: Ledgers, placement: tuple[PodPlacement, ...]) -> bool:
    """Mark every pod's placement taken in the ledgers, or (False) none of them: what an
    admission left out does not hold stays free for the workloads after it."""
    here: dict[str, NodeLedger] = {}
    for p in placement:
        ledger = ledgers.get(p.node)
        if ledger is None:
            return False
        here[p.node] = ledger
    saved = {
        n: (list(ledger.free_whole), {k: list(v) for k, v in ledger.free_slices.items()})
        for n, ledger in here.items()
    }
    if all(here[p.node].claim(p) for p in placement):
        return True
    for n, (whole, slices) in saved.items():
        here[n].free_whole, here[n].free_slices = whole, slices
    return False


def sharing(
    placement: Iterable[PodPlacement], holdings: Iterable[tuple[str, Iterable[PodPlacement]]]
) -> list[str]:
    """The holders, by name, placed on a device (a whole GPU, a MIG slice) ``placement``
    is placed on too."""
    devices = {d for p in placement for d in _devices(p)}
    return sorted({name for name, held in holdings for p in held if devices & _devices(p)})


def _devices(placement: PodPlacement) -> set[tuple[str, int, int | None]]:
    return {(placement.node, gpu, placement.mig_start) for gpu in placement.gpus}


class LeftOut:
    """Admissions a build left out, with what holds their devices, warned of once per
    admission and holders: every build (each cycle, each rebuild of the allocator) meets
    them again until the admission ends. ``LiveCluster`` keeps one under its lock: ``warn``
    expects its caller to hold it."""

    def __init__(self) -> None:
        self._warned: set[Clash] = set()

    def warn(self, clashes: list[Clash], standing: Container[str]) -> None:
        """Warn of ``clashes`` not warned of yet; ``standing``: the admissions not yet
        ended, the others forgotten."""
        self._warned = {c for c in self._warned if c[0] in standing}
        for clash in clashes:
            if clash in self._warned:
                continue
            self._warned.add(clash)
            name, holders = clash
            log.warning(
                "admission of %s left out of the books: the devices it was placed on "
                "are %s; the placements on its pods and the books disagree until it ends",
                name,
                f"held by {', '.join(holders)}"
                if holders
                else "gone from their node or held by pods Apportion does not manage",
                extra={"workload": name},
            )
