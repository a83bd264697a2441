"""Time a capacity-planning run on the bundled demo demand (issue 6's benchmark).

    .venv/bin/python benchmarks/plan_bench.py [--simulations N] [--workers N]
                                              [--levels 0.75,1,1.25,1.5] [--policy P]
                                              [--growth G] [--no-shapes]

The demand is the bundled demo trace (600 jobs, six teams, about 5.4 hours) on the
embedded 496-GPU cluster; the goals are ``apportion plan``'s defaults. Every GPU model's
node pools are scaled by each level (4 levels, 5 models: 1,024 candidate clusters); the
fluid bound prunes what cannot work, then up to ``--simulations`` candidates (default 20)
are simulated in a pool of ``--workers`` processes (default 2); a quarter of them go to
other node shapes and MIG layouts around the best (``--no-shapes``: none). ``--growth``
scales the demand (seeded copies), to see the fluid bound prune on a tighter demand.
Target: at least 20 candidate clusters simulated in at most 2 minutes on this 2-core
machine.

Baseline, in the same run: the same search without look-ahead (idle workers simulating what
the next bisection step may ask for), ``--repeat`` times each, alternating; the two must
give the same record. The last line printed is one JSON object:
``{"candidates", "simulations", "pruned", "wall_s", "baseline_wall_s"}`` (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.cluster import load_cluster
from sim.commands import DEMO_TRACE
from sim.plan.candidates import pools_of
from sim.plan.commands import DEFAULT_SLOS
from sim.plan.demand import grow
from sim.plan.search import SearchSettings, search
from sim.plan.shapes import Arrangement, arrangements
from sim.plan.slo import parse_slo
from sim.plan.verdict import verdict
from sim.trace import load_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--levels", default="0.75,1,1.25,1.5")
    parser.add_argument("--policy", default="apportion-greedy")
    parser.add_argument("--growth", type=float, default=1.0)
    parser.add_argument("--no-shapes", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, alternating")
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average before: {' '.join(load)} (1, 5, 15 min)")
    trace = load_trace(DEMO_TRACE)
    jobs = grow(trace.jobs, args.growth)
    cluster = load_cluster("default").with_queues({j.workload.queue for j in trace.jobs})
    slos = [parse_slo(s) for s in DEFAULT_SLOS]
    pools = pools_of(cluster)
    options: tuple[Arrangement, ...] = ()
    if not args.no_shapes:
        pools, options = arrangements(cluster, pools, jobs)
    walls: dict[bool, list[float]] = {True: [], False: []}
    records: dict[bool, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for look_ahead in (False, True):
            settings = SearchSettings(
                levels=tuple(float(x) for x in args.levels.split(",")),
                max_simulations=args.simulations,
                workers=args.workers,
                policy=args.policy,
                look_ahead=look_ahead,
            )
            started = time.perf_counter()
            records[look_ahead] = search(cluster, pools, jobs, slos, settings, options=options)
            walls[look_ahead].append(time.perf_counter() - started)
    record = records[True]
    same = _comparable(record) == _comparable(records[False])
    wall, baseline = statistics.median(walls[True]), statistics.median(walls[False])
    record["inputs"] = {"budget_per_hour": None}
    answer = verdict(record, slos)
    status = Counter(r["status"] for r in record["candidates"])
    sims = record["simulations"]
    grown = f", grown ×{args.growth:g}" if args.growth != 1 else ""
    print(f"demand: {len(jobs)} jobs (demo trace{grown}); goals: {', '.join(DEFAULT_SLOS)}")
    counts = ", ".join(f"{v} {k}" for k, v in status.items())
    print(f"candidates: {len(record['candidates'])} ({counts})")
    shaped = [r for r in record["candidates"] if r["shapes"]]
    print(
        f"other shapes and MIG layouts: {len(options)} arrangements, {len(shaped)} candidates, "
        f"{sum(1 for r in shaped if r['evaluation'])} simulated"
    )
    why = Counter(_kind(r["pruned"]) for r in record["candidates"] if r["pruned"])
    print(
        f"pruned by the fluid bound: {status['pruned']}"
        + (f" ({', '.join(f'{v} {k}' for k, v in sorted(why.items()))})" if why else "")
    )
    print(f"simulations: {sims} with {args.workers} workers, policy {args.policy}")
    each = record["simulation_wall_s"]
    print(
        f"wall: {wall:.1f} s; per simulation: {sum(each) / max(1, len(each)):.2f} s in its worker "
        f"(min {min(each, default=0):.2f}, max {max(each, default=0):.2f}), "
        f"{wall / max(1, sims):.2f} s of wall time"
    )
    ahead = record["ahead"]
    print(
        f"look-ahead: {ahead['simulated']} simulated ahead, {ahead['used']} of them asked for; "
        f"baseline without it: {baseline:.1f} s (median of {args.repeat}; with it "
        f"{', '.join(f'{w:.1f}' for w in walls[True])} s, without "
        f"{', '.join(f'{w:.1f}' for w in walls[False])} s): ×{baseline / wall:.2f}; "
        f"same record: {'yes' if same else 'NO'}"
    )
    by_key = {r["key"]: r for r in record["candidates"]}
    chosen = answer.get("recommended") or answer.get("closest")
    if chosen:
        row = by_key[chosen]
        kind = "recommended" if answer.get("recommended") else "closest (none meets every goal)"
        shapes = "; ".join(f"{m} {a}" for m, a in row["shapes"].items()) or "today's shapes"
        print(f"{kind}: {row['gpus']} ({shapes}) at ${row['cost_per_hour']:,.0f}/h")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average after: {' '.join(load)}")
    print(
        json.dumps(
            {
                "candidates": len(record["candidates"]),
                "simulations": sims,
                "pruned": status["pruned"],
                "wall_s": round(wall, 1),
                "baseline_wall_s": round(baseline, 1),
            }
        )
    )


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The record without what differs between runs of the same search anyway."""
    return {k: v for k, v in record.items() if k not in ("simulation_wall_s", "ahead")}


def _kind(reason: str) -> str:
    if "arrive in" in reason:
        return "by a time window"
    if "fit no node" in reason:
        return "pods fit no node"
    if "busy" in reason:
        return "by the utilization goal"
    return "by GPU-time over the whole replay"


if __name__ == "__main__":
    main()
