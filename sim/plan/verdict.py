"""From evaluations to answers: the recommendation, the Pareto front, what happens if
nothing changes, which goal binds when none is met, and quota advice.

Pure functions of the sweep record (``search``), so ``plan merge`` gives the same answers
from shards as one process would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sim.plan.slo import Slo, goal_ratios, shown

__all__ = ["verdict"]


def _worst(slos: Sequence[Slo], evaluation: dict[str, Any]) -> float:
    return max(goal_ratios(slos, evaluation), default=0.0)


def verdict(record: dict[str, Any], slos: Sequence[Slo]) -> dict[str, Any]:
    rows = [r for r in record["candidates"] if r["evaluation"] is not None]
    budget = record["inputs"].get("budget_per_hour")
    current = next((r for r in record["candidates"] if r["current"]), None)
    meets = sorted(
        (r for r in rows if all(r["evaluation"]["slo_met"])), key=lambda r: r["cost_per_hour"]
    )
    affordable = [r for r in meets if budget is None or r["cost_per_hour"] <= budget]
    out: dict[str, Any] = {"feasible": bool(affordable)}
    if affordable:
        best = affordable[0]
        out["recommended"] = best["key"]
        cheaper_open = [
            r["key"]
            for r in record["candidates"]
            if r["status"] == "undecided" and r["cost_per_hour"] < best["cost_per_hour"]
        ]
        out["cheaper_not_simulated"] = len(cheaper_open)
    else:
        # Closest option: the smallest worst-goal ratio (within budget when there is one).
        pool = [r for r in rows if budget is None or r["cost_per_hour"] <= budget]
        if not pool and rows:
            # The budget buys nothing that was simulated: it is what binds.
            best = meets[0] if meets else min(rows, key=lambda r: r["cost_per_hour"])
            out["closest"] = best["key"]
            out["binding"] = {"slo": f"the budget (${budget:,.0f}/h)", "value": None, "ratio": None}
            if meets:
                out["cheapest_meeting_all"] = meets[0]["key"]
        elif pool:
            best = min(
                pool,
                key=lambda r: (_worst(slos, r["evaluation"]), r["cost_per_hour"]),
            )
            out["closest"] = best["key"]
            values = best["evaluation"]["slo_values"]
            ratios = goal_ratios(slos, best["evaluation"])
            bind = max(range(len(slos)), key=lambda i: ratios[i]) if slos else None
            if bind is not None:
                out["binding"] = {
                    "slo": slos[bind].text,
                    "value": values[bind],
                    "ratio": ratios[bind] if math.isfinite(ratios[bind]) else None,
                    "shown": shown(slos[bind], best["evaluation"], bind),
                }
            if meets and budget is not None:
                out["cheapest_meeting_all"] = meets[0]["key"]
    # Pareto front: cost vs the worst goal ratio, among simulated candidates.
    points = sorted((r["cost_per_hour"], _worst(slos, r["evaluation"]), r["key"]) for r in rows)
    front = []
    best_ratio = math.inf
    for _, ratio, key in points:
        if ratio < best_ratio - 1e-9:
            front.append(key)
            best_ratio = ratio
    out["pareto"] = front
    out["worst_ratio"] = {r["key"]: _finite(_worst(slos, r["evaluation"])) for r in rows}
    if current is not None and current["evaluation"] is not None:
        out["nothing_changes"] = _nothing_changes(record, current, slos)
    chosen = out.get("recommended") or out.get("closest")
    if chosen is not None:
        out["quota_advice"] = _quota_advice(next(r for r in rows if r["key"] == chosen))
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _nothing_changes(
    record: dict[str, Any], current: dict[str, Any], slos: Sequence[Slo]
) -> list[str]:
    """Sentences: each goal on the current cluster, from today's demand to the planned one."""
    today = record.get("today")
    now = current["evaluation"]
    lines = []
    for i, slo in enumerate(slos):
        after = shown(slo, now, i)
        verdict_ = "meets" if now["slo_met"][i] else "misses"
        if today is not None:
            before = shown(slo, today, i)
            lines.append(
                f"{slo.scope}: {slo.metric} goes from {before} today to {after} with the "
                f"planned demand ({verdict_} {slo.show_target()})"
            )
        else:
            lines.append(f"{slo.scope}: {slo.metric} is {after} ({verdict_} {slo.show_target()})")
    return lines


def _quota_advice(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per queue: its nominal GPUs and what it used, borrowed and left unused in the replay
    (other splits are simulated by the command: ``quotas.search_quotas``)."""
    queues = {q: v for q, v in row["evaluation"]["queues"].items() if not q.startswith("_")}
    advice = []
    for q, v in sorted(queues.items()):
        advice.append(
            {
                "queue": q,
                "nominal_gpus": v["nominal_gpus"],
                "gpu_hours": v["gpu_hours"],
                "borrowed_gpu_hours": v["borrowed_gpu_hours"],
                "unused_quota_gpu_hours": v["unused_quota_gpu_hours"],
            }
        )
    return advice
