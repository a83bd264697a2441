"""The simulator's engine on golden traces computed by hand, plus determinism and
conservation properties over random small traces."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model import Demand, PodPlacement, Queue, Quota, Workload
from sim import engine
from sim.cluster import Cluster, uniform_cluster
from sim.commands import table
from sim.engine import EngineSettings, Simulation, run
from sim.events import Outage, Utilization
from sim.experiments import NotFiniteError, ReplaySettings, dumps, replay_experiment
from sim.job import Job
from sim.jobfile import load_job_csv
from sim.policies import make_policy
from sim.policy import Actions, Context, Start
from sim.trace import Trace

A100 = "A100-80GB"


def job(
    name: str, submit: int, runtime: float, gpus: int = 1, queue: str = "q", **kw: object
) -> Job:
    rates = kw.pop("rates", ())
    w = Workload(name=name, queue=queue, created=submit, demand=Demand(gpus=gpus), **kw)  # type: ignore[arg-type]
    return Job(w, runtime, rates)  # type: ignore[arg-type]


def one_node(gpus: int = 4, nodes: int = 1, queues: tuple[str, ...] = ("q",)) -> Cluster:
    return uniform_cluster(nodes, gpus, A100).with_queues(queues)


def times(sim: Simulation) -> dict[str, tuple[int, int]]:
    """name → (first start, end)."""
    return {s.name: (s.first_start, s.end) for s in sim.states}


GOLDEN = (job("a", 0, 100, 2), job("b", 10, 50, 4), job("c", 20, 30, 2))


def test_golden_greedy_backfills_what_fits() -> None:
    cluster = one_node()
    sim = run(cluster, GOLDEN, make_policy("greedy", cluster, GOLDEN))
    # t0 a starts (2 of 4 GPUs); t10 b (4) waits; t20 c (2) fits and runs to 50;
    # t100 a ends and b runs 100-150.
    assert times(sim) == {"a": (0, 100), "b": (100, 150), "c": (20, 50)}
    s = sim.recorder.summary(sim)
    assert s["jct_s"]["all"] == {"count": 3, "mean": 90.0, "p50": 100.0, "p95": 140.0, "p99": 140.0}
    assert s["queueing_delay_s"]["all"]["p95"] == 90.0
    # GPU-seconds 2·20 + 4·30 + 2·50 + 4·50 = 460 of 4·150 = 600.
    assert s["utilization_mean"] == round(460 / 600, 6)
    assert s["finished"] == 3 and s["preemptions"] == 0


def test_a_time_past_2_to_the_63_runs_to_its_end() -> None:
    """Trace times are ints of any size; the arrivals' end marker was 2**63, so a job that
    ended past it (runtime 1e20 in a CSV) was taken for an arrival: an AssertionError."""
    jobs = (job("a", 0, 1e20), job("b", 10, 5))
    cluster = one_node()
    sim = run(cluster, jobs, make_policy("fifo", cluster, jobs))
    assert times(sim) == {"a": (0, 10**20), "b": (10, 15)}


def test_golden_fifo_blocks_behind_its_head() -> None:
    cluster = one_node()
    sim = run(cluster, GOLDEN, make_policy("fifo", cluster, GOLDEN))
    # c may not pass b: it starts when b ends.
    assert times(sim) == {"a": (0, 100), "b": (100, 150), "c": (150, 180)}
    s = sim.recorder.summary(sim)
    assert s["queueing_delay_s"]["all"] == {
        "count": 3,
        "mean": round(220 / 3, 6),
        "p50": 90.0,
        "p95": 130.0,
        "p99": 130.0,
    }


def test_per_queue_and_priority_percentiles() -> None:
    cluster = one_node(queues=("x", "y"))
    jobs = (job("a", 0, 10, 4, "x"), job("b", 0, 10, 4, "y", priority=5))
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs))
    s = sim.recorder.summary(sim)
    # b (priority 5) goes first: 0-10, then a 10-20.
    assert s["jct_s"]["by_queue"]["x"]["p50"] == 20.0
    assert s["jct_s"]["by_priority"]["5"]["p50"] == 10.0
    assert list(s["jct_s"]["by_priority"]) == ["0", "5"]


class Scripted:
    """Starts jobs on free GPUs and, at ``evict_at``, evicts ``victim`` and restarts it in
    the same place at once: tests the engine's bookkeeping alone."""

    name = "scripted"
    tie_rule = "none"

    def __init__(self, evict_at: int, victim: str) -> None:
        self.evict_at = evict_at
        self.tick_s = 0
        self.victim = victim

    def schedule(self, ctx: Context) -> Actions:
        actions = Actions()
        if ctx.now == self.evict_at and self.victim in ctx.running:
            actions.evictions.append((self.victim, "test"))
            actions.starts.append(Start(self.victim, ctx.running[self.victim].placement))
        free = ctx.occupancy.usable_free()
        node = ctx.occupancy.node_names[0]
        for s in ctx.pending.values():
            need = s.job.workload.demand.gpus or 1
            gpus = [i for i in range(len(free)) if free[i] == 1000][:need]
            if len(gpus) == need:
                for g in gpus:
                    free[g] = 0
                actions.starts.append(Start(s.name, (PodPlacement(node=node, gpus=tuple(gpus)),)))
        return actions


def test_preemption_keeps_work_up_to_the_last_checkpoint() -> None:
    cluster = one_node(gpus=2)
    jobs = (job("v", 0, 100, 2),)
    wake = [Utilization(70, "v", 1.0)]  # a metric change at 70: a scheduling point
    sim = run(cluster, jobs, Scripted(70, "v"), EngineSettings(checkpoint_s=30), metrics=wake)
    # Evicted at 70 after 70 s of running: checkpoints at 30 and 60 keep 60 s of work; it
    # restarts at once and needs 40 more. 10 s × 2 GPUs are lost.
    assert times(sim)["v"] == (0, 110)
    s = sim.recorder.summary(sim)
    assert s["preemptions"] == 1
    assert s["gpu_hours"]["lost_to_preemption"] == round(20 / 3600, 6)


def test_preemption_without_checkpoints_restarts_from_zero() -> None:
    cluster = one_node(gpus=2)
    jobs = (job("v", 0, 100, 2),)
    wake = [Utilization(70, "v", 1.0)]
    sim = run(cluster, jobs, Scripted(70, "v"), EngineSettings(checkpoint_s=0), metrics=wake)
    assert times(sim)["v"] == (0, 170)
    assert sim.recorder.summary(sim)["gpu_hours"]["lost_to_preemption"] == round(140 / 3600, 6)


def test_outage_kills_requeues_and_returns_capacity() -> None:
    cluster = one_node(gpus=1, nodes=2)
    jobs = (job("x", 0, 100), job("y", 0, 100), job("z", 50, 10))
    outage = Outage(40, "node-0", 100)
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs), outages=[outage])
    # x on node-0, y on node-1. At 40 node-0 fails: x is killed (no checkpoint) and waits;
    # z (50) waits too. At 100 y ends: x (older) restarts on node-1 until 200. At 140
    # node-0 is back: z runs 140-150.
    assert times(sim) == {"x": (0, 200), "y": (0, 100), "z": (140, 150)}
    s = sim.recorder.summary(sim)
    assert s["outage_kills"] == 1 and s["preemptions"] == 0
    assert s["gpu_hours"]["lost_to_outages"] == round(40 / 3600, 6)
    assert s["gpu_hours"]["lost_to_preemption"] == 0.0
    # Capacity while node-0 is down (40-140) is 1 GPU, else 2: 2·40 + 1·100 + 2·60 GPU-s.
    assert s["gpu_hours"]["capacity"] == round(300 / 3600, 6)


def test_work_lost_to_an_outage_is_not_lost_to_preemption() -> None:
    """An outage kill's lost work was added to lost_to_preemption (lostGPUh), which counts
    what the policy's evictions threw away: 8 GPUs × 40 s read as preemption with none."""
    cluster = uniform_cluster(1, 8, "H100-80GB")
    trace = Trace((job("a", 0, 100, 8, "q1"),), "inline", "csv")
    settings = ReplaySettings(outages=(Outage(40, "node-0", 10),))
    s = replay_experiment(cluster, trace, ["fifo"], [0], settings).result["runs"][0]["summary"]
    # Killed at 40 (no checkpoint), back at 50, runs again 50-150.
    assert s["end_s"] == 150 and s["outage_kills"] == 1 and s["preemptions"] == 0
    assert s["gpu_hours"]["lost_to_preemption"] == 0.0
    assert s["gpu_hours"]["lost_to_outages"] == round(8 * 40 / 3600, 6)


def test_random_failures_are_drawn_over_the_whole_run() -> None:
    """Failures were drawn up to the last arrival (+1 s): two 8-GPU jobs of an hour, both
    at 0, on two nodes with a failure every 0.5 h per node saw none."""
    cluster = uniform_cluster(2, 8, "H100-80GB")
    trace = Trace((job("a", 0, 3600, 8, "q1"), job("b", 0, 3600, 8, "q1")), "inline", "csv")
    settings = ReplaySettings(engine=EngineSettings(checkpoint_s=60), mtbf_hours=0.5, mttr_s=600)
    runs = replay_experiment(cluster, trace, ["fifo"], [0, 1, 2], settings).result["runs"]
    for one in runs:
        s = one["summary"]
        assert s["finished"] == 2, one["seed"]
        # Each kill sets a job back (to its last checkpoint) and its node is out 600 s.
        assert one["outages"] > 0 and s["outage_kills"] > 0, one["seed"]
        assert s["end_s"] >= 3600 + 600, one["seed"]


def test_random_failures_stop_with_the_work_they_could_hit() -> None:
    """Failures are drawn as the run goes while jobs run: a job no node can ever host
    keeps none coming (the run ends). A run that could not end is refused: up front when
    a job must run an hour unbroken on nodes failing every 36 s (about e^100 tries), or
    when it draws a million failures (here 100: a gang of two nodes that fails about
    e^25 times before one try gets through)."""
    cluster = one_node(gpus=8)
    jobs = (job("a", 0, 100, 8), job("x", 0, 10, 16))
    failures = engine.Failures(mtbf_s=1000.0, mttr_s=10, seed=0)
    sim = run(cluster, jobs, make_policy("fifo", cluster, jobs), failures=failures)
    assert sim.states[0].end >= 100 and sim.recorder.summary(sim)["unfinished"]["waiting"] == 1
    hour = (job("a", 0, 3600, 8), job("b", 0, 3600, 8))
    failures = engine.Failures(mtbf_s=36.0, mttr_s=600, seed=0)
    with pytest.raises(ValueError, match=r"without a checkpoint: .* about 2\.7e\+43 tries"):
        Simulation(cluster, hour, make_policy("fifo", cluster, hour), failures=failures)
    # With a horizon the run ends there.
    settings = EngineSettings(horizon=5000)
    sim = run(cluster, hour, make_policy("fifo", cluster, hour), settings, failures=failures)
    assert sim.recorder.summary(sim)["end_s"] == 5000 and sim.outages > 0
    two = one_node(gpus=8, nodes=2)
    gang = (job("g", 0, 100, 8, pods=2),)
    failures = engine.Failures(mtbf_s=8.0, mttr_s=1, seed=0)
    sim = Simulation(two, gang, make_policy("fifo", two, gang), failures=failures)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "MAX_OUTAGES", 100)
        with pytest.raises(ValueError, match="more than 100 node failures by"):
            sim.run()


def test_throughput_table_speeds_a_job_up() -> None:
    cluster = one_node(gpus=1)
    jobs = (job("fast", 0, 100, rates=(("a100-80gb", 2.0),)),)  # resolved via the catalog
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs))
    assert times(sim)["fast"] == (0, 50)


def test_idle_but_reserved_while_work_waits() -> None:
    cluster = one_node(gpus=1)
    jobs = (job("idle", 0, 100), job("waits", 10, 10))
    metrics = [Utilization(0, "idle", 0.25)]
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs), metrics=metrics)
    # 'waits' waits 10-100 while 'idle' uses a quarter of its GPU: 0.75 × 90 GPU-s idle.
    s = sim.recorder.summary(sim)
    assert s["gpu_hours"]["idle_reserved_while_waiting"] == round(0.75 * 90 / 3600, 6)


def test_interval_batches_scheduling_points() -> None:
    cluster = one_node(gpus=4)
    jobs = (job("a", 5, 10), job("b", 7, 10))
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs), EngineSettings(interval=60))
    assert times(sim) == {"a": (60, 70), "b": (60, 70)}


def test_interval_ticks_on_its_grid_while_work_waits() -> None:
    """With --interval 30 the policy is called at 0, 30, 60, … while work waits. There was
    no tick at 0 (a started at 30), and a job arriving on an idle cluster with nothing else
    ahead (c at 95) never started: a tick was queued only if events lay ahead or the last
    call acted, and no call had seen c."""
    cluster = one_node(gpus=8)
    jobs = (job("a", 0, 10), job("b", 30, 10), job("c", 95, 10))
    sim = run(cluster, jobs, make_policy("fifo", cluster, jobs), EngineSettings(interval=30))
    assert times(sim) == {"a": (0, 10), "b": (30, 40), "c": (120, 130)}
    alone = (job("a", 5, 10),)
    sim = run(cluster, alone, make_policy("fifo", cluster, alone), EngineSettings(interval=30))
    assert times(sim) == {"a": (30, 40)}


@pytest.mark.parametrize("policy", ["apportion", "apportion-greedy", "fifo", "kueue", "best-fit"])
def test_interval_is_every_policys_one_calling_grid(policy: str) -> None:
    """--interval 60 was min(60, --tick 30) for apportion alone: called at 30, it started b
    as soon as a ended (20), while every other policy waited for 60."""
    cluster = one_node(gpus=1)
    jobs = (job("a", 0, 20), job("b", 0, 10))
    sim = run(cluster, jobs, make_policy(policy, cluster, jobs), EngineSettings(interval=60))
    assert times(sim) == {"a": (0, 20), "b": (60, 70)}


def test_the_run_ends_at_its_last_change_not_at_a_tick_after_it() -> None:
    """A tick queued while b waited (for 120) outlived b's end (110): the run ended at 120
    and util read 520 / (8·120) GPU-s instead of 520 / (8·110)."""
    cluster = one_node(gpus=8)
    jobs = (job("a", 0, 100, 4), job("b", 1, 10, 8), job("c", 2, 10, 4))
    for policy in ("apportion", "kueue"):
        sim = run(cluster, jobs, make_policy(policy, cluster, jobs))
        assert times(sim) == {"a": (0, 100), "b": (100, 110), "c": (2, 12)}, policy
        s = sim.recorder.summary(sim)
        assert s["end_s"] == 110, policy
        assert s["utilization_mean"] == round(520 / 880, 6), policy
        assert s["gpu_hours"]["capacity"] == round(880 / 3600, 6), policy
    # x (16 GPUs) never runs: the last tick that finds it waiting changes nothing, and the
    # run ends at b's end; with a horizon, x still waits there, and the run ends at it.
    stuck = (*jobs, job("x", 3, 10, 16))
    sim = run(cluster, stuck, make_policy("apportion", cluster, stuck))
    assert sim.recorder.summary(sim)["end_s"] == 110
    settings = EngineSettings(horizon=500)
    sim = run(cluster, stuck, make_policy("apportion", cluster, stuck), settings)
    assert sim.recorder.summary(sim)["end_s"] == 500
    # A horizon past the last completion stops nothing: the run still ends at 110.
    sim = run(cluster, jobs, make_policy("apportion", cluster, jobs), settings)
    assert sim.recorder.summary(sim)["end_s"] == 110


def test_jobs_arriving_after_the_horizon_are_not_counted_as_waiting() -> None:
    """b and c arrive after --horizon 100: they were counted as still waiting at the end
    (a job's phase is 'waiting' from the start, before it arrives)."""
    cluster = one_node(gpus=8)
    jobs = (job("a", 0, 50), job("b", 200, 10), job("c", 300, 10))
    settings = EngineSettings(horizon=100)
    sim = run(cluster, jobs, make_policy("fifo", cluster, jobs), settings)
    s = sim.recorder.summary(sim)
    assert s["finished"] == 1 and s["end_s"] == 100
    assert s["unfinished"] == {"waiting": 0, "running": 0, "not_arrived": 2}


def test_fairness_and_fragmentation_are_measured_over_the_whole_run() -> None:
    """The curves, and the means taken over them, stopped after 10 × max(last arrival,
    200) s: 2,000 samples over 0-1999 of a run that ends at 5,000 read Jain 0.75 and
    deviation 0.50. Over the whole run: a (q1) runs 0-1000 while b (q2) waits, each
    queue's fair share is 4 of 8 GPUs (Jain over 8/4 and 0/4 = 0.5, deviation 8/8 = 1);
    b runs alone 1000-5000 (Jain 1, deviation 0)."""
    cluster = one_node(gpus=8, queues=("q1", "q2"))
    jobs = (job("a", 0, 1000, 8, "q1"), job("b", 0, 4000, 8, "q2"))
    sim = run(cluster, jobs, make_policy("fifo", cluster, jobs))
    s = sim.recorder.summary(sim)
    assert s["end_s"] == 5000
    assert s["fairness"] == {
        "jain_mean": (1000 * 0.5 + 4000 * 1) / 5000,
        "share_deviation_mean": 1000 * 1 / 5000,
    }
    # The node is full all along: nothing free, nothing fragmented.
    assert s["fragmentation_mean"] == 0.0
    curve = s["curves"]
    assert curve["t"][0] == 0 and 4000 < curve["t"][-1] < 5000
    assert len(curve["t"]) <= 10 * EngineSettings().samples
    assert curve["jain"][0] == 0.5 and curve["jain"][-1] == 1.0


def test_curves_are_thinned_to_cover_a_run_far_longer_than_the_trace() -> None:
    """The trace alone suggests 10 s (a, 10 s on 8 GPUs), so the step is 5 s for 2 samples;
    an outage from 5 s to 100,005 s stretches the run to 100,015 s. The curve keeps at most
    20 points, doubling its step, and still reaches the end."""
    cluster = one_node(gpus=8)
    jobs = (job("a", 0, 10, 8),)
    outage = [Outage(5, "node-0", 100_000)]
    settings = EngineSettings(samples=2)
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs), settings, outage)
    s = sim.recorder.summary(sim)
    assert s["end_s"] == 100_015
    t = s["curves"]["t"]
    step = 5 * 2**10  # 5 s doubled until 20 points of it reach past 100,015 s
    assert t == list(range(0, 100_015, step)) and len(t) <= 20
    # Utilization 1 until the outage, 0 while the node is down and after.
    assert s["curves"]["utilization"] == [1.0] + [0.0] * (len(t) - 1)


def test_the_fragmentation_mean_is_time_weighted_over_the_run() -> None:
    """Two 4-GPU nodes; the trace's only shape is a 3-GPU pod, so a node with one GPU free
    has it fragmented. a runs 0-100 on node-0 (1 of 5 free GPUs fragmented: 0.2); nothing
    runs 100-500 (0); b and c run 500-1500 on one node each (2 of 2: 1.0); b alone runs
    1500-2000 (0.2). The mean was over samples every 3 s (the arrival span / 200)."""
    cluster = one_node(gpus=4, nodes=2)
    jobs = (job("a", 0, 100, 3), job("b", 500, 1500, 3), job("c", 500, 1000, 3))
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs))
    s = sim.recorder.summary(sim)
    assert times(sim) == {"a": (0, 100), "b": (500, 2000), "c": (500, 1500)}
    assert s["fragmentation_mean"] == (100 * 0.2 + 1000 * 1.0 + 500 * 0.2) / 2000


def test_the_fragmentation_mean_sees_cpu_as_it_was() -> None:
    """One node of 4 GPUs and 8 CPUs; the only shape is 1 GPU with 4 CPUs. a alone (0-100):
    3 GPUs and 4 CPUs free, the shape fits (0); with b (100-200) no CPU is left, so both
    free GPUs are fragmented (1)."""
    base = one_node(gpus=4)
    node = base.snapshot.nodes[0].model_copy(update={"cpu_milli": 8000})
    cluster = Cluster(base.snapshot.model_copy(update={"nodes": (node,)}), base.source)
    jobs = (job("a", 0, 200, cpu_milli=4000), job("b", 100, 100, cpu_milli=4000))
    sim = run(cluster, jobs, make_policy("greedy", cluster, jobs))
    s = sim.recorder.summary(sim)
    assert times(sim) == {"a": (0, 200), "b": (100, 200)}
    assert s["fragmentation_mean"] == 0.5


DEMO = "sim/traces/demo/demo-jobs.csv"


def _demo(n: int) -> Trace:
    from pathlib import Path

    text = (Path(__file__).parents[1] / DEMO).read_text()
    return Trace(load_job_csv(text, DEMO)[:n], DEMO, "csv")


def test_same_inputs_and_seed_give_identical_json() -> None:
    from sim.cluster import load_cluster

    cluster = load_cluster("default")
    trace = _demo(80)
    settings = ReplaySettings(engine=EngineSettings(checkpoint_s=600), mtbf_hours=2.0, mttr_s=900)
    texts = [
        dumps(replay_experiment(cluster, trace, ["apportion", "random"], [3], settings).result)
        for _ in range(2)
    ]
    assert texts[0] == texts[1]
    other = dumps(replay_experiment(cluster, trace, ["random"], [4], settings).result)
    assert other != texts[0]


def test_results_are_strict_json() -> None:
    """json.dumps writes a bare NaN or Infinity, which JSON does not have and other readers
    refuse: results.json (and plan.json, which uses the same text) names it instead."""
    assert dumps({"b": [1.0, 2], "a": None}, compact=True) == '{"a":null,"b":[1.0,2]}\n'
    with pytest.raises(NotFiniteError, match=r"holds nan at runs\[1\]\.jain, which JSON"):
        dumps({"runs": [{"jain": 1.0}, {"jain": math.nan}]})


POLICIES = ("greedy", "apportion-greedy", "fifo", "kueue", "drf", "best-fit", "fgd", "random")


@st.composite
def traces(draw: st.DrawFn) -> tuple[Job, ...]:
    count = draw(st.integers(1, 12))
    jobs = []
    for i in range(count):
        shared = draw(st.booleans())
        demand = (
            Demand(gpu_milli=draw(st.sampled_from((250, 500, 750))))
            if shared
            else Demand(gpus=draw(st.sampled_from((1, 2, 4))))
        )
        w = Workload(
            name=f"j{i}",
            queue=draw(st.sampled_from(("x", "y"))),
            priority=draw(st.sampled_from((0, 10))),
            created=draw(st.integers(0, 200)),
            pods=draw(st.integers(1, 2)),
            demand=demand,
        )
        jobs.append(Job(w, float(draw(st.integers(1, 300)))))
    return tuple(jobs)


@settings(max_examples=25, deadline=None)
@given(jobs=traces(), policy=st.sampled_from(POLICIES), checkpoint=st.sampled_from((0, 50)))
def test_conservation(jobs: tuple[Job, ...], policy: str, checkpoint: int) -> None:
    cluster = uniform_cluster(2, 4, A100, shared=True).with_queues(("x", "y"))
    sim = run(
        cluster,
        jobs,
        make_policy(policy, cluster, jobs, seed=1),
        EngineSettings(checkpoint_s=checkpoint, samples=20),
    )
    s = sim.recorder.summary(sim)
    # Every job fits the empty cluster, nothing fails: every job completes.
    assert s["finished"] == len(jobs), s["unfinished"]
    for state in sim.states:
        assert state.end - state.first_start >= state.job.work - 1e-9
        assert state.first_start >= state.job.submit
    assert s["gpu_hours"]["used"] <= s["gpu_hours"]["capacity"] + 1e-6
    assert all(0.0 <= u <= 1.0 for u in s["curves"]["utilization"])
    assert sim.occupancy.allocated_milli == 0


@settings(max_examples=25, deadline=None)
@given(jobs=traces(), batch=st.sampled_from((1, 3, 4096)))
def test_the_means_are_those_of_the_whole_cluster_at_every_instant(
    jobs: tuple[Job, ...], batch: int
) -> None:
    """Fragmentation is kept per node and measured in batches; the mean must be the one a
    measure of the whole cluster after every change gives, whatever the batch size."""
    import numpy as np

    from sim import metrics
    from sim.fragmentation import fragmentation

    cluster = uniform_cluster(2, 4, A100, shared=True).with_queues(("x", "y"))
    # One point on the curves: a point measures at once, the batches would stay short.
    settings = EngineSettings(samples=1)
    sim = Simulation(cluster, jobs, make_policy("greedy", cluster, jobs), settings)
    recorder, occ = sim.recorder, sim.occupancy
    held: list[tuple[float, float, float]] = []
    advance = recorder.advance

    def measured(t: int) -> None:
        if t > recorder.t:
            free = occ.usable_free()
            slots = np.where(occ.node_gpus >= 0, free[np.maximum(occ.node_gpus, 0)], -1)
            frag = fragmentation(slots, occ.free_cpu, occ.free_mem, occ.node_model, recorder.mix)
            total = float(np.maximum(slots, 0).sum())
            share = float(frag.sum()) / total if total else 0.0
            held.append((t - recorder.t, share, recorder._fairness()[0]))
        advance(t)

    recorder.advance = measured  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "_BATCH", batch)
        sim.run()
    s = recorder.summary(sim)
    end = s["end_s"] - s["start_s"]  # measured from the first arrival
    assert sum(dt for dt, _, _ in held) == end
    assert s["fragmentation_mean"] == pytest.approx(
        sum(dt * f for dt, f, _ in held) / end, abs=2e-6
    )
    assert s["fairness"]["jain_mean"] == pytest.approx(
        sum(dt * j for dt, _, j in held) / end, abs=2e-6
    )


@pytest.mark.parametrize("policy", ["apportion", "apportion-greedy"])
def test_apportion_decides_when_capacity_frees_as_the_controller_does(policy: str) -> None:
    """The controller decides after every change (webhook/controller.py): b1 reclaims qb's
    GPU from a1 when it arrives, and a1 runs again as soon as b1 ends, as under kueue. The
    simulated controller decided at most every --tick (30 s) on a grid: b1 waited for 30,
    and the two GPUs b1 freed at 40 sat idle until 60 (a1 ended at 160)."""
    cluster = one_node(gpus=2, queues=("qa", "qb"))
    jobs = (job("a1", 0, 100, 2, "qa"), job("b1", 10, 10, 1, "qb"))
    for name in (policy, "kueue"):
        sim = run(cluster, jobs, make_policy(name, cluster, jobs))
        assert times(sim) == {"a1": (0, 120), "b1": (10, 20)}, name


def test_utilization_is_integrated_from_the_first_arrival() -> None:
    """A filter after loading (Gavel's GPU types not in the cluster) can drop a trace's
    first jobs: integrated from 0, the empty cluster before the first job kept (100 s)
    read as idle, util 0.33 for a GPU busy from a's arrival to its end."""
    cluster = one_node(gpus=1)
    jobs = (job("a", 100, 50),)
    sim = run(cluster, jobs, make_policy("fifo", cluster, jobs))
    s = sim.recorder.summary(sim)
    assert s["utilization_mean"] == s["goodput_mean"] == 1.0
    assert (s["start_s"], s["end_s"]) == (100, 150)
    assert s["gpu_hours"]["capacity"] == round(50 / 3600, 6)
    assert s["curves"]["t"][0] == 100 and s["curves"]["utilization"][0] == 1.0
    assert s["fairness"]["jain_mean"] == 1.0 and s["fragmentation_mean"] == 0.0


def test_goodput_leaves_out_the_work_evictions_threw_away() -> None:
    """util counts a1's first run (0-10 on 2 GPUs), which b1's reclaim threw away, so kueue
    read 230 of 240 GPU-s (0.958) with nothing saying 20 were lost: goodput is 210 / 240."""
    cluster = one_node(gpus=2, queues=("qa", "qb"))
    jobs = (job("a1", 0, 100, 2, "qa"), job("b1", 10, 10, 1, "qb"))
    sim = run(cluster, jobs, make_policy("kueue", cluster, jobs))
    s = sim.recorder.summary(sim)
    assert s["utilization_mean"] == round(230 / 240, 6)
    assert s["goodput_mean"] == round(210 / 240, 6)
    assert s["gpu_hours"]["kept"] == round(210 / 3600, 6)
    # Work a checkpoint saved is kept: a1 loses 0 of its first 10 s with checkpoints every 5.
    sim = run(cluster, jobs, make_policy("kueue", cluster, jobs), EngineSettings(checkpoint_s=5))
    s = sim.recorder.summary(sim)
    assert s["goodput_mean"] == s["utilization_mean"] == round(210 / 220, 6)


@pytest.mark.parametrize("policy", ["apportion", "apportion-greedy"])
def test_apportion_decides_after_the_webhooks_admissions(policy: str) -> None:
    """As in production the webhook admits an arrival that fits at once (low2) and the
    controller's decision that follows sees it running: here it makes room for hi, and
    evicting what was admitted this very instant leaves it waiting, never started."""
    cluster = one_node(gpus=2)
    jobs = (
        job("low", 0, 100),
        job("low2", 5, 100),
        job("hi", 5, 10, 2, priority=10),
    )
    sim = run(cluster, jobs, make_policy(policy, cluster, jobs))
    assert times(sim) == {"low": (0, 115), "low2": (15, 115), "hi": (5, 15)}
    assert {s.name: s.preemptions for s in sim.states} == {"low": 1, "low2": 0, "hi": 0}


@pytest.mark.parametrize("policy", ["apportion", "apportion-greedy"])
def test_regression_a_decision_between_ticks_does_not_skip_the_next(policy: str) -> None:
    # Found by test_conservation: a global decision at a release (t=181) made the tick at
    # t=210 look early (29 s < 30 s); with no event left, j0 waited forever.
    specs = [("j0", 1, 2, 4, 1)] + [
        (f"j{i}", 0, 1, 1, r) for i, r in zip(range(1, 5), (182, 1, 1, 181), strict=True)
    ]
    jobs = tuple(
        Job(
            Workload(
                name=name, queue="x", priority=0, created=at, pods=pods, demand=Demand(gpus=gpus)
            ),
            float(runtime),
        )
        for name, at, pods, gpus, runtime in specs
    )
    cluster = uniform_cluster(2, 4, A100, shared=True).with_queues(("x", "y"))
    sim = run(cluster, jobs, make_policy(policy, cluster, jobs, seed=1), EngineSettings())
    summary = sim.recorder.summary(sim)
    assert summary["finished"] == len(jobs), summary["unfinished"]


def test_a_run_keeps_what_exists_out_of_gc_and_hands_it_back() -> None:
    """The run freezes what exists when it starts and unfreezes it at the end, also when
    the policy fails; a process that froze objects of its own keeps them frozen."""
    import gc

    cluster = one_node()

    class Seen:
        name, tie_rule, tick_s = "seen", "", 0
        frozen = 0

        def schedule(self, ctx: Context) -> Actions:
            Seen.frozen = max(Seen.frozen, gc.get_freeze_count())
            return Actions()

    assert gc.get_freeze_count() == 0
    sim = Simulation(cluster, GOLDEN, Seen())
    sim.run()
    assert Seen.frozen > 0 and gc.get_freeze_count() == 0

    class Broken(Seen):
        def schedule(self, ctx: Context) -> Actions:
            raise RuntimeError("policy bug")

    with pytest.raises(RuntimeError, match="policy bug"):
        Simulation(cluster, GOLDEN, Broken()).run()
    assert gc.get_freeze_count() == 0

    gc.freeze()
    try:
        mine = gc.get_freeze_count()
        Simulation(cluster, GOLDEN, Seen()).run()
        assert gc.get_freeze_count() == mine
    finally:
        gc.unfreeze()


def test_progress_is_reported_by_the_clock_over_arrivals_and_completions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Was: a report every 4,096 events. The demo replay has a few thousand events that take
    # 20 s (each is a scheduling call on 496 GPUs), so its bar drew 0 % and then 100 %; and
    # progress counted arrivals only, so it sat at 100 % while the queue drained.
    monkeypatch.setattr(engine, "_PROGRESS_EVERY_S", 0.005)
    jobs = [job(f"j{i}", i, 30, 1 + i % 2) for i in range(40)]
    cluster = one_node(gpus=8, nodes=1)
    fifo = make_policy("fifo", cluster, jobs)

    class Slow:
        name, tie_rule, tick_s = fifo.name, fifo.tie_rule, fifo.tick_s

        def schedule(self, ctx: Context) -> Actions:
            time.sleep(0.002)
            return fifo.schedule(ctx)

    reports: list[float] = []
    run(cluster, jobs, Slow(), progress=reports.append)
    assert reports[0] <= 1 / 80 and reports[-1] == 1.0  # the first after the first pass
    assert reports == sorted(reports)
    between = [r for r in reports if 0.0 < r < 1.0]
    assert len(between) >= 5, reports
    # The last arrival is at t=39 and jobs run 30 s: after every arrival, half the work
    # (the completions) is still to come.
    assert any(0.5 < r < 1.0 for r in between), reports


def test_jobs_quotas_can_never_admit_are_named_and_counted_per_run() -> None:
    """A gang of 8 GPUs in a queue that may hold 4 (nominal 4, borrowing limit 0) waited
    through kueue's whole run without a word, left out of JCT; fifo ignores quotas and ran
    it. They are named with the core's reason, and each run counts those it left waiting."""
    cluster = uniform_cluster(1, 8, A100)
    quota = {A100: Quota(nominal=4, borrowing_limit=0)}
    queues = (Queue(name="a", cohort="c", quota=quota), Queue(name="b", cohort="c", quota=quota))
    cluster = Cluster(cluster.snapshot.model_copy(update={"queues": queues}), cluster.source)
    jobs = (job("gang", 0, 100, 4, "a", pods=2), job("one", 0, 100, 1, "a"))
    outcome = replay_experiment(cluster, Trace(jobs, "inline", "csv"), ["kueue", "fifo"], [0])
    why = "gang (BorrowingLimit: queue a at 0/4 A100-80GB (borrowing limit 0); needs 8)"
    assert outcome.result["never_admitted"] == {"jobs": 1, "names": ["gang"], "examples": [why]}
    assert [r["never_admitted_waiting"] for r in outcome.result["runs"]] == [1, 0]
    assert [r["summary"]["finished"] for r in outcome.result["runs"]] == [1, 2]
    assert (
        f"1 job(s) their queues' quotas can never admit, even on an empty cluster (e.g. {why}); "
        "left waiting by kueue/0 1\n"
    ) in table(outcome)
