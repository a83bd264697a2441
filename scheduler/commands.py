"""``apportion decide`` and ``apportion catalog``: the core's commands for people and scripts.

Exit codes scripts can trust: 0 success, 2 bad input (with a message naming the field).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scheduler.allocator import decide
from scheduler.catalog import default_catalog
from scheduler.cli import CommandError
from scheduler.loading import SnapshotError, load_snapshot_text
from scheduler.model import Decision, PodPlacement, Snapshot, SolverStats, WorkloadDecision
from scheduler.textfile import given_path, read_text

__all__ = [
    "BUDGET_WHY",
    "MAX_BUDGET_MS",
    "SAME_SEED",
    "catalog_command",
    "crds_command",
    "decide_command",
    "seed",
]

Subparsers = Any  # argparse's _SubParsersAction is private

MAX_DEMO_WORKLOADS = 20_000
"""--workloads: as many pending as the largest instance ``benchmarks/decide_bench.py`` times
(20,000 on 32,000 GPUs); on the demo's 496 GPUs that decides in seconds. A hundred million
took minutes and gigabytes only to build, then ran for ever."""

MAX_BUDGET_MS = 3_600_000.0
"""--budget-ms (here and in ``simulate``): an hour. The controller decides within seconds
and the benchmark proves its bounds within two minutes; a budget of days is a typo, and
the ILP may use all of it."""
BUDGET_WHY = (
    "an hour: the controller decides within seconds, and the benchmark proves its bounds "
    "within two minutes"
)
"""Why, in the error past ``MAX_BUDGET_MS``."""


def decide_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "decide",
        help="decide admissions for a snapshot file (or the embedded demo cluster)",
        description=(
            "Run one global decision over a cluster snapshot (YAML or JSON) and print "
            "what each pending workload gets, with reasons."
        ),
    )
    parser.add_argument(
        "snapshot", nargs="?", type=given_path(), help="snapshot file (.yaml/.json)"
    )
    parser.add_argument(
        "--default-cluster",
        action="store_true",
        help="use the embedded ~500-GPU demo cluster with a realistic pending queue",
    )
    # None when not given: a snapshot file refuses them rather than ignore them.
    parser.add_argument(
        "--workloads", type=int, help="demo: pending workloads (default 120, at most 20,000)"
    )
    parser.add_argument(
        "--seed", type=seed, help="demo: seed of the pending queue (0 or more, default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the Decision as JSON")
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=1000.0,
        help="wall-clock budget (default 1000, at most an hour)",
    )
    parser.add_argument("--greedy", action="store_true", help="skip the ILP (greedy only)")
    parser.set_defaults(run=_run_decide)


def catalog_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "catalog",
        help="list GPU models and MIG profiles with their valid placements",
        description="The GPU catalog: models, memory, throughput, price, MIG placements.",
    )
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.set_defaults(run=_run_catalog)


def crds_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "crds",
        help="print the CustomResourceDefinitions (generated from the queue models)",
        description=(
            "Print Apportion's CRDs as one YAML stream (kubectl apply -f - takes it), or "
            "write one file per CRD into a directory, as committed in deploy/base/crds/."
        ),
    )
    parser.add_argument(
        "--output-dir",
        type=given_path("directory"),
        help="write <plural>.<group>.yaml files here instead",
    )
    parser.set_defaults(run=_run_crds)


def _run_crds(args: argparse.Namespace) -> int:
    from scheduler.crds import crd_documents

    documents = crd_documents()
    if args.output_dir is None:
        print("---\n".join(documents.values()), end="")
        return 0
    out: Path = args.output_dir
    if not out.is_dir():
        raise CommandError(
            f"--output-dir: {out} is not a directory (create it first, or leave "
            "--output-dir out to print the CRDs)"
        )
    for name, text in documents.items():
        try:
            (out / name).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot write {out / name}: {error.strerror}") from None
        print(f"wrote {out / name}")
    return 0


SAME_SEED = "seeds are 0 or more (Python's random takes -1 and 1 as the same seed)"


def seed(text: str) -> int:
    """An argparse type: a seed, 0 or more. ``random.Random(-1)`` draws as ``Random(1)``
    does, so a negative seed repeated another's run as if it were a new one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; {SAME_SEED}")
    return value


def _load(args: argparse.Namespace) -> Snapshot:
    if args.default_cluster == (args.snapshot is not None):
        raise CommandError("give a SNAPSHOT file or --default-cluster (exactly one)")
    if args.default_cluster:
        from scheduler.defaults import demo_snapshot

        count = 120 if args.workloads is None else args.workloads
        if count < 0:
            raise CommandError(f"--workloads: {count} is negative")
        if count > MAX_DEMO_WORKLOADS:
            raise CommandError(
                f"--workloads: {count:,} pending workloads; at most {MAX_DEMO_WORKLOADS:,} "
                "(the largest instance the decision benchmark times; on the demo's 496 GPUs "
                "that decides in seconds)"
            )
        return demo_snapshot(seed=args.seed or 0, count=count)
    for option, value in (("--workloads", args.workloads), ("--seed", args.seed)):
        if value is not None:
            raise CommandError(
                f"{option} shapes the demo cluster's pending queue (--default-cluster); "
                "a SNAPSHOT file brings its own workloads"
            )
    path: Path = args.snapshot
    try:
        text = read_text(path)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    try:
        return load_snapshot_text(text, source=str(path))
    except SnapshotError as error:
        raise CommandError(f"{path} is not a valid snapshot:\n{error}") from None


def _run_decide(args: argparse.Namespace) -> int:
    # ",.15g": -5 as -5 and 3,600,001 as itself (":g" read 3.6e+06, as if within the limit)
    if not (math.isfinite(args.budget_ms) and args.budget_ms > 0):
        raise CommandError(f"--budget-ms: {args.budget_ms:,.15g} must be a finite number above 0")
    if args.budget_ms > MAX_BUDGET_MS:
        raise CommandError(
            f"--budget-ms: {args.budget_ms:,.15g} ms; at most {MAX_BUDGET_MS:,.0f} ({BUDGET_WHY})"
        )
    snapshot = _load(args)
    decision = decide(snapshot, budget_ms=args.budget_ms, use_ilp=not args.greedy)
    if args.json:
        print(decision.model_dump_json(indent=2))
        over = _over_budget(decision.stats)
        if over is not None:  # stdout stays one JSON document
            print(f"apportion decide: {over}", file=sys.stderr)
    else:
        print(render_decision(snapshot, decision))
    return 0


def _over_budget(stats: SolverStats) -> str | None:
    """Said when a decision took longer than its budget: the ILP stops at its deadline, but
    a greedy cycle (every decision runs one first) cannot be cut short, so a large pending
    queue on a busy machine can outlast a small budget."""
    if stats.budget_ms is None or stats.wall_ms <= stats.budget_ms:
        return None
    return (
        f"over budget by {stats.wall_ms - stats.budget_ms:,.1f} ms: a greedy cycle, which "
        "every decision runs, cannot be cut short"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _where(placement: Sequence[PodPlacement]) -> str:
    if not placement:
        return ""
    first = placement[0]
    if first.mig_start is not None:
        spot = f"{first.node}/gpu{first.gpus[0]}@{first.mig_start}"
    elif first.milli is not None:
        spot = f"{first.node}/gpu{first.gpus[0]}:{first.milli}m"
    else:
        spot = f"{first.node}/gpu{','.join(map(str, first.gpus))}"
    more = len({p.node for p in placement}) - 1
    return spot + (f" +{more} node(s)" if more > 0 else "")


def _milliseconds(value: float) -> str:
    """A budget as given: whole milliseconds from 10 up, else three significant digits
    ('0.001', '2.5'). A budget under a millisecond is a real choice (greedy's answer, no
    time for the ILP or the improvement phase); ':.0f' showed it as '0 ms'."""
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def render_decision(snapshot: Snapshot, decision: Decision) -> str:
    """The decision as tables people read: summary per queue, then every workload."""
    queues = {q.name: q for q in snapshot.queues}
    counts: dict[str, list[int]] = {name: [0, 0, 0] for name in queues}
    for d in decision.workloads:
        counts.setdefault(d.queue, [0, 0, 0])[int(d.outcome)] += 1
    summary = _table(
        ["queue", "cohort", "weight", "admitted", "by preemption", "pending"],
        [
            [name, queues[name].cohort or "-", f"{queues[name].weight:g}", c[2], c[1], c[0]]
            for name, c in counts.items()
            if name in queues
        ],
    )
    order = sorted(decision.workloads, key=lambda d: (-int(d.outcome), d.queue, d.position or 0))
    parts = [summary, "", _workload_table(order) if order else _nothing_pending(snapshot)]
    if decision.evictions:
        parts += [
            "",
            _table(
                ["evict", "queue", "for", "reason"],
                [[e.workload, e.queue, e.beneficiary, e.message] for e in decision.evictions],
            ),
        ]
    if decision.repartitions:
        parts += ["", "MIG repartition proposals (not applied):"]
        parts += [f"  - {plan.message}" for plan in decision.repartitions]
    s = decision.stats
    gap = "n/a" if s.gap_pct is None else f"{s.gap_pct:.2f}%"
    parts += [
        "",
        f"answered by: {s.path} ({s.status}); objective {s.objective:.2f} "
        f"(greedy {s.greedy_objective:.2f}), gap {gap}, {s.wall_ms:.1f} ms of "
        f"{_milliseconds(s.budget_ms or 0)} ms budget; {s.workload_classes} workload classes, "
        f"{s.variables} variables",
    ]
    over = _over_budget(s)
    if over is not None:
        parts.append(over)
    return "\n".join(parts)


def _workload_table(order: Sequence[WorkloadDecision]) -> str:
    return _table(
        ["workload", "queue", "outcome", "#", "flavor", "where", "reason"],
        [
            [
                d.workload,
                d.queue,
                d.outcome.label,
                d.position or "",
                d.flavor or "",
                _where(d.placement),
                d.message,
            ]
            for d in order
        ],
    )


def _nothing_pending(snapshot: Snapshot) -> str:
    """Said instead of an empty table, which reads like a rendering fault."""
    running = sum(1 for w in snapshot.workloads if w.running)
    if running:
        return f"nothing pending: all {running} workload(s) in the snapshot are running"
    return "nothing pending: the snapshot has no workloads"


def _run_catalog(args: argparse.Namespace) -> int:
    catalog = default_catalog()
    if args.json:
        data = [
            {
                "name": m.name,
                "memory_mib": m.memory_mib,
                "relative_throughput": m.relative_throughput,
                "price_per_hour": m.price_per_hour,
                "products": list(m.products),
                "mig_inferred": m.mig_inferred,
                "mig_profiles": [
                    {
                        "name": p.name,
                        "resource": p.resource,
                        "compute_slices": p.compute_slices,
                        "memory_slices": p.memory_slices,
                        "usable_memory_mib": p.usable_memory_mib,
                        "max_count": p.max_count,
                        "placements": [{"start": x.start, "size": x.size} for x in p.placements],
                        "inferred": p.inferred,
                    }
                    for p in m.mig_profiles
                ],
            }
            for m in catalog.models
        ]
        json.dump(data, sys.stdout, indent=2)
        print()
        return 0
    print(
        _table(
            ["model", "memory", "speed (A100=1)", "$/h", "MIG", "GFD product"],
            [
                [
                    m.name,
                    f"{m.memory_mib // 1024} GiB",
                    f"{m.relative_throughput:.2f}",
                    f"{m.price_per_hour:.2f}",
                    ("inferred" if m.mig_inferred else "yes") if m.mig_capable else "-",
                    ", ".join(m.products),
                ]
                for m in catalog.models
            ],
        )
    )
    for m in catalog.models:
        if not m.mig_capable:
            continue
        print(
            f"\n{m.name} MIG profiles ({m.mig_compute_slices} compute / "
            f"{m.mig_memory_slices} memory slices; * = placements inferred, not observed)"
        )
        print(
            _table(
                [
                    "profile",
                    "resource",
                    "compute",
                    "memory",
                    "usable",
                    "max",
                    "placements {start}:size",
                ],
                [
                    [
                        p.name + ("*" if p.inferred else ""),
                        p.resource,
                        p.compute_slices,
                        p.memory_slices,
                        f"{p.usable_memory_mib / 1024:.2f} GiB",
                        p.max_count,
                        "{"
                        + ",".join(str(x.start) for x in p.placements)
                        + "}:"
                        + str(p.placements[0].size),
                    ]
                    for p in m.mig_profiles
                ],
            )
        )
    return 0
