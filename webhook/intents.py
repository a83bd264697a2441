"""Admissions made before their pods are observed ("intents"): the webhook's answer at
creation, and the controller's reservation of its own.

The webhook answers "admit" or "wait" a few milliseconds before the API server stores the
pod; the controller reserves its admissions before it patches their pods. Each is kept by
workload name until the watch shows its pods admitted (or present, for a "wait"), until
one of them is deleted, or until its time to live passes without them (``Intents``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, ValuesView
from dataclasses import dataclass

from scheduler.incremental import IncrementalAllocator
from scheduler.model import PodPlacement, Queue, Workload, WorkloadDecision
from scheduler.reasons import QUOTA_REASONS, Outcome, Reason
from scheduler.state import PlacementError
from webhook.observed import replaced_gang, replacements_of
from webhook.podindex import PodIndex
from webhook.pods import ManagedPod
from webhook.snapshots import sharing

__all__ = [
    "PLACE_TAKEN",
    "QUOTA_TAKEN",
    "Intent",
    "Intents",
    "Refusal",
    "already_admitted",
    "answer",
]

PLACE_TAKEN = "PlaceTaken"
"""An admission the controller reserves no longer stands as decided: its devices, or its
nodes' CPU or memory, are not free (given to another since the decision, or still held by
a victim of the decision's evictions), or its pods or queue are gone, or it is admitted."""

QUOTA_TAKEN = "QuotaTaken"
"""An admission the controller reserves would take its queue past its quota (nominal and
borrowing limit) or its cohort past what its members lend: admissions since the decision
used what it counted on, or a victim of the decision's evictions still holds it."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why ``LiveCluster.reserve`` held nothing: a reason (``PLACE_TAKEN``, ``QUOTA_TAKEN``)
    and a message with the numbers, as the waiting pods say it."""

    reason: str
    message: str

    @property
    def waiting_message(self) -> str:
        """What its waiting pods say, and the queue view until the next decision."""
        return f"not admitted as decided: {self.message}; it is decided again in the next cycle"


@dataclass(slots=True)
class Intent:
    workload: Workload
    expires: float
    seen: bool = False
    """Its pods were observed when it was made (the controller's admissions): a list
    without them means they are gone, not late."""


class Intents:
    """The intents, by workload name. ``LiveCluster`` keeps them under its lock: every
    method expects its caller to hold it."""

    def __init__(self, clock: Callable[[], float], ttl_s: float) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._by_name: dict[str, Intent] = {}

    def get(self, workload: str) -> Intent | None:
        return self._by_name.get(workload)

    def __contains__(self, workload: object) -> bool:
        return workload in self._by_name

    def values(self) -> ValuesView[Intent]:
        return self._by_name.values()

    def admit(self, workload: Workload, decision: WorkloadDecision) -> None:
        """The webhook admitted ``workload`` at creation (``answer``): held where
        ``decision`` placed it until its pods are seen, for the time to live at most."""
        running = workload.model_copy(
            update={
                "flavor": decision.flavor,
                "placement": decision.placement,
                "started": int(self._clock()),
            }
        )
        self._by_name[workload.name] = Intent(running, self._clock() + self._ttl_s)

    def seed(self, workload: Workload) -> None:
        """Standalone: ``workload`` runs, as the cluster file says; held until forgotten."""
        self._by_name[workload.name] = Intent(workload, math.inf)

    def pop(self, workload: str) -> Intent | None:
        return self._by_name.pop(workload, None)

    def expire(self) -> list[Intent]:
        """Drop the intents whose time to live passed without their pods (the create
        failed later in admission, e.g. another webhook denied it): those dropped."""
        now = self._clock()
        expired = [name for name, i in self._by_name.items() if i.expires <= now]
        return [self._by_name.pop(name) for name in expired]

    def retire_if_observed(self, workload: str, index: PodIndex) -> None:
        """An intent ends when its pods are observed: all admitted, or (waiting) present;
        or when the pods it was made for are no longer there, or (a gang's replacements)
        no longer apart from the gang's running members."""
        intent = self._by_name.get(workload)
        if intent is None:
            return
        group = index.group(workload)
        if intent.workload.placement is None:
            if group is not None:
                del self._by_name[workload]
        elif (intent.seen and group is None) or (
            group is not None and len(group.pods) >= intent.workload.pods and group.admitted
        ):
            del self._by_name[workload]

    def retire_observed(self, index: PodIndex) -> None:
        """``retire_if_observed`` for every intent: after a relist."""
        for name in list(self._by_name):
            self.retire_if_observed(name, index)

    def placed_by(self, pod: ManagedPod) -> str | None:
        """The intent, its workload's or its gang's replacements', that placed ``pod``
        where it shows up (its recorded placement one of the intent's, bound there or not
        yet), if one did."""
        for name in (pod.workload, replacements_of(pod.workload)):
            intent = self._by_name.get(name)
            if intent is not None and _same_place(intent, pod):
                return name
        return None

    def end_with(self, workload: str, index: PodIndex) -> bool:
        """A pod of ``workload`` is gone (``index`` without it): whether an intent ended
        with it, and with it what the live allocator holds for that intent."""
        # An admission not yet seen whole ends here: its pod is gone, not late.
        ended = self._by_name.pop(workload, None) is not None
        # A gang's replacements admitted but not yet seen end with their pods, or with
        # the gang's last running member: what the allocator holds for them too.
        replacements = replacements_of(workload)
        standing = replacements in self._by_name
        self.retire_if_observed(replacements, index)
        return ended or (standing and replacements not in self._by_name)

    def reserve(
        self,
        workload: Workload,
        queues: dict[str, Queue],
        index: PodIndex,
        allocator: Callable[[], IncrementalAllocator],
    ) -> Refusal | None:
        """Hold the controller's admission ``workload`` (``LiveCluster.reserve``): charged
        to the live allocator (built by ``allocator`` once its pods are known to wait)
        where it was placed, if it still fits there (``IncrementalAllocator.hold_decided``),
        and kept until its pods are seen admitted; None once held, else why not, with
        nothing held."""
        if workload.queue not in queues:
            return Refusal(PLACE_TAKEN, f"queue {workload.queue} no longer exists")
        group = index.group(workload.name)
        if group is None:
            return Refusal(PLACE_TAKEN, "its pods no longer wait")
        intent = self._by_name.get(workload.name)
        live = allocator()
        if (
            group.admitted
            or live.holds(workload.name)
            or (intent is not None and intent.workload.placement is not None)
        ):
            return Refusal(PLACE_TAKEN, "it is admitted already")
        gang = self._by_name.get(replaced_gang(workload.name) or "")
        if gang is not None and gang.workload.placement is not None:
            # The gang's own admission, not yet seen whole, holds a place for each of its
            # pods, these too: placed again, they would hold two.
            return Refusal(PLACE_TAKEN, "its gang's admission holds its places already")
        try:
            overtaken = live.hold_decided(workload)
        except PlacementError as error:
            holders = sharing(workload.placement or (), self._holdings(index, workload.name))
            if holders:
                return Refusal(
                    PLACE_TAKEN,
                    f"its place was taken since the decision, by {', '.join(holders)}",
                )
            return Refusal(PLACE_TAKEN, f"its place is no longer free ({error})")
        if overtaken is None:
            self._by_name[workload.name] = Intent(workload, self._clock() + self._ttl_s, seen=True)
            return None
        if overtaken.reason in QUOTA_REASONS:
            return Refusal(QUOTA_TAKEN, f"its quota is no longer free: {overtaken.message}")
        return Refusal(PLACE_TAKEN, f"its place is no longer free: {overtaken.message}")

    def _holdings(
        self, index: PodIndex, besides: str
    ) -> list[tuple[str, tuple[PodPlacement, ...]]]:
        """Where Apportion placed what holds devices, by workload (but ``besides``):
        admissions not yet seen whole, and admitted pods' recorded placements."""
        held = [
            (name, i.workload.placement)
            for name, i in self._by_name.items()
            if i.workload.placement is not None and name != besides
        ]
        held += [
            (name, tuple(p.placement for p in group.pods if p.placement is not None))
            for name, group in index.all_groups().items()
            if group.admitted and name != besides
        ]
        return held


def _same_place(intent: Intent, pod: ManagedPod) -> bool:
    placement = intent.workload.placement or ()
    return (
        pod.placement is not None
        and pod.placement in placement
        and (pod.node in (None, pod.placement.node))
    )


def answer(
    workload: Workload, allocator: IncrementalAllocator, index: PodIndex
) -> WorkloadDecision:
    """The webhook's answer at creation: the live allocator's decision (charged to it if
    it admits), unless the controller's next cycle is to decide ``workload``. Reads the
    pods and changes the allocator ``LiveCluster`` guards: its caller holds that lock."""
    if allocator.holds(workload.name):
        # The name of a pod observed holding GPUs: one recreated under its name (a
        # StatefulSet's) before the old one is seen gone, or a create (dry run) of a
        # pod that exists. Not an allocator failure: it waits for the old one.
        return _left_to_the_controller(
            workload,
            f"a pod named {workload.name} still holds its GPUs (being deleted, or this "
            "one already exists); the controller decides this one once it is gone",
        )
    ahead = index.highest_waiting(workload.queue)
    if ahead is not None and ahead > workload.priority:
        # Not past a higher priority of its own queue: the controller's next cycle
        # orders them (and may preempt for the one ahead).
        return _left_to_the_controller(
            workload,
            f"queue {workload.queue} has waiting work of priority {ahead} > "
            f"{workload.priority}; the controller decides the order",
        )
    return allocator.decide(workload)


def _left_to_the_controller(workload: Workload, message: str) -> WorkloadDecision:
    """Not decided at creation: the pod waits, gated, for the controller's next cycle."""
    return WorkloadDecision(
        workload=workload.name,
        queue=workload.queue,
        outcome=Outcome.PENDING,
        reason=Reason.NOT_SELECTED,
        message=message,
    )


def already_admitted(admitted: Workload) -> WorkloadDecision:
    """The answer to a retried create (the API server timed out on us and called again)
    of a pod of ``admitted``: the same answer, not a second admission."""
    return WorkloadDecision(
        workload=admitted.name,
        queue=admitted.queue,
        outcome=Outcome.ADMIT,
        reason=Reason.ADMITTED,
        message="already admitted by an earlier call for this pod",
        flavor=admitted.flavor,
        placement=admitted.placement,
    )
