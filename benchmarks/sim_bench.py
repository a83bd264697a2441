"""Time the simulator and report its quality numbers (issue 4's three benchmarks).

    .venv/bin/python benchmarks/sim_bench.py [--only a,b,c] [--seeds N] [--processes N]
                                             [--replay-1m-jobs N] [--replay-100k-jobs N]

  a  fill (the FGD paper's protocol) on the openb default pod list, 10 seeds, the six FGD
     baselines plus apportion (the core's online path, fragmentation-aware against the
     mix of pods it has seen): unallocated GPU % at 100 % and 130 % arrived, mean and pstdev.
     Every pod of the list, as the paper's simulator (its 1,088 CPU-only pods too);
     ``--gpu-pods-only`` leaves those out, as this benchmark did before.
                                                  target ≤ 2 min; apportion@100 < 4.77
  b  replay of a synthetic 1,000,000-job trace on 1,250 × 8 = 10,000 GPUs, greedy
     (the core's online path), every event a scheduling point.     target ≤ 60 s
  c  replay of 100,000 synthetic jobs with the apportion policy (online path + a global
     ILP decision) called every 60 simulated seconds (``--interval 60``, the one calling
     grid of every policy) on 125 × 8 = 1,000 GPUs.
                                                                    target ≤ 10 min

Synthetic traces come from ``sim.synthetic.uniform_jobs`` (seeded): 1/2/4/8-GPU jobs from 8
tenants, Poisson arrivals at 90 % offered load, log-normal runtimes (median 1 h, cap 48 h).
Building a trace is not timed; the replay (engine + policy + metrics) is. Fill runs are
split over ``--processes`` worker processes (default 2; the wall time is the elapsed
time of all of them). The last line printed is one JSON object:
``{"fill_wall_s", "fill_unalloc_at_100": {policy: mean}, "fill_unalloc_at_130": {policy:
mean}, "replay_1m_wall_s", "replay_100k_apportion_wall_s"}`` (null for what was not run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cluster import Cluster, load_cluster, uniform_cluster
from sim.engine import EngineSettings, Simulation
from sim.fill import fill
from sim.job import Job
from sim.openb import OPENB_TRACE_DIR
from sim.policies import PolicyOptions, make_policy
from sim.policies.core import ApportionPolicy
from sim.pool import executor
from sim.synthetic import uniform_jobs
from sim.trace import Trace, load_trace

FILL_POLICIES = (
    "random",
    "dot-product",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
    "apportion",
)
PUBLISHED_AT_100 = {
    "random": 13.70,
    "dot-product": 9.38,
    "gpu-clustering": 8.35,
    "gpu-packing": 8.22,
    "best-fit": 7.14,
    "fgd": 4.77,
}
"""Weng et al., ATC'23: unallocated GPU % at 100 % arrived, mean over 10 seeds."""


@cache
def _openb() -> tuple[Cluster, Trace]:
    cluster = load_cluster(str(OPENB_TRACE_DIR / "openb_node_list_gpu_node.csv"))
    return cluster, load_trace(OPENB_TRACE_DIR / "openb_pod_list_default.csv")


def _fill_one(task: tuple[str, int, bool]) -> tuple[str, int, float, float, int]:
    policy, seed, gpu_only = task
    cluster, trace = _openb()
    extra = [p for p in trace.fill_only if isinstance(p, Job) or not gpu_only]
    result = fill(cluster, trace.jobs, policy, seed, None, extra)
    return policy, seed, result.unallocated_at_100, result.unallocated_at_130, result.pods


def bench_fill(seeds: int, processes: int, gpu_only: bool) -> dict[str, object]:
    tasks = [(p, s, gpu_only) for p in FILL_POLICIES for s in range(seeds)]
    started = time.perf_counter()
    with executor(processes) as pool:  # the pool `simulate --workers` uses: Ctrl-C stops it
        results = [f.result() for f in [pool.submit(_fill_one, t) for t in tasks]]
    wall = time.perf_counter() - started
    pods = sum(r[4] for r in results)
    print(
        f"(a) fill: openb default list{', GPU pods only' if gpu_only else ''}, {seeds} seeds "
        f"× {len(FILL_POLICIES)} policies, "
        f"{pods:,} placements in {wall:.1f} s ({pods / wall:,.0f} pods/s)"
    )
    print(
        f"    {'policy':16s} {'unalloc@100% mean ± pstdev':>24s} {'published':>9s} "
        f"{'unalloc@130% mean ± pstdev':>24s}"
    )
    at_100: dict[str, float] = {}
    at_130: dict[str, float] = {}
    for policy in FILL_POLICIES:
        a = [r[2] for r in results if r[0] == policy]
        b = [r[3] for r in results if r[0] == policy]
        at_100[policy] = round(statistics.fmean(a), 3)
        at_130[policy] = round(statistics.fmean(b), 3)
        published = PUBLISHED_AT_100.get(policy)
        print(
            f"    {policy:16s} {at_100[policy]:15.2f} ± {statistics.pstdev(a):5.2f} "
            f"{'—' if published is None else f'{published:.2f}':>9s} "
            f"{at_130[policy]:15.2f} ± {statistics.pstdev(b):5.2f}"
        )
    return {
        "fill_wall_s": round(wall, 1),
        "fill_unalloc_at_100": at_100,
        "fill_unalloc_at_130": at_130,
    }


def _replay(
    label: str,
    cluster: Cluster,
    jobs: tuple[Job, ...],
    policy_name: str,
    interval: int = 0,
) -> float:
    cluster = cluster.with_queues({j.workload.queue for j in jobs})
    policy = make_policy(policy_name, cluster, jobs, 0, PolicyOptions())
    sim = Simulation(cluster, jobs, policy, EngineSettings(samples=200, interval=interval))
    started = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - started
    s = sim.recorder.summary(sim)
    jct = s["jct_s"]["all"]
    delay = s["queueing_delay_s"]["all"]
    print(
        f"{label}: {len(jobs):,} jobs on {cluster.gpu_count:,} GPUs, {policy_name}: "
        f"{wall:.1f} s, {sim.events:,} events ({sim.events / wall:,.0f} events/s)"
    )
    print(
        f"    finished {s['finished']:,}, waiting {s['unfinished']['waiting']}, "
        f"utilization {s['utilization_mean']:.3f}, JCT p50/p95/p99 {jct.get('p50', 0):.0f}/"
        f"{jct.get('p95', 0):.0f}/{jct.get('p99', 0):.0f} s, delay p50/p95 "
        f"{delay.get('p50', 0):.0f}/{delay.get('p95', 0):.0f} s, Jain "
        f"{s['fairness']['jain_mean']:.3f}, preemptions {s['preemptions']}"
    )
    if isinstance(policy, ApportionPolicy):
        print(f"    global decisions {policy.decisions:,} (ILP answered {policy.ilp_answers:,})")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,b,c")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--gpu-pods-only",
        action="store_true",
        help="fill without the pod list's CPU-only pods (the paper places them)",
    )
    parser.add_argument("--replay-1m-jobs", type=int, default=1_000_000)
    parser.add_argument("--replay-100k-jobs", type=int, default=100_000)
    args = parser.parse_args()
    only = set(args.only.split(","))
    out: dict[str, object] = {
        "fill_wall_s": None,
        "fill_unalloc_at_100": None,
        "fill_unalloc_at_130": None,
        "replay_1m_wall_s": None,
        "replay_100k_apportion_wall_s": None,
    }
    if "a" in only:
        out.update(bench_fill(args.seeds, args.processes, args.gpu_pods_only))
    if "b" in only:
        jobs = uniform_jobs(args.replay_1m_jobs, 10_000, seed=0)
        wall = _replay("(b) replay", uniform_cluster(1250, 8, "A100-80GB"), jobs, "greedy")
        out["replay_1m_wall_s"] = round(wall, 1)
    if "c" in only:
        jobs = uniform_jobs(args.replay_100k_jobs, 1_000, seed=0)
        wall = _replay(
            "(c) replay",
            uniform_cluster(125, 8, "A100-80GB"),
            jobs,
            "apportion",
            interval=60,
        )
        out["replay_100k_apportion_wall_s"] = round(wall, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
