"""The expected-fragmentation measure and the online path's fragmentation-aware placement."""

from __future__ import annotations

import numpy as np
import pytest
from builders import node, queue, snapshot, workload
from hypothesis import given
from hypothesis import strategies as st
from invariants import check_all, incremental_decision
from test_allocator_properties import SETTINGS, _assert_none, snapshots

import scheduler.fragmentation as fragmentation_module
from scheduler.fragmentation import (
    ObservedMix,
    fragmentation,
    hole_values,
    refill_value,
    task_mix,
)
from scheduler.incremental import IncrementalAllocator
from scheduler.model import Snapshot, Workload
from scheduler.reasons import Outcome

A100 = "A100-80GB"


def _with_cpu(w: Workload, cpu_milli: int) -> Workload:
    return w.model_copy(update={"cpu_milli": cpu_milli})


def test_measure_by_hand() -> None:
    # One node, two GPUs: 1000 and 300 milli free, 8 CPUs free. Shapes, equally popular:
    # a 500-milli share with 4 CPUs (runs; the 300 left on the second GPU are stranded for
    # it), and a whole GPU with 16 CPUs (cannot run: CPU short, all 1300 are stranded).
    mix = task_mix({(4000, 0, 1, 500, ()): 1.0, (16000, 0, 1, 1000, ()): 1.0}, [A100])
    frag = fragmentation(
        np.array([[1000, 300]]), np.array([8000]), np.array([1 << 40]), np.array([0]), mix
    )
    assert frag.tolist() == [0.5 * 300 + 0.5 * 1300]


def test_a_shape_runs_on_a_node_with_exactly_its_cpu_and_memory_free() -> None:
    # A whole GPU with 8 CPUs and 1 GiB: the node has exactly that free, so the shape runs
    # there and only the 300 milli on the partly used GPU are stranded for it. With a
    # milli-CPU or a MiB less, it cannot run: all 1300 are.
    mix = task_mix({(8000, 1024, 1, 1000, ()): 1.0}, [A100])

    def frag(cpu: int, mem: int) -> list[float]:
        free = np.array([[1000, 300]])
        return fragmentation(free, np.array([cpu]), np.array([mem]), np.array([0]), mix).tolist()

    assert frag(8000, 1024) == [300.0]
    assert frag(7999, 1024) == frag(8000, 1023) == [1300.0]


def test_mix_counts_pods_by_square_root_of_size() -> None:
    mix = ObservedMix([A100])
    mix.observe(workload("a").gpus(4).pods(2).build())
    mix.observe(workload("b").milli(250).build())
    mix.observe(workload("c").mig("1g.10gb").build())  # not a plain GPU demand: left out
    assert mix.counts == {(0, 0, 4, 1000, ()): 2 * 2.0, (0, 0, 1, 250, ()): 0.5}
    assert mix.pods == {(0, 0, 4, 1000, ()): 2, (0, 0, 1, 250, ()): 1}
    assert mix.mix.weight.tolist() == [0.5 / 4.5, 4.0 / 4.5]


def test_mix_is_rebuilt_at_1_2_4_observations_then_every_64() -> None:
    """The same requests give the same placements: the mix read between rebuilds is the
    one built at the last rebuild (at 1, 2, 4, … observations, then every 64th)."""
    mix = ObservedMix([A100])

    def shapes() -> int:
        return mix.mix.size

    seen = []
    for i in range(1, 9):
        mix.observe(workload(f"w{i}").milli(100 * i).build())
        seen.append(shapes())
    assert seen == [1, 2, 2, 4, 4, 4, 4, 8]


def test_mix_keeps_the_most_popular_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fragmentation_module, "TOP_SHAPES", 2)
    mix = ObservedMix([A100])
    for name, pods in (("rare", 1), ("common", 3), ("middling", 2)):
        milli = {"rare": 100, "common": 300, "middling": 200}[name]
        mix.observe(workload(name).milli(milli).pods(pods).build())
    assert sorted(mix.mix.milli.tolist()) == [200, 300]


def _cpu_cluster() -> Snapshot:
    # n0 has just the CPU its two GPUs need for the common 12-CPU pods; n1 has plenty.
    return snapshot(
        nodes=[
            node("n0", A100, 2, cpu_milli=24000, memory_mib=1 << 20),
            node("n1", A100, 2, cpu_milli=104000, memory_mib=1 << 20),
        ],
        queues=[queue("q").quota(A100, 4)],
        workloads=[
            _with_cpu(workload(f"w{i}").gpus(1).queue("q").build(), 12000) for i in range(6)
        ],
    )


def test_aware_placement_keeps_cpu_for_the_common_shape() -> None:
    """A CPU-hungry pod: best-fit takes the first node (a tie), stranding its other GPU for
    the 12-CPU pods the cluster keeps seeing; the fragmentation-aware path does not."""
    snap = _cpu_cluster()
    hungry = _with_cpu(workload("hungry").gpus(1).queue("q").build(), 20000)
    plain = IncrementalAllocator(snap).decide(hungry)
    aware = IncrementalAllocator(snap, fragmentation_aware=True).decide(hungry)
    assert plain.placement[0].node == "n0"
    assert aware.placement[0].node == "n1"
    assert aware.outcome is Outcome.ADMIT


def test_aware_placement_takes_a_node_with_exactly_the_cpu_the_pod_asks() -> None:
    snap = snapshot(
        nodes=[node("n0", A100, 2, cpu_milli=24000, memory_mib=1 << 20)],
        queues=[queue("q").quota(A100, 2)],
        workloads=[],
    )
    exact = _with_cpu(workload("exact").gpus(1).queue("q").build(), 24000)
    answer = IncrementalAllocator(snap, fragmentation_aware=True).decide(exact)
    assert answer.outcome is Outcome.ADMIT
    assert answer.placement[0].node == "n0"


def test_aware_placement_keeps_an_entirely_free_node_at_equal_growth() -> None:
    """One-GPU pods only (and CPU to spare): taking a whole GPU strands nothing for them
    anywhere, so the growth ties and best fit decides: a used node before an entirely free
    one, though the free one would be left with the smaller remainder."""
    snap = snapshot(
        nodes=[
            node("free", A100, 2, cpu_milli=64000, memory_mib=1 << 20),
            node("used", A100, 4, cpu_milli=64000, memory_mib=1 << 20),
        ],
        queues=[queue("q").quota(A100, 6)],
        workloads=[
            workload("r").gpus(1).queue("q").running_on("used", 0),
            *(workload(f"w{i}").gpus(1).queue("q") for i in range(3)),
        ],
    )
    pod = workload("new").gpus(1).queue("q").build()
    answer = IncrementalAllocator(snap, fragmentation_aware=True).decide(pod)
    assert answer.placement[0].node == "used"


@SETTINGS
@given(snap=snapshots())
def test_aware_incremental_keeps_capacity_and_quotas(snap: Snapshot) -> None:
    """The hard constraints hold on the fragmentation-aware path too, and releasing
    everything gives the cluster back (a fresh allocator then admits the same)."""
    allocator = IncrementalAllocator(snap, fragmentation_aware=True)
    pending = [w for w in snap.workloads if not w.running]
    answers = [allocator.decide(w) for w in pending]
    decision = incremental_decision(answers)
    _assert_none(snap, decision, check_all(snap, decision))
    for answer in answers:
        if answer.outcome is Outcome.ADMIT:
            assert allocator.release(answer.workload)
    state = allocator._compiled.state
    fresh = IncrementalAllocator(snap)._compiled.state
    assert state.gpu_free_milli == fresh.gpu_free_milli
    assert state.free_cpu == fresh.free_cpu


def test_refill_value_by_hand() -> None:
    # Shares of 300 and 500 milli, equally popular. A hole under 300 stays as it is; 300
    # and 500 are filled exactly; 500 takes a 500 (0 left) or a 300 (200 left): 100 on
    # average; 800 takes a 300 (500 left: 100) or a 500 (300 left: 0): 50.
    u = refill_value(np.array([300, 500, 1000]), np.array([1.0, 1.0, 5.0]))
    assert [u[h] for h in (0, 299, 300, 500, 800)] == [0, 299, 0, 100, 50]


@SETTINGS
@given(
    shapes=st.lists(st.tuples(st.integers(1, 1000), st.floats(0.01, 10.0)), min_size=1, max_size=12)
)
def test_refill_value_never_exceeds_the_hole(shapes: list[tuple[int, float]]) -> None:
    """Filling can only use capacity: 0 ≤ u(h) ≤ h, and a hole smaller than every shared
    shape keeps all of its milli."""
    milli = np.array([m for m, _ in shapes])
    u = refill_value(milli, np.array([w for _, w in shapes]))
    h = np.arange(1001)
    assert (u >= -1e-9).all() and (u <= h + 1e-9).all()
    smallest = min((m for m in milli if m < 1000), default=1001)
    assert (u[:smallest] == h[:smallest]).all()


def test_hole_values_blend() -> None:
    counts = {(0, 0, 1, 300, ()): 1.0, (0, 0, 1, 500, ()): 1.0}
    assert hole_values(counts, 0.0).tolist() == list(range(1001))
    blend = hole_values(counts, 0.75)
    assert blend[800] == 0.25 * 800 + 0.75 * 50


def _refill_cluster() -> Snapshot:
    # Two shared GPUs: 530 free (a 470 runs) and 680 free (a 320 runs); the cluster has
    # seen 470s three times as often as 320s, and whole GPUs.
    seen = [workload(f"a{i}").milli(470).queue("q").build() for i in range(9)]
    seen += [workload(f"b{i}").milli(320).queue("q").build() for i in range(3)]
    seen += [workload(f"c{i}").gpus(1).queue("q").build() for i in range(4)]
    return snapshot(
        nodes=[node("n0", A100, 2, shared=True)],
        queues=[queue("q").quota(A100, 2)],
        workloads=[
            workload("r470").milli(470).queue("q").running_on("n0", 0, milli=470).build(),
            workload("r320").milli(320).queue("q").running_on("n0", 1, milli=320).build(),
            *seen,
        ],
    )


def test_refill_keeps_a_hole_the_next_pods_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 320 next to the 470 would leave 210 that no shape seen fits. FGD's measure prefers
    it, as the 360 left next to the other 320 no longer fits the popular 470s; but a 320
    fills that 360 to 40, and the 530 still takes a 470 (to 60)."""
    pod = workload("new").milli(320).queue("q").build()
    monkeypatch.setattr(fragmentation_module, "REFILL", 0.0)
    fgd = IncrementalAllocator(_refill_cluster(), fragmentation_aware=True).decide(pod)
    monkeypatch.setattr(fragmentation_module, "REFILL", 0.75)
    refill = IncrementalAllocator(_refill_cluster(), fragmentation_aware=True).decide(pod)
    assert fgd.placement[0].gpus == (0,)
    assert refill.placement[0].gpus == (1,)
