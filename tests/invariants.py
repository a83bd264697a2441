"""Invariants of a Decision, checked from first principles: Snapshot + Decision → violations.

Every ``check_*`` function returns a list of human-readable violation strings (empty when
the invariant holds), naming the workload, node, GPU and numbers involved, so a failing
property test says exactly what broke. The checks recompute everything from the snapshot
and the decision — they never look at the allocator's internal state — and only borrow
``QuotaBook`` (the documented quota arithmetic) where the brief allows it and the catalog
for GPU facts. Amounts are integers in base units, like the scheduler's: milli-GPU for
GPU-model flavors, instances for ``mig-<profile>`` flavors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from scheduler.catalog import MILLI_PER_GPU, Catalog, GpuModel, MigProfile
from scheduler.mig import layout_problems
from scheduler.model import (
    Decision,
    Gpu,
    Node,
    PodPlacement,
    Snapshot,
    Taint,
    Workload,
    WorkloadDecision,
    flavor_of_mig,
)
from scheduler.quota import QuotaBook
from scheduler.reasons import QUOTA_REASONS, Outcome, Reason

__all__ = [
    "FreeCapacity",
    "Holder",
    "Option",
    "check_all",
    "check_capacity",
    "check_eviction_rights",
    "check_guarantees",
    "check_mig_layouts",
    "check_priority_order",
    "check_quotas",
    "check_work_conserving",
    "final_holders",
    "final_usage",
    "options_of",
    "quota_book",
]

ADMITTED = (Outcome.ADMIT, Outcome.PREEMPT)


# ------------------------------------------------------------------------- basics
def _gpu(snapshot: Snapshot, node_name: str, index: int) -> tuple[Node, Gpu] | None:
    for node in snapshot.nodes:
        if node.name == node_name:
            for gpu in node.gpus:
                if gpu.index == index:
                    return node, gpu
            return None
    return None


def _is_model_flavor(catalog: Catalog, flavor: str) -> bool:
    return not flavor.startswith("mig-") and catalog.get(flavor) is not None


def _slice_profile(gpu: Gpu, start: int) -> str | None:
    if gpu.mig is None:
        return None
    for s in gpu.mig:
        if s.start == start:
            return s.profile
    return None


def _tolerated(taints: Iterable[Taint], workload: Workload) -> bool:
    for taint in taints:
        if taint.effect == "PreferNoSchedule":
            continue
        if not any(t.tolerates(taint) for t in workload.tolerations):
            return False
    return True


def _requirement_holds(key: str, operator: str, values: Sequence[str], value: str | None) -> bool:
    """Kubernetes' node-selector operators, written out again here (not the model's)."""
    if operator in ("In", "NotIn"):
        return (value in values) == (operator == "In")
    if operator in ("Exists", "DoesNotExist"):
        return (value is not None) == (operator == "Exists")
    if value is None or not re.fullmatch(r"[+-]?[0-9]+", value):
        return False
    return int(value) > int(values[0]) if operator == "Gt" else int(value) < int(values[0])


def _affinity_allows(node: Node, workload: Workload) -> bool:
    if not workload.node_affinity:
        return True
    for term in workload.node_affinity:
        requirements = [(r, node.labels.get(r.key)) for r in term.match_expressions] + [
            (r, node.name) for r in term.match_fields
        ]
        if requirements and all(
            _requirement_holds(r.key, r.operator, r.values, value) for r, value in requirements
        ):
            return True
    return False


def _node_allowed(node: Node, workload: Workload) -> bool:
    selector_ok = all(node.labels.get(k) == v for k, v in workload.node_selector.items())
    return selector_ok and _affinity_allows(node, workload) and _tolerated(node.taints, workload)


@dataclass(frozen=True)
class Holder:
    """A workload holding capacity after the decision: still running, or admitted now."""

    workload: Workload
    flavor: str
    pods: tuple[PodPlacement, ...]
    new: bool


def _flavor_of_running(snapshot: Snapshot, catalog: Catalog, w: Workload) -> str:
    if w.flavor is not None:
        return w.flavor
    assert w.placement
    first = w.placement[0]
    found = _gpu(snapshot, first.node, first.gpus[0])
    assert found is not None, f"running workload {w.name} on unknown GPU"
    _, gpu = found
    if first.mig_start is not None:
        return flavor_of_mig(_slice_profile(gpu, first.mig_start) or "?")
    return catalog[gpu.model].name


def final_holders(snapshot: Snapshot, decision: Decision | None) -> list[Holder]:
    """Running workloads minus the evicted ones, plus the decision's admissions."""
    catalog = snapshot.catalog()
    evicted = {e.workload for e in decision.evictions} if decision is not None else set()
    by_name = {w.name: w for w in snapshot.workloads}
    holders = [
        Holder(w, _flavor_of_running(snapshot, catalog, w), w.placement or (), False)
        for w in snapshot.workloads
        if w.running and w.name not in evicted
    ]
    if decision is not None:
        for d in decision.workloads:
            if d.outcome in ADMITTED and d.workload in by_name:
                holders.append(Holder(by_name[d.workload], d.flavor or "?", d.placement, True))
    return holders


def amount_of(catalog: Catalog, workload: Workload, flavor: str) -> int:
    """Quota a holder of ``flavor`` is charged, in base units, from its demand."""
    if flavor.startswith("mig-"):
        return workload.pods
    demand = workload.demand
    if demand.gpu_milli is not None:
        return workload.pods * demand.gpu_milli
    per_pod = demand.gpus if demand.gpus is not None else 1
    return workload.pods * per_pod * MILLI_PER_GPU


def final_usage(snapshot: Snapshot, decision: Decision | None) -> dict[tuple[str, str], int]:
    """(queue, flavor) → usage in base units after the decision."""
    catalog = snapshot.catalog()
    usage: dict[tuple[str, str], int] = {}
    for h in final_holders(snapshot, decision):
        key = (h.workload.queue, h.flavor)
        usage[key] = usage.get(key, 0) + amount_of(catalog, h.workload, h.flavor)
    return usage


def initial_usage(snapshot: Snapshot) -> dict[tuple[str, str], int]:
    return final_usage(snapshot, None)


def _unit(catalog: Catalog, flavor: str) -> int:
    return MILLI_PER_GPU if _is_model_flavor(catalog, flavor) else 1


def _fmt(catalog: Catalog, flavor: str, amount: int) -> str:
    unit = _unit(catalog, flavor)
    return f"{amount / unit:g}" if unit != 1 else str(amount)


# ------------------------------------------------------------- property 1: capacity
def check_capacity(snapshot: Snapshot, decision: Decision) -> list[str]:
    """No GPU, fraction or MIG slice over-used; devices of the right kind; gangs whole."""
    catalog = snapshot.catalog()
    problems: list[str] = []
    pending = [w for w in snapshot.workloads if not w.running]
    running = {w.name for w in snapshot.workloads if w.running}
    decided = [d.workload for d in decision.workloads]
    if sorted(decided) != sorted(w.name for w in pending):
        problems.append(
            f"decisions {sorted(decided)} do not cover pending workloads "
            f"{sorted(w.name for w in pending)} exactly once"
        )
    by_name = {w.name: w for w in snapshot.workloads}

    # Evictions and victims.
    evicted = [e.workload for e in decision.evictions]
    if len(set(evicted)) != len(evicted):
        problems.append(f"a workload is evicted twice: {evicted}")
    for e in decision.evictions:
        if e.workload not in running:
            problems.append(f"eviction of {e.workload}, which is not a running workload")
    victims = [v for d in decision.workloads for v in d.victims]
    if sorted(victims) != sorted(evicted):
        problems.append(f"victims {sorted(victims)} differ from evictions {sorted(evicted)}")
    preempting = {d.workload for d in decision.workloads if d.outcome is Outcome.PREEMPT}
    for e in decision.evictions:
        if e.beneficiary not in preempting:
            problems.append(f"eviction of {e.workload} names {e.beneficiary}, not a preemptor")

    # Gangs: all pods or none.
    for d in decision.workloads:
        w = by_name.get(d.workload)
        if w is None:
            continue
        if d.outcome in ADMITTED and len(d.placement) != w.pods:
            problems.append(
                f"{d.workload} {d.outcome.name} with {len(d.placement)} pod placements; "
                f"workload has {w.pods} pods"
            )
        if d.outcome is Outcome.PENDING and (d.placement or d.victims):
            problems.append(f"{d.workload} PENDING but has placement {d.placement} / victims")
        if d.outcome is Outcome.PREEMPT and not d.victims:
            problems.append(f"{d.workload} PREEMPT without victims")

    whole_users: dict[tuple[str, int], list[str]] = {}
    milli_users: dict[tuple[str, int], list[tuple[str, int]]] = {}
    slice_users: dict[tuple[str, int, int], list[str]] = {}
    for h in final_holders(snapshot, decision):
        w = h.workload
        demand = w.demand
        for i, pod in enumerate(h.pods):
            where = f"{w.name} pod {i} on {pod.node} GPUs {list(pod.gpus)}"
            found_node = next((n for n in snapshot.nodes if n.name == pod.node), None)
            if found_node is None:
                problems.append(f"{where}: node does not exist")
                continue
            if not pod.gpus:
                problems.append(f"{where}: pod has no GPU")
                continue
            if len(set(pod.gpus)) != len(pod.gpus):
                problems.append(f"{where}: GPU listed twice")
            gpus: list[Gpu] = []
            for index in pod.gpus:
                found = _gpu(snapshot, pod.node, index)
                if found is None:
                    problems.append(f"{where}: GPU {index} does not exist")
                    continue
                gpus.append(found[1])
            if len(gpus) != len(pod.gpus):
                continue
            if h.new:
                if not _node_allowed(found_node, w):
                    problems.append(
                        f"{where}: node labels {found_node.labels} / taints "
                        f"{[t.key for t in found_node.taints]} exclude the workload "
                        f"(selector {w.node_selector}, affinity {w.node_affinity})"
                    )
                for gpu in gpus:
                    if not gpu.healthy:
                        problems.append(f"{where}: new pod on unhealthy GPU {gpu.index}")
                    model = catalog[gpu.model].name
                    if demand.models and model not in {catalog[m].name for m in demand.models}:
                        problems.append(f"{where}: model {model} not in {demand.models}")
            if pod.mig_start is not None:
                gpu = gpus[0]
                profile = _slice_profile(gpu, pod.mig_start)
                if len(gpus) != 1 or pod.milli is not None:
                    problems.append(f"{where}: a MIG pod takes exactly one slice")
                if profile is None:
                    problems.append(
                        f"{where}: no MIG slice at start {pod.mig_start} (layout {gpu.mig})"
                    )
                    continue
                if h.flavor != flavor_of_mig(profile):
                    problems.append(f"{where}: slice {profile} charged to flavor {h.flavor}")
                if h.new:
                    if demand.mig_profile is not None and demand.mig_profile != profile:
                        problems.append(f"{where}: wants {demand.mig_profile}, got {profile}")
                    if demand.gpus is not None or demand.gpu_milli is not None:
                        problems.append(f"{where}: non-MIG demand placed on slice {profile}")
                    mp = catalog[gpu.model].mig_profile(profile)
                    need = demand.gpu_memory_mib
                    if need is not None and (mp is None or mp.usable_memory_mib < need):
                        problems.append(f"{where}: slice {profile} too small for {need} MiB")
                if any(s.held for s in gpu.mig or () if s.start == pod.mig_start):
                    problems.append(f"{where}: slice {profile} is held outside the workloads")
                slice_users.setdefault((pod.node, gpu.index, pod.mig_start), []).append(w.name)
                continue
            for gpu in gpus:
                if gpu.held:
                    problems.append(f"{where}: GPU {gpu.index} is held outside the workloads")
            for gpu in gpus:
                if gpu.mig is not None:
                    problems.append(f"{where}: GPU {gpu.index} is MIG-partitioned, used whole")
            model = catalog[gpus[0].model].name
            if h.flavor != model:
                problems.append(f"{where}: {model} GPU charged to flavor {h.flavor}")
            if pod.milli is not None:
                gpu = gpus[0]
                if len(gpus) != 1:
                    problems.append(f"{where}: a fractional pod takes exactly one GPU")
                if not gpu.shared:
                    problems.append(f"{where}: fraction {pod.milli}m on unshared GPU {gpu.index}")
                if h.new and demand.gpu_milli != pod.milli:
                    problems.append(f"{where}: {pod.milli}m placed for demand {demand}")
                milli_users.setdefault((pod.node, gpu.index), []).append((w.name, pod.milli))
            else:
                if h.new:
                    want = demand.gpus if demand.gpus is not None else 1
                    if demand.gpu_milli is not None or demand.mig_profile is not None:
                        problems.append(f"{where}: whole GPUs placed for demand {demand}")
                    elif len(pod.gpus) != want:
                        problems.append(f"{where}: {len(pod.gpus)} GPUs for {want} per pod")
                    need = demand.gpu_memory_mib
                    if need is not None and catalog[gpus[0].model].usable_memory_mib < need:
                        problems.append(f"{where}: {model} too small for {need} MiB")
                for gpu in gpus:
                    whole_users.setdefault((pod.node, gpu.index), []).append(w.name)

    for (node_name, index), users in sorted(whole_users.items()):
        if len(users) > 1:
            problems.append(f"{node_name} GPU {index} used whole by {users}")
        if (node_name, index) in milli_users:
            problems.append(
                f"{node_name} GPU {index} used whole by {users} and fractionally by "
                f"{milli_users[(node_name, index)]}"
            )
    for (node_name, index), fractions in sorted(milli_users.items()):
        total = sum(m for _, m in fractions)
        if total > MILLI_PER_GPU:
            problems.append(f"{node_name} GPU {index} fractions sum to {total}m: {fractions}")
    for (node_name, index, start), users in sorted(slice_users.items()):
        if len(users) > 1:
            problems.append(f"{node_name} GPU {index} MIG slice @{start} used by {users}")
    problems += _host_overcommitted(snapshot, decision)
    return problems


def _host_overcommitted(snapshot: Snapshot, decision: Decision) -> list[str]:
    """Nodes given new pods whose pods then request more CPU or memory than they have."""
    requested: dict[str, tuple[int, int]] = {}
    touched: set[str] = set()
    for h in final_holders(snapshot, decision):
        for pod in h.pods:
            cpu, mem = requested.get(pod.node, (0, 0))
            requested[pod.node] = (cpu + h.workload.cpu_milli, mem + h.workload.memory_mib)
            if h.new:
                touched.add(pod.node)
    problems = []
    for node in snapshot.nodes:
        if node.name not in touched:
            continue
        cpu, mem = requested[node.name]
        if node.cpu_milli is not None and cpu > node.cpu_milli:
            problems.append(f"{node.name}: pods request {cpu}m CPU of its {node.cpu_milli}m")
        if node.memory_mib is not None and mem > node.memory_mib:
            problems.append(f"{node.name}: pods request {mem} MiB of its {node.memory_mib} MiB")
    return problems


# ----------------------------------------------------------- property 2: MIG layouts
def check_mig_layouts(snapshot: Snapshot, decision: Decision) -> list[str]:
    """Snapshot layouts and proposed repartitions are valid; plans target idle GPUs."""
    catalog = snapshot.catalog()
    problems: list[str] = []
    for node in snapshot.nodes:
        for gpu in node.gpus:
            if gpu.mig is not None:
                for p in layout_problems(catalog[gpu.model], gpu.mig):
                    problems.append(f"snapshot {node.name} GPU {gpu.index}: {p}")
    busy = {
        (pod.node, g) for h in final_holders(snapshot, decision) for pod in h.pods for g in pod.gpus
    }
    pending = {d.workload for d in decision.workloads if d.outcome is Outcome.PENDING}
    by_name = {w.name: w for w in snapshot.workloads}
    seen: set[tuple[str, int]] = set()
    for plan in decision.repartitions:
        where = f"repartition of {plan.node} GPU {plan.gpu}"
        found = _gpu(snapshot, plan.node, plan.gpu)
        if found is None:
            problems.append(f"{where}: GPU does not exist")
            continue
        node, gpu = found
        if (plan.node, plan.gpu) in seen:
            problems.append(f"{where}: planned twice")
        seen.add((plan.node, plan.gpu))
        model = catalog[gpu.model]
        for p in layout_problems(model, plan.proposed):
            problems.append(f"{where}: proposed layout invalid: {p}")
        if not gpu.healthy:
            problems.append(f"{where}: GPU is unhealthy")
        if (plan.node, plan.gpu) in busy:
            problems.append(f"{where}: GPU is in use after the decision")
        if gpu.held or any(s.held for s in gpu.mig or ()):
            problems.append(f"{where}: a pod outside the workloads holds it")
        if plan.current != gpu.mig:
            problems.append(f"{where}: current {plan.current} differs from snapshot {gpu.mig}")
        proposed = {s.profile for s in plan.proposed}
        for name in plan.admits:
            w = by_name.get(name)
            if name not in pending or w is None:
                problems.append(f"{where}: admits {name}, which is not pending")
                continue
            wanted = {o.flavor[4:] for o in options_of(w, catalog, _present(snapshot)) if o.mig}
            if not wanted & proposed:
                problems.append(f"{where}: admits {name} but proposes none of {sorted(wanted)}")
            if not _node_allowed(node, w):
                problems.append(
                    f"{where}: admits {name}, whose selector, affinity or "
                    "tolerations keep it off the node"
                )
    return problems


# --------------------------------------------------------------- property 3: quotas
def check_quotas(
    snapshot: Snapshot, usage: dict[tuple[str, str], int], what: str = "after the decision"
) -> list[str]:
    """Borrowing limits per queue, nominal for standalone queues, lending pool per cohort."""
    catalog = snapshot.catalog()
    problems: list[str] = []
    queues = {q.name: q for q in snapshot.queues}
    flavors = {f for _, f in usage} | {f for q in snapshot.queues for f in q.quota}
    for (qname, flavor), used in sorted(usage.items()):
        q = queues.get(qname)
        if q is None:
            problems.append(f"usage {used} of unknown queue {qname}")
            continue
        unit = _unit(catalog, flavor)
        quota = q.quota.get(flavor)
        nominal = (quota.nominal if quota else 0) * unit
        text = f"queue {qname} uses {_fmt(catalog, flavor, used)} {flavor} {what}"
        if q.cohort is None:
            if used > nominal:
                problems.append(f"{text}; standalone, nominal {nominal // unit}")
        elif (
            quota is not None
            and quota.borrowing_limit is not None
            and used > nominal + quota.borrowing_limit * unit
        ):
            problems.append(
                f"{text}; nominal {quota.nominal} + borrowing limit {quota.borrowing_limit}"
            )
    cohorts = sorted({q.cohort for q in snapshot.queues if q.cohort is not None})
    for cohort in cohorts:
        members = [q for q in snapshot.queues if q.cohort == cohort]
        for flavor in sorted(flavors):
            unit = _unit(catalog, flavor)
            drawn = 0
            lendable = 0
            parts = []
            for q in members:
                quota = q.quota.get(flavor)
                nominal = quota.nominal if quota else 0
                limit = None if quota is None else quota.lending_limit
                lend = nominal if limit is None else min(limit, nominal)
                used = usage.get((q.name, flavor), 0)
                drawn += max(0, used - (nominal - lend) * unit)
                lendable += lend * unit
                parts.append(f"{q.name}: {_fmt(catalog, flavor, used)}/{nominal} lend {lend}")
            if drawn > lendable:
                problems.append(
                    f"cohort {cohort} {flavor} {what}: drawn {_fmt(catalog, flavor, drawn)} > "
                    f"lendable {_fmt(catalog, flavor, lendable)} ({'; '.join(parts)})"
                )
    return problems


# ------------------------------------------------------ options and free capacity
@dataclass(frozen=True)
class Option:
    """One way to serve a demand: a flavor, the device kind and the models that serve it."""

    flavor: str
    models: frozenset[str]
    gpus: int = 0
    """Whole GPUs per pod (whole-GPU options)."""
    milli: int = 0
    """Milli-GPU per pod (fraction options)."""
    profile: str | None = None
    """MIG profile (MIG options)."""

    @property
    def mig(self) -> bool:
        return self.profile is not None

    def amount(self, pods: int) -> int:
        if self.profile is not None:
            return pods
        if self.milli:
            return pods * self.milli
        return pods * self.gpus * MILLI_PER_GPU


def _present(snapshot: Snapshot) -> list[GpuModel]:
    catalog = snapshot.catalog()
    seen: dict[str, GpuModel] = {}
    for node in snapshot.nodes:
        for gpu in node.gpus:
            m = catalog[gpu.model]
            seen.setdefault(m.name, m)
    return list(seen.values())


def _fitting_profiles(model: GpuModel, need_mib: int) -> list[MigProfile]:
    """Documented rule (demand.py): every profile whose usable memory holds the need; no
    ``+`` variants."""
    return [p for p in model.mig_profiles if "+" not in p.name and p.usable_memory_mib >= need_mib]


def options_of(workload: Workload, catalog: Catalog, present: Sequence[GpuModel]) -> list[Option]:
    """Every option the documented demand semantics allow (order does not matter here)."""
    d = workload.demand
    present_names = {m.name for m in present}
    # Models the cluster lacks are not options (demand.py); the rest keep their order.
    models = [catalog[m] for m in d.models] if d.models else list(present)
    models = [m for m in models if m.name in present_names]
    if d.gpus is not None:
        return [Option(m.name, frozenset({m.name}), gpus=d.gpus) for m in models]
    if d.gpu_milli is not None:
        return [Option(m.name, frozenset({m.name}), milli=d.gpu_milli) for m in models]
    if d.mig_profile is not None:
        serving = frozenset(m.name for m in models if m.mig_profile(d.mig_profile) is not None)
        if not serving:
            return []
        return [Option(flavor_of_mig(d.mig_profile), serving, profile=d.mig_profile)]
    assert d.gpu_memory_mib is not None
    out: dict[str, Option] = {}
    for m in models:
        for p in _fitting_profiles(m, d.gpu_memory_mib):
            flavor = flavor_of_mig(p.name)
            known = out.get(flavor)
            serving = (known.models if known else frozenset()) | {m.name}
            out[flavor] = Option(flavor, serving, profile=p.name)
        if m.usable_memory_mib >= d.gpu_memory_mib:
            out.setdefault(m.name, Option(m.name, frozenset({m.name}), gpus=1))
    return list(out.values())


@dataclass
class FreeCapacity:
    """Per device: what is free after the decision (healthy devices only)."""

    snapshot: Snapshot
    used_milli: dict[tuple[str, int], int] = field(default_factory=dict)
    """Non-MIG GPU → milli in use (1000 when used whole)."""
    used_slices: set[tuple[str, int, int]] = field(default_factory=set)
    used_host: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Node → (CPU milli, memory MiB) its pods request."""

    @classmethod
    def after(cls, snapshot: Snapshot, holders: Iterable[Holder]) -> FreeCapacity:
        free = cls(snapshot)
        for node in snapshot.nodes:  # what pods outside the workloads hold is never free
            for gpu in node.gpus:
                if gpu.held:
                    free.used_milli[(node.name, gpu.index)] = MILLI_PER_GPU
                for piece in gpu.mig or ():
                    if piece.held:
                        free.used_slices.add((node.name, gpu.index, piece.start))
        for h in holders:
            free.take(h.pods, 1, h.workload)
        return free

    def copy(self) -> FreeCapacity:
        return FreeCapacity(
            self.snapshot, dict(self.used_milli), set(self.used_slices), dict(self.used_host)
        )

    def take(
        self, pods: Iterable[PodPlacement], sign: int = 1, workload: Workload | None = None
    ) -> None:
        """Take (or with ``sign`` −1 give back) the devices of ``pods``, and the CPU and
        memory per pod of ``workload`` when given."""
        for pod in pods:
            if workload is not None:
                cpu, mem = self.used_host.get(pod.node, (0, 0))
                self.used_host[pod.node] = (
                    cpu + sign * workload.cpu_milli,
                    mem + sign * workload.memory_mib,
                )
            if pod.mig_start is not None:
                key3 = (pod.node, pod.gpus[0], pod.mig_start)
                if sign > 0:
                    self.used_slices.add(key3)
                else:
                    self.used_slices.discard(key3)
                continue
            for g in pod.gpus:
                key = (pod.node, g)
                self.used_milli[key] = self.used_milli.get(key, 0) + sign * (
                    pod.milli if pod.milli is not None else MILLI_PER_GPU
                )

    def release(self, pods: Iterable[PodPlacement], workload: Workload | None = None) -> None:
        self.take(pods, -1, workload)

    def pods_that_fit(self, workload: Workload, option: Option, catalog: Catalog) -> int:
        """How many pods of ``option`` fit now on nodes the workload may use (exact): the
        devices free on each node, capped by the pods its free CPU and memory can hold."""
        total = 0
        for node in self.snapshot.nodes:
            if not _node_allowed(node, workload):
                continue
            devices = self.devices_that_fit(node, option, catalog)
            cpu, mem = self.used_host.get(node.name, (0, 0))
            if node.cpu_milli is not None and workload.cpu_milli:
                devices = min(devices, max(0, node.cpu_milli - cpu) // workload.cpu_milli)
            if node.memory_mib is not None and workload.memory_mib:
                devices = min(devices, max(0, node.memory_mib - mem) // workload.memory_mib)
            total += devices
        return total

    def devices_that_fit(self, node: Node, option: Option, catalog: Catalog) -> int:
        """Pods of ``option`` the node's free devices could hold, ignoring CPU and memory."""
        total = 0
        free_whole = 0
        for gpu in node.gpus:
            if not gpu.healthy or catalog[gpu.model].name not in option.models:
                continue
            if option.profile is not None:
                if gpu.mig is None:
                    continue
                for s in gpu.mig:
                    if s.profile == option.profile and (
                        (node.name, gpu.index, s.start) not in self.used_slices
                    ):
                        total += 1
                continue
            if gpu.mig is not None:
                continue
            used = self.used_milli.get((node.name, gpu.index), 0)
            if option.milli:
                if gpu.shared:
                    total += (MILLI_PER_GPU - used) // option.milli
            elif used == 0:
                free_whole += 1
        if option.gpus:
            total += free_whole // option.gpus
        return total


def quota_book(snapshot: Snapshot, usage: dict[tuple[str, str], int]) -> QuotaBook:
    """A QuotaBook charged with ``usage`` (the documented quota arithmetic)."""
    catalog = snapshot.catalog()
    book = QuotaBook(snapshot.queues, frozenset(m.name for m in catalog.models))
    for (queue, flavor), amount in usage.items():
        if queue in book.accounts and amount:
            book.charge(queue, flavor, amount)
    return book


def fitting_option(
    workload: Workload,
    free: FreeCapacity,
    book: QuotaBook,
    *,
    flavor: str | None = None,
) -> Option | None:
    """An option of ``workload`` (of ``flavor`` when given) that passes quota and fits now."""
    snapshot = free.snapshot
    catalog = snapshot.catalog()
    for option in options_of(workload, catalog, _present(snapshot)):
        if flavor is not None and option.flavor != flavor:
            continue
        if workload.queue not in book.accounts:
            continue
        if not book.check(workload.queue, option.flavor, option.amount(workload.pods)).ok:
            continue
        if free.pods_that_fit(workload, option, catalog) >= workload.pods:
            return option
    return None


# ----------------------------------------------------- property 5: work conserving
def check_work_conserving(snapshot: Snapshot, decision: Decision) -> list[str]:
    """No PENDING workload fits in what is left free (quota and placement) after the decision."""
    holders = final_holders(snapshot, decision)
    free = FreeCapacity.after(snapshot, holders)
    book = quota_book(snapshot, final_usage(snapshot, decision))
    by_name = {w.name: w for w in snapshot.workloads}
    problems = []
    for d in decision.workloads:
        if d.outcome is not Outcome.PENDING:
            continue
        w = by_name[d.workload]
        option = fitting_option(w, free, book)
        if option is not None:
            problems.append(
                f"{w.name} ({w.pods}× {w.demand.model_dump(exclude_defaults=True)}, queue "
                f"{w.queue}) is PENDING ({d.reason.value}: {d.message}) but fits on "
                f"{option.flavor} in the capacity and quota left free"
            )
    return problems


_USAGE_IN_REASON = re.compile(
    r"^queue (?P<queue>\S+) at (?:nominal (?P<nominal_flavor>\S+) quota )?"
    r"(?P<used>[0-9.]+)/[0-9.]+(?: (?P<flavor>[^\s;(]+))?"
)
_ROOM_IN_REASON = re.compile(r"(?:room for|would take) (?P<room>\d+) such pod")


def check_reasons_current(snapshot: Snapshot, decision: Decision) -> list[str]:
    """A waiting workload's reason states the numbers the decision ends with, not those of
    some earlier moment of it: what its queue uses when refused by quota on every option
    (take-backs and evictions lower usage, later admissions raise it), and how many of its
    pods the free devices would take when refused for capacity."""
    catalog = snapshot.catalog()
    usage = final_usage(snapshot, decision)
    book = quota_book(snapshot, usage)
    free = FreeCapacity.after(snapshot, final_holders(snapshot, decision))
    by_name = {w.name: w for w in snapshot.workloads}
    problems = []
    for d in decision.workloads:
        if d.outcome is not Outcome.PENDING:
            continue
        w = by_name[d.workload]
        options = options_of(w, catalog, _present(snapshot))
        if d.reason is Reason.NO_CAPACITY:
            said_room = _ROOM_IN_REASON.search(d.message)
            if said_room is None:
                continue  # its place went to a higher priority: no number to be behind
            rooms = sorted({_device_room(free, w, o, catalog) for o in options})
            if int(said_room["room"]) not in rooms:
                problems.append(
                    f"{w.name} waits with '{d.message}', but the free devices take "
                    f"{' or '.join(map(str, rooms))} of its pods after the decision"
                )
            continue
        if d.reason not in QUOTA_REASONS:
            continue
        if w.queue not in book.accounts or any(
            book.check(w.queue, o.flavor, o.amount(w.pods)).ok for o in options
        ):
            continue  # an option passes quota: it waits on something else
        said = _USAGE_IN_REASON.match(d.message)
        if said is None:
            continue  # "has no quota for …": no number to be behind
        flavor = said["flavor"] or said["nominal_flavor"]
        used = usage.get((w.queue, flavor), 0) / _unit(catalog, flavor)
        if abs(float(said["used"]) - used) > 0.005:
            problems.append(
                f"{w.name} waits with '{d.message}', but queue {w.queue} uses "
                f"{used:g} {flavor} after the decision"
            )
    return problems


def _device_room(free: FreeCapacity, workload: Workload, option: Option, catalog: Catalog) -> int:
    """Pods of ``option`` the free devices of the workload's nodes take, CPU and memory aside."""
    return sum(
        free.devices_that_fit(node, option, catalog)
        for node in free.snapshot.nodes
        if _node_allowed(node, workload)
    )


# ---------------------------------------------------- property 6: priority in queue
def _fits_in_place(
    snapshot: Snapshot,
    holders: list[Holder],
    usage: dict[tuple[str, str], int],
    holder: Holder,
    waiting: Workload,
) -> bool:
    """Would ``waiting`` fit on the holder's flavor with the holder gone: its devices freed,
    its quota given back?"""
    w = holder.workload
    free = FreeCapacity.after(snapshot, holders)
    free.release(holder.pods, w)
    freed = dict(usage)
    key = (w.queue, holder.flavor)
    freed[key] = freed.get(key, 0) - amount_of(snapshot.catalog(), w, holder.flavor)
    book = quota_book(snapshot, freed)
    return fitting_option(waiting, free, book, flavor=holder.flavor) is not None


def check_priority_order(snapshot: Snapshot, decision: Decision) -> list[str]:
    """No newly admitted W while a same-queue higher-priority H waits that W's room would fit."""
    holders = final_holders(snapshot, decision)
    usage = final_usage(snapshot, decision)
    by_name = {w.name: w for w in snapshot.workloads}
    problems = []
    new = [h for h in holders if h.new]
    waiting = [by_name[d.workload] for d in decision.workloads if d.outcome is Outcome.PENDING]
    for h in new:
        w = h.workload
        for high in waiting:
            if high.queue != w.queue or high.priority <= w.priority:
                continue
            if _fits_in_place(snapshot, holders, usage, h, high):
                problems.append(
                    f"{w.name} (priority {w.priority}) admitted on {h.flavor} in queue {w.queue} "
                    f"while {high.name} (priority {high.priority}, {high.pods}× "
                    f"{high.demand.model_dump(exclude_defaults=True)}) waits and would fit there"
                )
    return problems


def check_older_first(snapshot: Snapshot, decision: Decision) -> list[str]:
    """No newly admitted W while an older workload of its queue and priority waits that W's
    room would fit (its place freed, its quota given back), whatever their shapes: rule 3,
    priority then age, comes before tidiness and fewest moves."""
    holders = final_holders(snapshot, decision)
    usage = final_usage(snapshot, decision)
    by_name = {w.name: w for w in snapshot.workloads}
    waiting = [by_name[d.workload] for d in decision.workloads if d.outcome is Outcome.PENDING]
    problems = []
    for h in holders:
        w = h.workload
        if not h.new:
            continue
        for old in waiting:
            if (old.queue, old.priority) != (w.queue, w.priority) or (old.created, old.name) >= (
                w.created,
                w.name,
            ):
                continue
            if _fits_in_place(snapshot, holders, usage, h, old):
                problems.append(
                    f"{w.name} (created {w.created}) admitted on {h.flavor} in queue {w.queue} "
                    f"while {old.name} (created {old.created}, {old.pods}× "
                    f"{old.demand.model_dump(exclude_defaults=True)}), older, waits and would "
                    "fit there"
                )
    return problems


def check_age_order(snapshot: Snapshot, decision: Decision) -> list[str]:
    """Of alike workloads of a queue (same priority, demand, pods, CPU, memory and node
    constraints), no newer one is newly admitted while an older one waits: it would fit in
    the newer's place exactly, and evict what the newer evicts."""
    by_name = {w.name: w for w in snapshot.workloads}

    def shape(w: Workload) -> tuple[object, ...]:
        return (
            w.queue,
            w.priority,
            w.demand,
            w.pods,
            w.cpu_milli,
            w.memory_mib,
            tuple(sorted(w.node_selector.items())),
            w.node_affinity,
            w.tolerations,
        )

    waiting: dict[tuple[object, ...], list[Workload]] = {}
    admitted: dict[tuple[object, ...], list[Workload]] = {}
    for d in decision.workloads:
        w = by_name[d.workload]
        if d.outcome is Outcome.PENDING:
            waiting.setdefault(shape(w), []).append(w)
        else:
            admitted.setdefault(shape(w), []).append(w)
    problems = []
    for key, newer in admitted.items():
        for w in newer:
            for old in waiting.get(key, ()):
                if (old.created, old.name) < (w.created, w.name):
                    problems.append(
                        f"{w.name} (created {w.created}) admitted in queue {w.queue} while "
                        f"{old.name} (created {old.created}), alike, waits"
                    )
    return problems


# --------------------------------------------------- property 10: eviction rights
def _models_held(snapshot: Snapshot, pods: Iterable[PodPlacement]) -> set[str]:
    catalog = snapshot.catalog()
    held = set()
    for pod in pods:
        for index in pod.gpus:
            found = _gpu(snapshot, pod.node, index)
            if found is not None:
                held.add(catalog[found[1].model].name)
    return held


def check_eviction_rights(snapshot: Snapshot, decision: Decision) -> list[str]:
    """Every eviction is one its beneficiary's queue policy allows (Kueue's meanings):

    - its own queue's workload: ``within_queue`` not Never, and a lower priority, or with
      LowerOrNewerEqualPriority an equal one created later;
    - a cohort mate's: ``reclaim_within_cohort`` not Never (LowerPriority: a lower priority
      only), the beneficiary's queue within its nominal quota of some flavor with one of its
      pending workloads (only a workload that fits there reclaims; the room it makes goes
      first to a higher priority of its queue, which may borrow), and the victim's queue
      borrowing the victim's flavor. The cycle judges those as it goes; from outside, the
      queues can only be bounded: the victim's must hold more than its nominal quota with
      every workload it has pending admitted on that flavor, or it never borrowed it;
    - it holds the beneficiary's flavor or GPUs of the models the beneficiary lands on.
    """
    catalog = snapshot.catalog()
    by_name = {w.name: w for w in snapshot.workloads}
    queues = {q.name: q for q in snapshot.queues}
    verdicts = {d.workload: d for d in decision.workloads}
    before = initial_usage(snapshot)
    evicted_usage: dict[tuple[str, str], int] = {}
    for e in decision.evictions:
        victim = by_name[e.workload]
        flavor = _flavor_of_running(snapshot, catalog, victim)
        key = (victim.queue, flavor)
        evicted_usage[key] = evicted_usage.get(key, 0) + amount_of(catalog, victim, flavor)
    problems = []
    for e in decision.evictions:
        victim, b = by_name[e.workload], by_name.get(e.beneficiary)
        verdict = verdicts.get(e.beneficiary)
        if b is None or verdict is None or verdict.flavor is None:
            continue  # check_capacity reports a beneficiary that is not a preemptor
        policy = queues[b.queue].preemption
        flavor = verdict.flavor
        victim_flavor = _flavor_of_running(snapshot, catalog, victim)
        text = f"{victim.name} (queue {victim.queue}, priority {victim.priority}) evicted for "
        text += f"{b.name} (queue {b.queue}, priority {b.priority})"
        if victim_flavor != flavor and not _models_held(
            snapshot, victim.placement or ()
        ) & _models_held(snapshot, verdict.placement):
            problems.append(f"{text}: holds {victim_flavor}, nothing {b.name} lands on")
        if victim.queue == b.queue:
            newer = (victim.created, victim.name) > (b.created, b.name)
            if policy.within_queue == "Never":
                problems.append(f"{text}: within_queue is Never")
            elif victim.priority > b.priority or (
                victim.priority == b.priority
                and not (policy.within_queue == "LowerOrNewerEqualPriority" and newer)
            ):
                problems.append(f"{text}: within_queue {policy.within_queue} does not allow it")
            continue
        cohort = queues[b.queue].cohort
        if cohort is None or queues[victim.queue].cohort != cohort:
            problems.append(f"{text}: not cohort mates")
            continue
        if policy.reclaim_within_cohort == "Never":
            problems.append(f"{text}: reclaim_within_cohort is Never")
        elif policy.reclaim_within_cohort == "LowerPriority" and victim.priority >= b.priority:
            problems.append(f"{text}: reclaim_within_cohort LowerPriority does not allow it")
        room = {
            f: quota.nominal * _unit(catalog, f)
            - before.get((b.queue, f), 0)
            + evicted_usage.get((b.queue, f), 0)
            for f, quota in queues[b.queue].quota.items()
        }
        if not any(
            amount_of(catalog, w, f) <= left
            for w in snapshot.workloads
            if not w.running and w.queue == b.queue
            for f, left in room.items()
        ):
            problems.append(
                f"{text}: reclaims, but no pending workload of queue {b.queue} fits within "
                "its unused nominal quota"
            )
        theirs = (victim.queue, victim_flavor)
        quota = queues[victim.queue].quota.get(victim_flavor)
        nominal = (quota.nominal if quota else 0) * _unit(catalog, victim_flavor)
        most = before.get(theirs, 0) + sum(
            amount_of(catalog, w, victim_flavor)
            for w in snapshot.workloads
            if not w.running and w.queue == victim.queue
        )
        if most <= nominal:
            problems.append(
                f"{text}: queue {victim.queue} never borrows {victim_flavor} "
                f"(at most {_fmt(catalog, victim_flavor, most)} of nominal "
                f"{nominal // _unit(catalog, victim_flavor)})"
            )
    return problems


# -------------------------------------------------------- property 4: guarantees
def check_guarantees(snapshot: Snapshot, decision: Decision) -> list[str]:
    """A workload that fits in its queue's unused nominal quota, and physically in free
    capacity plus what borrowers of its cohort hold, is admitted.

    Only for single-option whole-GPU demands (one model, no selector or affinity), queues with
    reclaim "Any" and within-queue "LowerPriority". Capacity is counted before the decision.
    A borrowing queue's workloads count as reclaimable only when *every* one of them may be
    evicted whatever the eviction order: Kueue stops evicting a queue's workloads once it is
    back within nominal, so a queue borrowing 1 GPU over nominal 4 through five 1-GPU
    workloads gives back one GPU, not five. Evicting all of them is guaranteed when each
    is larger than the queue's nominal (a queue with nominal 0 is the common case).

    Exceptions (the guarantee is shared): another pending workload of the same queue with
    higher or equal priority admitted on the same flavor, or another queue's workload
    admitted on that flavor within its own nominal quota (reason Admitted, or by preemption).
    """
    catalog = snapshot.catalog()
    problems: list[str] = []
    queues = {q.name: q for q in snapshot.queues}
    usage0 = initial_usage(snapshot)
    free0 = FreeCapacity.after(snapshot, final_holders(snapshot, None))
    decisions = decision.by_workload()
    running = [w for w in snapshot.workloads if w.running]
    for w in snapshot.workloads:
        d = decisions.get(w.name)
        if w.running or d is None or d.outcome in ADMITTED:
            continue
        demand = w.demand
        if demand.gpus is None or len(demand.models) != 1 or w.node_selector or w.node_affinity:
            continue
        q = queues[w.queue]
        if q.preemption.reclaim_within_cohort != "Any" or q.preemption.within_queue != (
            "LowerPriority"
        ):
            continue
        model = catalog[demand.models[0]].name
        quota = q.quota.get(model)
        if quota is None:
            continue
        nominal = quota.nominal * MILLI_PER_GPU
        used = usage0.get((q.name, model), 0)
        need = w.pods * demand.gpus * MILLI_PER_GPU
        if not (used < nominal and used + need <= nominal):
            continue
        if _shared_guarantee(snapshot, decision, w, model):
            continue
        free = free0.copy()
        reclaimable = []
        if q.cohort is not None:
            for other in snapshot.queues:
                if other.name == q.name or other.cohort != q.cohort:
                    continue
                theirs = [r for r in running if r.queue == other.name and r.flavor == model]
                o_quota = other.quota.get(model)
                o_nominal = (o_quota.nominal if o_quota else 0) * MILLI_PER_GPU
                o_used = usage0.get((other.name, model), 0)
                if not theirs or o_used <= o_nominal:
                    continue
                amounts = [amount_of(catalog, r, model) for r in theirs]
                if min(amounts) > o_nominal:
                    reclaimable.extend(theirs)
        for r in reclaimable:
            free.release(r.placement or (), r)
        option = Option(model, frozenset({model}), gpus=demand.gpus)
        if free.pods_that_fit(w, option, catalog) >= w.pods:
            problems.append(
                f"{w.name} ({w.pods}×{demand.gpus} {model}, priority {w.priority}) in queue "
                f"{q.name} at {used // MILLI_PER_GPU}/{quota.nominal} is {d.outcome.name} "
                f"({d.reason.value}: {d.message}) though it fits in free capacity plus "
                f"borrowed capacity {[r.name for r in reclaimable]}"
            )
    return problems


def _shared_guarantee(snapshot: Snapshot, decision: Decision, w: Workload, model: str) -> bool:
    by_name = {x.name: x for x in snapshot.workloads}
    for d in decision.workloads:
        if d.workload == w.name or d.outcome not in ADMITTED or d.flavor != model:
            continue
        other = by_name[d.workload]
        if other.queue == w.queue and other.priority >= w.priority:
            return True
        if other.queue != w.queue and (d.outcome is Outcome.PREEMPT or d.reason is Reason.ADMITTED):
            return True
    return False


# ------------------------------------------------------------------------ together
def check_all(snapshot: Snapshot, decision: Decision) -> list[str]:
    """Properties 1–3: capacity, MIG layouts, quotas."""
    return [
        *check_capacity(snapshot, decision),
        *check_mig_layouts(snapshot, decision),
        *check_quotas(snapshot, final_usage(snapshot, decision)),
    ]


def incremental_decision(decisions: Sequence[WorkloadDecision]) -> Decision:
    """Wrap incremental answers in a Decision so the same checks apply."""
    from scheduler.model import SolverStats

    return Decision(
        workloads=tuple(decisions),
        stats=SolverStats(
            path="incremental", status="", objective=0.0, greedy_objective=0.0, wall_ms=0.0
        ),
    )
