"""Benchmark instances for ``decide_bench.py``: deterministic snapshots built from a seed.

Every builder takes a seed and draws from its own ``random.Random(seed)``, so the same
arguments always give the same Snapshot (node names, quotas, workloads, placements).
Building is not timed by the benchmark.

- ``default_instance``    (a) the embedded default cluster with 1,000 demo workloads pending.
- ``synthetic_instance``  (b)/(c) a large mixed cluster: H100/A100/L40S/T4 nodes of 8 GPUs,
  20% of the GPUs in MIG layouts, time-sliced T4/L40S, 100 queues in 10 cohorts whose
  nominal quotas sum to the capacity of every flavor, ~40% of the capacity already running
  (admitted by greedy ``decide`` on the empty cluster), and N workloads pending.
- ``openb_instance``      (d) the Alibaba openb cluster with its whole default pod list pending.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from scheduler.allocator import decide
from scheduler.catalog import MILLI_PER_GPU, default_catalog
from scheduler.mig import layout_problems
from scheduler.model import (
    Demand,
    Gpu,
    MigSlice,
    Node,
    PreemptionPolicy,
    Queue,
    Quota,
    Snapshot,
    Taint,
    Toleration,
    Workload,
    WorkloadDecision,
    flavor_of_mig,
)
from scheduler.reasons import Outcome

__all__ = [
    "Instance",
    "SyntheticCluster",
    "default_instance",
    "openb_instance",
    "synthetic_cluster",
    "synthetic_instance",
]

T = TypeVar("T")

NOW = 1_750_000_000
"""The snapshots' clock (seconds)."""

PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
SHARING_LABEL = "nvidia.com/gpu.sharing-strategy"
ZONES = ("zone-a", "zone-b", "zone-c")

GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")

MODEL_MIX: tuple[tuple[str, float], ...] = (
    ("H100-80GB", 0.35),
    ("A100-80GB", 0.30),
    ("L40S", 0.20),
    ("T4", 0.15),
)
"""Share of the nodes (all 8-GPU) per model."""

NODE_SHAPE: dict[str, tuple[int, int]] = {
    "H100-80GB": (192_000, 2_048 * 1024),
    "A100-80GB": (128_000, 1_024 * 1024),
    "L40S": (128_000, 768 * 1024),
    "T4": (96_000, 384 * 1024),
}
"""Allocatable (milli-CPU, MiB) per node."""

MIG_SHARE = 0.20
"""Share of all GPUs in MIG layouts (whole nodes, on the MIG-capable H100/A100 nodes)."""

MIG_LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "all-balanced": (("1g.10gb", 0), ("1g.10gb", 1), ("2g.20gb", 2), ("3g.40gb", 4)),
    "all-1g.10gb": tuple(("1g.10gb", s) for s in range(7)),
    "all-2g.20gb": (("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4)),
    "all-3g.40gb": (("3g.40gb", 0), ("3g.40gb", 4)),
}
"""mig-parted style per-node configurations (profile, start) valid on H100-80GB and A100-80GB."""

MIG_LAYOUT_MIX: tuple[tuple[str, float], ...] = (
    ("all-balanced", 0.45),
    ("all-1g.10gb", 0.25),
    ("all-2g.20gb", 0.10),
    ("all-3g.40gb", 0.20),
)

SHARED_SHARE: dict[str, float] = {"T4": 0.60, "L40S": 0.30}
"""Share of a model's nodes whose GPUs are time-sliced (host milli-GPU pods)."""

PRIORITIES: tuple[tuple[int, float], ...] = ((0, 0.50), (100, 0.35), (1000, 0.15))

RUNNING_SHARE = 0.40
"""Share of the capacity (GPU-equivalents) already running in the synthetic clusters."""


@dataclass(slots=True)
class Instance:
    key: str
    title: str
    snapshot: Snapshot
    facts: dict[str, object] = field(default_factory=dict)
    """Shape of the instance, printed above its results."""
    pending: tuple[Workload, ...] = ()


# ------------------------------------------------------------------------------ helpers


def _pick(rng: random.Random, table: Sequence[tuple[T, float]]) -> T:
    values = [v for v, _ in table]
    weights = [w for _, w in table]
    return rng.choices(values, weights)[0]


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, integers summing exactly to it."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    parts = [int(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (parts[i] - raw[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _mig_compute(profile: str) -> int:
    return int(profile.split("g.", 1)[0])


def gpu_equivalents(workload: Workload) -> float:
    """GPU-equivalents a running workload holds (MIG: compute slices ÷ 7)."""
    assert workload.placement is not None
    total = 0.0
    for pod in workload.placement:
        if pod.mig_start is not None:
            assert workload.flavor is not None
            total += _mig_compute(workload.flavor.removeprefix("mig-")) / 7
        elif pod.milli is not None:
            total += pod.milli / MILLI_PER_GPU
        else:
            total += len(pod.gpus)
    return total


# ----------------------------------------------------------------------------- cluster


@dataclass(slots=True)
class SyntheticCluster:
    nodes: tuple[Node, ...]
    queues: tuple[Queue, ...]
    capacity: dict[str, int]
    """Per flavor: whole GPUs (model flavors) or MIG instances (``mig-…``)."""
    gpu_eq: float
    """Total capacity in GPU-equivalents (a MIG GPU counts its configured compute ÷ 7)."""
    mig_gpus: int
    shared_gpus: int


def _nodes(rng: random.Random, node_count: int) -> tuple[list[Node], dict[str, int], int, int]:
    catalog = default_catalog()
    counts = _split(node_count, [share for _, share in MODEL_MIX])
    mig_capable = [m for m, _ in MODEL_MIX if catalog[m].mig_capable]
    mig_nodes_total = round(node_count * MIG_SHARE)
    node_count_of = {m: k for (m, _), k in zip(MODEL_MIX, counts, strict=True)}
    mig_split = _split(mig_nodes_total, [node_count_of[m] for m in mig_capable])
    mig_counts = dict(zip(mig_capable, mig_split, strict=True))
    layouts: dict[str, tuple[MigSlice, ...]] = {}
    for name, slices in MIG_LAYOUTS.items():
        layout = tuple(MigSlice(profile=p, start=s) for p, s in slices)
        for model in mig_capable:
            problems = layout_problems(catalog[model], layout)
            assert not problems, (name, model, problems)
        layouts[name] = layout
    nodes: list[Node] = []
    capacity: dict[str, int] = {}
    mig_gpus = shared_gpus = 0
    for (model, _), count in zip(MODEL_MIX, counts, strict=True):
        product = catalog[model].products[0]
        cpu, memory = NODE_SHAPE[model]
        n_mig = mig_counts.get(model, 0)
        n_shared = round((count - n_mig) * SHARED_SHARE.get(model, 0.0))
        layout_names = [
            name
            for (name, _), k in zip(
                MIG_LAYOUT_MIX, _split(n_mig, [w for _, w in MIG_LAYOUT_MIX]), strict=True
            )
            for _ in range(k)
        ]
        kinds: list[str] = layout_names + ["shared"] * n_shared
        kinds += ["whole"] * (count - len(kinds))
        rng.shuffle(kinds)
        prefix = model.split("-")[0].lower()
        for i, kind in enumerate(kinds):
            name = f"{prefix}-{i:04d}"
            labels = {
                PRODUCT_LABEL: product,
                "nvidia.com/gpu.count": "8",
                "nvidia.com/gpu.present": "true",
                HOSTNAME_LABEL: name,
                ZONE_LABEL: ZONES[i % len(ZONES)],
            }
            if kind in layouts:
                labels[MIG_CONFIG_LABEL] = kind
                gpus = tuple(Gpu(index=g, model=model, mig=layouts[kind]) for g in range(8))
                mig_gpus += 8
                for s in layouts[kind]:
                    flavor = flavor_of_mig(s.profile)
                    capacity[flavor] = capacity.get(flavor, 0) + 8
            else:
                shared = kind == "shared"
                labels[SHARING_LABEL] = "time-slicing" if shared else "none"
                gpus = tuple(Gpu(index=g, model=model, shared=shared) for g in range(8))
                shared_gpus += 8 if shared else 0
                capacity[model] = capacity.get(model, 0) + 8
            nodes.append(
                Node(
                    name=name,
                    labels=labels,
                    taints=(GPU_TAINT,),
                    gpus=gpus,
                    cpu_milli=cpu,
                    memory_mib=memory,
                )
            )
    return nodes, capacity, mig_gpus, shared_gpus


def _queues(rng: random.Random, capacity: dict[str, int], queues: int, cohorts: int) -> list[Queue]:
    """Queues in cohorts; every flavor's capacity is split over its holders exactly."""
    names = [f"team-{q:03d}" for q in range(queues)]
    cohort_of = {name: f"cohort-{q % cohorts:02d}" for q, name in enumerate(names)}
    quotas: dict[str, dict[str, Quota]] = {name: {} for name in names}
    for flavor in sorted(capacity):
        p_hold = 0.4 if flavor.startswith("mig-") else 0.6
        holders = [n for n in names if rng.random() < p_hold]
        for c in range(cohorts):  # every cohort holds every flavor, so every queue can use it
            members = [n for n in names if cohort_of[n] == f"cohort-{c:02d}"]
            if not any(n in holders for n in members):
                holders.append(rng.choice(members))
        holders.sort()
        parts = _split(capacity[flavor], [rng.uniform(0.2, 1.0) for _ in holders])
        for name, nominal in zip(holders, parts, strict=True):
            borrowing = nominal if rng.random() < 0.3 else None
            lending = nominal // 2 if rng.random() < 0.2 else None
            quotas[name][flavor] = Quota(
                nominal=nominal, borrowing_limit=borrowing, lending_limit=lending
            )
    result = []
    for name in names:
        r = rng.random()
        if r < 0.1:
            policy = PreemptionPolicy(within_queue="Never")
        elif r < 0.2:
            policy = PreemptionPolicy(reclaim_within_cohort="LowerPriority")
        else:
            policy = PreemptionPolicy()
        result.append(
            Queue(
                name=name,
                cohort=cohort_of[name],
                weight=float(rng.choice((1, 1, 1, 2, 2, 3))),
                quota=quotas[name],
                namespaces=(name,),
                preemption=policy,
            )
        )
    return result


def synthetic_cluster(
    seed: int, nodes: int, queues: int = 100, cohorts: int = 10
) -> SyntheticCluster:
    rng = random.Random(seed)
    node_list, capacity, mig_gpus, shared_gpus = _nodes(rng, nodes)
    queue_list = _queues(rng, capacity, queues, cohorts)
    gpu_eq = sum(v for k, v in capacity.items() if not k.startswith("mig-")) + sum(
        v * _mig_compute(k.removeprefix("mig-")) / 7
        for k, v in capacity.items()
        if k.startswith("mig-")
    )
    return SyntheticCluster(
        tuple(node_list), tuple(queue_list), capacity, gpu_eq, mig_gpus, shared_gpus
    )


# --------------------------------------------------------------------------- workloads

_WHOLE_MODELS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100-80GB",), 0.20),
    (("H100-80GB", "A100-80GB"), 0.20),
    (("A100-80GB",), 0.15),
    (("A100-80GB", "H100-80GB"), 0.10),
    (("L40S",), 0.12),
    (("L40S", "A100-80GB"), 0.08),
    (("T4",), 0.05),
    ((), 0.10),
)
_GANG_MODELS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100-80GB",), 0.6),
    (("H100-80GB", "A100-80GB"), 0.3),
    (("A100-80GB",), 0.1),
)
_MIG_PROFILES: tuple[tuple[str, float], ...] = (
    ("1g.10gb", 0.45),
    ("2g.20gb", 0.25),
    ("3g.40gb", 0.30),
)
_MIG_MODELS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.7),
    (("H100-80GB",), 0.15),
    (("A100-80GB",), 0.15),
)
_MEMORY_MIB = (6_000, 9_000, 15_000, 20_000, 30_000, 38_000, 60_000, 75_000)
_MEMORY_MODELS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.6),
    (("A100-80GB", "H100-80GB"), 0.2),
    (("L40S", "A100-80GB"), 0.2),
)
_MILLI = (100, 200, 250, 300, 500, 750)
_FRACTION_MODELS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("T4",), 0.40),
    (("L40S",), 0.20),
    (("T4", "L40S"), 0.25),
    ((), 0.15),
)
_SPEED = {"H100-80GB": 3.0, "A100-80GB": 1.0, "L40S": 1.1, "T4": 0.2}


def _demand(rng: random.Random) -> tuple[int, Demand, int, int, float]:
    """(pods, demand, cpu per pod, MiB per pod, GPU-eq estimate) of one random workload."""
    r = rng.random()
    if r < 0.50:
        k = _pick(rng, ((1, 0.40), (2, 0.20), (4, 0.20), (8, 0.20)))
        models = _pick(rng, _WHOLE_MODELS)
        if models == ("T4",) and k > 2:
            models = ("L40S",)
        per_gpu_cpu = 8_000 if rng.random() < 0.85 else 12_000
        return 1, Demand(gpus=k, models=models), k * per_gpu_cpu, k * 65_536, float(k)
    if r < 0.55:
        pods = round(rng.triangular(2, 16, 2))  # mostly small gangs, a few of 16
        models = _pick(rng, _GANG_MODELS)
        return pods, Demand(gpus=8, models=models), 96_000, 8 * 98_304, 8.0 * pods
    if r < 0.72:
        profile = _pick(rng, _MIG_PROFILES)
        models = _pick(rng, _MIG_MODELS)
        c = _mig_compute(profile)
        demand = Demand(mig_profile=profile, models=models)
        return 1, demand, 2_000 * c, 16_384 * c, c / 7
    if r < 0.82:
        mib = rng.choice(_MEMORY_MIB)
        models = _pick(rng, _MEMORY_MODELS)
        demand = Demand(gpu_memory_mib=mib, models=models)
        return 1, demand, 4_000, 32_768, min(1.0, mib / 81_920)
    milli = rng.choice(_MILLI)
    models = _pick(rng, _FRACTION_MODELS)
    demand = Demand(gpu_milli=milli, models=models)
    return 1, demand, 2_000, 8_192, milli / MILLI_PER_GPU


def _workloads(
    rng: random.Random,
    prefix: str,
    count: int | None,
    gpu_eq_target: float | None,
    queues: Sequence[Queue],
    queue_weights: Sequence[float],
    created_range: tuple[int, int],
    start: int = 0,
) -> list[Workload]:
    """``count`` workloads, or as many as it takes to reach ``gpu_eq_target``."""
    out: list[Workload] = []
    total = 0.0
    i = start
    while (count is not None and len(out) < count) or (
        gpu_eq_target is not None and total < gpu_eq_target
    ):
        queue = rng.choices(queues, queue_weights)[0]
        pods, demand, cpu, mem, eq = _demand(rng)
        throughput: dict[str, float] = {}
        if demand.gpus is not None and len(demand.models) > 1 and rng.random() < 0.2:
            throughput = {m: _SPEED[m] for m in demand.models}
        selector = {ZONE_LABEL: rng.choice(ZONES)} if rng.random() < 0.05 else {}
        out.append(
            Workload(
                name=f"{prefix}-{i:06d}",
                queue=queue.name,
                namespace=queue.name,
                priority=_pick(rng, PRIORITIES),
                created=NOW - rng.randint(*created_range),
                pods=pods,
                demand=demand,
                cpu_milli=cpu,
                memory_mib=mem,
                node_selector=selector,
                tolerations=(GPU_TOLERATION,),
                throughput=throughput,
            )
        )
        total += eq
        i += 1
    return out


def _as_running(workload: Workload, decision: WorkloadDecision, rng: random.Random) -> Workload:
    started = min(NOW - 60, workload.created + rng.randint(0, 3_600))
    return workload.model_copy(
        update={
            "flavor": decision.flavor,
            "placement": decision.placement,
            "started": started,
        }
    )


def _running(
    rng: random.Random,
    cluster: SyntheticCluster,
    queue_weights: Sequence[float],
) -> tuple[list[Workload], dict[str, int]]:
    """Fill the empty cluster to ~RUNNING_SHARE with greedy ``decide`` in rounds."""
    running: list[Workload] = []
    held = 0.0
    target = RUNNING_SHARE * cluster.gpu_eq
    rounds = 0
    next_index = 0
    while held < 0.98 * target and rounds < 10:
        rounds += 1
        batch = _workloads(
            rng,
            "run",
            None,
            (target - held) * 1.05,
            cluster.queues,
            queue_weights,
            (3_600, 14 * 86_400),
            start=next_index,
        )
        next_index += len(batch)
        snapshot = Snapshot(
            nodes=cluster.nodes, queues=cluster.queues, workloads=(*running, *batch), now=NOW
        )
        # Without the improvement phase: it runs while the clock allows, and an instance
        # must not depend on the clock.
        decision = decide(snapshot, use_ilp=False, improve_phase=False)
        evicted = {e.workload for e in decision.evictions}
        running = [w for w in running if w.name not in evicted]
        by_name = {w.name: w for w in batch}
        admitted = [
            _as_running(by_name[d.workload], d, rng)
            for d in decision.workloads
            if d.outcome is Outcome.ADMIT and d.workload in by_name
        ]
        running += admitted
        held = sum(gpu_equivalents(w) for w in running)
    return running, {"fill_rounds": rounds}


def synthetic_instance(
    key: str, *, nodes: int, pending: int, seed: int, queues: int = 100, cohorts: int = 10
) -> Instance:
    """(b)/(c): the synthetic cluster with ~40% running and ``pending`` workloads waiting."""
    cluster = synthetic_cluster(seed, nodes, queues, cohorts)
    rng = random.Random(seed * 7919 + 1)
    # Skewed demand: a few queues are busy, most are not (Zipf-like, randomly assigned).
    queue_weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(cluster.queues))]
    rng.shuffle(queue_weights)
    running, extra = _running(rng, cluster, queue_weights)
    waiting = _workloads(rng, "job", pending, None, cluster.queues, queue_weights, (0, 2 * 86_400))
    snapshot = Snapshot(
        nodes=cluster.nodes,
        queues=cluster.queues,
        workloads=(*running, *waiting),
        now=NOW,
    )
    held = sum(gpu_equivalents(w) for w in running)
    gpus = sum(len(n.gpus) for n in cluster.nodes)
    kinds = {"whole": 0, "gang": 0, "mig": 0, "memory": 0, "fraction": 0}
    for w in waiting:
        d = w.demand
        if d.gpus is not None:
            kinds["gang" if w.pods > 1 else "whole"] += 1
        elif d.mig_profile is not None:
            kinds["mig"] += 1
        elif d.gpu_memory_mib is not None:
            kinds["memory"] += 1
        else:
            kinds["fraction"] += 1
    facts: dict[str, object] = {
        "nodes": len(cluster.nodes),
        "gpus": gpus,
        "mig_gpus": cluster.mig_gpus,
        "shared_gpus": cluster.shared_gpus,
        "queues": f"{len(cluster.queues)} in {cohorts} cohorts",
        "running": f"{len(running)} workloads, {held:.0f}/{cluster.gpu_eq:.0f} GPU-eq "
        f"({100 * held / cluster.gpu_eq:.1f}%)",
        "pending": f"{len(waiting)} ({', '.join(f'{k} {v}' for k, v in kinds.items())})",
        **extra,
    }
    title = f"synthetic: {len(cluster.nodes):,} nodes × 8 GPUs, {len(waiting):,} pending"
    return Instance(key, title, snapshot, facts, tuple(waiting))


# ------------------------------------------------------------------------ (a) and (d)


def default_instance(key: str = "a", *, count: int = 1000, seed: int = 0) -> Instance:
    """(a): ``scheduler.defaults``' embedded cluster with ``count`` demo workloads pending."""
    from scheduler import defaults  # written separately; imported late so (b)–(e) run without it

    base = defaults.default_snapshot()
    now = getattr(defaults, "DEMO_NOW", None) or base.now or NOW
    demo = tuple(defaults.demo_workloads(seed=seed, count=count, now=now))
    snapshot = base.model_copy(update={"workloads": (*base.workloads, *demo), "now": now})
    running = sum(1 for w in snapshot.workloads if w.running)
    facts: dict[str, object] = {
        "nodes": len(snapshot.nodes),
        "gpus": sum(len(n.gpus) for n in snapshot.nodes),
        "queues": len(snapshot.queues),
        "running": running,
        "pending": len(snapshot.workloads) - running,
    }
    title = f"default cluster + {count:,} demo workloads pending"
    return Instance(key, title, snapshot, facts, demo)


def openb_instance(key: str = "d", *, per_qos_queue: bool = False) -> Instance:
    """(d): the openb GPU nodes with every GPU pod of the default pod list pending.

    One queue, ``openb``, whose nominal quota is the cluster's capacity per GPU model
    (priority still comes from each pod's QoS class). With ``per_qos_queue`` the pods go to
    one queue per QoS class in one cohort instead, the capacity split evenly.
    """
    from sim.openb import (
        OPENB_TRACE_DIR,
        QOS_PRIORITY,
        load_openb_nodes_file,
        load_openb_pods_file,
    )

    models, nodes = load_openb_nodes_file(OPENB_TRACE_DIR / "openb_node_list_gpu_node.csv")
    pods = load_openb_pods_file(OPENB_TRACE_DIR / "openb_pod_list_default.csv", queue="openb")
    capacity: dict[str, int] = {}
    for node in nodes:
        for gpu in node.gpus:
            capacity[gpu.model] = capacity.get(gpu.model, 0) + 1
    if per_qos_queue:
        qos_of = {p: q for q, p in QOS_PRIORITY.items()}
        names = [f"openb-{q.lower()}" for q in QOS_PRIORITY]
        shares = {f: _split(n, [1.0] * len(names)) for f, n in capacity.items()}
        queues = tuple(
            Queue(
                name=name,
                cohort="openb",
                quota={f: Quota(nominal=shares[f][i]) for f in capacity},
            )
            for i, name in enumerate(names)
        )
        pods = tuple(
            w.model_copy(update={"queue": f"openb-{qos_of[w.priority].lower()}"}) for w in pods
        )
    else:
        queues = (Queue(name="openb", quota={f: Quota(nominal=n) for f, n in capacity.items()}),)
    snapshot = Snapshot(gpu_models=models, nodes=nodes, queues=queues, workloads=pods, now=0)
    kinds = {"whole": 0, "fraction": 0}
    for w in pods:
        kinds["whole" if w.demand.gpus is not None else "fraction"] += 1
    facts: dict[str, object] = {
        "nodes": len(nodes),
        "gpus": sum(capacity.values()),
        "queues": ", ".join(q.name for q in queues),
        "running": 0,
        "pending": f"{len(pods)} ({', '.join(f'{k} {v}' for k, v in kinds.items())})",
        "demand_gpu_eq": round(
            sum((w.demand.gpus or 0) + (w.demand.gpu_milli or 0) / MILLI_PER_GPU for w in pods),
            1,
        ),
    }
    title = f"Alibaba openb: {len(nodes):,} nodes, {sum(capacity.values()):,} GPUs, all pending"
    return Instance(key, title, snapshot, facts, pods)
