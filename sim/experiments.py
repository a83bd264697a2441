"""The two experiments, over several policies and seeds, as one JSON-ready result.

``replay``: the trace's arrivals and runtimes through the engine, one run per policy and
seed (seeds matter for ``random`` and for random outages). ``fill``: the FGD paper's
protocol (``sim.fill``), one run per policy and seed, with mean and standard deviation
of the headline numbers per policy.

Results contain no wall-clock times, so the same inputs and seeds give byte-identical
JSON (``dumps``); timings are returned beside them for the console.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.cluster import Cluster
from sim.engine import EngineSettings, Failures, Simulation
from sim.events import Outage
from sim.fill import FILL_POLICIES, fill
from sim.job import Job
from sim.policies import POLICY_NAMES, PolicyOptions, make_policy
from sim.policies.online import never_admitted
from sim.pool import executor, report
from sim.trace import Trace

__all__ = ["Outcome", "ReplaySettings", "dumps", "fill_experiment", "replay_experiment"]

Progress = Callable[[str, float], None]
"""(label, fraction done) — the console draws a bar; tests pass nothing."""


@dataclass(frozen=True)
class ReplaySettings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    policy: PolicyOptions = field(default_factory=PolicyOptions)
    mtbf_hours: float = 0.0
    """Random node failures with this mean time between failures per node, over the whole
    run (0 = none; ``sim.engine.Failures``)."""
    mttr_s: int = 3600
    outages: tuple[Outage, ...] = ()


@dataclass
class Outcome:
    result: dict[str, Any]
    wall_s: dict[str, float] = field(default_factory=dict)
    """Per "policy/seed": wall-clock seconds (not in ``result``: it would break determinism)."""
    events: dict[str, int] = field(default_factory=dict)


class NotFiniteError(ValueError):
    """A record holds NaN or an infinity, which JSON does not have (``json.dumps`` writes a
    bare NaN or Infinity that other readers refuse): where, and the value."""


def dumps(result: dict[str, Any], compact: bool = False) -> str:
    """The canonical JSON text: sorted keys, fixed separators (``compact``: one line), a
    final newline; strict JSON (``NotFiniteError`` names a value that is not finite)."""
    layout: dict[str, Any] = (
        {"separators": (",", ":")} if compact else {"indent": 1, "separators": (",", ": ")}
    )
    try:
        return json.dumps(result, sort_keys=True, allow_nan=False, **layout) + "\n"
    except ValueError:
        where, value = _not_finite(result, "") or ("?", math.nan)
        raise NotFiniteError(f"holds {value} at {where}, which JSON cannot carry") from None


def _not_finite(value: object, path: str) -> tuple[str, float] | None:
    """Where in ``value`` the first float that is not finite is, and it."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "the top", value
    if isinstance(value, dict):
        items: Iterable[tuple[str, object]] = (
            (f"{path}.{k}" if path else str(k), v) for k, v in value.items()
        )
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, inner in items:
        found = _not_finite(inner, where)
        if found is not None:
            return found
    return None


def _header(
    experiment: str, cluster: Cluster, trace: Trace, seeds: Sequence[int]
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "trace": {
            "source": trace.source,
            "format": trace.format,
            "jobs": len(trace.jobs),
            "bad_rows_skipped": trace.bad_rows,
            "left_out": trace.skipped,
            "still_running_cut_at_end": trace.still_running,
        },
        "cluster": {
            "source": cluster.source,
            "gpus": cluster.gpu_count,
            "capacity": cluster.capacity(),
            "synthesized_queues": list(cluster.synthesized_queues),
        },
        "seeds": list(seeds),
    }


def replay_experiment(
    cluster: Cluster,
    trace: Trace,
    policies: Sequence[str],
    seeds: Sequence[int],
    settings: ReplaySettings = ReplaySettings(),
    progress: Progress | None = None,
    workers: int = 1,
) -> Outcome:
    """One run per policy and seed, ``workers`` of them at a time in worker processes (the
    result is the same for any number)."""
    for name in policies:
        if name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    cluster.check_models(trace.jobs)
    cluster = cluster.with_queues({j.workload.queue for j in trace.jobs})
    jobs = trace.jobs
    result = _header("replay", cluster, trace, seeds)
    result["settings"] = {
        "interval_s": settings.engine.interval,
        "checkpoint_s": settings.engine.checkpoint_s,
        "horizon_s": settings.engine.horizon,
        "apportion_tick_s": settings.policy.tick_s,
        "apportion_budget_ms": settings.policy.budget_ms,
        "mtbf_hours": settings.mtbf_hours,
        "mttr_s": settings.mttr_s,
    }
    never = cluster.never_fitting(jobs)
    result["never_fit"] = {
        "jobs": len(never),
        "examples": [_described(j) for j in never[:5]],
    }
    stuck = never_admitted(cluster, jobs, never)
    result["never_admitted"] = {
        "jobs": len(stuck),
        "names": [j.name for j, _ in stuck],
        "examples": [f"{j.name} ({d.reason.value}: {d.message})" for j, d in stuck[:3]],
    }
    stuck_names = tuple(j.name for j, _ in stuck)
    outcome = Outcome(result)
    tasks = [(name, seed) for name in policies for seed in seeds]
    with executor(min(workers, len(tasks)), progress) as pool:
        futures = [
            pool.submit(_replay_run, cluster, jobs, name, seed, settings, stuck_names)
            for name, seed in tasks
        ]
        runs = []
        for (name, seed), future in zip(tasks, futures, strict=True):
            run, events, wall_s = future.result()
            outcome.wall_s[f"{name}/{seed}"] = wall_s
            outcome.events[f"{name}/{seed}"] = events
            runs.append(run)
    result["runs"] = runs
    return outcome


def _replay_run(
    cluster: Cluster,
    jobs: tuple[Job, ...],
    name: str,
    seed: int,
    settings: ReplaySettings,
    never_admitted: tuple[str, ...] = (),
) -> tuple[dict[str, Any], int, float]:
    """One policy and seed (in a worker process): the run's record, its events, its wall s;
    ``never_admitted``: the jobs quotas can never admit, counted where left waiting."""
    policy = make_policy(name, cluster, jobs, seed, settings.policy)
    label = f"{name}/{seed}"
    failures = None
    if settings.mtbf_hours > 0:
        failures = Failures(settings.mtbf_hours * 3600, settings.mttr_s, seed)
    started = time.perf_counter()
    sim = Simulation(
        cluster,
        jobs,
        policy,
        settings.engine,
        settings.outages,
        (),
        lambda f: report(label, f),
        failures,
    )
    sim.run()
    run = {
        "policy": name,
        "seed": seed,
        "tie_rule": policy.tie_rule,
        "outages": sim.outages,
        "never_admitted_waiting": sum(name in sim.pending for name in never_admitted),
        "summary": sim.recorder.summary(sim),
    }
    return run, sim.events, time.perf_counter() - started


def _fill_run(cluster: Cluster, trace: Trace, name: str, seed: int) -> tuple[dict[str, Any], float]:
    """One fill policy and seed (in a worker process): the run's record and its wall s."""
    started = time.perf_counter()

    def progress(fraction: float) -> None:
        report(f"{name}/{seed}", fraction)

    run = fill(cluster, trace.jobs, name, seed, progress, trace.fill_only)
    return run.to_json(), time.perf_counter() - started


def _described(job: Job) -> str:
    """``big-1: 1× {'gpus': 64}``: a job by its pods and demand, as a trace writes it."""
    w = job.workload
    return f"{job.name}: {w.pods}× {w.demand.model_dump(exclude_defaults=True)}"


def fill_experiment(
    cluster: Cluster,
    trace: Trace,
    policies: Sequence[str],
    seeds: Sequence[int],
    progress: Progress | None = None,
    workers: int = 1,
) -> Outcome:
    """One run per policy and seed, ``workers`` at a time, as ``replay_experiment``."""
    for name in policies:
        if name not in FILL_POLICIES:
            raise ValueError(
                f"policy {name!r} has no fill variant; fill compares {', '.join(FILL_POLICIES)}"
            )
    cluster.check_models([*trace.jobs, *(p for p in trace.fill_only if isinstance(p, Job))])
    result = _header("fill", cluster, trace, seeds)
    result["protocol"] = (
        "FGD (ATC'23): shuffle with the seed, resample with replacement to 130% of GPU "
        "capacity, place one pod at a time, no departures, drop what does not fit; every "
        "pod of the trace, also those a replay leaves out (CPU-only, never scheduled); "
        "apportion uses the core's online path (no look-ahead)"
    )
    outcome = Outcome(result)
    tasks = [(name, seed) for name in policies for seed in seeds]
    with executor(min(workers, len(tasks)), progress) as pool:
        futures = [pool.submit(_fill_run, cluster, trace, n, s) for n, s in tasks]
        runs = []
        for (name, seed), future in zip(tasks, futures, strict=True):
            run, outcome.wall_s[f"{name}/{seed}"] = future.result()
            runs.append(run)
    result["runs"] = runs
    summary: dict[str, Any] = {}
    for name in policies:
        mine = [r for r in runs if r["policy"] == name]
        summary[name] = {"tie_rule": mine[0]["tie_rule"]}
        for key in ("unallocated_pct_at_100", "unallocated_pct_at_130"):
            values = [r[key] for r in mine]
            summary[name][key] = {
                "mean": round(statistics.fmean(values), 4),
                # The spread of these seeds' results themselves: population stdev.
                "pstdev": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0,
            }
    result["summary"] = summary
    return outcome
