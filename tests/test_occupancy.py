"""The engine's ground truth refuses what is not free and gives back exactly what it took."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.catalog import default_catalog
from scheduler.model import Gpu, Node, PodPlacement
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
