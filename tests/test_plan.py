"""``sim.plan``: SLO parsing, the fluid bound, the search on demands whose answer is worked
out by hand, monotonicity in the demand, and shard + merge."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scheduler.loading import load_snapshot_text
from scheduler.model import Demand, Workload
from sim.cluster import Cluster
from sim.job import Job
from sim.plan.candidates import Candidate, build_cluster, candidate_grid, pools_of
from sim.plan.demand import grow
from sim.plan.evaluate import EvalTask, evaluate
from sim.plan.fluid import fluid_bound, fluid_demand
from sim.plan.search import SearchSettings, candidate_bound, search
from sim.plan.slo import SloError, goal_ratios, parse_slo, shown
from sim.plan.verdict import verdict

ROOT = Path(__file__).resolve().parents[1]

# Two pools: A100 nodes of 4 GPUs ($1.84/GPU-h) and L4 nodes of 4 GPUs ($0.80/GPU-h).
CLUSTER = """
node_pools:
  - {name: a100, count: 2, gpu_model: A100-80GB, gpus_per_node: 4,
     cpu_milli: 64000, memory_mib: 512000, labels: {apportion.io/node-pool: a100}}
  - {name: l4, count: 2, gpu_model: L4, gpus_per_node: 4,
     cpu_milli: 64000, memory_mib: 512000, labels: {apportion.io/node-pool: l4}}
"""
A100_NODE = 4 * 1.84
L4_NODE = 4 * 0.80


def cluster(queues: tuple[str, ...] = ("q",)) -> Cluster:
    return Cluster(load_snapshot_text(CLUSTER, source="test"), "test").with_queues(queues)


def job(
    name: str,
    submit: int,
    runtime: int,
    gpus: int,
    models: tuple[str, ...] = (),
    *,
    pods: int = 1,
    queue: str = "q",
    priority: int = 0,
) -> Job:
    """``pods`` pods of ``gpus`` GPUs each (a gang when more than one)."""
    w = Workload(
        name=name,
        queue=queue,
        created=submit,
        priority=priority,
        demand=Demand(gpus=gpus, models=models),
        pods=pods,
        cpu_milli=1000,
        memory_mib=1024,
    )
    return Job(w, float(runtime))


def plan(
    jobs: list[Job], slos: list[str], levels: tuple[float, ...], budget: float | None = None
) -> dict:
    c = cluster()
    parsed = [parse_slo(s) for s in slos]
    record = search(
        c, pools_of(c), jobs, parsed, SearchSettings(levels=levels, max_simulations=40, workers=1)
    )
    record["inputs"] = {"budget_per_hour": budget}
    record["verdict"] = verdict(record, parsed)
    return record


# ----------------------------------------------------------------------------- SLOs
def test_slo_forms() -> None:
    s = parse_slo("team-a:p95_wait<=30m")
    assert (s.queue, s.metric, s.op, s.target) == ("team-a", "p95_wait", "<=", 1800)
    s = parse_slo("priority>=1000:p99_wait<=5m")
    assert (s.priority, s.target) == ((">=", 1000), 300)
    assert s.selects("x", 1000) and not s.selects("x", 999)
    assert parse_slo("utilization>=70%").target == pytest.approx(0.7)
    assert parse_slo("mean_jct<2h").target == 7200
    assert parse_slo("p50_wait<=90").target == 90
    # Any queue name a pod's label can carry: a trace's tenant vcEwI was refused as none.
    assert parse_slo("vcEwI:p95_wait<=1h").queue == "vcEwI"


@pytest.mark.parametrize(
    ("text", "why", "caret"),
    [
        ("team-a:p95_wiat<=30m", "unknown metric 'p95_wiat'", "       ^^^^^^^^"),
        ("team-a:p95_wait>=30m", "p95_wait goals are <= or <", "               ^^"),
        ("p95_wait<=30x", "unknown unit 'x'", "            ^"),
        ("Team A:p95_wait<=3m", "'Team A' is not a queue name", "^^^^^^"),
        ("priority>>1:p95_wait<=3m", "a priority selector is priority>=N", "^^^^^^^^^^^"),
        ("utilization>=170%", "between 0 and 100 %", "             ^^^^"),
        # A bare number is a fraction: 70 is in range as a percentage.
        (
            "utilization>=70",
            "a bare number is a fraction of 1: did you mean 70% (or 0.7)?",
            "             ^^",
        ),
        ("utilization>=170", "between 0 and 100 %", "             ^^^"),
        ("team-a:utilization>=50%", "whole cluster: no selector", "^^^^^^"),
        ("p95_wait 30m", "expected <=, <, >= or >", "        ^"),
        ("p95_wait<=soon", "'soon' is not a number", "          ^^^^"),
        # A priority past 32 bits selected no job (a goal met whatever the cluster); one of
        # 5,000 digits was a ValueError traceback.
        ("priority>=3000000000:p95_wait<=5m", "'3000000000' is not a Kubernetes priority",
         "          ^^^^^^^^^^"),
        ("priority<" + "9" * 5000 + ":p95_wait<=5m", "is not a Kubernetes priority",
         " " * 9 + "^" * 5000),
        # 1e400 seconds were infinite: a goal any cluster meets.
        ("p95_wait<=" + "9" * 400 + "m", "is more than 10^12 s (31,700 years)",
         " " * 10 + "^" * 401),
        # Python's \d took any script's digits: '٣m' was 3 minutes.
        ("p95_wait<=\u0663m", "is not a number with a unit", "          ^^"),
    ],
)  # fmt: skip
def test_slo_errors_point_at_the_text(text: str, why: str, caret: str) -> None:
    with pytest.raises(SloError) as info:
        parse_slo(text)
    message = str(info.value)
    lines = message.splitlines()
    assert why in lines[0] and f'"{text}"' in lines[0]
    assert lines[1] == f"  {text}"
    assert lines[2] == f"  {caret}"


def test_plan_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "plan", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--slo" in done.stdout and "utilization>=35%" in done.stdout


def test_plan_command_rejects_a_bad_slo_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "plan", "demo", "--slo", "team-z:p95_wait<=1h"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no queue 'team-z' in the demand" in done.stderr
    assert "Traceback" not in done.stderr


def test_plan_command_rejects_nonsense_numbers_before_the_sweep(tmp_path: Path) -> None:
    """These ran with exit 0 and a report built on them: a negative budget ('the goal that
    binds is the budget ($-5/h)'), --max-simulations 0 ('No candidate was simulated'),
    --horizon-hours -1 (utilization 0 %), --max-jobs -5 (all but the last five jobs),
    --price T4=nan (costs of '$nan/h'); an --out that is a file was a traceback after it,
    and --levels nan or inf a traceback ('cannot convert float NaN to integer')."""
    taken = tmp_path / "report"
    taken.write_text("not a directory")
    for args, message in (
        (["--budget", "-5"], "argument --budget: '-5': must be a positive number"),
        (["--max-simulations", "0"], "argument --max-simulations: '0': must be 1 or more"),
        (["--horizon-hours", "-1"], "argument --horizon-hours: '-1': must be a positive number"),
        (["--max-jobs", "-5"], "argument --max-jobs: '-5': must be 1 or more"),
        (["--workers", "-1"], "argument --workers: '-1': must be 0 or more"),
        (["--price", "T4=nan"], "--price 'T4=nan': nan must be a finite number, 0 or more"),
        (["--levels", "1,nan"], "--levels '1,nan': give one or more finite, non-negative"),
        (["--levels", "inf"], "--levels 'inf': give one or more finite, non-negative"),
        (["--out", str(taken)], f"--out {taken}: is a file, not a directory (--out names a "
         "directory, made if missing)"),
        # Sizes past any real use ran for ever: a millionfold demand, a level of a thousand
        # times today's nodes (the largest candidate is always simulated), 3,200,000
        # candidates, a process per candidate; a horizon of 1e308 h was an OverflowError.
        (["--growth", "1e6"], "argument --growth: '1e6': at most 100 (a hundredfold demand "
         "is a new cluster to design, not growth to plan for)"),
        (["--horizon-hours", "1e308"], "argument --horizon-hours: '1e308': at most 8,760 (a "
         "year: capacity is planned a year ahead at most, and longer only repeats the trace)"),
        (["--levels", "1,1000"], "--levels '1,1000': 1000 is more than 100 (a hundred times "
         "today's nodes of a GPU model is a new cluster to design, not a plan for this one)"),
        (["--levels", ",".join(map(str, range(1, 21)))],
         "--levels '1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20': 20 levels on 5 GPU "
         "models make 3,200,000 candidates; at most 1,000,000 (each is bounded and kept in "
         "plan.json)"),
        (["--workers", "100000"], "argument --workers: '100000': at most 256 (a process per "
         "core of the largest common servers; each holds a whole replay)"),
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", "plan", "demo", "--max-jobs", "20",
             "--max-simulations", "1", "--workers", "1", "--quiet", *args],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr


def test_a_price_past_any_gpu_or_given_twice_is_refused(tmp_path: Path) -> None:
    """--price T4=1e308 made every cost inf and NaN ('$inf/h, −$nan/month'), and plan.json
    a bare Infinity token; of --price T4=3 --price T4=4 the last won without a word; a
    cluster file's own price past any GPU's went through as well."""
    trace, _ = _write_inputs(tmp_path)
    priced = tmp_path / "priced.yaml"
    priced.write_text(CLUSTER + "prices: {A100-80GB: 1.0e+300}\n")
    why = ("is more than $1,000 per GPU-hour (the catalog's dearest GPU lists at $9/h: a "
           "larger price is likely per node or per month)")  # fmt: skip
    for args, message in (
        (["--price", "T4=1e308"], f"--price 'T4=1e308': 1e+308 {why}"),
        (["--price", "T4=3", "--price", "T4=4"], "--price 'T4=4': T4 is priced twice (also "
         "'T4=3')"),
        (["--price", "T4=3", "--price", "NVIDIA-T4=4"], "--price 'NVIDIA-T4=4': T4 is priced "
         "twice (also 'T4=3')"),
        (["--cluster", str(priced)], f"{priced} is not a valid cluster snapshot:\n"
         f"prices.A100-80GB: 1e+300 {why}"),
    ):  # fmt: skip
        done = _plan(str(trace), "--max-simulations", "1", "--workers", "1", "--no-shapes",
                     *args)  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), (args, done.stderr)
        assert done.stderr == f"apportion plan: {message}\n"


def test_no_nan_or_infinity_reaches_plan_json() -> None:
    """json.dumps writes a bare NaN or Infinity, which JSON does not have: named, not written."""
    from scheduler.cli import CommandError
    from sim.plan.commands import _json

    assert _json({"a": [1.0, 2]}) == '{\n "a": [\n  1.0,\n  2\n ]\n}\n'
    for compact in (False, True):
        with pytest.raises(CommandError) as refused:
            _json({"candidates": [{"cost_per_hour": 1.0}, {"cost_per_hour": math.inf}]}, compact)
        assert str(refused.value) == (
            "the plan's record holds inf at candidates[1].cost_per_hour, which JSON cannot "
            "carry; nothing written (a bug: please report it with the command that gave it)"
        )


# ----------------------------------------------------------------------- fluid bound
def test_fluid_bound_by_hand() -> None:
    c = cluster()
    # 3 jobs of 4 A100s for 1000 s at t=0: 12,000 GPU-s. p99 wait <= 1000 s covers all 3
    # (⌈0.99·3⌉ = 3): they must end by 0 + 1000 + 1000 = 2000 s.
    jobs = [job(f"j{i}", 0, 1000, 4, ("A100-80GB",)) for i in range(3)]
    demand = fluid_demand(jobs, c, [parse_slo("p99_wait<=1000")])
    assert demand.horizon_s == 2000
    # 2 A100 nodes = 8 GPUs · 2000 s = 16,000 GPU-s: load 0.75, passes.
    assert fluid_bound(demand, {"A100-80GB": 8, "L4": 8}, 16).load == pytest.approx(0.75)
    # 1 node = 8,000 GPU-s: load 1.5, pruned, and the reason names the A100s.
    bound = fluid_bound(demand, {"A100-80GB": 4, "L4": 8}, 12)
    assert bound.load == pytest.approx(1.5) and bound.pruned
    assert "A100-80GB" in bound.reason
    # No A100 at all: nothing can run these jobs.
    assert math.isinf(fluid_bound(demand, {"L4": 8}, 8).load)


def test_fluid_bound_splits_work_across_models() -> None:
    c = cluster()
    # 2 jobs of 4 GPUs on either model, 1000 s each at rate 1: 8,000 GPU-s; with p99 <= 0
    # they must end by 1000 s. 4 A100 + 4 L4 GPUs give 8,000 GPU-s: exactly load 1.0.
    jobs = [job(f"j{i}", 0, 1000, 4) for i in range(2)]
    demand = fluid_demand(jobs, c, [parse_slo("p99_wait<=0")])
    assert fluid_bound(demand, {"A100-80GB": 4, "L4": 4}, 8).load == pytest.approx(1.0)
    assert fluid_bound(demand, {"A100-80GB": 4, "L4": 0}, 4).load == pytest.approx(2.0)


def test_fluid_bound_keeps_only_the_jobs_a_goal_covers() -> None:
    c = cluster()
    jobs = [job(f"j{i}", 0, 1000, 4, ("A100-80GB",)) for i in range(3)]
    jobs[0] = Job(jobs[0].workload.model_copy(update={"priority": 1000}), 1000.0)
    # Only the priority-1000 job must start at once: 4,000 GPU-s by 1000 s on 4 A100s.
    demand = fluid_demand(jobs, c, [parse_slo("priority>=1000:p99_wait<=0")])
    assert fluid_bound(demand, {"A100-80GB": 4, "L4": 8}, 12).load == pytest.approx(1.0)
    # A mean goal promises nothing about one job: nothing is kept, nothing pruned.
    demand = fluid_demand(jobs, c, [parse_slo("mean_wait<=0")])
    assert fluid_bound(demand, {"A100-80GB": 4, "L4": 8}, 12).load == 0.0


def test_a_job_that_never_starts_waits_longer_than_any_that_did() -> None:
    """Was counted with the wait it had when the replay ended: a gang of 3 pods of 4 GPUs
    arriving last on one 4-GPU node "waited 0 s", so the node met p99 wait <= 10 min and
    could be recommended for a demand it can never run. A goal on another queue's jobs, or
    a percentile that does not reach it, is not its to miss."""
    c = cluster(("q", "r"))
    jobs = [job("first", 0, 100, 1, queue="r"), job("gang", 100, 600, 4, pods=3)]
    slos = tuple(
        parse_slo(t)
        for t in ("p99_wait<=600", "r:p99_wait<=600", "p50_wait<=600", "utilization>=1%")
    )
    one_node = build_cluster(c, pools_of(c), Candidate((1, 0)))
    result = evaluate(EvalTask("1-0", one_node, tuple(jobs), slos))
    assert result["slo_values"][0] == 0.0  # its wait when the replay ended: a lower bound
    assert (result["slo_met"], result["slo_never_started"]) == (
        [False, True, True, True],
        [1, 0, 0, 0],
    )
    assert [shown(slo, result, i) for i, slo in enumerate(slos[:2])] == [
        "0 s, 1 job never started",
        "0 s",
    ]
    assert goal_ratios(slos, result)[:2] == [math.inf, 1 / 601]  # ranks it as far as can be


def test_the_jobs_that_start_in_time_are_the_schedules_choice() -> None:
    """The LP kept the smallest ⌈p · n⌉ jobs of each goal's scope, due by the longest of
    those alone, and the union over goals: all three pruned a cluster that meets its goals
    (tests/test_plan_soundness.py checks the bound against simulations at random)."""
    a100 = ("A100-80GB",)

    def pruned_yet_met(jobs: list[Job], slos: list[str]) -> tuple[bool, list[bool]]:
        c = cluster()
        pools = pools_of(c)
        parsed = [parse_slo(s) for s in slos]
        one_a100 = Candidate((1, 0))
        bound = candidate_bound(fluid_demand(jobs, c, parsed), pools, one_a100)
        task = EvalTask("1-0", build_cluster(c, pools, one_a100), tuple(jobs), tuple(parsed))
        return bound.pruned, evaluate(task)["slo_met"]

    # On 4 A100s at t=0: two 1-GPU jobs of 1000 s start at once, the two 4-GPU jobs of
    # 100 s wait; half the jobs waited 0 s. The LP kept the 4-GPU jobs (800 GPU-s, the
    # smallest) due by 100 s: 2× the GPU-time.
    jobs = [job(f"b{i}", 0, 1000, 1, a100) for i in range(2)]
    jobs += [job(f"c{i}", 0, 100, 4, a100) for i in range(2)]
    assert pruned_yet_met(jobs, ["p50_wait<=0"]) == (False, [True])
    # The priority-1000 job starts at once, so half the jobs waited 0 s: one job meets
    # both goals. The union kept both jobs (5,000 GPU-s by 1000 s: 1.25×).
    jobs = [job("x", 0, 1000, 1, a100), job("y", 0, 1000, 4, a100, priority=1000)]
    assert pruned_yet_met(jobs, ["p50_wait<=0", "priority>=1000:p99_wait<=0"]) == (
        False,
        [True, True],
    )


def test_a_job_that_may_be_evicted_is_left_out_of_the_bound() -> None:
    """A job that starts in time may be evicted and finish late, and its evicted run is
    GPU-time the demand does not count: the bound pruned both clusters below, which meet
    their goals (tests/test_plan_soundness.py has the cases found at random)."""
    a100 = ("A100-80GB",)
    c = cluster()
    pools = pools_of(c)

    def bound_and_simulation(jobs: list[Job], slo: str, counts: tuple[int, int]) -> tuple:
        cand = Candidate(counts)
        parsed = (parse_slo(slo),)
        bound = candidate_bound(fluid_demand(jobs, c, parsed), pools, cand)
        task = EvalTask(cand.key(), build_cluster(c, pools, cand), tuple(jobs), parsed)
        result = evaluate(task)
        return bound.pruned, result["slo_met"], result["summary"]["preemptions"]

    # On 4 A100s: the priority-1000 job evicts the other at once; both started at once.
    jobs = [job("l", 0, 1000, 4, a100), job("h", 100, 1000, 4, a100, priority=1000)]
    assert bound_and_simulation(jobs, "p99_wait<=120", (1, 0)) == (False, [True], 1)
    # 4 A100s and 4 L4s: the L4s busy for 10,000 s, the A100s for 8,000 with 5,000 s of
    # work (60,040 GPU-s of work: 75 %), but the evicted run held them 2,000 s more.
    jobs = [job("z", 0, 10_000, 4, ("L4",)), job("l", 0, 5000, 4, a100)]
    jobs.append(job("h", 2000, 10, 4, a100, priority=1000))
    assert bound_and_simulation(jobs, "utilization>=80%", (1, 1)) == (False, [True], 1)


def test_growth_copies_jobs_and_the_horizon_repeats_the_trace() -> None:
    jobs = [job(f"j{i}", i * 100, 60, 1) for i in range(10)]  # span 901 s
    assert grow(jobs) == tuple(jobs)
    doubled = grow(jobs, 2.0)
    assert len(doubled) == 20 and len({j.name for j in doubled}) == 20
    by_name = {j.name: j for j in doubled}
    assert all(0 < by_name[f"{o.name}~0.1"].submit - o.submit <= 300 for o in jobs)
    half = grow(jobs, 1.5, seed=1)
    assert 10 < len(half) < 20 and grow(jobs, 1.5, seed=1) == half
    # Repeats shifted by the span; what arrives at or after the horizon is left out.
    assert len(grow(jobs, 1.0, horizon_s=2702)) == 29
    week = grow(jobs, 1.0, horizon_s=2703)
    assert len(week) == 30 and max(j.submit for j in week) == 900 + 2 * 901
    with pytest.raises(ValueError, match="must be positive"):
        grow(jobs, 0)


def test_fluid_bound_utilization_side() -> None:
    c = cluster()
    # 1 job of 4 GPUs for 1000 s: 4,000 GPU-s; the replay lasts at least 1000 s. On 16 GPUs
    # at most 4000 / 16000 = 25 % can be busy: a 50 % goal is out of reach.
    demand = fluid_demand([job("j", 0, 1000, 4)], c, [parse_slo("utilization>=50%")])
    bound = fluid_bound(demand, {"A100-80GB": 8, "L4": 8}, 16)
    assert bound.busy_max == pytest.approx(0.25) and bound.pruned
    assert not fluid_bound(demand, {"A100-80GB": 4, "L4": 4}, 8).pruned


# ------------------------------------------------------------------------ candidates
def test_candidates_scale_pools_and_quotas() -> None:
    c = cluster()
    pools = pools_of(c)
    assert [(p.name, p.count, p.gpus_per_node) for p in pools] == [("a100", 2, 4), ("l4", 2, 4)]
    grid = candidate_grid(pools, (0.5, 1.0, 2.0))
    assert sorted(g.counts for g in grid) == sorted((a, b) for a in (1, 2, 4) for b in (1, 2, 4))
    big = build_cluster(c, pools, Candidate((4, 1)))
    assert big.capacity() == {"A100-80GB": 16, "L4": 4}
    assert big.capacity() == Candidate((4, 1)).capacity(pools)
    (queue,) = big.snapshot.queues
    assert queue.quota["A100-80GB"].nominal == 16 and queue.quota["L4"].nominal == 4
    assert len({n.name for n in big.snapshot.nodes}) == 5


# --------------------------------------------------------------- search, by hand
def test_cheapest_cluster_by_hand_all_at_once() -> None:
    # 4 jobs of 4 A100s for 1000 s, all at t=0. p95 over 4 jobs is the largest wait, so
    # a wait goal of 0 needs all four running at once: 4 A100 nodes. The L4s run nothing:
    # the cheapest level (1 node). Cost 4·4·1.84 + 4·0.80.
    jobs = [job(f"j{i}", 0, 1000, 4, ("A100-80GB",)) for i in range(4)]
    record = plan(jobs, ["p95_wait<=0"], (0.5, 1.0, 1.5, 2.0))
    best = record["verdict"]["recommended"]
    assert best == "4-1"
    row = next(r for r in record["candidates"] if r["key"] == best)
    assert row["cost_per_hour"] == pytest.approx(4 * A100_NODE + L4_NODE)


def test_cheapest_cluster_by_hand_queueing_allowed() -> None:
    # The same jobs with 1000 s of wait allowed: 2 nodes run two, then two (waits 0, 0,
    # 1000, 1000); 1 node gives waits up to 3000. Answer: 2 A100 nodes + 1 L4 node.
    jobs = [job(f"j{i}", 0, 1000, 4, ("A100-80GB",)) for i in range(4)]
    record = plan(jobs, ["p95_wait<=1000"], (0.5, 1.0, 1.5, 2.0))
    assert record["verdict"]["recommended"] == "2-1"
    one = next(r for r in record["candidates"] if r["key"] == "1-1")
    assert one["status"] in ("misses", "misses (inferred)", "pruned")


def test_cheapest_cluster_uses_the_cheaper_model_when_allowed() -> None:
    # Jobs that run on either model at the same speed: 4 jobs of 4 GPUs at once fit on
    # 2 A100 + 2 L4 nodes, or 1 A100 + 3 L4 … the cheapest with 4 nodes in all is 1 A100
    # (the smallest level) + 3 L4 nodes ($7.36 + $9.60 = $16.96 < 2·7.36 + 2·3.20).
    jobs = [job(f"j{i}", 0, 1000, 4) for i in range(4)]
    record = plan(jobs, ["p95_wait<=0"], (0.5, 1.0, 1.5, 2.0))
    assert record["verdict"]["recommended"] == "1-3"


def test_infeasible_goal_names_the_binding_slo_and_the_closest_option() -> None:
    # Five jobs of 4 A100s at once with no wait allowed need 5 A100 nodes; the grid goes to
    # 4. The fluid bound prunes every candidate (20,000 GPU-s by 1000 s > 16 GPUs), so the
    # planner simulates the current and the largest candidate: on 4 nodes the fifth job
    # waits 1000 s, and that goal binds.
    jobs = [job(f"j{i}", 0, 1000, 4, ("A100-80GB",)) for i in range(5)]
    record = plan(jobs, ["p95_wait<=0", "utilization>=1%"], (0.5, 1.0, 2.0))
    v = record["verdict"]
    assert not v["feasible"] and "recommended" not in v
    assert v["closest"] == "4-4"
    assert record["simulations"] == 2
    assert v["binding"]["slo"] == "p95_wait<=0"
    assert v["binding"]["value"] == 1000


def test_a_budget_below_the_answer_is_what_binds() -> None:
    jobs = [job(f"j{i}", 0, 1000, 4, ("A100-80GB",)) for i in range(4)]
    # The answer (2 A100 + 1 L4 nodes) costs $17.92/h; $12/h buys only 1 + 1.
    v = plan(jobs, ["p95_wait<=1000"], (0.5, 1.0, 1.5, 2.0), budget=12.0)["verdict"]
    assert not v["feasible"]
    assert v["binding"]["slo"] == "the budget ($12/h)"
    assert v["cheapest_meeting_all"] == "2-1"
    v = plan(jobs, ["p95_wait<=1000"], (0.5, 1.0, 1.5, 2.0), budget=18.0)["verdict"]
    assert v["recommended"] == "2-1"


def test_per_queue_gpu_hours_count_only_the_time_jobs_ran() -> None:
    """A preempted job holds no GPUs while it waits to run again. Each queue's GPU-hours
    (and so borrowed and unused quota in the report) were integrated from a job's first
    start to its end at its last size, waits included: on 150 demo jobs the queues added
    up to 3,371 GPU-hours of the 1,945 the replay used."""
    from sim.cluster import load_cluster
    from sim.commands import DEMO_TRACE
    from sim.trace import load_trace

    jobs = load_trace(DEMO_TRACE).jobs[:150]
    c = load_cluster("default")
    slos = (parse_slo("p95_wait<=1h"),)
    result = evaluate(EvalTask("demo", c, jobs, slos, "apportion-greedy"))
    assert result["summary"]["preemptions"] > 0
    queues = [v for q, v in result["queues"].items() if not q.startswith("_")]
    used = result["summary"]["gpu_hours"]["used"]
    assert sum(v["gpu_hours"] for v in queues) == pytest.approx(used, abs=0.01)
    hours = result["queues"]["_bin_s"] / 3600
    assert sum(sum(v["gpus_held"]) for v in queues) * hours == pytest.approx(used, abs=0.1)


# --------------------------------------------------------------- monotonicity
_jobs = st.lists(
    st.tuples(st.integers(0, 3000), st.integers(60, 3000), st.sampled_from((1, 2, 4))),
    min_size=1,
    max_size=6,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=_jobs, extra=_jobs)
# Hypothesis found that more demand can meet a goal on fewer nodes: with the extra 1-GPU job
# at t=0, the 2-GPU jobs pack so that a node is whole again when the 4-GPU job comes (p95
# wait 589 s on 2 A100 nodes); without it, no node is whole until t=2190 (1663 s). Online
# placement without migration has such anomalies, so the planner cannot promise a
# recommendation monotone in demand, only one its own simulations justify.
@example(
    base=[(146, 2097, 2), (349, 1841, 1), (141, 975, 2), (527, 60, 4), (325, 60, 1)],
    extra=[(0, 856, 1)],
)
def test_more_demand_never_yields_a_cheaper_recommendation_without_a_simulated_miss(
    base: list, extra: list
) -> None:
    """If more demand gets a cheaper cluster X, the smaller demand's search must have seen
    X miss: simulated, or inferred from a simulated cluster with at least X's nodes. Never
    pruned (the fluid bound only grows with demand) nor left unexamined (the budget covers
    the grid)."""

    def jobs(rows: list, prefix: str) -> list[Job]:
        return [job(f"{prefix}{i}", s, r, g, ("A100-80GB",)) for i, (s, r, g) in enumerate(rows)]

    levels = (0.5, 1.0, 1.5, 2.0)
    slos = ["p95_wait<=600"]
    small = plan(jobs(base, "a"), slos, levels)
    large = plan(jobs(base, "a") + jobs(extra, "b"), slos, levels)
    cheaper = large["verdict"].get("recommended")
    if cheaper is None:
        return
    assert small["verdict"].get("recommended") is not None

    def cost(key: str) -> float:
        a, b = (int(x) for x in key.split("-"))
        return a * A100_NODE + b * L4_NODE

    if cost(small["verdict"]["recommended"]) <= cost(cheaper) + 1e-9:
        return
    rows = {r["key"]: r for r in small["candidates"]}
    status = rows[cheaper]["status"]
    assert status in ("misses", "misses (inferred)"), (cheaper, status)
    counts = rows[cheaper]["counts"]
    evidence = [
        r
        for r in small["candidates"]
        if r["status"] == "misses" and all(a >= b for a, b in zip(r["counts"], counts, strict=True))
    ]
    assert evidence, f"{cheaper} inferred to miss with no simulated miss at least as large"


# ------------------------------------------------------------------ shard + merge
def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    rows = ["name,queue,submit,runtime,gpus,pods,priority,models"]
    rows += [f"j{i},q,{i * 10},1000,4,1,0,A100-80GB" for i in range(4)]
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "trace.csv", tmp_path / "cluster.yaml"


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "plan", *args, "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def _plan_json(out: Path) -> dict[str, Any]:
    """plan.json without what differs between two runs of the same inputs anyway."""
    record = json.loads((out / "plan.json").read_text())
    for key in ("wall_s", "simulation_wall_s", "ahead"):
        record.pop(key)
    record["inputs"].pop("command")
    return record


def test_a_negative_level_is_refused_for_what_it_is() -> None:
    """'--levels -1,1' was read as a flag ('expected one argument'): the value reaches the
    check, which says why no level is negative."""
    for levels in ("-1,1", "1,-0.5"):
        done = _plan("demo", "--levels", levels, "--max-jobs", "5", "--max-simulations", "1")
        assert done.returncode == 2, (levels, done.stderr)
        bad = levels.split(",")[0 if levels.startswith("-") else 1]
        assert done.stderr == (
            f"apportion plan: --levels {levels!r}: {bad} is negative; a level multiplies a GPU "
            "model's node count (0 leaves the model out, 1 keeps today's)\n"
        )


def test_a_negative_seed_is_refused() -> None:
    """--seed -1 grew the demand and drew the policy's choices as --seed 1 does
    (random.Random(-1) is Random(1)), as simulate's --seeds refuses."""
    done = _plan("demo", "--seed", "-1", "--max-jobs", "5", "--max-simulations", "1")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "apportion plan: error: argument --seed: '-1' is negative; seeds are 0 or more "
        "(Python's random takes -1 and 1 as the same seed)"
    )


def test_bad_inputs_leave_no_out_directory_behind(tmp_path: Path) -> None:
    """A mistyped trace (or shard file) left --out DIR behind, empty: it was made before the
    inputs were read."""
    out = tmp_path / "plans" / "q3"
    for args in (
        ["no-such-trace.csv"],
        ["demo", "--cluster", "no-such-cluster.yaml"],
        ["demo", "--slo", "team-z:p95_wait<=1h"],
        ["merge", "no-such-shard.json"],
    ):
        done = _plan(*args, "--max-jobs", "5", "--max-simulations", "1", "--out", str(out))
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        assert not (tmp_path / "plans").exists(), args


def test_a_demand_grown_past_a_million_jobs_is_refused_before_it_is_built(
    tmp_path: Path,
) -> None:
    """--growth and --horizon-hours multiply the trace: a week of the demo ×100, or a year of
    a trace whose jobs all arrive in its first second, built millions of jobs (gigabytes)
    and then simulated them on every candidate."""
    burst = tmp_path / "burst.csv"
    burst.write_text("name,queue,submit,runtime,gpus\na,team-a,0,60,1\nb,team-b,0,60,1\n")
    for args, message in (
        (["demo", "--growth", "100", "--horizon-hours", "168"],
         "--growth 100 and --horizon-hours 168: about 1,920,000 jobs to plan for (the "
         "trace's 600 ×100, repeated 32 times); at most 1,000,000 (every simulated candidate "
         "replays them all)"),
        ([str(burst), "--horizon-hours", "8760"],
         "--horizon-hours 8760: about 63,072,000 jobs to plan for (the trace's 2, repeated "
         "31,536,000 times); at most 1,000,000 (every simulated candidate replays them all)"),
    ):  # fmt: skip
        done = _plan(*args, "--max-simulations", "1", "--workers", "1")
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr == f"apportion plan: {message}\n"


def test_a_trace_past_the_planned_jobs_limit_is_refused_as_it_stands(tmp_path: Path) -> None:
    """Was: the limit held only for the jobs --growth and --horizon-hours add, so a trace of
    more than a million jobs was planned as it stood, hours per simulated candidate. It
    holds for the trace's own jobs too, naming --max-jobs, which keeps within it. (The
    limit is lowered to 2 here: a million rows take a minute and 3 GB just to load.)"""
    trace = tmp_path / "three.csv"
    trace.write_text(
        "name,queue,submit,runtime,gpus\na,team-a,0,60,1\nb,team-b,10,60,1\nc,team-a,20,60,1\n"
    )
    limited = (
        "import sys; import sim.plan.commands as c; c.MAX_PLANNED_JOBS = 2; "
        "from scheduler.cli import main; sys.exit(main(sys.argv[1:]))"
    )

    def plan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", limited, "plan", *args, "--max-simulations", "1",
             "--workers", "1", "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip

    for args, what in (([], str(trace)), (["--max-jobs", "5"], "--max-jobs 5")):
        done = plan(str(trace), *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"apportion plan: {what}: 3 jobs to plan for; at most 2 (every simulated "
            "candidate replays them all): plan on the first 2 with --max-jobs 2\n"
        )
    assert plan(str(trace), "--max-jobs", "2").returncode != 2


def test_a_growth_or_horizon_that_leaves_no_job_is_refused(tmp_path: Path) -> None:
    """--growth 1e-300 planned for '0 jobs' and reported on zero demand (utilization 0 %);
    a horizon shorter than a second did the same."""
    trace, cluster_file = _write_inputs(tmp_path)
    for args, message in (
        (["--growth", "1e-300"], "--growth 1e-300 leaves no job of the trace's 4 to plan "
         "(below 1, --growth keeps about that share of the jobs, drawn with --seed)"),
        (["--horizon-hours", "1e-9"], "--horizon-hours 1e-09 leaves no job of the trace's 4 "
         "to plan (the plan keeps the jobs that arrive in its first 0 s)"),
    ):  # fmt: skip
        done = _plan(str(trace), "--cluster", str(cluster_file), "--max-simulations", "1",
                     "--workers", "1", "--no-shapes", *args)  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), (args, done.stderr)
        assert done.stderr == f"apportion plan: {message}\n"
    # Shrinking demand is a plan too: half the jobs, drawn with the seed.
    done = _plan(str(trace), "--cluster", str(cluster_file), "--max-simulations", "1",
                 "--workers", "1", "--no-shapes", "--growth", "0.5", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "jobs, grown ×0.5: " in json.loads(done.stdout)["inputs"]["demand"]


def test_the_answer_does_not_depend_on_the_workers(tmp_path: Path) -> None:
    """Bisection simulated one candidate per worker at each step, so the same command
    recommended other clusters on machines with other core counts."""
    trace, cluster_file = _write_inputs(tmp_path)
    for workers in ("1", "2"):
        done = _plan(str(trace), "--cluster", str(cluster_file), "--slo", "p95_wait<=1100",
                     "--levels", "0.5,1,1.5,2", "--max-simulations", "6",
                     "--workers", workers, "--out", str(tmp_path / workers))  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert _plan_json(tmp_path / "1") == _plan_json(tmp_path / "2")


def test_idle_workers_simulate_ahead_without_changing_the_answer() -> None:
    """Bisection asks for one candidate per step; idle workers simulate the next step's
    picks for either outcome, and the search takes them when it asks for them."""
    jobs = [job(f"j{i}", i * 10, 1000, 4, ("A100-80GB",)) for i in range(4)]
    c = cluster()
    slos = [parse_slo("p95_wait<=1100")]
    records = {}
    for workers in (1, 3):
        settings = SearchSettings(levels=(0.5, 1, 1.5, 2), max_simulations=6, workers=workers)
        records[workers] = search(c, pools_of(c), jobs, slos, settings)
    assert records[1]["ahead"] == {"simulated": 0, "used": 0}
    assert records[3]["ahead"]["used"] >= 1
    for record in records.values():
        for key in ("simulation_wall_s", "ahead"):
            record.pop(key)
    assert records[1] == records[3]


def test_each_simulation_tells_how_far_it_is() -> None:
    """One simulation of a grown or repeated demand takes minutes, and the count of those
    done stood still all that time: each simulation reports its share done as it runs,
    from a worker process too."""
    jobs = [job(f"j{i}", i * 10, 1000, 4, ("A100-80GB",)) for i in range(4)]
    c = cluster()
    slos = [parse_slo("p95_wait<=1100")]
    for workers in (1, 2):
        reports: list[tuple[str, float]] = []
        settings = SearchSettings(levels=(0.5, 1, 1.5, 2), max_simulations=3, workers=workers)
        record = search(
            c, pools_of(c), jobs, slos, settings,
            under_way=lambda label, done, seen=reports: seen.append((label, done)),
        )  # fmt: skip
        simulated = {r["key"] for r in record["candidates"] if r["evaluation"] is not None}
        assert simulated
        for key in simulated:
            shares = [done for label, done in reports if label == key]
            assert shares[0] < 1.0 and shares[-1] == 1.0, (workers, key, shares)


def test_the_progress_line_shows_the_simulations_under_way() -> None:
    from sim.plan.commands import _Progress
    from sim.progress import ProgressLine

    clock = [0.0]
    progress = _Progress(False, "candidates")
    stream = io.StringIO()
    progress.line = ProgressLine(stream, terminal=True, clock=lambda: clock[0])
    progress(0, 4)
    for label, fraction in (("a", 0.35), ("b", 0.8), ("a", 1.0)):
        clock[0] += 1.0
        progress.under_way(label, fraction)
    progress.under_way("b", 0.9)  # within a tenth of a second of the last: not drawn
    progress(1, 4)  # the count moved: drawn at once
    progress.end()
    progress.under_way("c", 0.1)  # a simulation looked ahead, until the search stops it
    drawn = [line.rstrip() for line in stream.getvalue().split("\r") if line]
    assert drawn == [
        "simulated 0/4 candidates (0 s)",
        "simulated 0/4 candidates (0 s); under way: 35%",
        "simulated 0/4 candidates (0 s); under way: 35%, 80%",
        "simulated 0/4 candidates (0 s); under way: 80%",
        "simulated 1/4 candidates (0 s); under way: 90%",
    ]


def test_the_fluid_bound_shows_its_progress(tmp_path: Path) -> None:
    """A year of the demo's demand (about a million jobs) spent 40 s and more in the fluid
    bound's windows before the first simulation, with nothing on stderr."""
    c = cluster()
    jobs = [job(f"j{i}", i * 10, 1000, 4, ("A100-80GB",)) for i in range(25_000)]
    seen: list[tuple[int, int]] = []
    fluid_demand(jobs, c, [parse_slo("p95_wait<=1h"), parse_slo("p50_wait<=1h")], (),
                 lambda done, total: seen.append((done, total)))  # fmt: skip
    total = 25_000 * 5  # the jobs once, then per goal its scope and its windows
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 7
    # On stderr, in a log: at the start and at the end (a terminal redraws it as it goes).
    trace, cluster_file = _write_inputs(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "plan", str(trace), "--cluster", str(cluster_file),
         "--max-simulations", "1", "--workers", "1", "--no-shapes"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "bounding the demand (4 jobs): 0% (0 s)"
    assert re.fullmatch(r"bounding the demand \(4 jobs\): 100% \(\d+ s\)", lines[1])
    assert lines[2].startswith("simulated 0/1 candidates")


@pytest.mark.parametrize("seed", range(6))
def test_window_counts_match_a_job_by_job_count(seed: int) -> None:
    """``_inside`` counts per block; a mask per window, as it replaced, says the same."""
    from sim.plan.fluid import _BLOCK, _inside

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3 * _BLOCK))
    n_starts, n_ends = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    after = rng.integers(0, n_starts + 1, n)
    before = rng.integers(0, n_ends + 1, n)
    need = np.sort(rng.exponential(100.0, n))[::-1]
    drop = int(rng.integers(0, n // 2 + 2))
    count, total, first = _inside(after, before, need, n_starts, n_ends, drop)
    for i in range(n_starts):
        for k in range(n_ends):
            inside = (after > i) & (before <= k)
            assert count[i, k] == inside.sum()
            assert total[i, k] == pytest.approx(need[inside].sum(), rel=1e-12, abs=1e-9)
            head = need[inside][:drop].sum() if inside.sum() > drop else 0.0
            assert first[i, k] == pytest.approx(head, rel=1e-12, abs=1e-9)


def test_progress_in_a_log_is_a_line_every_half_minute_and_at_each_count() -> None:
    # Was: in a Job's log, every redraw (each worker report, several a second) went on
    # one endless line of carriage returns.
    from sim.progress import LOG_EVERY_S, ProgressLine

    clock = [0.0]
    stream = io.StringIO()
    line = ProgressLine(stream, terminal=False, clock=lambda: clock[0])
    line.draw("0/4, under way: 1%")
    for second in range(1, 70):
        clock[0] = float(second)
        line.draw(f"0/4, under way: {second}%")
    line.draw("1/4", now=True)
    line.end()
    assert stream.getvalue().splitlines() == [
        "0/4, under way: 1%",
        f"0/4, under way: {int(LOG_EVERY_S)}%",
        f"0/4, under way: {int(2 * LOG_EVERY_S)}%",
        "1/4",
    ]


def test_shards_merge_to_the_single_run_answer(tmp_path: Path) -> None:
    trace, cluster_file = _write_inputs(tmp_path)
    common = [
        str(trace),
        "--cluster",
        str(cluster_file),
        "--slo",
        "p95_wait<=1100",
        "--levels",
        "0.5,1,1.5,2",
        "--workers",
        "1",
        "--max-simulations",
        "20",
    ]
    whole = _plan(*common, "--json")
    assert whole.returncode == 0, whole.stderr
    single = json.loads(whole.stdout)
    logs = tmp_path / "shards.log"
    lines = []
    # As the Indexed Job runs it: the arguments from a file, one per line (argparse's @).
    (tmp_path / "plan.args").write_text("\n".join(common) + "\n")
    for i in range(2):
        done = _plan(f"@{tmp_path / 'plan.args'}", "--shard", f"{i}/2", "--json")
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 1
        lines.append(f"[pod/apportion-plan-sweep-{i}-x/plan] {done.stdout.strip()}")
    logs.write_text("\n".join(lines) + "\n")
    merged = _plan("merge", str(logs), "--json", "--out", str(tmp_path / "out"))
    assert merged.returncode == 0, merged.stderr
    record = json.loads(merged.stdout)
    # Two nodes: the third and fourth jobs start when the first two end (waits ≈ 1000 s,
    # plus up to one 30 s decision tick); one node: waits ≥ 2000 s. Answer: 2 A100 + 1 L4.
    assert single["verdict"]["recommended"] == "2-1"
    assert record["verdict"]["recommended"] == "2-1"
    assert (tmp_path / "out" / "report.html").is_file()
    # Shards simulate no quota splits; the merge does, from the same trace and cluster,
    # as the single run does.
    assert "quota_search" not in json.loads(lines[0].split("] ", 1)[1])
    assert record["quota_search"]["candidate"] == "2-1"
    assert [s["strategy"] for s in record["quota_search"]["strategies"]] == [
        s["strategy"] for s in single["quota_search"]["strategies"]
    ]
    # Where the trace is not readable, the merge says so instead of guessing.
    trace.rename(tmp_path / "elsewhere.csv")
    blind = _plan("merge", str(logs), "--json", "--workers", "1")
    assert blind.returncode == 0, blind.stderr
    skipped = json.loads(blind.stdout)["quota_search_skipped"]
    assert skipped == f"{trace}: no such file or directory"
    assert "quota_search" not in json.loads(blind.stdout)
    # --inputs DIR: the same files, found by name elsewhere (as beside the shards' logs).
    moved = tmp_path / "inputs"
    moved.mkdir()
    (tmp_path / "elsewhere.csv").rename(moved / trace.name)
    cluster_file.rename(moved / cluster_file.name)
    found = _plan("merge", str(logs), "--json", "--workers", "1", "--inputs", str(moved))
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["quota_search"]["candidate"] == "2-1"
    (moved / trace.name).rename(trace)
    (moved / cluster_file.name).rename(cluster_file)
    # A shard with other inputs is refused.
    other = _plan(
        *common[:-4],
        "--max-simulations",
        "20",
        "--workers",
        "1",
        "--shard",
        "1/2",
        "--seed",
        "3",
        "--json",
    )
    (tmp_path / "mixed.log").write_text(lines[0] + "\n" + other.stdout)
    refused = _plan("merge", str(tmp_path / "mixed.log"))
    assert refused.returncode == 2 and "different inputs" in refused.stderr


def _shard_logs(tmp_path: Path, *shards: str) -> list[Path]:
    """One log file per shard (``i/N``) of a small sweep."""
    trace, cluster_file = _write_inputs(tmp_path)
    common = [str(trace), "--cluster", str(cluster_file), "--slo", "p95_wait<=1100",
              "--workers", "1", "--max-simulations", "2", "--json"]  # fmt: skip
    logs = []
    for shard in shards:
        done = _plan(*common, "--shard", shard)
        assert done.returncode == 0, done.stderr
        logs.append(tmp_path / f"shard-{shard.replace('/', '-')}.log")
        logs[-1].write_text(done.stdout)
    return logs


def test_merge_names_a_line_that_is_no_shards_record(tmp_path: Path) -> None:
    """A JSON line that is no shard's record (a structured log line in the pod's log) was a
    KeyError traceback."""
    [log] = _shard_logs(tmp_path, "0/1")
    log.write_text('{"level": "info", "msg": "starting"}\n' + log.read_text())
    stray = _plan("merge", str(log))
    assert stray.returncode == 2 and "Traceback" not in stray.stderr
    assert (
        f"{log} line 1: not a shard's record (it has no 'fingerprint', 'shard', 'shards', "
        "'candidates')"
    ) in stray.stderr


def test_merge_names_json_too_deep_or_with_too_long_an_integer(tmp_path: Path) -> None:
    """json's RecursionError and int()'s 4,300-digit ValueError were a traceback, in a
    whole file and in a line of a log alike."""
    deep = "[" * 100_000 + "]" * 100_000
    for name, text, problem in (
        ("deep.json", f'{{"now": {deep}}}', "line 1 column 108: arrays and objects nested "
         "more than 100 deep"),
        ("long.json", '{\n "now": ' + "1" * 5001 + "}", "line 2 column 9: an integer of "
         "5,001 digits (at most 4,300)"),
        ("deep.log", f'[pod/x] {{"now": {deep}}}\n', "line 1: not a shard's JSON (arrays and "
         "objects nested more than 100 deep)"),
    ):  # fmt: skip
        (tmp_path / name).write_text(text)
        done = _plan("merge", str(tmp_path / name))
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == f"apportion plan: {tmp_path / name} {problem}\n"


def test_merge_names_a_field_of_the_wrong_shape(tmp_path: Path) -> None:
    """A record with the right keys and a wrong value ("shard": 1, "shards": "2",
    "candidates": null, a candidate without its key, no "simulations") was a TypeError or
    KeyError traceback deep in the merge."""
    [log] = _shard_logs(tmp_path, "0/2")
    record = json.loads(log.read_text())
    simulated = next(i for i, c in enumerate(record["candidates"]) if c["evaluation"])

    def without(key: str) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k != key}

    def changed(index: int, field: str, value: object) -> dict[str, Any]:
        candidates = [dict(c) for c in record["candidates"]]
        candidates[index][field] = value
        return {**record, "candidates": candidates}

    for bad, problem in (
        ({**record, "shard": 1}, "field shard: 1 is not a valid list"),
        ({**record, "shards": "2"}, "field shards: '2' is not a valid integer"),
        ({**record, "shard": [2, 2]}, "field shard: 2/2 is not one of 2 shards"),
        ({**record, "candidates": None}, "field candidates: null is not a valid list"),
        ({**record, "candidates": [{"x": 1}]},
         "field candidates[0].key: is required; field candidates[0].status: is required; "
         "field candidates[0].current: is required; field candidates[0].cost_per_hour: is "
         "required; field candidates[0].counts: is required; and 1 more"),
        (without("simulations"), "field simulations: is required"),
        (changed(0, "counts", [1]), "field candidates[0].counts: does not give one count per "
         "pool"),
        (changed(simulated, "evaluation", {**record["candidates"][simulated]["evaluation"],
                                           "slo_met": []}),
         f"field candidates[{simulated}].evaluation: does not give one value per goal (1)"),
    ):  # fmt: skip
        log.write_text("starting the sweep\n" + json.dumps(bad) + "\n")
        done = _plan("merge", str(log))
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == (
            f"apportion plan: {log} line 2: not a shard's record as plan writes it: {problem}\n"
        )


def test_an_arguments_file_is_read_as_utf_8_without_its_byte_order_mark(tmp_path: Path) -> None:
    """argparse read @FILE in the locale's encoding: Latin-1 bytes were a UnicodeDecodeError
    traceback, and a byte-order mark stayed part of the first argument (the trace). Blank
    lines are skipped; a file of none is refused."""
    trace = tmp_path / "jobs.csv"
    trace.write_text("name,queue,submit,runtime,gpus\na,q,0,60,1\n")
    args = tmp_path / "plan.args"
    lines = [str(trace), "--cluster", "uniform:1x2xH100-80GB", "--max-simulations", "1",
             "--workers", "1", "--json"]  # fmt: skip
    args.write_bytes("\r\n".join(lines).encode("utf-8-sig"))
    done = _plan(f"@{args}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"]["replay"]["trace"] == str(trace)
    args.write_bytes(f"{trace}\n--slo\nteam-\xe9:p95_wait<=1h\n".encode("latin-1"))
    done = _plan(f"@{args}")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.endswith(
        f"apportion plan: error: cannot read {args}: not UTF-8 text (byte 0xe9 at offset "
        f"{len(str(trace)) + 12})\n"
    )
    # A blank line was an empty argument ("one trace expected, got 2: jobs.csv "); an
    # empty file ran the whole default plan.
    args.write_text("\n".join(["", *lines[:-1], "  ", "--json", ""]) + "\n")
    done = _plan(f"@{args}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"]["replay"]["trace"] == str(trace)
    for empty in ("", "\n \n"):
        args.write_text(empty)
        done = _plan(f"@{args}")
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.endswith(
            f"apportion plan: error: @{args}: no arguments in it (one per line)\n"
        )
    args.write_text(f"@{args}\n")  # argparse recursed to a RecursionError
    done = _plan(f"@{args}")
    assert done.returncode == 2 and done.stderr.endswith(
        f"apportion plan: error: @{args}: read again from {args}, which it names\n"
    )


def test_a_merge_with_a_shard_missing_says_so_in_the_report(tmp_path: Path) -> None:
    """Said only on stderr (and not with --quiet): the report read "2 simulated over 2
    shards" when one shard's half of the sweep was never merged, and the answer printed
    read complete, with exit code 0. Now the merge is refused unless --partial, and then
    the answer and the report say it is partial."""
    [first] = _shard_logs(tmp_path, "0/2")
    out = tmp_path / "out"
    refused = _plan("merge", str(first), "--workers", "1", "--out", str(out))
    assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
    assert refused.stderr == (
        "apportion plan: plan merge: shard(s) 1 of 2 missing: their candidates were not "
        "simulated, so the answer may not be the cheapest; merge every shard, or give "
        "--partial to merge these (the answer and the report say it is partial)\n"
    )
    assert not out.exists()
    merged = _plan("merge", str(first), "--partial", "--workers", "1", "--out", str(out))
    assert merged.returncode == 0, merged.stderr
    partial = (
        "Partial sweep: shard 1 of 2 missing, its candidates not simulated (a cheaper cluster "
        "may meet every goal). "
    )
    assert merged.stdout.splitlines()[-1].startswith(partial)
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith(partial)
    assert " over 2 shards; shard 1 of 2 missing: its candidates were not simulated\n" in report


def test_merge_refuses_the_sweeps_flags_and_inputs_that_are_no_directory(tmp_path: Path) -> None:
    """plan merge ignored --slo, --growth, --shard, ... without a word (it replays the
    shards' recorded inputs), and took an --inputs that did not exist or was a file."""
    [log] = _shard_logs(tmp_path, "0/1")
    takes = ("--out, --journal, --inputs, --partial, --quota-simulations, --max-simulations, "
             "--workers, --json, --quiet")  # fmt: skip
    for args, message in (
        (["--slo", "p95_wait<=1h"], f"plan merge: --slo is a sweep flag; the merge uses the "
         f"inputs the shards recorded (it takes {takes})"),
        (["--growth", "1.3", "--shard", "0/2"], "plan merge: --growth, --shard are sweep "
         f"flags; the merge uses the inputs the shards recorded (it takes {takes})"),
        (["--inputs", str(tmp_path / "nope")], f"--inputs {tmp_path / 'nope'}: no such "
         "directory (the one holding the shards' trace and cluster files)"),
        (["--inputs", str(log)], f"--inputs {log}: is not a directory (the one holding the "
         "shards' trace and cluster files)"),
    ):  # fmt: skip
        done = _plan("merge", str(log), "--workers", "1", *args)
        assert (done.returncode, done.stdout) == (2, ""), (args, done.stderr)
        assert done.stderr == f"apportion plan: {message}\n"
    done = _plan(str(tmp_path / "trace.csv"), "--partial", "--max-simulations", "1")
    assert done.stderr == (
        "apportion plan: --partial is for 'plan merge' (shards missing); a sweep runs whole\n"
    )


def test_a_gavel_trace_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """It said "needs its throughput table (--throughputs FILE)", a flag plan does not
    have: the README promised any trace simulate reads."""
    trace = tmp_path / "jobs.trace"
    trace.write_text("ResNet-18 (batch size 16)\tpython\t--steps\t1\t10\t0\t1\n")
    done = _plan(str(trace), "--max-simulations", "1", "--quiet")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (
        f"apportion plan: {trace}: a Gavel trace needs its throughput table, which plan does "
        "not take; give plan the jobs as Apportion's CSV, whose throughput column carries "
        "each job's speed per GPU model (sim.jobfile.job_csv writes it)\n"
    )


def test_inputs_without_merge_is_refused(tmp_path: Path) -> None:
    """--inputs is where 'plan merge' finds the shards' files; on a sweep it was ignored."""
    done = _plan("demo", "--inputs", str(tmp_path), "--max-simulations", "1", "--quiet")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (
        "apportion plan: --inputs is for 'plan merge' (where the shards' trace and cluster "
        "files are); a sweep reads its TRACE and --cluster\n"
    )


def test_merge_refuses_shards_of_different_splits(tmp_path: Path) -> None:
    """Shard 0/2 and shard 1/3 merged with no shard reported missing: the candidates both
    skip went unsimulated, unmentioned, and those both took were simulated twice."""
    first, other = _shard_logs(tmp_path, "0/2", "1/3")
    split = _plan("merge", str(first), str(other))
    assert split.returncode == 2 and "Traceback" not in split.stderr
    assert (
        f"plan merge: the shards split the sweep different ways: 0/2 ({first}), 1/3 ({other}); "
        "merge the shards of one run"
    ) in split.stderr
