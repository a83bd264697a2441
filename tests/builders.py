"""Small builders for hand-written allocator cases: nodes, queues and workloads in one line.

    snap = snapshot(
        nodes=[node("h0", "H100-80GB", 8), node("h1", "H100-80GB", 8)],
        queues=[queue("team-a", cohort="org").quota("H100-80GB", 8)],
        workloads=[workload("a").gpus(8).queue("team-a"), workload("b").gpus(2).queue("team-a")],
    )

Workload and queue builders are fluent (every method returns the builder) and turn into
the pydantic models when a snapshot is built, so cases read like the sentence they test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler.model import (
    Demand,
    Gpu,
    MigSlice,
    Node,
    NodeSelectorTerm,
    PodPlacement,
    PreemptionPolicy,
    Queue,
    Quota,
    Snapshot,
    Taint,
    Toleration,
    Workload,
)

__all__ = [
    "QueueBuilder",
    "WorkloadBuilder",
    "mig",
    "node",
    "queue",
    "snapshot",
    "workload",
]


def mig(*slices: str) -> tuple[MigSlice, ...]:
    """``mig("3g.40gb@0", "2g.20gb@4")`` → the MIG layout as MigSlice tuples."""
    out = []
    for text in slices:
        profile, _, start = text.partition("@")
        out.append(MigSlice(profile=profile, start=int(start)))
    return tuple(out)


def node(
    name: str,
    model: str,
    count: int,
    *,
    labels: dict[str, str] | None = None,
    taints: Sequence[Taint | str] = (),
    unhealthy: Iterable[int] = (),
    shared: Iterable[int] | bool = False,
    mig_layouts: dict[int, tuple[MigSlice, ...]] | None = None,
    cpu_milli: int | None = None,
    memory_mib: int | None = None,
) -> Node:
    """A node with ``count`` GPUs of one model, indexed 0…count−1.

    ``taints`` may be plain keys (``"gpu"`` → ``gpu=:NoSchedule``); ``shared`` is True for
    all GPUs or the indices of the time-sliced ones; ``mig_layouts`` maps GPU index → layout.
    """
    bad = set(unhealthy)
    shared_set = set(range(count)) if shared is True else set() if shared is False else set(shared)
    layouts = mig_layouts or {}
    gpus = tuple(
        Gpu(
            index=i,
            model=model,
            healthy=i not in bad,
            health_reason="XID 79" if i in bad else "",
            shared=i in shared_set,
            mig=layouts.get(i),
        )
        for i in range(count)
    )
    return Node(
        name=name,
        labels=labels or {},
        taints=tuple(t if isinstance(t, Taint) else Taint(key=t) for t in taints),
        gpus=gpus,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )


class QueueBuilder:
    def __init__(self, name: str, cohort: str | None = None, weight: float = 1.0) -> None:
        self._name = name
        self._cohort = cohort
        self._weight = weight
        self._quota: dict[str, Quota] = {}
        self._preemption = PreemptionPolicy()

    def quota(
        self,
        flavor: str,
        nominal: int,
        *,
        borrowing_limit: int | None = None,
        lending_limit: int | None = None,
    ) -> QueueBuilder:
        self._quota[flavor] = Quota(
            nominal=nominal, borrowing_limit=borrowing_limit, lending_limit=lending_limit
        )
        return self

    def weight(self, weight: float) -> QueueBuilder:
        self._weight = weight
        return self

    def cohort(self, cohort: str | None) -> QueueBuilder:
        self._cohort = cohort
        return self

    def preemption(
        self,
        *,
        within_queue: str = "LowerPriority",
        reclaim_within_cohort: str = "Any",
        idle_borrowed_first: bool = False,
    ) -> QueueBuilder:
        self._preemption = PreemptionPolicy.model_validate(
            {
                "within_queue": within_queue,
                "reclaim_within_cohort": reclaim_within_cohort,
                "idle_borrowed_first": idle_borrowed_first,
            }
        )
        return self

    def build(self) -> Queue:
        return Queue(
            name=self._name,
            cohort=self._cohort,
            weight=self._weight,
            quota=dict(self._quota),
            preemption=self._preemption,
        )


def queue(name: str, cohort: str | None = None, weight: float = 1.0) -> QueueBuilder:
    return QueueBuilder(name, cohort, weight)


class WorkloadBuilder:
    def __init__(self, name: str) -> None:
        self._fields: dict[str, object] = {"name": name, "queue": "default"}
        self._demand: dict[str, object] = {}
        self._placement: list[PodPlacement] = []
        self._tolerations: list[Toleration] = []

    # -- demand
    def gpus(self, count: int, *models: str) -> WorkloadBuilder:
        self._demand = {"gpus": count, "models": models}
        return self

    def mig(self, profile: str, *models: str) -> WorkloadBuilder:
        self._demand = {"mig_profile": profile, "models": models}
        return self

    def memory(self, mib: int, *models: str) -> WorkloadBuilder:
        self._demand = {"gpu_memory_mib": mib, "models": models}
        return self

    def milli(self, milli: int, *models: str) -> WorkloadBuilder:
        self._demand = {"gpu_milli": milli, "models": models}
        return self

    # -- metadata
    def queue(self, name: str) -> WorkloadBuilder:
        self._fields["queue"] = name
        return self

    def priority(self, priority: int) -> WorkloadBuilder:
        self._fields["priority"] = priority
        return self

    def created(self, created: int) -> WorkloadBuilder:
        self._fields["created"] = created
        return self

    def pods(self, pods: int) -> WorkloadBuilder:
        self._fields["pods"] = pods
        return self

    def throughput(self, **rates: float) -> WorkloadBuilder:
        """Keyword names use ``_`` for ``-``: ``throughput(H100_80GB=3, A100_80GB=1)``."""
        self._fields["throughput"] = {k.replace("_", "-"): v for k, v in rates.items()}
        return self

    def selector(self, **labels: str) -> WorkloadBuilder:
        self._fields["node_selector"] = labels
        return self

    def affinity(self, *terms: dict[str, object]) -> WorkloadBuilder:
        """Required node affinity, terms as a snapshot file writes them (ORed)."""
        self._fields["node_affinity"] = tuple(NodeSelectorTerm.model_validate(t) for t in terms)
        return self

    def resources(self, cpu_milli: int, memory_mib: int) -> WorkloadBuilder:
        """CPU and memory per pod, besides its GPUs."""
        self._fields["cpu_milli"] = cpu_milli
        self._fields["memory_mib"] = memory_mib
        return self

    def tolerates(self, key: str, value: str = "", operator: str = "Equal") -> WorkloadBuilder:
        self._tolerations.append(
            Toleration.model_validate({"key": key, "value": value, "operator": operator})
        )
        return self

    # -- running workloads
    def running_on(
        self,
        node_name: str,
        *gpus: int,
        mig_start: int | None = None,
        milli: int | None = None,
    ) -> WorkloadBuilder:
        """One running pod on ``node_name`` (call once per pod); flavor defaults from demand."""
        self._placement.append(
            PodPlacement(node=node_name, gpus=tuple(gpus), mig_start=mig_start, milli=milli)
        )
        return self

    def flavor(self, flavor: str) -> WorkloadBuilder:
        self._fields["flavor"] = flavor
        return self

    def started(self, started: int) -> WorkloadBuilder:
        self._fields["started"] = started
        return self

    def idle(self, idle: bool = True) -> WorkloadBuilder:
        """Mark a running workload idle, as GPU metrics would (``scheduler.telemetry``)."""
        self._fields["idle"] = idle
        return self

    def build(self) -> Workload:
        fields = dict(self._fields)
        if self._tolerations:
            fields["tolerations"] = tuple(self._tolerations)
        if self._placement:
            fields["placement"] = tuple(self._placement)
            fields.setdefault("started", 0)
            fields.setdefault("pods", len(self._placement))
        return Workload.model_validate({**fields, "demand": Demand.model_validate(self._demand)})


def workload(name: str) -> WorkloadBuilder:
    return WorkloadBuilder(name)


def snapshot(
    *,
    nodes: Iterable[Node] = (),
    queues: Iterable[Queue | QueueBuilder] = (),
    workloads: Iterable[Workload | WorkloadBuilder] = (),
    now: int = 1000,
) -> Snapshot:
    return Snapshot(
        nodes=tuple(nodes),
        queues=tuple(q.build() if isinstance(q, QueueBuilder) else q for q in queues),
        workloads=tuple(w.build() if isinstance(w, WorkloadBuilder) else w for w in workloads),
        now=now,
    )
