"""Candidate clusters: the current cluster's node pools, scaled per GPU model.

A *pool* is a set of identical nodes (same GPU model and count, MIG layout, sharing,
CPU and memory; the ``apportion.io/node-pool`` label when present). A candidate gives
every pool a node count; the search scales all pools of one GPU model by the same level
(0.75 × the H100 nodes, 1.25 × the L4 nodes, …), so node shapes and MIG layouts stay the
ones the cluster already runs (``shapes`` adds other node shapes and MIG layouts as
pools with no nodes today). Queues keep their weights and cohorts; nominal quotas and
limits are rescaled per flavor to the candidate's capacity (largest remainder), so every
GPU stays someone's guarantee, as in the current cluster.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.model import Node, Queue, Quota
from sim.cluster import Cluster

__all__ = [
    "LEVEL_WHY",
    "MAX_CANDIDATES",
    "MAX_LEVEL",
    "POOL_LABEL",
    "Candidate",
    "Pool",
    "build_cluster",
    "candidate_grid",
    "grid_size",
    "pool_of",
    "pools_of",
    "scale_quotas",
]

POOL_LABEL = "apportion.io/node-pool"
HOURS_PER_MONTH = 730

MAX_LEVEL = 100.0
"""The largest --levels factor: a hundred times today's nodes of a GPU model (as --growth
goes to a hundredfold demand). The largest candidate is always simulated, and a level of
a million built a cluster of millions of nodes to replay the trace on."""
LEVEL_WHY = (
    "a hundred times today's nodes of a GPU model is a new cluster to design, not a plan "
    "for this one"
)
"""Why, in the error past ``MAX_LEVEL``."""

MAX_CANDIDATES = 1_000_000
"""The level grid's size (levels ** GPU models) at most. Each candidate gets a fluid bound
and a row in plan.json (about 1.5 KB): the default 4 levels on the demo's 5 models are
1,024; 20 levels made 3,200,000, minutes and gigabytes before the first simulation."""


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    model: str
    gpus_per_node: int
    nodes: tuple[Node, ...]
    """The current cluster's nodes of this pool (none for a shape or layout it lacks)."""
    price_per_node_hour: float
    node_capacity: dict[str, int]
    """One node's capacity per quota flavor."""
    template: Node
    """What an added node looks like (the pool's first node)."""

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def describe(self) -> str:
        """For people: ``8× H100-80GB, MIG 2×1g.10gb+2g.20gb+3g.40gb``."""
        gpu = self.template.gpus[0]
        kind = ""
        if gpu.mig is not None:
            parts: dict[str, int] = {}
            for s in gpu.mig:
                parts[s.profile] = parts.get(s.profile, 0) + 1
            kind = ", MIG " + ("+".join(f"{n}×{p}" for p, n in parts.items()) or "empty")
        elif gpu.shared:
            kind = ", time-sliced"
        return f"{self.gpus_per_node}× {self.model}{kind}"


@dataclass(frozen=True, slots=True)
class Candidate:
    counts: tuple[int, ...]
    """Nodes per pool, in ``pools_of`` order."""
    levels: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    """Per GPU model, the scale level this candidate was made from (for people)."""
    shapes: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """Per GPU model whose nodes differ from today's shapes, the arrangement's name."""
    base: int | None = field(default=None, compare=False)
    """How many of the pools are today's (the rest are other shapes and layouts)."""

    def key(self) -> str:
        """Today's pools' counts joined by '-', then '+i:n' for other pools in use."""
        base = len(self.counts) if self.base is None else self.base
        head = "-".join(str(c) for c in self.counts[:base])
        return head + "".join(f"+{i}:{c}" for i, c in enumerate(self.counts) if i >= base and c)

    def cost_per_hour(self, pools: Sequence[Pool]) -> float:
        return sum(c * p.price_per_node_hour for c, p in zip(self.counts, pools, strict=True))

    def gpus_by_model(self, pools: Sequence[Pool]) -> dict[str, int]:
        out: dict[str, int] = {}
        for c, p in zip(self.counts, pools, strict=True):
            out[p.model] = out.get(p.model, 0) + c * p.gpus_per_node
        return out

    def capacity(self, pools: Sequence[Pool]) -> dict[str, int]:
        """Capacity per quota flavor (as ``Cluster.capacity``), without building nodes."""
        out: dict[str, int] = {}
        for c, p in zip(self.counts, pools, strict=True):
            for flavor, n in p.node_capacity.items():
                out[flavor] = out.get(flavor, 0) + c * n
        return out

    def gpus(self, pools: Sequence[Pool]) -> int:
        return sum(c * p.gpus_per_node for c, p in zip(self.counts, pools, strict=True))

    def dominates(self, other: Candidate) -> bool:
        """At least as many nodes in every pool."""
        return all(a >= b for a, b in zip(self.counts, other.counts, strict=True))


def pool_of(cluster: Cluster, name: str, template: Node, nodes: tuple[Node, ...]) -> Pool:
    """A pool of ``template``-shaped nodes (``nodes``: the ones the cluster has today)."""
    catalog = cluster.catalog
    model = catalog[template.gpus[0].model]
    price = sum(catalog[g.model].price_per_hour for g in template.gpus)
    one = Cluster(cluster.snapshot.model_copy(update={"nodes": (template,)}), "").capacity()
    return Pool(name, model.name, len(template.gpus), nodes, price, one, template)


def pools_of(cluster: Cluster) -> tuple[Pool, ...]:
    catalog = cluster.catalog
    groups: dict[object, list[Node]] = {}
    for node in cluster.snapshot.nodes:
        if not node.gpus:
            continue
        shape = (
            node.labels.get(POOL_LABEL),
            catalog[node.gpus[0].model].name,
            len(node.gpus),
            tuple((g.model, g.shared, g.mig) for g in node.gpus),
            node.cpu_milli,
            node.memory_mib,
        )
        groups.setdefault(shape, []).append(node)
    pools = []
    for nodes in groups.values():
        first = nodes[0]
        model = catalog[first.gpus[0].model]
        name = first.labels.get(POOL_LABEL) or f"{model.name.lower()}-{len(first.gpus)}"
        pools.append(pool_of(cluster, name, first, tuple(nodes)))
    names = [p.name for p in pools]
    if len(set(names)) != len(names):  # same label on different shapes: number them
        pools = [
            Pool(
                f"{p.name}-{i}",
                p.model,
                p.gpus_per_node,
                p.nodes,
                p.price_per_node_hour,
                p.node_capacity,
                p.template,
            )
            for i, p in enumerate(pools)
        ]
    return tuple(pools)


def grid_size(pools: Sequence[Pool], levels: Sequence[float]) -> tuple[int, int]:
    """How many candidates ``candidate_grid`` may make (duplicates not yet dropped), and
    over how many GPU models: known before any is made (``MAX_CANDIDATES``)."""
    models = len({p.model for p in pools})
    return (len(set(levels)) ** models, models)


def candidate_grid(pools: Sequence[Pool], levels: Sequence[float]) -> list[Candidate]:
    """Every combination of one level per GPU model (pools of a model scale together)."""
    models = sorted({p.model for p in pools})
    out = []
    seen = set()
    for combo in itertools.product(sorted(set(levels)), repeat=len(models)):
        level = dict(zip(models, combo, strict=True))
        counts = tuple(max(0, round(p.count * level[p.model])) for p in pools)
        if counts in seen or not any(counts):
            continue
        seen.add(counts)
        base = sum(1 for p in pools if p.count)
        out.append(Candidate(counts, tuple(sorted(level.items())), base=base))
    return out


def _split(amount: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``amount`` in proportion to ``shares``."""
    total = sum(shares.values())
    if total <= 0:
        return {q: 0 for q in shares}
    exact = {q: amount * s / total for q, s in shares.items()}
    out = {q: int(v) for q, v in exact.items()}
    for q in sorted(shares, key=lambda q: (out[q] - exact[q], q))[: amount - sum(out.values())]:
        out[q] += 1
    return out


def scale_quotas(
    queues: Sequence[Queue],
    capacity: dict[str, int],
    shares: dict[str, dict[str, float]] | None = None,
) -> tuple[Queue, ...]:
    """Queues whose nominal quotas split ``capacity`` per flavor: in proportion to the
    current nominals, or to ``shares[flavor][queue]`` when given for that flavor (quota
    search, ``quotas``). A flavor no queue has today is split by weight. Borrowing and
    lending limits scale with the nominal."""
    new: dict[str, dict[str, Quota]] = {q.name: {} for q in queues}
    flavors = sorted({f for q in queues for f in q.quota} | set(capacity))
    for flavor in flavors:
        wanted = {q.name: float(q.quota[flavor].nominal) for q in queues if flavor in q.quota}
        given = (shares or {}).get(flavor) or {}
        if sum(given.values()) > 0:
            wanted = dict(given)
        if not wanted and capacity.get(flavor, 0):
            wanted = {q.name: float(q.weight) for q in queues}
        if not wanted:
            continue
        split = _split(capacity.get(flavor, 0), wanted)
        for q in queues:
            if q.name not in split:
                continue
            old = q.quota.get(flavor, Quota())
            factor = split[q.name] / old.nominal if old.nominal else 1.0

            def scaled(limit: int | None, factor: float = factor) -> int | None:
                return None if limit is None else max(0, round(limit * factor))

            new[q.name][flavor] = Quota(
                nominal=split[q.name],
                borrowing_limit=scaled(old.borrowing_limit),
                lending_limit=None
                if old.lending_limit is None
                else min(split[q.name], scaled(old.lending_limit) or 0),
            )
    return tuple(q.model_copy(update={"quota": new[q.name]}) for q in queues)


def build_cluster(
    base: Cluster,
    pools: Sequence[Pool],
    candidate: Candidate,
    shares: dict[str, dict[str, float]] | None = None,
) -> Cluster:
    """The candidate as a cluster: the first N nodes of each pool, plus copies of its
    template (``<pool>-plan-NNN``) beyond the current count; quotas rescaled (``shares``:
    see ``scale_quotas``)."""
    nodes: list[Node] = []
    for count, pool in zip(candidate.counts, pools, strict=True):
        nodes.extend(pool.nodes[:count])
        template = pool.template
        for i in range(pool.count, count):
            name = f"{pool.name}-plan-{i:03d}"
            labels = {**template.labels}
            if "kubernetes.io/hostname" in labels:
                labels["kubernetes.io/hostname"] = name
            nodes.append(template.model_copy(update={"name": name, "labels": labels}))
    snapshot = base.snapshot.model_copy(update={"nodes": tuple(nodes)})
    cluster = Cluster(snapshot, f"candidate {candidate.key()}", base.synthesized_queues)
    queues = scale_quotas(base.snapshot.queues, cluster.capacity(), shares)
    return Cluster(
        snapshot.model_copy(update={"queues": queues}), cluster.source, base.synthesized_queues
    )
