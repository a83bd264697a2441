"""Time what a Prometheus scrape and a cycle's Queue statuses cost the webhook's process.

    .venv/bin/python benchmarks/scrape_bench.py [--runs N] [--only b,c]

The webhook's answers and the controller share one interpreter: whatever ``/metrics``
computes holds the GIL, and every answer due meanwhile waits for it. Per instance ((b) and
(c) of ``decide_bench``: their nodes, queues, running workloads as admitted pods and
waiting ones as gated pods, in a ``LiveCluster``, the heap frozen as ``apportion serve``
freezes it), medians of ``--runs`` (default 7) of:

  scrape     ``/metrics``' body (``generate_latest`` of the registry ``webhook.metrics``
             builds): what one scrape computes, its snapshot of the live cluster included
  snapshot   ``LiveCluster.snapshot()`` alone: the part of a scrape that is not the figures'
  status     ``queue_statuses`` on that snapshot (once per controller cycle)
  compile    ``compile_snapshot`` on that snapshot: the whole decision-core state, the
             source both read their figures from before (the baseline)

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
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import instances  # the sibling module (benchmarks/ is not a package)
from decide_bench import SEED
from live_bench import Clock, managed, pods_of
from prometheus_client import generate_latest

from scheduler.compiled import compile_snapshot
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
    # In their queue's namespace (``live_bench``'s own is open to none of them): a
    # waiting pod a queue does not take is left out of the snapshot.
    cluster.replace_pods(
        [
            replace(pod, namespace=w.namespace)
            for w in managed(instance)
            for pod in pods_of(w, w.name)
        ]
    )
    return cluster


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
        "compile_ms": median_ms(lambda: compile_snapshot(snapshot, cluster.catalog), runs),
    }
    gc.unfreeze()
    pods = len(cluster.managed_pods())
    waiting = sum(w.placement is None for w in snapshot.workloads)
    print(
        f"   ({key}) {nodes:,} nodes, {pods:,} pods, {waiting:,} workloads waiting: "
        f"scrape {figures['scrape_ms']:7.1f} ms (snapshot {figures['snapshot_ms']:7.1f} ms)   "
        f"queue status {figures['status_ms']:7.1f} ms   "
        f"baseline compile_snapshot {figures['compile_ms']:7.1f} ms"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--only", default="b,c", help="instances to run (default b,c)")
    args = parser.parse_args(argv)
    print("scrape_bench: queue metrics and Queue statuses on a LiveCluster, medians")
    results = {key: run(key, args.runs) for key in args.only.split(",")}
    print(
        json.dumps(
            {
                f"{key}_{k}": round(v, 1)
                for key, figures in results.items()
                for k, v in figures.items()
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
