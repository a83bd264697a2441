"""``apportion simulate``: replay a trace (or run the fill experiment) and compare policies.

Registered through the ``apportion.commands`` entry point, so the core never imports sim.
Progress goes to stderr, the comparison table to stdout, and with ``--out DIR`` the full
``results.json`` and the plots to DIR (``--json`` prints the JSON to stdout instead of
the table). Exit codes: 0 success, 2 bad input (named file, line and column).
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from scheduler.cli import CommandError, stop_on_sigterm
from scheduler.commands import BUDGET_WHY, MAX_BUDGET_MS, SAME_SEED
from scheduler.textfile import given_path, read_text
from sim.cluster import ClusterError, load_cluster
from sim.engine import EngineSettings
from sim.experiments import (
    NotFiniteError,
    Outcome,
    ReplaySettings,
    dumps,
    fill_experiment,
    replay_experiment,
)
from sim.fill import FILL_POLICIES
from sim.gavel import on_cluster as gavel_on_cluster
from sim.jsontext import MAX_INT_DIGITS
from sim.outfiles import make_out, out_dir, write_whole
from sim.policies import POLICY_NAMES, PolicyOptions
from sim.pool import MAX_WORKERS, WORKERS_WHY, default_workers
from sim.progress import ProgressLine
from sim.trace import FORMATS, TraceError, load_trace

__all__ = [
    "DEMO_TRACE",
    "float_option",
    "int_option",
    "simulate_command",
    "values_may_start_with_minus",
]

DEMO_TRACE = Path(__file__).parent / "traces" / "demo" / "demo-jobs.csv"

Subparsers = Any


def simulate_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "simulate",
        help="replay a GPU trace through the decision core and compare policies",
        description=(
            "Replay a trace (openb, PAI 2020, Philly, Helios, Gavel, or Apportion's own "
            "CSV/JSONL; 'demo' for the bundled sample) on a cluster through the same "
            "decision core production runs, or run the FGD paper's fill experiment."
        ),
    )
    parser.add_argument("trace", help="trace file or PAI directory, or 'demo'")
    parser.add_argument(
        "--cluster",
        default="default",
        help="'default' (embedded ~500-GPU cluster; the default), a snapshot YAML/JSON, an "
        "openb node list or PAI machine spec CSV, or uniform:NODESxGPUSxMODEL[:shared]",
    )
    parser.add_argument("--policy", default="apportion", help="policy to run (default apportion)")
    parser.add_argument("--compare", default="", help="more policies, comma-separated")
    parser.add_argument(
        "--experiment", choices=("replay", "fill"), default="replay", help="(default replay)"
    )
    parser.add_argument("--seeds", default="1", help=f"seeds: {SEEDS_HELP} (default 1: seed 0)")
    parser.add_argument("--out", type=out_dir, help="write results.json and plots here")
    parser.add_argument("--json", action="store_true", help="print results.json to stdout")
    parser.add_argument(
        "--plot-format", choices=("png", "svg"), default="png", help="(default png)"
    )
    parser.add_argument("--format", choices=FORMATS, help="trace format (default: detect)")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip and count bad rows")
    parser.add_argument("--throughputs", type=given_path(), help="Gavel throughput table (JSON)")
    parser.add_argument(
        "--vc-quotas",
        type=given_path(),
        help="Helios cluster_gpu_number.csv: per-VC GPUs as quotas",
    )
    parser.add_argument("--vc-date", help="day of the VC table to use (default: the first)")
    parser.add_argument("--max-jobs", type=int_option(1), help="replay only the first N jobs")
    parser.add_argument(
        "--interval",
        type=int_option(0),
        default=0,
        help="call the policy every N simulated s (default 0: at every event)",
    )
    parser.add_argument(
        "--checkpoint",
        type=int_option(0),
        default=0,
        help="checkpoint interval s (default 0: none, a preempted job restarts)",
    )
    parser.add_argument(
        "--tick",
        type=int_option(0),
        default=30,
        help="apportion: also called every N simulated s while work waits, without "
        "--interval (default 30)",
    )
    parser.add_argument(
        "--budget-ms",
        type=float_option(positive=True, most=MAX_BUDGET_MS, why=BUDGET_WHY),
        default=2000.0,
        help="apportion: ILP budget per decision, ms (default 2000, at most an hour)",
    )
    parser.add_argument(
        "--mtbf-hours",
        type=float_option(positive=False),
        default=0.0,
        help="mean time between random node failures, hours (default 0: none)",
    )
    parser.add_argument(
        "--mttr",
        type=int_option(1),
        default=3600,
        help="repair time of a failure, s (default 3600)",
    )
    parser.add_argument("--horizon", type=int_option(1), help="stop at this simulated time, s")
    parser.add_argument(
        "--workers",
        type=int_option(0, MAX_WORKERS, WORKERS_WHY),
        default=0,
        help="runs (policy × seed) side by side in processes (default 0: one per core, at most 8)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    values_may_start_with_minus(parser)
    parser.set_defaults(run=_run)


def values_may_start_with_minus(parser: argparse.ArgumentParser) -> None:
    """Read a list like '-1,2' after a flag as its value, as users type it. argparse takes
    only a lone number ('-1', '-0.5') for a value and anything else that starts with '-' for
    a flag, so '--seeds -1,2' and '--levels -1,1' failed with 'expected one argument'.
    Python 3.11 has no public switch for it; this parser's flags all start with a letter."""
    parser._negative_number_matcher = re.compile(r"^-\.?\d")


def int_option(least: int, most: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least`` (and at most ``most``, said with
    ``why``). argparse turns the error into usage and exit 2; a negative interval or tick
    would silently change what the engine does, a negative --max-jobs would drop jobs from
    the end."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {least} or more")
        _at_most(text, value, most, why)
        return value

    return parse


def float_option(
    positive: bool, most: float | None = None, why: str = ""
) -> Callable[[str], float]:
    """An argparse type: a finite number, positive or (``positive=False``) at least 0, and
    at most ``most`` (said with ``why``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "a positive number" if positive else "0 or a positive number"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bound}")
        _at_most(text, value, most, why)
        return value

    return parse


def _at_most(text: str, value: float, most: float | None, why: str) -> None:
    """A size past any real use (it would run for ever): the limit, and why it is there."""
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {most:,.10g} ({why})")


MAX_SEEDS = 1000
"""Runs per policy: far above what a mean needs (the fill's 10), below a typo's hours."""


_SEEDS = re.compile(r"([0-9]+)(?:-([0-9]+))?")
"""A list item: a seed, or an inclusive range of them (``100-109``)."""
SEEDS_HELP = "a count N (seeds 0 to N-1), or seeds and ranges like '0,3' or '100-109'"


def _seeds(text: str) -> list[int]:
    """A bare integer is a count; anything else a list (``7-7`` for seed 7 alone). Seeds are
    0 or more: Python's random takes -1 and 1 as the same seed, two runs averaged as two."""
    items = [item.strip() for item in text.split(",")]
    matches = [_SEEDS.fullmatch(item) for item in items]
    if "" in items:
        raise CommandError(f"--seeds: {text!r} has an empty item ({SEEDS_HELP})")
    negative = next((i for i in items if re.fullmatch(r"-[0-9]+(-[0-9]+)?", i)), None)
    if negative is not None:
        raise CommandError(f"--seeds: {negative} is negative; {SAME_SEED}")
    if not all(matches):
        raise CommandError(f"--seeds: {text!r} is not a list of integers or a count")
    seeds: list[int] = []
    for match in filter(None, matches):
        if max(len(match[1]), len(match[2] or "")) > MAX_INT_DIGITS:  # int() refuses it
            raise CommandError(f"--seeds: a number of more than {MAX_INT_DIGITS:,} digits")
        first, last = int(match[1]), int(match[2] or match[1])
        if len(items) == 1 and match[2] is None:  # a count
            first, last = 0, first - 1
            if last < 0:
                raise CommandError(
                    f"--seeds: {text!r} is a count of no seed (seed 0 alone: --seeds 1; "
                    f"{SEEDS_HELP})"
                )
        if last < first:
            raise CommandError(f"--seeds: {match[0]} is an empty range (from {first} to {last})")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            total = len(seeds) + last - first + 1
            raise CommandError(f"--seeds: {total:,} seeds; at most {MAX_SEEDS:,} (a run each)")
        seeds.extend(range(first, last + 1))
    repeated = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if repeated:
        # The same seed twice is the same run twice: a typo, and a mean over copies.
        raise CommandError(f"--seeds: {', '.join(map(str, repeated))} given more than once")
    return seeds


class _Bar:
    """Progress on stderr: a line per finished run, and one line for the runs under way (a
    bar for one, percentages for several), at the pace a terminal or a log wants
    (``ProgressLine``)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.running: dict[str, float] = {}
        self.line = ProgressLine()

    def end_line(self) -> None:
        """End a drawn line, so what is printed next (a stop) has a line of its own, and
        draw nothing more (workers' last reports may still arrive)."""
        self.quiet = True
        self.line.end()

    def __call__(self, label: str, fraction: float) -> None:
        if self.quiet:
            return
        if fraction >= 1.0:
            self.running.pop(label, None)
            self.line.draw(f"{label:24.24s} [{'#' * 30}] 100%", now=True)
            self.line.end()
        else:
            self.running[label] = fraction
        if len(self.running) == 1:
            ((label, fraction),) = self.running.items()
            filled = int(30 * fraction)
            self.line.draw(f"{label:24.24s} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}")
        elif self.running:
            self.line.draw("  ".join(f"{k} {f:4.0%}" for k, f in sorted(self.running.items())))


def _say_counts(title: str, counts: dict[str, int]) -> None:
    """On stderr: ``title`` with the total, then each reason's count (none if all are 0)."""
    counts = {reason: n for reason, n in counts.items() if n}
    if counts:
        sys.stderr.write(title.format(sum(counts.values())) + ":\n")
        for reason, count in counts.items():
            sys.stderr.write(f"  {count:8d}  {reason}\n")


def _run(args: argparse.Namespace) -> int:
    stop_on_sigterm()
    policies = list(dict.fromkeys([args.policy, *[p for p in args.compare.split(",") if p]]))
    known = FILL_POLICIES if args.experiment == "fill" else POLICY_NAMES
    for name in policies:
        if name not in known:
            raise CommandError(
                f"unknown {args.experiment} policy {name!r}; known: {', '.join(known)}"
            )
    seeds = _seeds(args.seeds)
    if args.vc_date is not None and args.vc_quotas is None:  # else ignored without a word
        raise CommandError("--vc-date: needs --vc-quotas (the day of its table)")
    if not args.trace.strip():  # Path('') is '.', a directory read as a PAI trace
        raise CommandError(f"trace {args.trace!r} is an empty path; give a file or 'demo'")
    trace_path = DEMO_TRACE if args.trace == "demo" else Path(args.trace)
    try:
        cluster = load_cluster(args.cluster)
        trace = load_trace(trace_path, args.format, args.skip_bad_rows, args.throughputs)
    except (ClusterError, TraceError) as error:
        raise CommandError(str(error)) from None
    if args.throughputs is not None and trace.format != "gavel":  # else ignored
        ours = trace.format in ("csv", "jsonl")
        raise CommandError(
            f"--throughputs: only a Gavel trace reads a throughput table; {args.trace} is a "
            f"{trace.format} trace" + (" (give a throughput column in it instead)" if ours else "")
        )
    if args.trace == "demo":  # name the bundled file the same way on every machine
        trace = replace(trace, source="demo (sim/traces/demo/demo-jobs.csv)")
    if trace.format == "gavel":
        trace, cut = gavel_on_cluster(trace, cluster.catalog)
        if not trace.jobs:
            raise CommandError(
                f"{trace.source}: no job to replay: the throughput table measured none on "
                f"a GPU type of cluster {args.cluster} ({', '.join(cut)} are not in it)"
            )
        if cut and not args.quiet:
            sys.stderr.write(
                f"GPU types of the throughput table not in the cluster, no job's choice here: "
                f"{', '.join(cut)}\n"
            )
    if args.max_jobs is not None:
        trace = replace(trace, jobs=trace.jobs[: args.max_jobs])
    if args.vc_quotas is not None:
        cluster = _with_vc_quotas(cluster, args)
    if args.out is not None:  # after the inputs, so a mistyped one leaves no directory
        make_out(args.out)
    if not args.quiet:
        _say_counts("skipped {} bad row(s)", trace.bad_rows)
        # What the format says Apportion does not schedule (CPU-only jobs, jobs that never
        # ran): said here too, not only in results.json's left_out. The fill places them
        # where the format gives them (openb's pod list is the fill's whole stream).
        if args.experiment == "fill" and trace.fill_only:
            _say_counts("placing {} pod(s) a replay leaves out", trace.skipped)
        else:
            _say_counts("left out {} job(s) of the trace", trace.skipped)
        if trace.still_running:
            sys.stderr.write(
                f"kept {trace.still_running} job(s) still running when the trace was taken, "
                "replayed until the latest time it records\n"
            )
    bar = _Bar(args.quiet)
    workers = args.workers or default_workers()
    try:
        if args.experiment == "fill":
            outcome = fill_experiment(cluster, trace, policies, seeds, bar, workers)
        else:
            settings = ReplaySettings(
                engine=EngineSettings(
                    interval=args.interval, checkpoint_s=args.checkpoint, horizon=args.horizon
                ),
                policy=PolicyOptions(tick_s=args.tick, budget_ms=args.budget_ms),
                mtbf_hours=args.mtbf_hours,
                mttr_s=args.mttr,
            )
            outcome = replay_experiment(cluster, trace, policies, seeds, settings, bar, workers)
    except (ClusterError, ValueError) as error:
        raise CommandError(str(error)) from None
    except KeyboardInterrupt:
        bar.end_line()
        raise
    try:
        text = dumps(outcome.result)
    except NotFiniteError as error:
        raise CommandError(
            f"the results {error}; nothing written (a bug: please report it with the "
            "command that gave it)"
        ) from None
    if args.out is not None:
        _write_out(args.out, outcome.result, text, args.plot_format)
    if args.json:
        sys.stdout.write(text)
    else:
        sys.stdout.write(table(outcome))
        if args.out is not None:
            sys.stdout.write(f"\nresults and plots in {args.out}\n")
    return 0


def _write_out(out: Path, result: dict[str, Any], text: str, plot_format: str) -> None:
    """The plots, then results.json whole (a temporary file renamed): a run stopped or
    failing while writing leaves no results.json, or the previous one, never half of one."""
    from sim.plots import plot_results

    try:
        plot_results(result, out, plot_format)
        write_whole(out / "results.json", text.encode())
    except OSError as error:
        where = error.filename2 or error.filename or out  # a rename names the target second
        raise CommandError(f"--out {out}: cannot write {where}: {error.strerror}") from None


def _with_vc_quotas(cluster: Any, args: argparse.Namespace) -> Any:
    from sim.cluster import Cluster
    from sim.helios import helios_queues

    flavors = [f for f in cluster.capacity() if not f.startswith("mig-")]
    if len(flavors) != 1:
        raise CommandError(
            f"--vc-quotas needs a cluster with one GPU model (found {', '.join(flavors)})"
        )
    try:
        text = read_text(args.vc_quotas)
        queues = helios_queues(text, str(args.vc_quotas), flavors[0], args.vc_date)
    except OSError as error:
        raise CommandError(f"cannot read {args.vc_quotas}: {error.strerror}") from None
    except ValueError as error:
        raise CommandError(str(error)) from None
    return Cluster(cluster.snapshot.model_copy(update={"queues": queues}), cluster.source)


REPLAY_LEGEND = (
    "done = jobs finished; wait = jobs still waiting at the end; run = still running at the "
    "end; later = arriving after --horizon (done + wait + run + later = the trace's jobs); "
    "JCT (end − submit) and delay (first start − submit) in seconds, nearest-rank percentiles "
    "over the finished jobs (— when none finished)",
    "util = mean allocated share of healthy GPUs, work that evictions and node failures later "
    "threw away included; good = goodput, the same for the work kept alone: compare policies "
    "by good; Jain over allocation/fair share (1 = fair); dev = Σ|allocation − fair share| / "
    "capacity; frag = share of free GPU capacity the trace's typical job cannot use",
    "preempt = evictions by the policy; lostGPUh = GPU-hours of work they threw away (since "
    "the last checkpoint); idleGPUh = reserved-but-idle GPU-hours while work waited (from "
    "our CSV/JSONL's gpu_util: 0 on public traces, whose utilization no loader reads); "
    "wall s = the run's wall-clock time",
)
"""What every column of the replay table means: a newcomer's `make demo` prints it."""

FILL_LEGEND = (
    "unalloc@N% = unallocated share of GPU capacity once N % of it has arrived, in %: mean "
    "± population standard deviation over the seeds (0 with one seed)"
)


def _outages(runs: list[dict[str, Any]]) -> list[str]:
    """A line per run that lost nodes (``--mtbf-hours``): its failures, the jobs they
    killed and the work thrown away, which lostGPUh leaves out (it is the policy's)."""
    lines = []
    for run in runs:
        s = run["summary"]
        if run["outages"] or s["outage_kills"]:
            lines.append(
                f"outages {run['policy']}/{run['seed']}: {run['outages']} node failure(s) "
                f"killed {s['outage_kills']} job(s), "
                f"{s['gpu_hours']['lost_to_outages']:.1f} GPU-hours of work lost"
            )
    return lines


def _seconds(stats: dict[str, float], percentile: str) -> str:
    """A percentile's cell: '—' when no job finished (results.json: count 0), not 0, which
    read as jobs that never waited."""
    value = stats.get(percentile)
    return f"{'—':>9s}" if value is None else f"{value:9.0f}"


def table(outcome: Outcome) -> str:
    """The comparison for people: one row per policy and seed."""
    result = outcome.result
    lines = [
        f"{result['experiment']}: {result['trace']['source']} ({result['trace']['format']}, "
        f"{result['trace']['jobs']} jobs) on {result['cluster']['source']} "
        f"({result['cluster']['gpus']} GPUs)"
    ]
    if result["cluster"]["synthesized_queues"]:
        lines.append(
            "queues synthesized (equal nominal share, one cohort): "
            + ", ".join(result["cluster"]["synthesized_queues"][:12])
            + (" …" if len(result["cluster"]["synthesized_queues"]) > 12 else "")
        )
    never = result.get("never_fit", {})
    if never.get("jobs"):
        lines.append(
            f"{never['jobs']} job(s) can never run on this cluster, even empty, and stay "
            f"waiting (e.g. {'; '.join(never['examples'][:3])})"
        )
    stuck = result.get("never_admitted", {})
    if stuck.get("jobs"):
        left = [
            f"{r['policy']}/{r['seed']} {r['never_admitted_waiting']}"
            for r in result["runs"]
            if r["never_admitted_waiting"]
        ]
        lines.append(
            f"{stuck['jobs']} job(s) their queues' quotas can never admit, even on an empty "
            f"cluster (e.g. {stuck['examples'][0]}); left waiting by "
            f"{', '.join(left) or 'no policy'}"
        )
    if result["experiment"] == "fill":
        lines.append(f"{'policy':16s} {'unalloc@100%':>14s} {'unalloc@130%':>14s}  tie rule")
        for name, s in result["summary"].items():
            a, b = s["unallocated_pct_at_100"], s["unallocated_pct_at_130"]
            lines.append(
                f"{name:16s} {a['mean']:7.2f} ±{a['pstdev']:5.2f} {b['mean']:7.2f} "
                f"±{b['pstdev']:5.2f}  {s['tie_rule']}"
            )
        lines.append(FILL_LEGEND)
        return "\n".join(lines) + "\n"
    head = (
        f"{'policy':16s} {'seed':>4s} {'done':>6s} {'wait':>5s} {'run':>5s} {'later':>5s} "
        f"{'JCT p50':>9s} {'p95':>9s} {'p99':>9s} {'delay p50':>9s} {'p95':>9s} {'util':>5s} "
        f"{'good':>5s} {'Jain':>5s} {'dev':>5s} "
        f"{'frag':>5s} {'preempt':>7s} {'lostGPUh':>8s} {'idleGPUh':>8s} {'wall s':>7s}"
    )
    lines.append(head)
    for run in result["runs"]:
        s = run["summary"]
        jct = s["jct_s"]["all"]
        delay = s["queueing_delay_s"]["all"]
        label = f"{run['policy']}/{run['seed']}"
        times = " ".join(
            [_seconds(jct, p) for p in ("p50", "p95", "p99")]
            + [_seconds(delay, p) for p in ("p50", "p95")]
        )
        left = s["unfinished"]
        lines.append(
            f"{run['policy']:16s} {run['seed']:4d} {s['finished']:6d} "
            f"{left['waiting']:5d} {left['running']:5d} {left['not_arrived']:5d} {times} "
            f"{s['utilization_mean']:5.2f} {s['goodput_mean']:5.2f} "
            f"{s['fairness']['jain_mean']:5.2f} "
            f"{s['fairness']['share_deviation_mean']:5.2f} {s['fragmentation_mean']:5.2f} "
            f"{s['preemptions']:7d} {s['gpu_hours']['lost_to_preemption']:8.1f} "
            f"{s['gpu_hours']['idle_reserved_while_waiting']:8.1f} "
            f"{outcome.wall_s.get(label, 0.0):7.1f}"
        )
    lines.extend(_outages(result["runs"]))
    lines.extend(REPLAY_LEGEND)
    return "\n".join(lines) + "\n"
