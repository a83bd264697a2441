"""Turning a cycle's verdicts into a Decision: positions in each queue, placements by node
and GPU index, evictions, and MIG repartition proposals for what still waits."""

from __future__ import annotations

from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import Compiled
from scheduler.demand import Kind
from scheduler.greedy import CycleResult
from scheduler.mig import IdleGpu, MigDemand, plan_repartitions
from scheduler.model import (
    Decision,
    Eviction,
    MigSlice,
    PodPlacement,
    RepartitionPlan,
    SolverStats,
    Workload,
    WorkloadDecision,
    built,
)
from scheduler.reasons import Outcome, Reason
from scheduler.state import ClusterState

__all__ = ["to_decision"]


def to_decision(compiled: Compiled, result: CycleResult, stats: SolverStats) -> Decision:
    """Step 5: rank what waits and turn the cycle's outcomes into a Decision."""
    state = compiled.state
    decisions: list[WorkloadDecision] = []
    queue, waiting = "", 0
    # In queue order, a pending workload's position is the count of pending ones so far.
    for entry in compiled.in_queue_order:
        o = result.outcomes[entry.workload.name]
        if entry.workload.queue != queue:
            queue, waiting = entry.workload.queue, 0
        position = None
        if o.outcome is Outcome.PENDING:
            waiting += 1
            position = waiting
        placement: tuple[PodPlacement, ...] = ()
        if o.allocation is not None:
            placement = state.placement_of(o.allocation)
        decisions.append(
            # Built from values the cycle produced and checked: skip re-validation, which
            # costs more than the decision itself at thousands of workloads.
            built(
                WorkloadDecision,
                {
                    "workload": entry.workload.name,
                    "queue": entry.workload.queue,
                    "outcome": o.outcome,
                    "reason": o.reason,
                    "message": o.text,
                    "flavor": o.option.flavor if o.option is not None else None,
                    "placement": placement,
                    "position": position,
                    "victims": tuple([v.workload.name for v in o.victims]) if o.victims else (),
                },
            )
        )
    evictions = tuple(
        Eviction(
            workload=victim.workload.name,
            queue=victim.workload.queue,
            beneficiary=beneficiary,
            reason=reason,
            message=message,
        )
        for victim, beneficiary, reason, message in result.evictions
    )
    return Decision(
        workloads=tuple(decisions),
        evictions=evictions,
        repartitions=tuple(_repartitions(compiled, result)),
        stats=stats,
        metrics=compiled.snapshot.metrics,
    )


def _repartitions(compiled: Compiled, result: CycleResult) -> list[RepartitionPlan]:
    """Proposals for idle MIG-capable GPUs that would admit MIG work left waiting."""
    # Waiting for want of slices: none free (NoCapacity), or none in today's layouts
    # (NeverFits; its quota passed, as quota is checked before placement). Sorted once
    # chosen: a few of the thousands waiting.
    waiting = sorted(
        (
            v
            for v in result.outcomes.values()
            if v.outcome is Outcome.PENDING
            and v.reason in (Reason.NO_CAPACITY, Reason.NEVER_FITS)
            and v.entry.options
            and v.entry.options[0].kind is Kind.MIG
            and v.entry.options[0].profile is not None
        ),
        key=lambda v: (*v.entry.order, v.entry.workload.queue),
    )
    state, catalog = compiled.state, compiled.catalog
    demands = []
    hosts_of_alike: dict[tuple[object, ...], frozenset[tuple[str, str]]] = {}
    """Alike waiting workloads (same pools, node filter, CPU and memory) share one answer."""
    for v in waiting:
        option, w = v.entry.options[0], v.entry.workload
        assert option.profile is not None  # chosen above
        pools, nodes = state.eligible_pools(w, option), state.node_filter(w)
        alike = (pools, nodes, w.cpu_milli, w.memory_mib)
        hosts = hosts_of_alike.get(alike)
        if hosts is None:
            hosts = hosts_of_alike[alike] = _mig_hosts(state, w, pools, nodes)
        if hosts:
            demands.append(MigDemand(w.name, option.profile, w.pods, hosts))
    if not demands:
        return []
    capable = {name: catalog[name] for name in set(state.gpu_model) if catalog[name].mig_capable}
    idle = []
    layouts: dict[tuple[tuple[int, str], ...], tuple[MigSlice, ...]] = {}
    """Idle GPUs share a few layouts; their (immutable) slices are built once per layout."""
    for g, model_name in enumerate(state.gpu_model):
        model = capable.get(model_name)
        if model is None or not state.gpu_healthy[g]:
            continue
        layout = state.gpu_mig[g]
        if layout is None:
            if state.gpu_free_milli[g] != MILLI_PER_GPU:
                continue
            current = None
        elif any(used for _, used in layout.values()):
            continue
        else:
            shape = tuple(sorted((start, str(profile)) for start, (profile, _) in layout.items()))
            current = layouts.get(shape)
            if current is None:
                # The state's layouts were validated against the catalog when compiled.
                current = layouts[shape] = tuple(
                    built(MigSlice, {"profile": profile, "start": start})
                    for start, profile in shape
                )
        idle.append(
            IdleGpu(state.node_names[state.gpu_node[g]], state.gpu_index[g], model, current)
        )
    return plan_repartitions(idle, demands, catalog)


def _mig_hosts(
    state: ClusterState, w: Workload, pools: tuple[int, ...], nodes: frozenset[int] | None
) -> frozenset[tuple[str, str]]:
    """(node, model) pairs a pod of ``w`` could land on once a slice is made for it: the
    nodes of its eligible ``pools`` (selector, tolerations, the option's models) that its
    node filter (``nodes``: selector labels the pools do not key on, affinity) allows, with
    the CPU and memory for one pod left."""
    return frozenset(
        (state.node_names[n], state.pools[p].model)
        for p in pools
        for n in state.pools[p].nodes
        if (nodes is None or n in nodes)
        and state.free_cpu[n] >= w.cpu_milli
        and state.free_mem[n] >= w.memory_mib
    )
