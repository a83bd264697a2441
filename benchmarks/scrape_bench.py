"""Time what a Prometheus scrape and a cycle's Queue statuses cost the webhook's process.

    .venv/bin/python benchmarks/scrape_bench.py [--runs N] [--only b,c]

The webhook's answers and the controller share one interpreter: whatever ``/metrics``
computes holds the GIL, and every answer due meanwhile waits for it. Per instance ((b) and
(c) of ``decide_bench``: their nodes, queues, running workloads as admitted pods and
waiting ones as gated pods, in a ``LiveCluster``, the heap frozen as ``apportion serve``
freezes it; without their time-sliced fractions, which the webhook does not hand out, as
in ``live_bench``), medians of ``--runs`` (default 7) of:

  scrape     ``/metrics``' body (``generate_latest`` of the registry ``webhook.metrics``
             builds): what one scrape computes, its snapshot of the live cluster included
  snapshot   ``LiveCluster.snapshot()`` alone: the part of a scrape that is not the figures'
             (each after a first, untimed, whose workloads the pod groups keep: what every
             build but the first after a relist finds, ``observed.workload_of``)
  status     ``queue_statuses`` on that snapshot, every Queue object's status new
             (once per controller cycle; no decision, so no verdicts to count)
  book       ``quota_book`` and ``pending_options`` on that snapshot: the source both
             read their figures from (the book alone for the statuses)
  compile    ``compile_snapshot`` on that snapshot: the whole decision-core state, the
             source both read the same figures from before (the baseline)

The last line is one JSON object with the medians in ms, per instance.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import instances  # the sibling module (benchmarks/ is not a package)
from decide_bench import SEED
from live_bench import Clock, managed, pods_of
from prometheus_client import generate_latest

from scheduler.catalog import Catalog
from scheduler.compiled import compile_snapshot, pending_options, quota_book
from scheduler.model import Snapshot
from webhook.cluster import LiveCluster
from webhook.metrics import Metrics
from webhook.queuestatus import queue_statuses

SIZES = {"b": (1250, 5000), "c": (4000, 20000)}
"""Nodes and waiting workloads per instance, as ``decide_bench`` builds them."""


def filled(instance: instances.Instance) -> LiveCluster:
    """The instance's nodes, queues and the pods of its workloads the webhook manages."""
    snapshot = instance.snapshot
    cluster = LiveCluster(clock=Clock())
    cluster.replace_nodes(snapshot.nodes)
    cluster.replace_queues(snapshot.queues)
    cluster.replace_pods([pod for w in managed(instance) for pod in pods_of(w, w.name)])
    return cluster


def figures_of(snapshot: Snapshot, catalog: Catalog) -> None:
    quota_book(snapshot, catalog)
    pending_options(snapshot, catalog)


def median_ms(call: Callable[[], object], runs: int) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        walls.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(walls)


def run(key: str, runs: int) -> dict[str, float]:
    nodes, pending = SIZES[key]
    instance = instances.synthetic_instance(key, nodes=nodes, pending=pending, seed=SEED)
    cluster = filled(instance)
    registry = Metrics(cluster).registry
    objects: dict[str, dict[str, Any]] = {
        q.name: {"metadata": {"name": q.name, "generation": 1}} for q in instance.snapshot.queues
    }
    snapshot = cluster.snapshot()
    gc.collect()
    gc.freeze()  # as ``apportion serve`` does once synced
    figures = {
        "scrape_ms": median_ms(lambda: generate_latest(registry), runs),
        "snapshot_ms": median_ms(cluster.snapshot, runs),
        "status_ms": median_ms(lambda: queue_statuses(cluster, objects, snapshot, None), runs),
        "book_ms": median_ms(lambda: figures_of(snapshot, cluster.catalog), runs),
        "compile_ms": median_ms(lambda: compile_snapshot(snapshot, cluster.catalog), runs),
    }
    gc.unfreeze()
    figures["pods"] = len(cluster.managed_pods())
    figures["waiting"] = sum(w.placement is None for w in snapshot.workloads)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--only", default="b,c", help="instances to run (default b,c)")
    args = parser.parse_args(argv)
    print("scrape_bench: queue metrics and Queue statuses on a LiveCluster, medians")
    results: dict[str, dict[str, float]] = {}
    for key in args.only.split(","):
        f = results[key] = run(key, args.runs)
        print(
            f"   ({key}) {SIZES[key][0]:,} nodes, {f['pods']:,.0f} pods, "
            f"{f['waiting']:,.0f} workloads waiting: scrape {f['scrape_ms']:7.1f} ms "
            f"(snapshot {f['snapshot_ms']:7.1f} ms)   queue status {f['status_ms']:7.1f} ms\n"
            f"       their figures from quota_book + pending_options {f['book_ms']:7.1f} ms, "
            f"from compile_snapshot (the baseline) {f['compile_ms']:7.1f} ms: "
            f"{f['compile_ms'] / f['book_ms']:.1f}× less"
        )
    summary = {f"{key}_{k}": round(v, 1) for key, f in results.items() for k, v in f.items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
