"""Time the live cluster cache's own work (``webhook.cluster.LiveCluster``) as its pod count grows.

    .venv/bin/python benchmarks/live_bench.py [--pods N] [--ops N]

The webhook's answers and the controller's admissions go through one ``LiveCluster``, under
one lock: what it does per request must not grow with the pods it caches, or a cluster of
tens of thousands of pods turns every admission review into a wait for the lock. Each
operation is timed on (b)'s cluster of ``decide_bench`` (1,250 nodes, 10,000 GPUs, its
running workloads as admitted pods) twice, side by side: with the running pods and 500
waiting ones cached (the baseline), and with ``--pods`` pods in all (the rest waiting,
gated). Per operation:

  create   a pod created and admitted at once (``admit_now``), then its pod as the watch
           brings it (``put_pod``): the webhook's path during a burst of pod creations
  wait     the same for a pod that must wait (its queue has higher priorities waiting):
           left to the controller, then its gated pod as the watch brings it
  admit    the controller admitting a waiting workload (``reserve``), then its
           released pod as the watch brings it, then the webhook's next answer
  finish   a running one-pod workload's pod deleted (it ended), then the webhook's next
           answer
  host     a CPU-only pod landing on a GPU node (a data loader), the webhook's next
           answer, the pod leaving and the next answer again
  foreign  a GPU pod of a namespace Apportion does not manage bound on a node with a free
           GPU, the webhook's next answer, the pod deleted and the next answer again
  node     a GPU node relabelled (a GPU feature discovery pass), the webhook's next answer,
           its allocatable CPU changed and the next answer again
  cordon   a GPU node cordoned (its GPUs out of service), then uncordoned: each the next
           answer alone (the webhook's cost); the node watch's own time, building the
           allocator anew outside the lock, is printed apart (not a target)
  members  a gang's members, as validating a gang pod asks them
  during   a pod created while another thread takes the controller's snapshot over and
           over (its p99, not its median: what the lock makes reviews wait for), every
           waiting workload in it (their count printed)

Target: a median of at most 1 ms per operation at 20,000 pods (an in-process admission
answer takes ~0.06 ms); the ratio to the baseline, printed beside it, shows whether the cost
grows with the pods. Medians: the allocator's first build after a change walks every pod,
and what waiting pods do, or the controller's admissions, must not cause one.
The last line is one JSON object with the medians at ``--pods`` in ms and the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import instances  # the sibling module (benchmarks/ is not a package)
from decide_bench import SEED

from scheduler.incremental import IncrementalAllocator
from scheduler.model import Demand, Workload
from scheduler.reasons import Outcome
from webhook.cluster import LiveCluster
from webhook.hostpods import HostPod
from webhook.pods import ManagedPod

TARGET_MS = 1.0
"""Median per operation at ``--pods`` pods."""


class Clock:
    """A clock the benchmark moves (intents expire by it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def device_of(workload: Workload) -> Demand:
    """What its pods ask as the watch reads them: the webhook turns a memory need into the
    device it admitted (a MIG slice, or one whole GPU) at creation, else into the cheapest
    that holds it (here: one GPU of its first model)."""
    demand = workload.demand
    if demand.gpu_memory_mib is None:
        return demand
    flavor = workload.flavor
    if workload.placement and flavor and flavor.startswith("mig-"):
        return Demand(mig_profile=flavor.removeprefix("mig-"), models=demand.models)
    return Demand(gpus=1, models=(flavor,) if flavor else demand.models[:1])


def pods_of(workload: Workload, name: str) -> list[ManagedPod]:
    """The pods of ``workload`` as the watch reads them: admitted where placed, else gated;
    in its namespace, which its queue is open to (else a waiting one is left out of the
    snapshot)."""
    placement = workload.placement or ()
    return [
        ManagedPod(
            namespace=workload.namespace,
            name=f"{name}-{i}",
            workload=workload.name,
            queue=workload.queue,
            demand=device_of(workload),
            priority=workload.priority,
            created=workload.created,
            gang_size=workload.pods,
            gated=not placement,
            placement=placement[i] if placement else None,
            flavor=workload.flavor if placement else None,
        )
        for i in range(workload.pods)
    ]


def managed(instance: instances.Instance) -> list[Workload]:
    """(b)'s workloads the webhook would manage: not its time-sliced fractions, replicas
    that are not devices Apportion hands out (``webhook/devices.py``)."""
    return [w for w in instance.snapshot.workloads if w.demand.gpu_milli is None]


def cache(instance: instances.Instance, total: int, clock: Clock) -> LiveCluster:
    """(b)'s nodes and queues, its running workloads' pods, and waiting pods up to ``total``."""
    snapshot = instance.snapshot
    cluster = LiveCluster(clock=clock)
    cluster.replace_nodes(snapshot.nodes)
    cluster.replace_queues(snapshot.queues)
    pods: list[ManagedPod] = []
    for w in managed(instance):
        if w.placement is not None:
            pods += pods_of(w, w.name)
    waiting = [w for w in managed(instance) if w.placement is None]
    copy = 0
    while len(pods) < total:
        w = waiting[copy % len(waiting)]
        name = f"{w.namespace}/wait-{copy}"
        pods += pods_of(w.model_copy(update={"name": name}), name)[: total - len(pods)]
        copy += 1
    cluster.replace_pods(pods)
    return cluster


def arrivals(
    instance: instances.Instance, count: int, tag: str, priority: int = 1_000_000
) -> list[Workload]:
    """Single-pod workloads like (b)'s waiting ones, under new names, at ``priority`` (by
    default first in their queue; below every waiting one at -1)."""
    singles = [w for w in managed(instance) if w.placement is None and w.pods == 1]
    return [
        w.model_copy(update={"name": f"{w.namespace}/{tag}-{i}", "priority": priority})
        for i, w in enumerate(itertools.islice(itertools.cycle(singles), count))
    ]


def timed_each(items: Iterable[Workload], step: Callable[[Workload], None]) -> list[float]:
    walls = []
    for item in items:
        started = time.perf_counter()
        step(item)
        walls.append((time.perf_counter() - started) * 1000.0)
    return walls


def run(instance: instances.Instance, total: int, ops: int) -> dict[str, float]:
    clock = Clock()
    cluster = cache(instance, total, clock)
    cached = len(cluster.managed_pods())
    cluster.admit_now(arrivals(instance, 1, "warm")[0], reserve=False)  # the first build

    def create(w: Workload) -> None:
        decision = cluster.admit_now(w, reserve=True)
        admitted = decision.outcome is Outcome.ADMIT
        placed = w.model_copy(
            update={"placement": decision.placement, "flavor": decision.flavor} if admitted else {}
        )
        for pod in pods_of(placed, w.name.split("/")[1]):
            cluster.put_pod(pod)
        clock.now += 0.01

    def admit(w: Workload) -> None:
        decision = probe[w.name]
        placed = w.model_copy(
            update={"placement": decision.placement, "flavor": decision.flavor, "started": 1}
        )
        refusal = cluster.reserve(placed)
        assert refusal is None, refusal
        for pod in pods_of(placed, w.name.split("/")[1]):
            cluster.put_pod(replace(pod, gated=False))
        # The webhook's next answer, which must not pay for the admission (a dry run).
        cluster.admit_now(w.model_copy(update={"name": w.name + "-next"}), reserve=False)
        clock.now += 0.01

    created = timed_each(arrivals(instance, ops, "create"), create)
    waited = timed_each(arrivals(instance, ops, "wait", priority=-1), create)
    # Waiting pods the controller will admit, at placements an allocator of their own
    # gives them (untimed), as the controller's global decision would.
    waiting = arrivals(instance, ops, "admit")
    now = cluster.snapshot()
    planner = IncrementalAllocator(
        now.model_copy(update={"workloads": tuple(w for w in now.workloads if w.placement)})
    )
    probe = {}
    for w in waiting:
        decision = planner.decide(w)
        if decision.outcome is Outcome.ADMIT:
            probe[w.name] = decision
        for pod in pods_of(w, w.name.split("/")[1]):
            cluster.put_pod(pod)
    admitted = timed_each([w for w in waiting if w.name in probe], admit)
    ending = [w for w in managed(instance) if w.placement is not None and w.pods == 1][:ops]
    after = iter(arrivals(instance, len(ending), "after"))

    def finish(w: Workload) -> None:
        cluster.remove_pod(w.namespace, f"{w.name}-0")
        cluster.admit_now(next(after), reserve=False)

    finished = timed_each(ending, finish)
    gpu_nodes = itertools.cycle(n.name for n in instance.snapshot.nodes if n.gpus)
    answers = iter(arrivals(instance, 2 * ops, "host"))

    def host(w: Workload) -> None:
        loader = HostPod(w.namespace, w.name.split("/")[1], next(gpu_nodes), 2000, 8192)
        cluster.put_host_pod(loader)
        cluster.admit_now(next(answers), reserve=False)
        cluster.remove_pod(w.namespace, loader.name)
        cluster.admit_now(next(answers), reserve=False)

    hosted = timed_each(arrivals(instance, ops, "loader"), host)
    # Where the kube-scheduler would bind a one-GPU pod: a node with a whole GPU free.
    taken = {(p.node, g) for w in managed(instance) for p in w.placement or () for g in p.gpus}
    roomy = itertools.cycle(
        n.name
        for n in instance.snapshot.nodes
        if any(g.mig is None and not g.shared and (n.name, g.index) not in taken for g in n.gpus)
    )

    def foreign(w: Workload) -> None:
        name = w.name.split("/")[1]
        pod = ManagedPod(
            namespace="elsewhere", name=name, workload=f"foreign:elsewhere/{name}", queue="",
            demand=Demand(gpus=1), priority=0, created=0, gang_size=1, gated=False,
            node=next(roomy), foreign=True,
        )  # fmt: skip
        cluster.put_pod(pod)
        cluster.admit_now(next(answers), reserve=False)
        cluster.remove_pod("elsewhere", name)
        cluster.admit_now(next(answers), reserve=False)

    answers = iter(arrivals(instance, 2 * ops, "answer"))
    foreigners = timed_each(arrivals(instance, ops, "foreign"), foreign)

    def node(w: Workload) -> None:
        before = cluster.nodes[next(gpu_nodes)]
        stamp = {"nvidia.com/gfd.timestamp": w.name.split("/")[1]}
        relabelled = before.model_copy(update={"labels": {**before.labels, **stamp}})
        cluster.put_node(relabelled)
        cluster.admit_now(next(answers), reserve=False)
        cpu = None if before.cpu_milli is None else before.cpu_milli - 1000
        cluster.put_node(relabelled.model_copy(update={"cpu_milli": cpu}))
        cluster.admit_now(next(answers), reserve=False)

    answers = iter(arrivals(instance, 2 * ops, "relabel"))
    nodes = timed_each(arrivals(instance, ops, "node"), node)
    watch: list[float] = []
    cordons: list[float] = []
    answers = iter(arrivals(instance, 2 * ops, "cordoned"))
    for _ in range(ops):
        before = cluster.nodes[next(gpu_nodes)]
        out = tuple(g.model_copy(update={"healthy": False}) for g in before.gpus)
        for changed in (before.model_copy(update={"gpus": out}), before):
            started = time.perf_counter()
            cluster.put_node(changed)
            answering = time.perf_counter()
            cluster.admit_now(next(answers), reserve=False)
            watch.append((answering - started) * 1000.0)
            cordons.append((time.perf_counter() - answering) * 1000.0)
    gangs = [w for w in managed(instance) if w.pods > 1][:ops]

    def members_of(w: Workload) -> None:
        cluster.members(w.name)

    members = timed_each(gangs, members_of)
    # The controller snapshots the cache every cycle; admission reviews meanwhile.
    done = threading.Event()

    def controller() -> None:
        while not done.is_set():
            cluster.snapshot()

    snapshots = threading.Thread(target=controller)
    snapshots.start()
    try:
        during = timed_each(arrivals(instance, ops, "during"), create)
    finally:
        done.set()
        snapshots.join()
    during.sort()
    in_snapshot = sum(w.placement is None for w in cluster.snapshot().workloads)
    figures = {
        "pods": float(cached),
        "create_ms": statistics.median(created),
        "wait_ms": statistics.median(waited),
        "admit_ms": statistics.median(admitted),
        "finish_ms": statistics.median(finished),
        "host_ms": statistics.median(hosted),
        "foreign_ms": statistics.median(foreigners),
        "node_ms": statistics.median(nodes),
        "cordon_ms": statistics.median(cordons),
        "cordon_watch_ms": statistics.median(watch),
        "members_ms": statistics.median(members),
        "during_p99_ms": during[min(len(during) - 1, math.ceil(0.99 * len(during)) - 1)],
        "during_waiting": float(in_snapshot),
    }
    print(
        f"   {cached:>7,} pods   create {figures['create_ms']:8.3f} ms   "
        f"wait {figures['wait_ms']:8.3f} ms   "
        f"admit {figures['admit_ms']:8.3f} ms ({len(admitted)} admitted)   "
        f"finish {figures['finish_ms']:8.3f} ms   "
        f"host {figures['host_ms']:8.3f} ms   "
        f"foreign {figures['foreign_ms']:8.3f} ms   "
        f"node {figures['node_ms']:8.3f} ms   "
        f"cordon {figures['cordon_ms']:8.3f} ms "
        f"(the node watch {figures['cordon_watch_ms']:.1f} ms)   "
        f"members {figures['members_ms']:8.3f} ms   "
        f"create while the controller snapshots ({in_snapshot:,} workloads waiting in each): "
        f"p99 {figures['during_p99_ms']:8.3f} ms"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20_000, help="pods cached (default 20,000)")
    parser.add_argument("--ops", type=int, default=200, help="operations of each kind")
    args = parser.parse_args(argv)
    instance = instances.synthetic_instance("b", nodes=1250, pending=5000, seed=SEED)
    running = sum(w.pods for w in managed(instance) if w.placement is not None)
    print("live_bench: LiveCluster on (b)'s cluster, medians per operation")
    base = run(instance, running + 500, args.ops)
    large = run(instance, args.pods, args.ops)
    ratios: dict[str, float] = {}
    keys = ("create", "wait", "admit", "finish", "host", "foreign", "node", "cordon", "members")
    for key in (f"{k}_ms" for k in keys):
        ratio = ratios[key.removesuffix("_ms") + "_ratio"] = round(large[key] / base[key], 2)
        ok = "PASS" if large[key] <= TARGET_MS else "MISS"
        print(
            f"   {key.removesuffix('_ms'):<8} {large[key]:8.3f} ms at {large['pods']:,.0f} pods, "
            f"{ratio:5.2f}× the baseline's at {base['pods']:,.0f}   "
            f"target ≤ {TARGET_MS:g} ms: {ok}"
        )
    print(
        json.dumps(
            {
                **{
                    f"{k}_{int(large['pods'])}": round(v, 3)
                    for k, v in large.items()
                    if k != "pods"
                },
                **ratios,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
