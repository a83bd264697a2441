"""Every simulated policy behind one interface (``sim.policy.Policy``), by name.

``apportion``, ``apportion-greedy`` and ``greedy`` run the production core; ``fifo``,
``drf`` and ``kueue`` are queueing baselines that place through the core's online path;
``random``, ``best-fit``, ``dot-product``, ``gpu-packing``, ``gpu-clustering`` and ``fgd``
are the FGD paper's placement baselines (no quotas, arrival order with backfill).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.cluster import Cluster
from sim.fragmentation import mix_of
from sim.job import Job
from sim.occupancy import Occupancy
from sim.policies.core import ApportionPolicy, GreedyPolicy
from sim.policies.fgd import FgdPlacer
from sim.policies.kueue import KueuePolicy
from sim.policies.ordering import DrfPolicy, FifoPolicy
from sim.policies.placement import PLACERS, PlacementPolicy
from sim.policy import Policy

__all__ = ["POLICY_NAMES", "PolicyOptions", "make_policy"]

POLICY_NAMES: tuple[str, ...] = (
    "apportion",
    "apportion-greedy",
    "greedy",
    "fifo",
    "kueue",
    "drf",
    "random",
    "best-fit",
    "dot-product",
    "gpu-packing",
    "gpu-clustering",
    "fgd",
)


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    tick_s: int = 30
    """apportion: also called every this many simulated seconds while work waits (without
    the engine's interval), to decide again after its own decision's actions."""
    budget_ms: float = 2000.0
    """apportion: the decision's budget (measured on an injected clock; see core.py)."""


def make_policy(
    name: str,
    cluster: Cluster,
    jobs: Sequence[Job],
    seed: int = 0,
    options: PolicyOptions = PolicyOptions(),
) -> Policy:
    """A fresh policy instance; ``jobs`` give FGD its target workload."""
    if name == "apportion":
        return ApportionPolicy(cluster, True, options.tick_s, options.budget_ms)
    if name == "apportion-greedy":
        return ApportionPolicy(cluster, False, options.tick_s, options.budget_ms)
    if name == "greedy":
        return GreedyPolicy(cluster)
    if name == "fifo":
        return FifoPolicy(cluster, jobs)
    if name == "drf":
        return DrfPolicy(cluster, jobs)
    if name == "kueue":
        return KueuePolicy(cluster)
    if name in PLACERS:
        placer = PLACERS[name](seed)
        if isinstance(placer, FgdPlacer):
            occ = Occupancy(cluster.snapshot.nodes, cluster.catalog)
            placer.mix = mix_of(jobs, occ.model_names)
        return PlacementPolicy(placer)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
