"""Time a capacity-planning run on the bundled demo demand (issue 6's benchmark).

    .venv/bin/python benchmarks/plan_bench.py [--simulations N] [--workers N]
                                              [--levels 0.75,1,1.25,1.5] [--policy P]

The demand is the bundled demo trace (600 jobs, six teams, about 5.4 hours) on the
embedded 496-GPU cluster; the goals are ``apportion plan``'s defaults. Every GPU model's
node pools are scaled by each level (4 levels, 5 models: 1,024 candidate clusters); the
fluid bound prunes what cannot work, then up to ``--simulations`` candidates (default 20)
are simulated in a pool of ``--workers`` processes (default 2). Target: at least 20
candidate clusters simulated in at most 2 minutes on this 2-core machine. The last line
printed is one JSON object: ``{"candidates", "simulations", "pruned", "wall_s"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cluster import load_cluster
from sim.commands import DEMO_TRACE
from sim.plan.candidates import pools_of
from sim.plan.commands import DEFAULT_SLOS
from sim.plan.search import SearchSettings, search
from sim.plan.slo import parse_slo
from sim.plan.verdict import verdict
from sim.trace import load_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--levels", default="0.75,1,1.25,1.5")
    parser.add_argument("--policy", default="apportion-greedy")
    args = parser.parse_args()
    trace = load_trace(DEMO_TRACE)
    cluster = load_cluster("default").with_queues({j.workload.queue for j in trace.jobs})
    slos = [parse_slo(s) for s in DEFAULT_SLOS]
    settings = SearchSettings(
        levels=tuple(float(x) for x in args.levels.split(",")),
        max_simulations=args.simulations,
        workers=args.workers,
        policy=args.policy,
    )
    started = time.perf_counter()
    record = search(cluster, pools_of(cluster), trace.jobs, slos, settings)
    wall = time.perf_counter() - started
    record["inputs"] = {"budget_per_hour": None}
    answer = verdict(record, slos)
    status = Counter(r["status"] for r in record["candidates"])
    sims = record["simulations"]
    print(f"demand: {len(trace.jobs)} jobs (demo trace); goals: {', '.join(DEFAULT_SLOS)}")
    counts = ", ".join(f"{v} {k}" for k, v in status.items())
    print(f"candidates: {len(record['candidates'])} ({counts})")
    print(f"pruned by the fluid bound: {status['pruned']}")
    print(f"simulations: {sims} with {args.workers} workers, policy {args.policy}")
    each = record["simulation_wall_s"]
    print(
        f"wall: {wall:.1f} s; per simulation: {sum(each) / max(1, len(each)):.2f} s in its worker "
        f"(min {min(each, default=0):.2f}, max {max(each, default=0):.2f}), "
        f"{wall / max(1, sims):.2f} s of wall time"
    )
    by_key = {r["key"]: r for r in record["candidates"]}
    chosen = answer.get("recommended") or answer.get("closest")
    if chosen:
        row = by_key[chosen]
        kind = "recommended" if answer.get("recommended") else "closest (none meets every goal)"
        print(f"{kind}: {row['gpus']} at ${row['cost_per_hour']:,.0f}/h")
    print(
        json.dumps(
            {
                "candidates": len(record["candidates"]),
                "simulations": sims,
                "pruned": status["pruned"],
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
