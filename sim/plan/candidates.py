"""Candidate clusters: the current cluster's node pools, scaled per GPU model.

A *pool* is a set of identical nodes (same GPU model and count, MIG layout, sharing,
CPU and memory; the ``apportion.io/node-pool`` label when present). A candidate gives
every pool a node count; the search scales all pools of one GPU model by the same level
(0.75 × the H100 nodes, 1.25 × the L4 nodes, …), so node shapes and MIG layouts stay the
ones the cluster already runs. Queues keep their weights and cohorts; nominal quotas and
limits are rescaled per flavor to the candidate's capacity (largest remainder), so every
GPU stays someone's guarantee, as in the current cluster.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.model import Node, Queue, Quota
from sim.cluster import Cluster

__all__ = ["Candidate", "Pool", "build_cluster", "candidate_grid", "pools_of", "scale_quotas"]

_POOL_LABEL = "apportion.io/node-pool"
HOURS_PER_MONTH = 730


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    model: str
    gpus_per_node: int
    nodes: tuple[Node, ...]
    """The current cluster's nodes of this pool (templates for added nodes)."""
    price_per_node_hour: float
    node_capacity: dict[str, int]
    """One node's capacity per quota flavor."""

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def describe(self) -> str:
        n = self.nodes[0]
        kind = "MIG" if any(g.mig for g in n.gpus) else ("shared" if n.gpus[0].shared else "")
        return f"{self.gpus_per_node}× {self.model}{' ' + kind if kind else ''}"


@dataclass(frozen=True, slots=True)
class Candidate:
    counts: tuple[int, ...]
    """Nodes per pool, in ``pools_of`` order."""
    levels: tuple[tuple[str, float], ...] = ()
    """Per GPU model, the scale level this candidate was made from (for people)."""

    def key(self) -> str:
        return "-".join(str(c) for c in self.counts)

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


def pools_of(cluster: Cluster) -> tuple[Pool, ...]:
    catalog = cluster.catalog
    groups: dict[object, list[Node]] = {}
    for node in cluster.snapshot.nodes:
        if not node.gpus:
            continue
        shape = (
            node.labels.get(_POOL_LABEL),
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
        name = first.labels.get(_POOL_LABEL) or f"{model.name.lower()}-{len(first.gpus)}"
        price = sum(catalog[g.model].price_per_hour for g in first.gpus)
        one = Cluster(cluster.snapshot.model_copy(update={"nodes": (first,)}), "").capacity()
        pools.append(Pool(name, model.name, len(first.gpus), tuple(nodes), price, one))
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
            )
            for i, p in enumerate(pools)
        ]
    return tuple(pools)


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
        out.append(Candidate(counts, tuple(sorted(level.items()))))
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
    usage: dict[str, dict[str, float]] | None = None,
) -> tuple[Queue, ...]:
    """Queues whose nominal quotas split ``capacity`` per flavor: in proportion to the
    current nominals, or (quota advice) mostly to ``usage[flavor][queue]``: 80 % by use,
    20 % by the current split, so a queue that did not use a flavor in the replay keeps a
    foothold it can reclaim. Borrowing and lending limits scale with the nominal."""
    new: dict[str, dict[str, Quota]] = {q.name: {} for q in queues}
    flavors = sorted({f for q in queues for f in q.quota} | set(capacity))
    for flavor in flavors:
        current = {q.name: float(q.quota[flavor].nominal) for q in queues if flavor in q.quota}
        wanted = current
        used = (usage or {}).get(flavor) or {}
        if sum(used.values()) > 0:
            total_used = sum(used.values())
            total_now = sum(current.values()) or 1.0
            wanted = {
                q: 0.8 * used.get(q, 0.0) / total_used + 0.2 * current.get(q, 0.0) / total_now
                for q in sorted(set(current) | set(used))
            }
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
    usage: dict[str, dict[str, float]] | None = None,
) -> Cluster:
    """The candidate as a cluster: the first N nodes of each pool, plus copies of its first
    node (``<pool>-plan-NNN``) beyond the current count; quotas rescaled (``usage``: see
    ``scale_quotas``)."""
    nodes: list[Node] = []
    for count, pool in zip(candidate.counts, pools, strict=True):
        nodes.extend(pool.nodes[:count])
        template = pool.nodes[0]
        for i in range(pool.count, count):
            name = f"{pool.name}-plan-{i:03d}"
            labels = {**template.labels}
            if "kubernetes.io/hostname" in labels:
                labels["kubernetes.io/hostname"] = name
            nodes.append(template.model_copy(update={"name": name, "labels": labels}))
    snapshot = base.snapshot.model_copy(update={"nodes": tuple(nodes)})
    cluster = Cluster(snapshot, f"candidate {candidate.key()}", base.synthesized_queues)
    queues = scale_quotas(base.snapshot.queues, cluster.capacity(), usage)
    return Cluster(
        snapshot.model_copy(update={"queues": queues}), cluster.source, base.synthesized_queues
    )
