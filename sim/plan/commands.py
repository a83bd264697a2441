"""``apportion plan``: the cheapest cluster that meets the SLOs, as an HTML/Markdown report.

``apportion plan [TRACE] --slo ... [--out DIR]`` runs the sweep; ``--shard i/N --json``
runs one share of it and prints one JSON line; ``apportion plan merge FILE...`` joins
shard outputs (a JSON file each, or ``kubectl logs --prefix`` lines) and writes the same
report. Arguments can come from a file, one per line: ``apportion plan @plan.args``.
Every simulation is kept in a journal (``journal``) in --out or --journal DIR as it
completes; the same command run again resumes from it. Exit codes: 0 success (also when
no candidate meets the goals: the report says so), 2 bad input, 130 Ctrl-C (the line says
what the journal kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.cli import CommandError, stop_on_sigterm
from scheduler.commands import seed
from scheduler.consistency import price_problem
from scheduler.telemetry import url_problem
from scheduler.textfile import read_text
from sim.cluster import Cluster, ClusterError, load_cluster
from sim.commands import DEMO_TRACE, float_option, int_option, values_may_start_with_minus
from sim.experiments import NotFiniteError, dumps
from sim.job import Job
from sim.outfiles import make_out, out_dir, write_whole
from sim.plan.candidates import (
    LEVEL_WHY,
    MAX_CANDIDATES,
    MAX_LEVEL,
    Pool,
    grid_size,
    pools_of,
)
from sim.plan.demand import (
    GROWTH_WHY,
    HORIZON_WHY,
    MAX_GROWTH,
    MAX_HORIZON_HOURS,
    MAX_PLANNED_JOBS,
    grow,
    planned_size,
)
from sim.plan.evaluate import EvalTask
from sim.plan.figures import figures
from sim.plan.journal import Journal, journal_name
from sim.plan.quotas import search_quotas
from sim.plan.report import build_report
from sim.plan.rightsizing import RightsizingError, query_prometheus, rightsizing_rows
from sim.plan.search import SearchSettings, evaluate_all, search, violations
from sim.plan.shapes import Arrangement, arrangements
from sim.plan.shards import read_shards
from sim.plan.slo import Slo, SloError, check_queues, parse_slo
from sim.plan.verdict import verdict
from sim.policies import POLICY_NAMES, PolicyOptions
from sim.pool import MAX_WORKERS, WORKERS_WHY, default_workers
from sim.progress import ProgressLine
from sim.trace import NeedsThroughputs, TraceError, load_trace

__all__ = ["plan_command"]

DEFAULT_SLOS = ("p95_wait<=3h", "priority>=1000:p95_wait<=10m", "utilization>=35%")
"""What ``apportion plan demo`` plans for when no --slo is given."""

Subparsers = Any


def plan_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "plan",
        help="capacity planning: the cheapest cluster that meets SLOs for a demand",
        description=(
            "Sweep candidate clusters (the current node pools scaled per GPU model) through "
            "the simulator and report the cheapest one that meets every SLO, the cost-vs-SLO "
            "Pareto front, quota advice and right-sizing. 'apportion plan merge FILE...' joins "
            "the outputs of --shard runs. Arguments may come from a file, one per line (blank "
            "lines skipped): 'apportion plan @plan.args'."
        ),
    )
    _arguments_from_files(parser)
    parser.add_argument(
        "trace",
        nargs="*",
        default=["demo"],
        help="trace file ('demo' for the bundled sample, the default), or: merge FILE...",
    )
    parser.add_argument(
        "--cluster",
        default="default",
        help="the current cluster, as simulate reads it (default: the embedded demo cluster)",
    )
    parser.add_argument(
        "--slo",
        action="append",
        default=[],
        help="a goal, e.g. 'team-a:p95_wait<=30m', 'priority>=1000:p99_wait<=5m', "
        f"'utilization>=70%%' (repeat; default: {', '.join(DEFAULT_SLOS).replace('%', '%%')})",
    )
    parser.add_argument(
        "--growth",
        type=float_option(positive=True, most=MAX_GROWTH, why=GROWTH_WHY),
        default=1.0,
        help="demand growth factor (default 1, at most 100; below 1 keeps about that share "
        "of the jobs)",
    )
    parser.add_argument(
        "--horizon-hours",
        type=float_option(positive=True, most=MAX_HORIZON_HOURS, why=HORIZON_WHY),
        help="repeat the trace to this length (at most 8760: a year)",
    )
    parser.add_argument("--price", action="append", default=[], help="MODEL=$/h (repeat)")
    parser.add_argument(
        "--budget", type=float_option(positive=True), help="most $ per hour the cluster may cost"
    )
    parser.add_argument(
        "--levels",
        default="0.75,1,1.25,1.5",
        help="scale factors per GPU model (comma-separated; default 0.75,1,1.25,1.5)",
    )
    parser.add_argument(
        "--max-simulations", type=int_option(1), default=24, help="per shard (default 24)"
    )
    parser.add_argument(
        "--no-shapes",
        action="store_true",
        help="keep today's node shapes and MIG layouts (no 4-/8-GPU nodes, no new layouts)",
    )
    parser.add_argument(
        "--quota-simulations",
        type=int_option(0),
        help="quota splits to simulate on the recommended cluster (default: a quarter of "
        "--max-simulations, 1 to 4)",
    )
    parser.add_argument(
        "--workers",
        type=int_option(0, MAX_WORKERS, WORKERS_WHY),
        default=0,
        help="processes (default 0: one per core, at most 8)",
    )
    parser.add_argument(
        "--policy",
        default="apportion-greedy",
        help="policy to simulate (default apportion-greedy: production's paths without the ILP)",
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of --growth's copies and of the policy's random choices (0 or more, default 0)",
    )
    parser.add_argument("--max-jobs", type=int_option(1), help="plan on the first N jobs only")
    parser.add_argument("--metrics", type=Path, help="Prometheus export (JSON) for right-sizing")
    parser.add_argument(
        "--metrics-url",
        type=_prometheus_url,
        help="a live Prometheus to query instead of --metrics (http:// or https://)",
    )
    parser.add_argument("--metrics-snapshot", type=Path, help="snapshot with running workloads")
    parser.add_argument("--shard", help="i/N: run the i-th of N shares of the sweep")
    parser.add_argument("--out", type=out_dir, help="write plan.json, report.html, report.md here")
    parser.add_argument(
        "--journal",
        type=out_dir,
        help="keep every simulation here as it completes (default: --out), so the same "
        "command run again after a stop resumes",
    )
    parser.add_argument(
        "--inputs",
        type=Path,
        help="plan merge: a directory holding the shards' trace and cluster files (found by "
        "file name) when they are not at the paths the shards read, to simulate quota splits",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="plan merge: merge the shards given though some of the sweep's are missing (the "
        "answer and the report say which)",
    )
    parser.add_argument("--json", action="store_true", help="print the sweep record to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    values_may_start_with_minus(parser)
    parser.set_defaults(run=_run)


def _arguments_from_files(parser: argparse.ArgumentParser) -> None:
    """Read ``@FILE`` arguments (one per line, argparse's convention) as every file users
    hand us is read (``read_text``): argparse's own reading (``fromfile_prefix_chars``)
    opens the file in the locale's encoding, so one that is not UTF-8 was a
    UnicodeDecodeError traceback, and a byte-order mark (a Windows editor's) stayed part
    of the first argument (the trace '\ufefftrace.csv': no such file). Blank lines are
    skipped (argparse made each an empty argument: "one trace expected, got 2"), and a file
    with no argument in it is refused (it ran the whole default plan)."""
    parse = parser.parse_known_args

    def expand(args: Sequence[str], reading: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for arg in args:
            if not arg.startswith("@"):
                out.append(arg)
                continue
            name = arg[1:]
            if name in reading:  # argparse recursed until a RecursionError
                parser.error(f"{arg}: read again from {reading[-1]}, which it names")
            try:
                text = read_text(Path(name))
            except OSError as error:
                parser.error(f"cannot read {name}: {error.strerror}")
            lines = [line for line in text.splitlines() if line.strip()]
            if not lines:
                parser.error(f"{arg}: no arguments in it (one per line)")
            out += expand(lines, (*reading, name))
        return out

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return parse(None if args is None else expand(args, ()), namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign, assignment]


def _prometheus_url(text: str) -> str:
    """--metrics-url, checked as serve checks --prometheus-url (``url_problem``), before any
    other work: urllib's ValueError ('unknown url type', 'Invalid IPv6 URL') was a traceback
    after the trace was loaded."""
    problem = url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def _slos(texts: list[str]) -> list[Slo]:
    try:
        return [parse_slo(t) for t in texts]
    except SloError as error:
        raise CommandError(str(error)) from None


def _shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return (0, 1)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise CommandError(f"--shard {text!r}: expected i/N, e.g. 0/8") from None
    if not 0 <= i < n:
        raise CommandError(f"--shard {text!r}: i must be in 0..N-1")
    return (i, n)


def _levels(text: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CommandError(f"--levels {text!r}: expected numbers like 0.75,1,1.5") from None
    if not levels or any(not math.isfinite(v) for v in levels):
        raise CommandError(f"--levels {text!r}: give one or more finite, non-negative factors")
    if min(levels) < 0:
        raise CommandError(
            f"--levels {text!r}: {min(levels):g} is negative; a level multiplies a GPU model's "
            "node count (0 leaves the model out, 1 keeps today's)"
        )
    if max(levels) > MAX_LEVEL:
        raise CommandError(
            f"--levels {text!r}: {max(levels):g} is more than {MAX_LEVEL:g} ({LEVEL_WHY})"
        )
    return levels


def _prices(items: list[str], cluster: Cluster) -> dict[str, float]:
    out: dict[str, float] = {}
    given: dict[str, str] = {}
    """The catalog's name of each model priced → the --price that priced it."""
    for item in items:
        name, _, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            raise CommandError(f"--price {item!r}: expected MODEL=DOLLARS_PER_HOUR") from None
        problem = price_problem(price)
        if problem is not None:
            raise CommandError(f"--price {item!r}: {price:g} {problem}")
        model = cluster.catalog.get(name.strip())
        known = model.name if model is not None else name.strip()
        if known in given:  # the last one won without a word
            raise CommandError(f"--price {item!r}: {known} is priced twice (also {given[known]!r})")
        given[known] = item
        out[name.strip()] = price
    return out


@dataclass(frozen=True)
class _Setup:
    """Everything a sweep (or a merge's quota search) needs, loaded and checked."""

    slos: list[Slo]
    cluster: Cluster
    trace_path: Path
    source: str
    jobs: tuple[Job, ...]
    planned: tuple[Job, ...]
    settings: SearchSettings
    pools: Sequence[Pool]
    options: Sequence[Arrangement]
    hints: list[str]


_REPLAY = ("cluster", "growth", "horizon_hours", "price", "policy", "seed", "max_jobs")
"""The arguments 'plan merge' needs to rebuild the sweep's inputs (with trace, hints)."""


def _setup(args: argparse.Namespace, hints: list[str] | None = None) -> _Setup:
    if args.policy not in POLICY_NAMES:
        raise CommandError(f"unknown policy {args.policy!r}; known: {', '.join(POLICY_NAMES)}")
    slos = _slos(args.slo or list(DEFAULT_SLOS))
    trace_path = DEMO_TRACE if args.trace[0] == "demo" else Path(args.trace[0])
    try:
        cluster = load_cluster(args.cluster)
        prices = _prices(args.price, cluster)
        if prices:
            try:
                cluster.catalog.with_prices(prices)
            except KeyError as error:
                raise CommandError(f"--price: {error.args[0]}") from None
            cluster = type(cluster)(
                cluster.snapshot.model_copy(
                    update={"prices": {**cluster.snapshot.prices, **prices}}
                ),
                cluster.source,
                cluster.synthesized_queues,
            )
        try:
            trace = load_trace(trace_path)
        except NeedsThroughputs:
            raise CommandError(
                f"{trace_path}: a Gavel trace needs its throughput table, which plan does not "
                "take; give plan the jobs as Apportion's CSV, whose throughput column carries "
                "each job's speed per GPU model (sim.jobfile.job_csv writes it)"
            ) from None
        jobs = trace.jobs[: args.max_jobs] if args.max_jobs else trace.jobs
        cluster.check_models(jobs)
        cluster = cluster.with_queues({j.workload.queue for j in jobs})
    except (ClusterError, TraceError) as error:
        raise CommandError(str(error)) from None
    check = [q.name for q in cluster.snapshot.queues]
    try:
        check_queues(slos, check)
    except SloError as error:
        raise CommandError(str(error)) from None
    horizon_s = None if args.horizon_hours is None else int(args.horizon_hours * 3600)
    _check_planned_size(args, jobs, horizon_s)
    try:
        planned = grow(jobs, args.growth, horizon_s, args.seed)
    except ValueError as error:
        raise CommandError(f"--growth: {error}") from None
    if jobs and not planned:  # else a plan for no demand: '0 jobs planned', utilization 0 %
        if args.growth < 1:
            what = f"--growth {args.growth:g}"
            why = "below 1, --growth keeps about that share of the jobs, drawn with --seed"
        else:
            what = f"--horizon-hours {args.horizon_hours:g}"
            why = f"the plan keeps the jobs that arrive in its first {horizon_s:,} s"
        raise CommandError(f"{what} leaves no job of the trace's {len(jobs):,} to plan ({why})")
    settings = SearchSettings(
        levels=_levels(args.levels),
        max_simulations=args.max_simulations,
        workers=args.workers or default_workers(),
        policy=args.policy,
        seed=args.seed,
        options=PolicyOptions(),
        shard=_shard(args.shard),
        budget_per_hour=args.budget,
    )
    if hints is None:
        rightsizing = _rightsizing(args)  # before the sweep: a bad file fails at once
        hints = _hints(rightsizing)
    pools: Sequence[Pool] = pools_of(cluster)
    size, models = grid_size(pools, settings.levels)
    if size > MAX_CANDIDATES:
        raise CommandError(
            f"--levels {args.levels!r}: {len(set(settings.levels))} levels on {models} GPU "
            f"models make {size:,} candidates; at most {MAX_CANDIDATES:,} (each is bounded "
            "and kept in plan.json)"
        )
    options: Sequence[Arrangement] = ()
    if not args.no_shapes:
        pools, options = arrangements(cluster, pools, planned, hints)
    return _Setup(
        slos, cluster, trace_path, trace.source, tuple(jobs), tuple(planned), settings, pools,
        options, hints,
    )  # fmt: skip


def _check_planned_size(
    args: argparse.Namespace, jobs: Sequence[Job], horizon_s: int | None
) -> None:
    """Refuse a demand past ``MAX_PLANNED_JOBS``: the trace's own jobs, or before it is
    built, what --growth and --horizon-hours make of them (each copy is a job every
    simulated candidate replays)."""
    if len(jobs) > MAX_PLANNED_JOBS:
        what = f"--max-jobs {args.max_jobs}" if args.max_jobs else args.trace[0]
        raise CommandError(
            f"{what}: {len(jobs):,} jobs to plan for; at most {MAX_PLANNED_JOBS:,} (every "
            f"simulated candidate replays them all): plan on the first {MAX_PLANNED_JOBS:,} "
            f"with --max-jobs {MAX_PLANNED_JOBS}"
        )
    size, repeats = planned_size(jobs, args.growth, horizon_s)
    if size <= MAX_PLANNED_JOBS:
        return
    flags = [f"--growth {args.growth:g}"] if args.growth != 1 else []
    flags += [f"--horizon-hours {args.horizon_hours:g}"] if repeats > 1 else []
    how = f"the trace's {len(jobs):,}" + (f" ×{args.growth:g}" if args.growth != 1 else "")
    how += f", repeated {repeats:,} times" if repeats > 1 else ""
    raise CommandError(
        f"{' and '.join(flags)}: about {size:,} jobs to plan for ({how}); at most "
        f"{MAX_PLANNED_JOBS:,} (every simulated candidate replays them all)"
    )


def _run(args: argparse.Namespace) -> int:
    stop_on_sigterm()
    if args.trace and args.trace[0] == "merge":
        return _merge(args, [Path(p) for p in args.trace[1:]])
    if len(args.trace) != 1:
        raise CommandError(f"one trace expected, got {len(args.trace)}: {' '.join(args.trace)}")
    if args.inputs is not None:  # else ignored without a word
        raise CommandError(
            "--inputs is for 'plan merge' (where the shards' trace and cluster files are); "
            "a sweep reads its TRACE and --cluster"
        )
    if args.partial:
        raise CommandError("--partial is for 'plan merge' (shards missing); a sweep runs whole")
    rightsizing = _rightsizing(args)
    hints = _hints(rightsizing)
    setup = _setup(args, hints)
    if args.out is not None:  # after the inputs, so a mistyped one leaves no directory
        make_out(args.out)
    settings, slos, jobs, planned = setup.settings, setup.slos, setup.jobs, setup.planned
    changed = args.growth != 1.0 or args.horizon_hours is not None
    started = time.perf_counter()
    inputs = _inputs(args, setup)
    fingerprint = _fingerprint(inputs)
    journal = _journal(args, fingerprint, settings.shard)
    sweep = _Progress(args.quiet, "candidates", len(planned))
    try:
        record = search(
            setup.cluster, setup.pools, planned, slos, settings, sweep,
            jobs if changed else None, setup.options, journal, sweep.under_way, sweep.bounding,
        )  # fmt: skip
        sweep.end()
        record["inputs"] = inputs
        record["shards"] = settings.shard[1]
        record["fingerprint"] = fingerprint
        record["wall_s"] = round(time.perf_counter() - started, 3)
        record["rightsizing"] = rightsizing
        runs = _quota_runs(args)
        if settings.shard[1] == 1 and runs > 0:
            record["quota_search"] = _quota_search(setup, record, runs, journal, args.quiet)
        if journal is not None:
            journal.check()  # the last simulations' lines
    except KeyboardInterrupt:
        sweep.end()
        raise _interrupted(journal) from None
    finally:
        if journal is not None:
            journal.close()
    return _finish(args, record, slos)


class _Progress:
    """'simulated 4/24 candidates (7 s)' on one stderr line, drawn again as batches end and,
    with how far each simulation running is ('; under way: 35%, 80%'), as their workers
    report, at the pace a terminal or a log wants (``ProgressLine``): one simulation of a
    long or grown demand takes minutes, and the count alone stood still for all of them."""

    def __init__(self, quiet: bool, what: str, jobs: int | None = None) -> None:
        self.quiet = quiet
        self.what = what
        self.jobs = jobs
        """Jobs planned: what the bounding line counts."""
        self.started = time.perf_counter()
        self.done = (0, 0)
        self.running: dict[str, float] = {}
        self.line = ProgressLine()
        self.lock = threading.Lock()
        """Workers' reports arrive on a thread of their own."""

    def __call__(self, done: int, total: int) -> None:
        with self.lock:
            self.done = (done, total)
            self._draw(now=True)

    def bounding(self, done: int, total: int) -> None:
        """The fluid bound's pass over the planned demand, before the first simulation:
        'bounding the demand (600,000 jobs): 40% (9 s)' (it took seconds a hundred
        thousand jobs, and drew nothing)."""
        with self.lock:
            if self.quiet or not total:
                return
            seconds = time.perf_counter() - self.started
            jobs = self.jobs or 0
            text = f"bounding the demand ({jobs:,} jobs): {done / total:.0%} ({seconds:.0f} s)"
            self.line.draw(text, now=done in (0, total))

    def under_way(self, label: str, fraction: float) -> None:
        """A simulation's share done, from its worker (1.0: it ended)."""
        with self.lock:
            if fraction >= 1.0:
                self.running.pop(label, None)
            else:
                self.running[label] = fraction
            self._draw(now=False)

    def _draw(self, now: bool) -> None:
        if self.quiet:
            return
        done, total = self.done
        seconds = time.perf_counter() - self.started
        text = f"simulated {done}/{total} {self.what} ({seconds:.0f} s)"
        if self.running:
            text += "; under way: " + ", ".join(f"{f:.0%}" for f in self.running.values())
        self.line.draw(text, now=now)

    def end(self) -> None:
        """Finish the line (before a result, or Ctrl-C's message), and draw no more: a
        simulation looked ahead may still report until the search stops it."""
        with self.lock:
            self.quiet = True
            self.line.end()


def _journal(args: argparse.Namespace, fingerprint: str, shard: tuple[int, int]) -> Journal | None:
    """The journal in --journal DIR (else --out), opened: what an earlier run of the same
    inputs kept, said on stderr; another run's journal is started afresh, said always."""
    where = args.journal if args.journal is not None else args.out
    if where is None:
        return None
    make_out(where, "--journal" if args.journal is not None else "--out")
    journal = Journal(where / journal_name(shard), fingerprint)
    if journal.note:
        sys.stderr.write(f"apportion plan: {journal.note}\n")
    if journal.resumed and not args.quiet:
        sys.stderr.write(
            f"apportion plan: resuming from {journal.path} ({journal.resumed} simulation(s) "
            "kept); simulating the rest\n"
        )
    return journal


def _interrupted(journal: Journal | None) -> KeyboardInterrupt:
    """Ctrl-C's one line (``scheduler.cli`` prints it, exit 130): what was kept, how to go on."""
    if journal is None:
        return KeyboardInterrupt(
            "no simulation kept (with --out DIR or --journal DIR the same command resumes)"
        )
    kept = f"{len(journal)} simulation(s) kept in {journal.path}"
    return KeyboardInterrupt(f"{kept}; run the same command again to resume")


def _inputs(args: argparse.Namespace, setup: _Setup) -> dict[str, Any]:
    """What the run was asked: the record's ``inputs``, and (without the command line) its
    fingerprint, which shards, merges and the journal compare."""
    trace_path, jobs, planned = setup.trace_path, setup.jobs, setup.planned
    changed = args.growth != 1.0 or args.horizon_hours is not None
    return {
        "command": "apportion plan " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
        "demand": (
            f"demand in {Path(setup.source).name} ({len(jobs)} jobs"
            + (f", grown ×{args.growth:g}" if args.growth != 1 else "")
            + (f", extended to {args.horizon_hours:g} h" if args.horizon_hours else "")
            + (f": {len(planned)} jobs planned)" if changed else ")")
        ),
        "trace_sha256": _sha256(trace_path),
        "cluster": setup.cluster.source,
        "slos": [s.text for s in setup.slos],
        "levels": list(setup.settings.levels),
        "policy": args.policy,
        "seed": args.seed,
        "budget_per_hour": args.budget,
        "pools": [p.name for p in setup.pools],
        "shapes": not args.no_shapes,
        "replay": {
            "trace": str(trace_path) if args.trace[0] != "demo" else "demo",
            "hints": setup.hints,
            **{k: getattr(args, k) for k in _REPLAY},
        },
    }


def _hints(rightsizing: list[dict[str, Any]]) -> list[str]:
    """MIG profiles right-sizing says workloads would fit ('1g.10gb on A100-80GB')."""
    return sorted({r["fits"].partition(" on ")[0] for r in rightsizing if r.get("fits")})


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _quota_runs(args: argparse.Namespace) -> int:
    if args.quota_simulations is not None:
        return max(0, int(args.quota_simulations))
    return min(4, max(1, int(args.max_simulations) // 4))


def _quota_search(
    setup: _Setup,
    record: dict[str, Any],
    simulations: int,
    journal: Journal | None,
    quiet: bool,
) -> dict[str, Any] | None:
    """Quota splits for the recommended cluster (or the closest option), simulated."""
    settings = setup.settings
    record["inputs"].setdefault("budget_per_hour", settings.budget_per_hour)
    answer = verdict(record, setup.slos)
    key = answer.get("recommended") or answer.get("closest")
    if key is None:
        return None
    row = next(r for r in record["candidates"] if r["key"] == key)
    planned = setup.planned

    def task(label: str, candidate: Cluster) -> EvalTask:
        return EvalTask(
            label, candidate, planned, tuple(setup.slos), settings.policy, settings.seed,
            settings.options,
        )  # fmt: skip

    progress = _Progress(quiet, "quota splits")

    def run(tasks: list[EvalTask]) -> list[dict[str, Any]]:
        return evaluate_all(tasks, settings.workers, journal, progress.under_way)

    try:
        return search_quotas(
            setup.cluster, setup.pools, row, planned, setup.slos, task, run, simulations, progress
        )
    finally:
        progress.end()


def _rightsizing(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.metrics is None and args.metrics_url is None:
        if args.metrics_snapshot is not None:  # else ignored: a report without right-sizing
            raise CommandError(
                "--metrics-snapshot needs --metrics (a file) or --metrics-url (a server): "
                "it is the running workloads their DCGM rows are joined to"
            )
        return []
    if args.metrics is not None and args.metrics_url is not None:
        raise CommandError("give --metrics (a file) or --metrics-url (a server), not both")
    if args.metrics_snapshot is None:
        flag = "--metrics" if args.metrics is not None else "--metrics-url"
        raise CommandError(f"{flag} needs --metrics-snapshot (the running workloads)")
    try:
        source = args.metrics if args.metrics is not None else query_prometheus(args.metrics_url)
        return rightsizing_rows(source, args.metrics_snapshot)
    except RightsizingError as error:
        raise CommandError(str(error)) from None


def _fingerprint(inputs: dict[str, Any]) -> str:
    same = {k: v for k, v in inputs.items() if k != "command"}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:16]


def _json(record: dict[str, Any], compact: bool = False) -> str:
    """The record as ``dumps`` writes it: a value that is not finite is named, and nothing
    is written."""
    try:
        return dumps(record, compact)
    except NotFiniteError as error:
        raise CommandError(
            f"the plan's record {error}; nothing written (a bug: please report it with the "
            "command that gave it)"
        ) from None


def _finish(args: argparse.Namespace, record: dict[str, Any], slos: list[Slo]) -> int:
    if args.shard and args.shard != "0/1" and args.out is None:
        sys.stdout.write(_json(record, compact=True))
        return 0
    answer = verdict(record, slos)
    record["verdict"] = answer
    if args.json:
        sys.stdout.write(_json(record))
    if args.out is not None:
        try:
            write_report(args.out, record, answer, slos)
        except OSError as error:  # a full disk: the file, not a traceback
            where = error.filename or args.out
            raise CommandError(
                f"--out {args.out}: cannot write {where}: {error.strerror}"
            ) from None
        if not args.json:
            sys.stdout.write(f"report in {args.out / 'report.html'} (and report.md)\n")
    if not args.json:
        report = build_report(record, answer, slos, {}, record.get("rightsizing", []))
        sys.stdout.write(report.summary + "\n")
    return 0


def write_report(
    out: Path, record: dict[str, Any], answer: dict[str, Any], slos: list[Slo]
) -> None:
    by_key = {r["key"]: r for r in record["candidates"]}
    chosen = by_key.get(answer.get("recommended") or answer.get("closest") or "")
    current = next((r for r in record["candidates"] if r["current"]), None)
    pngs = figures(record, answer, chosen, current)
    report = build_report(record, answer, slos, pngs, record.get("rightsizing", []))
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    for name, data in pngs.items():
        write_whole(out / "plots" / f"{name}.png", data)
    write_whole(out / "report.html", report.html().encode())
    write_whole(out / "report.md", report.markdown().encode())
    write_whole(out / "plan.json", _json(record).encode())


def _rank(row: dict[str, Any]) -> int:
    """Which shard's copy of a candidate to keep: simulated > decided > undecided."""
    return 2 if row["evaluation"] is not None else int(row["status"] != "undecided")


_MERGE_FLAGS = ("out", "journal", "inputs", "partial", "quota_simulations", "max_simulations",
                "workers", "json", "quiet")  # fmt: skip
"""What 'plan merge' reads of its arguments: the rest are the sweep's, which the merge
takes from the shards' records (``_REPLAY``), so it would ignore them without a word."""


def _check_merge_flags(args: argparse.Namespace) -> None:
    """Refuse a sweep flag given to 'plan merge' (as a sweep refuses --inputs), and an
    --inputs that is no directory (it was read only when quota splits were)."""
    parser = argparse.ArgumentParser()
    plan_command(parser.add_subparsers())
    defaults = vars(parser.parse_args(["plan"]))
    given = [
        key for key, default in defaults.items()
        if key not in (*_MERGE_FLAGS, "trace", "run") and getattr(args, key) != default
    ]  # fmt: skip
    if given:
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        takes = ", ".join("--" + key.replace("_", "-") for key in _MERGE_FLAGS)
        raise CommandError(
            f"plan merge: {flags} {'is a sweep flag' if len(given) == 1 else 'are sweep flags'}"
            f"; the merge uses the inputs the shards recorded (it takes {takes})"
        )
    if args.inputs is not None and not args.inputs.is_dir():
        what = "is not a directory" if args.inputs.exists() else "no such directory"
        raise CommandError(
            f"--inputs {args.inputs}: {what} (the one holding the shards' trace and cluster files)"
        )


def _merge(args: argparse.Namespace, paths: list[Path]) -> int:
    _check_merge_flags(args)
    if not paths:
        raise CommandError("plan merge: give the shard outputs (files of JSON lines)")
    found = read_shards(paths)
    if not found:
        raise CommandError("plan merge: no shard records found in " + ", ".join(map(str, paths)))
    records = [r for _, r in found]
    prints = {r.get("fingerprint") for r in records}
    if len(prints) != 1:
        raise CommandError(
            "plan merge: the shards were run with different inputs "
            f"(fingerprints {', '.join(sorted(map(str, prints)))})"
        )
    # Shards of different splits cover the candidates unevenly: some twice, some never.
    if len({r["shards"] for r in records}) != 1:
        splits = ", ".join(f"{r['shard'][0]}/{r['shards']} ({where})" for where, r in found)
        raise CommandError(
            f"plan merge: the shards split the sweep different ways: {splits}; "
            "merge the shards of one run"
        )
    total = records[0]["shards"]
    seen = sorted(r["shard"][0] for r in records)
    missing = sorted(set(range(total)) - set(seen))
    if len(seen) != len(set(seen)):
        raise CommandError(f"plan merge: shard(s) given twice: {seen}")
    if missing and not args.partial:  # the answer read complete, and exit 0
        raise CommandError(
            f"plan merge: shard(s) {', '.join(map(str, missing))} of {total} missing: their "
            "candidates were not simulated, so the answer may not be the cheapest; merge every "
            "shard, or give --partial to merge these (the answer and the report say it is partial)"
        )
    if args.out is not None:  # after the shards are read, as for a sweep's inputs
        make_out(args.out)
    merged = dict(records[0])
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        for row in r["candidates"]:
            old = rows.get(row["key"])
            if old is None or _rank(row) > _rank(old):
                rows[row["key"]] = row
        if "today" in r:
            merged["today"] = r["today"]
    merged["candidates"] = sorted(rows.values(), key=lambda r: (r["cost_per_hour"], r["counts"]))
    merged["simulations"] = sum(r["simulations"] for r in records)
    merged["simulation_wall_s"] = [t for r in records for t in r.get("simulation_wall_s", [])]
    merged["shard"] = [0, 1]
    merged["missing_shards"] = missing
    merged["wall_s"] = max(r.get("wall_s", 0) for r in records)
    merged["ahead"] = {
        k: sum(r.get("ahead", {}).get(k, 0) for r in records) for k in ("simulated", "used")
    }
    if missing and not args.quiet:
        sys.stderr.write(
            f"plan merge: shard(s) {', '.join(map(str, missing))} of {total} missing; merging "
            "the rest (--partial)\n"
        )
    merged["monotonicity"] = {
        "spot_checked": [
            k for r in records for k in r.get("monotonicity", {}).get("spot_checked", [])
        ],
        "violations": violations(merged["candidates"]),
    }
    slos = _slos(merged["inputs"]["slos"])
    args.shard = None
    if "quota_search" not in merged and _quota_runs(args) > 0:
        # Shards simulate no quota splits (each knows only its share of the sweep): the
        # merge does, where it can read the same trace and cluster.
        journal = _journal(args, merged["fingerprint"], (0, 1))
        try:
            setup = _replay_setup(args, merged["inputs"])
            merged["quota_search"] = _quota_search(
                setup, merged, _quota_runs(args), journal, args.quiet
            )
            merged.pop("quota_search_skipped", None)
        except CommandError as error:
            merged["quota_search_skipped"] = str(error).splitlines()[0]
            if not args.quiet:
                sys.stderr.write(f"plan merge: no quota splits simulated: {error}\n")
        except KeyboardInterrupt:
            raise _interrupted(journal) from None
        finally:
            if journal is not None:
                journal.close()
    return _finish(args, merged, slos)


def _replay_setup(args: argparse.Namespace, inputs: dict[str, Any]) -> _Setup:
    """The sweep's inputs again, from what the record says it was run with."""
    replay = inputs.get("replay")
    if not replay:
        raise CommandError("the shards' records do not say how to replay them")
    parser = argparse.ArgumentParser()
    plan_command(parser.add_subparsers())
    ns = parser.parse_args(["plan"])
    for key in _REPLAY:
        setattr(ns, key, replay[key])
    ns.trace = [replay["trace"]]
    if args.inputs is not None:
        if ns.trace[0] != "demo":
            ns.trace = [str(args.inputs / Path(ns.trace[0]).name)]
        if ns.cluster != "default" and not ns.cluster.startswith("uniform:"):
            ns.cluster = str(args.inputs / Path(ns.cluster).name)
    ns.slo = list(inputs["slos"])
    ns.levels = ",".join(str(v) for v in inputs["levels"])
    ns.budget = inputs.get("budget_per_hour")
    ns.no_shapes = not inputs.get("shapes", True)
    ns.workers = args.workers
    setup = _setup(ns, list(replay.get("hints", [])))
    if _sha256(setup.trace_path) != inputs.get("trace_sha256"):
        raise CommandError(f"{setup.trace_path} is not the trace the shards planned for")
    if [p.name for p in setup.pools] != inputs.get("pools"):
        raise CommandError("the cluster's node pools differ from the shards'")
    return setup
