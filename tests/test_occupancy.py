"""The engine's ground truth refuses what is not free and gives back exactly what it took."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.catalog import default_catalog
from scheduler.model import Demand, Gpu, MigSlice, Node, PodPlacement, Workload
from sim.occupancy import Occupancy, SimulationError

A100 = "A100-80GB"


def _occupancy() -> Occupancy:
    nodes = (
        Node(name="a", cpu_milli=4000, gpus=tuple(Gpu(index=i, model=A100) for i in range(4))),
        Node(name="b", gpus=tuple(Gpu(index=i, model=A100) for i in range(2))),
    )
    return Occupancy(nodes, default_catalog())


def test_a_failed_node_refuses_starts_until_it_recovers() -> None:
    occ = _occupancy()
    pod = (PodPlacement(node="b", gpus=(1,)),)
    occ.set_node_health("b", False)
    with pytest.raises(SimulationError, match="GPU 1 on b has failed"):
        occ.take("x", pod, 0, 0)
    assert occ.allocated_milli == 0
    occ.set_node_health("b", True)
    occ.take("x", pod, 0, 0)
    assert occ.allocated_milli == 1000


def test_cpu_counts_per_pod_and_nothing_changes_on_a_refusal() -> None:
    occ = _occupancy()
    two = (PodPlacement(node="a", gpus=(0,)), PodPlacement(node="a", gpus=(1,)))
    before = (occ.gpu_free.copy(), occ.free_cpu.copy())
    with pytest.raises(SimulationError, match="not enough CPU or memory on a"):
        occ.take("x", two, 2500, 0)  # 2 × 2500m on a 4000m node
    assert np.array_equal(occ.gpu_free, before[0]) and np.array_equal(occ.free_cpu, before[1])
    occ.take("x", two, 2000, 0)
    assert int(occ.free_cpu[0]) == 0 and occ.allocated_milli == 2000
    assert occ.gpu_free.tolist() == [0, 0, 1000, 1000, 1000, 1000]
    assert occ.usable_free().tolist() == [0, 0, 1000, 1000, 1000, 1000]
    occ.take("y", (PodPlacement(node="a", gpus=(2,)),), 0, 0)  # no CPU asked: still fits
    with pytest.raises(SimulationError, match="has 0m free, needs 1000m"):
        occ.take("z", (PodPlacement(node="a", gpus=(2,)),), 0, 0)
    occ.release(two, 2000, 0)
    occ.release((PodPlacement(node="a", gpus=(2,)),), 0, 0)
    assert np.array_equal(occ.gpu_free, before[0]) and np.array_equal(occ.free_cpu, before[1])
    assert occ.allocated_milli == 0


def test_the_nodes_a_start_or_stop_changed_are_recorded_and_a_refusal_records_none() -> None:
    """What the replay's fragmentation measure reads again (and empties), also after the
    fill experiment's starts, which no callback reports."""
    occ = _occupancy()
    assert occ.changed_nodes == set()
    with pytest.raises(SimulationError):
        occ.take("x", (PodPlacement(node="b", gpus=(0,)), PodPlacement(node="b", gpus=(0,))), 0, 0)
    assert occ.changed_nodes == set()
    pods = (PodPlacement(node="b", gpus=(0,)), PodPlacement(node="a", gpus=(1,)))
    occ.take("x", pods, 0, 0)
    assert occ.changed_nodes == {0, 1}
    occ.changed_nodes.clear()
    occ.release(pods[1:], 0, 0)
    assert occ.changed_nodes == {0}


def test_cpu_and_memory_held_outside_the_workloads_are_never_free() -> None:
    held = Node(
        name="a",
        cpu_milli=4000,
        memory_mib=8192,
        cpu_held_milli=3000,
        memory_held_mib=1024,
        gpus=(Gpu(index=0, model=A100),),
    )
    occ = Occupancy((held,), default_catalog())
    assert (int(occ.free_cpu[0]), int(occ.free_mem[0]), int(occ.cpu_capacity[0])) == (
        1000,
        7168,
        4000,
    )
    with pytest.raises(SimulationError, match="not enough CPU or memory on a"):
        occ.take("x", (PodPlacement(node="a", gpus=(0,)),), 2000, 0)


def _rules_occupancy() -> Occupancy:
    """Two time-shared A100s (s), two that are not (x), a partitioned A100 (m: 1g.10gb at
    0, 3g.40gb at 4), an L4 (l), and an A100 beside an L4 (mix)."""
    mig = (MigSlice(profile="1g.10gb", start=0), MigSlice(profile="3g.40gb", start=4))
    nodes = (
        Node(name="s", gpus=tuple(Gpu(index=i, model=A100, shared=True) for i in range(2))),
        Node(name="x", gpus=tuple(Gpu(index=i, model=A100) for i in range(2))),
        Node(name="m", gpus=(Gpu(index=0, model=A100, mig=mig),)),
        Node(name="l", gpus=(Gpu(index=0, model="L4"),)),
        Node(name="mix", gpus=(Gpu(index=0, model=A100), Gpu(index=1, model="L4"))),
    )
    return Occupancy(nodes, default_catalog())


@pytest.mark.parametrize(
    ("demand", "pods", "placement", "why"),
    [
        (
            Demand(gpu_milli=500),
            1,
            (PodPlacement(node="x", gpus=(0,), milli=500),),
            "pod 0 takes 500m of GPU 0 on x, which is not shared \\(time-sliced\\); "
            "it asks 500m of a A100-80GB GPU",
        ),
        (
            Demand(gpu_milli=500),
            1,
            (PodPlacement(node="s", gpus=(0,), milli=300),),
            "pod 0 takes 300m of GPU 0 on s; it asks 500m",
        ),
        (
            Demand(gpu_milli=500),
            1,
            (PodPlacement(node="s", gpus=(0,)),),
            "pod 0 takes 1 whole GPU\\(s\\) on s; it asks 500m",
        ),
        (
            Demand(gpus=2),
            1,
            (PodPlacement(node="x", gpus=(0,)),),
            "pod 0 takes 1 whole GPU\\(s\\) on x; it asks 2 A100-80GB GPUs",
        ),
        (Demand(gpus=1), 2, (PodPlacement(node="x", gpus=(0,)),), "1 pod\\(s\\) placed, it has 2"),
        (
            Demand(gpus=2),
            1,
            (PodPlacement(node="mix", gpus=(0, 1)),),
            "pod 0 is on A100-80GB/L4 GPU\\(s\\) on mix; 2 GPU\\(s\\) accepts L4, A100-80GB",
        ),
        (
            Demand(gpus=1, models=("L4",)),
            1,
            (PodPlacement(node="x", gpus=(0,)),),
            "pod 0 is on A100-80GB GPU\\(s\\) on x; 1 GPU\\(s\\) of L4 accepts L4",
        ),
        (
            Demand(mig_profile="3g.40gb"),
            1,
            (PodPlacement(node="m", gpus=(0,), mig_start=0),),
            "pod 0 takes MIG slice 0 \\(1g.10gb\\) of GPU 0 on m; it asks MIG 3g.40gb on A100-80GB",
        ),
        (
            Demand(mig_profile="1g.10gb"),
            1,
            (PodPlacement(node="l", gpus=(0,)),),
            "pod 0 is on L4 GPU\\(s\\) on l; MIG 1g.10gb accepts A100-80GB",
        ),
        (
            Demand(gpu_memory_mib=20_000),  # 1g.10gb holds 10 GB
            1,
            (PodPlacement(node="m", gpus=(0,), mig_start=0),),
            "pod 0 takes MIG slice 0 \\(1g.10gb\\) of GPU 0 on m; it asks MIG 3g.40gb on "
            "A100-80GB or",
        ),
    ],
)
def test_a_start_must_be_what_the_demand_asks_and_a_refusal_changes_nothing(
    demand: Demand, pods: int, placement: tuple[PodPlacement, ...], why: str
) -> None:
    """The engine's check was of free capacity only: the placement baselines ran shares on
    GPUs that are not shared (and any placement a policy made up would have run)."""
    occ = _rules_occupancy()
    w = Workload(name="w", queue="q", demand=demand, pods=pods)
    with pytest.raises(SimulationError, match=f"^w: {why}"):
        occ.start(w, placement)
    assert occ.allocated_milli == 0 and occ.changed_nodes == set()
    assert occ.mig_used == {4: set()}


@pytest.mark.parametrize(
    ("demand", "placement", "milli"),
    [
        (Demand(gpu_milli=500), PodPlacement(node="s", gpus=(1,), milli=500), 500),
        (Demand(gpus=1), PodPlacement(node="s", gpus=(0,)), 1000),  # a whole shared GPU too
        (Demand(gpus=2, models=(A100,)), PodPlacement(node="x", gpus=(0, 1)), 2000),
        (Demand(mig_profile="3g.40gb"), PodPlacement(node="m", gpus=(0,), mig_start=4), 429),
        (Demand(gpu_memory_mib=20_000), PodPlacement(node="l", gpus=(0,)), 1000),
    ],
)
def test_a_start_the_demand_asks_for_is_charged(
    demand: Demand, placement: PodPlacement, milli: int
) -> None:
    occ = _rules_occupancy()
    occ.start(Workload(name="w", queue="q", demand=demand), (placement,))
    assert occ.allocated_milli == milli
