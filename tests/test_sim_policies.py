"""The simulated policies on cases small enough to decide by hand."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.catalog import default_catalog
from scheduler.model import Demand, Gpu, MigSlice, Node, PodPlacement, Snapshot, Workload
from sim.cluster import Cluster, uniform_cluster
from sim.engine import run
from sim.fragmentation import fragmentation, mix_of
from sim.job import Job
from sim.occupancy import Occupancy, SimulationError
from sim.policies import POLICY_NAMES, make_policy
from sim.policies.fgd import FgdPlacer
from sim.policies.placement import PLACERS

A100 = "A100-80GB"


def job(
    name: str, submit: int, runtime: float, demand: Demand, queue: str = "q", **kw: object
) -> Job:
    return Job(Workload(name=name, queue=queue, created=submit, demand=demand, **kw), runtime)  # type: ignore[arg-type]


def starts(sim) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {s.name: s.first_start for s in sim.states}


def test_kueue_reclaims_lent_quota_greedy_waits() -> None:
    cluster = uniform_cluster(1, 4, A100).with_queues(("a", "b"))  # nominal 2 each, cohort
    jobs = (
        job("b-big", 0, 1000, Demand(gpus=4), "b"),
        job("a-small", 10, 100, Demand(gpus=2), "a"),
    )
    kueue = run(cluster, jobs, make_policy("kueue", cluster, jobs))
    # a is within its nominal 2; b borrows a's 2: Kueue evicts b-big to reclaim.
    assert starts(kueue)["a-small"] == 10
    assert kueue.recorder.summary(kueue)["preemptions"] == 1
    greedy = run(cluster, jobs, make_policy("greedy", cluster, jobs))
    assert starts(greedy)["a-small"] == 1000
    apportion = run(cluster, jobs, make_policy("apportion", cluster, jobs))
    # The core's global decision reclaims too, at once, as the controller decides after
    # every change.
    assert starts(apportion)["a-small"] == 10


def test_drf_alternates_tenants_fifo_does_not() -> None:
    cluster = uniform_cluster(1, 2, A100).with_queues(("x", "y"))
    jobs = (
        job("x1", 0, 100, Demand(gpus=1), "x"),
        job("x2", 0, 100, Demand(gpus=1), "x"),
        job("y1", 0, 100, Demand(gpus=1), "y"),
    )
    drf = run(cluster, jobs, make_policy("drf", cluster, jobs))
    assert starts(drf) == {"x1": 0, "y1": 0, "x2": 100}
    fifo = run(cluster, jobs, make_policy("fifo", cluster, jobs))
    assert starts(fifo) == {"x1": 0, "x2": 0, "y1": 100}


def _occupancy_with_a_share(mix_jobs: tuple[Job, ...] = ()) -> tuple[Occupancy, Job]:
    cluster = uniform_cluster(3, 2, A100, shared=True)
    occ = Occupancy(cluster.snapshot.nodes, cluster.catalog)
    occ.take("held", (PodPlacement(node="node-1", gpus=(0,), milli=600),), 0, 0)
    return occ, job("p", 0, 1, Demand(gpu_milli=300))


@pytest.mark.parametrize(
    ("placer", "node", "gpu"),
    [
        ("best-fit", "node-1", 0),  # least left: node-1, its fullest fitting GPU
        ("gpu-packing", "node-1", 0),  # a partly used GPU first
        ("dot-product", "node-0", 0),  # most free (aligned): nodes 0 and 2 tie, lowest wins
    ],
)
def test_placement_baselines(placer: str, node: str, gpu: int) -> None:
    occ, pod = _occupancy_with_a_share()
    (placed,) = PLACERS[placer](0).place(occ, pod) or ()
    assert (placed.node, placed.gpus, placed.milli) == (node, (gpu,), 300)
    assert occ.allocated_milli == 600  # placing leaves the occupancy as it was


def test_gpu_clustering_packs_like_shares_together() -> None:
    occ, pod = _occupancy_with_a_share()
    placer = PLACERS["gpu-clustering"](0)
    first = job("first", 0, 1, Demand(gpu_milli=300))
    placement = (PodPlacement(node="node-2", gpus=(1,), milli=300),)
    occ.take("first", placement, 0, 0)
    placer.placed(first, placement, occ)
    (placed,) = placer.place(occ, pod) or ()
    assert placed.node == "node-2"  # where a 300m pod already runs, not the used node-1


def test_fgd_descends_the_fragmentation_of_the_target_workload() -> None:
    occ, pod = _occupancy_with_a_share()
    # Target: whole GPUs. node-1 GPU 0's 400m free is already a fragment for them;
    # putting the pod there shrinks it (Δ −300), anywhere else breaks a whole GPU (+700).
    whole = mix_of((job("w", 0, 1, Demand(gpus=1)),), occ.model_names)
    (placed,) = FgdPlacer(0, whole).place(occ, pod) or ()
    assert (placed.node, placed.gpus) == ("node-1", (0,))
    # Target: 300m shares. 400m free serves them (no fragment); 100m left would not (+100);
    # an untouched GPU keeps serving them (Δ 0): the lowest such GPU wins.
    shares = mix_of((pod,), occ.model_names)
    (placed,) = FgdPlacer(0, shares).place(occ, pod) or ()
    assert (placed.node, placed.gpus) == ("node-0", (0,))


def test_fragmentation_measure_by_hand() -> None:
    jobs = (job("w", 0, 1, Demand(gpus=1)), job("s", 0, 1, Demand(gpu_milli=500)))
    mix = mix_of(jobs, ["A100-80GB"])
    slots = np.array([[1000, 400], [400, 400]])
    big = np.array([10**9, 10**9])
    got = fragmentation(slots, big, big, np.array([0, 0]), mix)
    # Node 0 runs both task types; its 400m GPU is a fragment for each: 400.
    # Node 1 runs neither: all 800m free is a fragment for both.
    assert got.tolist() == [400.0, 800.0]


def test_occupancy_refuses_double_booking() -> None:
    occ, _ = _occupancy_with_a_share()
    with pytest.raises(SimulationError, match="node-1 has 400m free, needs 500m"):
        occ.take("x", (PodPlacement(node="node-1", gpus=(0,), milli=500),), 0, 0)


def test_every_policy_name_builds() -> None:
    cluster = uniform_cluster(1, 1, A100).with_queues(("q",))
    jobs = (job("a", 0, 1, Demand(gpus=1)),)
    for name in POLICY_NAMES:
        sim = run(cluster, jobs, make_policy(name, cluster, jobs))
        assert sim.states[0].end == 1, name
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope", cluster, jobs)


BASELINES = ("random", "best-fit", "dot-product", "gpu-packing", "gpu-clustering", "fgd")


@pytest.mark.parametrize("name", BASELINES)
def test_no_baseline_puts_a_share_on_a_gpu_that_is_not_shared(name: str) -> None:
    """Node a is not shared and half used (every baseline's favourite: fuller, or first);
    only node b's GPUs take shares."""
    nodes = (
        Node(name="a", gpus=tuple(Gpu(index=i, model=A100) for i in range(2))),
        Node(name="b", gpus=tuple(Gpu(index=i, model=A100, shared=True) for i in range(2))),
    )
    occ = Occupancy(nodes, default_catalog())
    occ.take("held", (PodPlacement(node="a", gpus=(0,)),), 0, 0)
    pod = job("p", 0, 1, Demand(gpu_milli=300))
    placer = PLACERS[name](0)
    if isinstance(placer, FgdPlacer):
        placer.mix = mix_of((pod,), occ.model_names)
    (placed,) = placer.place(occ, pod) or ()
    assert (placed.node, placed.milli) == ("b", 300)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_shares_wait_on_a_cluster_without_shared_gpus(name: str) -> None:
    """The audit's case: two 500m pods on one H100 that is not time-shared can never run
    (the header says so); the placement baselines ran both on it, utilization 1."""
    cluster = uniform_cluster(1, 1, "H100-80GB").with_queues(("q",))
    jobs = (job("s1", 0, 100, Demand(gpu_milli=500)), job("s2", 0, 100, Demand(gpu_milli=500)))
    assert cluster.never_fitting(jobs) == list(jobs)
    sim = run(cluster, jobs, make_policy(name, cluster, jobs))
    assert sim.recorder.summary(sim)["unfinished"]["waiting"] == 2


def test_every_policy_places_mig_and_memory_demands_as_the_core_does() -> None:
    """The placement baselines placed neither (those jobs waited, left out of JCT, while the
    core's policies ran them). A 1g.10gb slice; a 20 GB memory need on its cheapest device,
    the 3g.40gb slice ($0.79/h), then, that taken, the L4 ($0.80/h)."""
    mig = (
        MigSlice(profile="1g.10gb", start=0),
        MigSlice(profile="1g.10gb", start=1),
        MigSlice(profile="3g.40gb", start=4),
    )
    nodes = (
        Node(name="m", gpus=(Gpu(index=0, model=A100, mig=mig),)),
        Node(name="l", gpus=(Gpu(index=0, model="L4"),)),
    )
    cluster = Cluster(Snapshot(nodes=nodes), "test").with_queues(("q",))
    jobs = (
        job("mig", 0, 100, Demand(mig_profile="1g.10gb")),
        job("mem", 1, 100, Demand(gpu_memory_mib=20_000)),
        job("mem2", 2, 100, Demand(gpu_memory_mib=20_000)),
    )
    core = {"mig": ("m", 0), "mem": ("m", 4), "mem2": ("l", None)}
    for name in POLICY_NAMES:
        sim = run(cluster, jobs, make_policy(name, cluster, jobs))
        got = {
            s.name: (s.last_placement[0].node, s.last_placement[0].mig_start) for s in sim.states
        }
        if name == "random":  # any free 1g.10gb slice
            assert got["mig"] in {("m", 0), ("m", 1)}
            got["mig"] = core["mig"]
        assert got == core, name
        assert [s.first_start for s in sim.states] == [0, 1, 2], name


def test_a_job_that_can_never_fit_blocks_no_policy() -> None:
    """The audit's case: a 16-GPU pod on an 8-GPU node (the header names it) kept fifo's
    queue, and its tenant's in drf, waiting for the whole run: nothing finished."""
    cluster = uniform_cluster(1, 8, "H100-80GB").with_queues(("q",))
    jobs = (
        job("big", 0, 10, Demand(gpus=16)),
        job("a", 1, 100, Demand(gpus=1)),
        job("b", 2, 100, Demand(gpus=8)),
    )
    assert cluster.never_fitting(jobs) == [jobs[0]]
    for name in POLICY_NAMES:
        sim = run(cluster, jobs, make_policy(name, cluster, jobs))
        assert (starts(sim)["big"], starts(sim)["a"]) == (-1, 1), name
        if name in ("fifo", "drf"):  # b (8 GPUs) waits for a, as it could fit later
            assert starts(sim)["b"] == 101, name


def _mig_gpu(name: str, slices: int) -> Node:
    """An A100 partitioned into ``slices`` 1g.10gb slices (1/7 of its compute each)."""
    layout = tuple(MigSlice(profile="1g.10gb", start=i) for i in range(slices))
    return Node(name=name, gpus=(Gpu(index=0, model=A100, mig=layout),))


def test_drf_charges_a_running_slice_as_it_charged_its_start() -> None:
    """x holds 4 of 7 slices (dominant share 4/7), y 1 of 2 whole GPUs (1/2): when z's GPU
    frees, y goes first. DRF charged a running slice its compute share (143 of the
    profile's 7,000) but a start 1,000: x read as 0.08 and went first."""
    nodes = (
        Node(name="w", gpus=tuple(Gpu(index=i, model=A100) for i in range(2))),
        _mig_gpu("m", 7),
    )
    cluster = Cluster(Snapshot(nodes=nodes), "test").with_queues(("x", "y", "z"))
    jobs = (
        job("z1", 0, 50, Demand(gpus=1), "z"),
        job("y1", 0, 1000, Demand(gpus=1), "y"),
        *(job(f"m{i}", 0, 1000, Demand(mig_profile="1g.10gb"), "x") for i in range(4)),
        job("xw", 10, 100, Demand(gpus=1), "x"),
        job("yw", 11, 100, Demand(gpus=1), "y"),
    )
    sim = run(cluster, jobs, make_policy("drf", cluster, jobs))
    assert (starts(sim)["yw"], starts(sim)["xw"]) == (50, 150)


def test_a_waiting_slice_asks_what_it_holds_once_running() -> None:
    """One 1g.10gb slice on a cluster of one GPU (1,000 milli): m1 holds 143 and m2 waits
    for it. Its demand was counted 1,000 while waiting, so x's fair share was the whole GPU
    and the deviation |143 − 1,000| / 1,000; as 143, x's fair share is 286: 0.143, over
    half the run (m2 runs alone after)."""
    cluster = Cluster(Snapshot(nodes=(_mig_gpu("m", 1),)), "test").with_queues(("x",))
    jobs = tuple(job(f"m{i}", 0, 100, Demand(mig_profile="1g.10gb"), "x") for i in (1, 2))
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs))
    assert sim.states[0].gpu_milli == sim.occupancy.demand_milli(jobs[1].workload) == 143
    fairness = sim.recorder.summary(sim)["fairness"]
    assert fairness["share_deviation_mean"] == round(0.143 * 100 / 200, 6)
