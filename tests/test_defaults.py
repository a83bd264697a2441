"""scheduler/defaults.py: the reference cluster and its reproducible pending backlog."""

from __future__ import annotations

from collections import Counter

import pytest

from scheduler.catalog import default_catalog
from scheduler.defaults import DEMO_NOW, default_snapshot, demo_snapshot, demo_workloads
from scheduler.loading import validate_snapshot
from scheduler.model import Node, Snapshot, Workload, flavor_of_mig


def capacity(snapshot: Snapshot) -> Counter[str]:
    """Physical capacity per quota flavor: whole GPUs by model, MIG instances by profile."""
    catalog = snapshot.catalog()
    counts: Counter[str] = Counter()
    for node in snapshot.nodes:
        for gpu in node.gpus:
            if gpu.mig is None:
                counts[catalog[gpu.model].name] += 1
            else:
                counts.update(flavor_of_mig(s.profile) for s in gpu.mig)
    return counts


def nominal(snapshot: Snapshot) -> Counter[str]:
    catalog = snapshot.catalog()
    counts: Counter[str] = Counter()
    for queue in snapshot.queues:
        for flavor, quota in queue.quota.items():
            key = flavor if flavor.startswith("mig-") else catalog[flavor].name
            counts[key] += quota.nominal
    return counts


# --- the cluster ---------------------------------------------------------------------------


def test_default_cluster_composition() -> None:
    snapshot = default_snapshot()
    assert sum(len(n.gpus) for n in snapshot.nodes) == 496
    assert capacity(snapshot) == {
        "H100-80GB": 176,
        "A100-80GB": 96,
        "L40S": 48,
        "L4": 64,
        "T4": 64,
        "mig-1g.10gb": 160,
        "mig-1g.20gb": 8,
        "mig-2g.20gb": 32,
        "mig-3g.40gb": 32,
    }
    assert nominal(snapshot) == capacity(snapshot)  # every GPU is some queue's guarantee
    assert snapshot.workloads == ()
    assert validate_snapshot(snapshot) == []


def test_default_cluster_is_about_500_gpus() -> None:
    assert 480 <= sum(len(n.gpus) for n in default_snapshot().nodes) <= 520


def test_mig_on_h100_and_a100_and_time_slicing_on_t4_and_l40s() -> None:
    gpus = [g for n in default_snapshot().nodes for g in n.gpus]
    assert {g.model for g in gpus if g.mig is not None} == {"H100-80GB", "A100-80GB"}
    assert {g.model for g in gpus if g.shared} == {"T4", "L40S"}
    assert all(g.mig for g in gpus if g.mig is not None)  # no empty MIG layouts
    layouts = {g.mig for g in gpus if g.model == "A100-80GB" and g.mig is not None}
    assert len(layouts) == 3


def test_queues_two_cohorts_with_different_weights() -> None:
    queues = default_snapshot().queues
    assert len(queues) == 6
    cohorts = {q.cohort for q in queues}
    assert cohorts == {"research", "production"}
    for cohort in cohorts:
        weights = [q.weight for q in queues if q.cohort == cohort]
        assert len(weights) == 3
        assert len(set(weights)) > 1
    assert any(q.max_priority is not None for q in queues)
    assert any(
        quota.borrowing_limit is not None or quota.lending_limit is not None
        for q in queues
        for quota in q.quota.values()
    )
    assert len({q.preemption for q in queues}) > 1


def test_nominal_quotas_fit_physical_capacity_per_flavor() -> None:
    snapshot = default_snapshot()
    have = capacity(snapshot)
    for flavor, total in nominal(snapshot).items():
        assert total <= have[flavor], flavor


@pytest.mark.parametrize("node", default_snapshot().nodes, ids=lambda n: n.name)
def test_node_labels(node: Node) -> None:
    catalog = default_catalog()
    assert node.labels["kubernetes.io/hostname"] == node.name
    model = catalog[node.labels["nvidia.com/gpu.product"]]
    assert {catalog[g.model].name for g in node.gpus} == {model.name}
    assert node.labels["apportion.io/node-pool"] == node.name.rsplit("-", 1)[0]
    assert node.taints == ()  # so the demo's workloads need no tolerations
    assert node.cpu_milli and node.memory_mib


def test_default_snapshot_is_loaded_once() -> None:
    assert default_snapshot() is default_snapshot()


# --- the demo backlog ----------------------------------------------------------------------


def test_demo_workloads_are_deterministic_per_seed() -> None:
    assert demo_workloads(seed=3) == demo_workloads(seed=3)
    assert demo_workloads(seed=3) != demo_workloads(seed=4)
    assert demo_workloads(seed=0, count=50, now=10**6) == demo_workloads(0, 50, 10**6)


def test_demo_workloads_reject_a_negative_count() -> None:
    with pytest.raises(ValueError, match="count: -1 is negative"):
        demo_workloads(count=-1)


@pytest.mark.parametrize("count", [0, 1, 120, 400])
def test_demo_workloads_count_and_names(count: int) -> None:
    workloads = demo_workloads(seed=1, count=count)
    assert len(workloads) == count
    assert len({w.name for w in workloads}) == count


@pytest.mark.parametrize("seed", range(5))
def test_demo_workloads_are_pending_valid_and_in_order(seed: int) -> None:
    snapshot = demo_snapshot(seed=seed)
    assert validate_snapshot(snapshot) == []
    assert snapshot.now == DEMO_NOW
    queues = {q.name: q for q in snapshot.queues}
    created = [w.created for w in snapshot.workloads]
    assert created == sorted(created)
    for w in snapshot.workloads:
        assert not w.running and w.flavor is None
        assert w.queue in queues
        assert w.namespace in queues[w.queue].namespaces
        assert DEMO_NOW - 12 * 3600 <= w.created < DEMO_NOW
        assert w.priority in (0, 100, 1000)
        assert w.tolerations == ()


def test_demo_snapshot_is_the_default_cluster_plus_the_backlog() -> None:
    snapshot = demo_snapshot(seed=2, count=30, now=DEMO_NOW + 60)
    assert snapshot.nodes == default_snapshot().nodes
    assert snapshot.queues == default_snapshot().queues
    assert snapshot.workloads == demo_workloads(seed=2, count=30, now=DEMO_NOW + 60)
    assert snapshot.now == DEMO_NOW + 60


def _kind(w: Workload) -> str:
    d = w.demand
    if d.gpus is not None:
        return "gang" if w.pods > 1 else "whole"
    if d.gpu_memory_mib is not None:
        return "memory"
    return "mig" if d.mig_profile is not None else "fraction"


def test_demo_backlog_mixes_every_kind_of_demand() -> None:
    workloads = demo_workloads(seed=0, count=120)
    kinds = Counter(_kind(w) for w in workloads)
    assert set(kinds) == {"whole", "gang", "memory", "mig", "fraction"}
    assert kinds["whole"] > kinds["gang"]
    for w in workloads:
        d = w.demand
        if _kind(w) == "whole":
            assert d.gpus in (1, 2, 4, 8)
        elif _kind(w) == "gang":
            assert d.gpus == 8 and 2 <= w.pods <= 8
        elif _kind(w) == "memory":
            assert d.gpu_memory_mib is not None
            assert 9 * 1024 <= d.gpu_memory_mib <= 18 * 1024
        elif _kind(w) == "mig":
            assert d.mig_profile in ("1g.10gb", "2g.20gb", "3g.40gb")
        else:
            assert d.gpu_milli is not None and 0 < d.gpu_milli < 1000
            assert d.models and set(d.models) <= {"T4", "L40S"}
    assert {w.priority for w in workloads} == {0, 100, 1000}


def _fits_somewhere(w: Workload, snapshot: Snapshot) -> bool:
    """Some node could host one pod of ``w`` on an empty cluster."""
    catalog = snapshot.catalog()
    allowed = {catalog[m].name for m in w.demand.models}
    for node in snapshot.nodes:
        if (node.cpu_milli or 0) < w.cpu_milli or (node.memory_mib or 0) < w.memory_mib:
            continue
        gpus = [g for g in node.gpus if not allowed or catalog[g.model].name in allowed]
        d = w.demand
        if d.gpus is not None and sum(g.mig is None for g in gpus) >= d.gpus:
            return True
        if d.mig_profile is not None and any(
            s.profile == d.mig_profile for g in gpus for s in g.mig or ()
        ):
            return True
        if d.gpu_milli is not None and any(g.shared for g in gpus):
            return True
        if d.gpu_memory_mib is not None and gpus:
            return True
    return False


def test_every_demo_workload_fits_the_empty_cluster() -> None:
    snapshot = demo_snapshot(seed=0, count=300)
    assert [w.name for w in snapshot.workloads if not _fits_somewhere(w, snapshot)] == []
