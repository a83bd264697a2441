"""One gang, one ask: Apportion decides a gang as its pods × one GPU ask in one queue.

The core's Workload is homogeneous (``pods`` × one ``Demand``, one queue), and a gang is
admitted whole or not at all. A gang whose members ask differently — a JobSet's leader
asking 1 GPU beside workers asking 8, a MIG slice beside whole GPUs, members labelled with
different queues — decided as its pods × one member's ask would run outside its queue's
quota, on devices reserved for another ask. Such gangs are not supported, and say so: the
validating webhook refuses a member that asks differently from the members already known
(``refusal``), and the controller never decides members it could not compare (created
together, or while the webhook was down): they keep their gate with the reason
``GangMixed`` (``mixed``). Members being deleted are left out: a generation that leaves
does not hold back the next.

A gang's workload is named after the gang (``namespace/gang``) and a named pod's after the
pod, so a pod called like a gang of its namespace would be decided as one of its members.
The validating webhook refuses whichever comes second (``clash``); the controller decides
neither if both are there (``mixed``).
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.model import Demand
from webhook import keys
from webhook.devices import resource_of
from webhook.pods import ManagedPod

__all__ = ["GANG_MIXED", "clash", "mixed", "refusal"]

GANG_MIXED = "GangMixed"
"""The reason a gang whose members ask differently waits (pods, queue view)."""

_FIX = (
    "give every member the same GPU request, models "
    f"({keys.ANNOTATION_GPU_MODELS}) and queue ({keys.LABEL_QUEUE}), or put the pods that ask "
    f"differently in a gang of their own ({keys.LABEL_GANG}, {keys.ANNOTATION_GANG_SIZE})"
)


def _ask(pod: ManagedPod) -> tuple[Demand, str]:
    return pod.demand, pod.queue


def _asks(pod: ManagedPod) -> str:
    resource, count = resource_of(pod.demand)
    models = f" of {'/'.join(pod.demand.models)}" if pod.demand.models else ""
    return f"asks {resource}: {count}{models} in queue {pod.queue}"


def _differ(workload: str, one: str, other: str) -> str:
    return (
        f"the members of gang {workload} ask differently: {one}, {other}. Apportion admits "
        "a gang as its pods × one ask"
    )


def _staying(pods: Iterable[ManagedPod]) -> list[ManagedPod]:
    return sorted((p for p in pods if not p.terminating), key=lambda p: (p.created, p.name))


def _named_alike(workload: str, gang: Iterable[str], own: str) -> str:
    members = ", ".join(sorted(gang)) or "none yet"
    return (
        f"workload {workload} names both a gang (members: {members}) and the pod {own} of its "
        "own: give the gang or the pod another name"
    )


def clash(workload: str, in_gang: bool, name: str, members: Iterable[ManagedPod]) -> str | None:
    """Why the validating webhook refuses a pod (``name``, a gang member or not) whose
    ``workload`` is already another kind's: a pod of its own among a gang's members, or
    a gang member beside a pod of its own (None if neither)."""
    others = [m for m in _staying(members) if m.in_gang != in_gang and m.name != name]
    if not others:
        return None
    if in_gang:
        return _named_alike(workload, [name], others[0].name)
    return _named_alike(workload, [m.name for m in others], name)


def mixed(workload: str, pods: Iterable[ManagedPod]) -> str | None:
    """Why the controller decides none of a gang's ``pods``: a pod of its own among them
    (``clash``), or the first member and the first that asks differently from it; None when
    they all ask alike."""
    staying = _staying(pods)
    own = [p.name for p in staying if not p.in_gang]
    if own and len(own) < len(staying):
        gang = [p.name for p in staying if p.in_gang]
        return f"{_named_alike(workload, gang, own[0])}, and create them again"
    for pod in staying[1:]:
        first = staying[0]
        if _ask(pod) != _ask(first):
            one, other = f"{first.name} {_asks(first)}", f"{pod.name} {_asks(pod)}"
            return (
                f"{_differ(workload, one, other)}, so it admits none of them: {_FIX}, and "
                "create them again"
            )
    return None


def refusal(pod: ManagedPod, members: Iterable[ManagedPod]) -> str | None:
    """Why the validating webhook refuses ``pod`` at creation: a member of its gang already
    known asks differently (None if none does)."""
    for member in _staying(members):
        if member.name != pod.name and _ask(member) != _ask(pod):
            one, other = f"this pod {_asks(pod)}", f"its member {member.name} {_asks(member)}"
            return f"{_differ(pod.workload, one, other)}: {_FIX}"
    return None
