"""Time one controller cycle's API calls against an API server that takes its time: one
cycle admitting many workloads, and one evicting many victims.

    .venv/bin/python benchmarks/controller_bench.py [--workloads 1000] [--gangs 50]
        [--victims 500] [--cases admit,evict] [--runs 2]

Against a real API server each call takes 5–20 ms; the controller's decision over 10,000–
32,000 GPUs takes 1–3 s at most, so a cycle making its calls one after another spent most
of its time waiting for answers. Here ``tests/kubefake`` serves, in a process of its own (an
API server is not in the controller's process, nor does its CPU share the controller's
interpreter), every pod call and Event answered ``--latency-ms`` (10) late, a fresh cluster
per run:

- ``admit``: the nodes and gated pods of ``--workloads`` one-pod workloads (1 GPU each) and
  ``--gangs`` gangs of 4 pods × 8 GPUs in one queue: every workload admitted (a pod patch
  each, a gang's placements then its gates, an Event per pod);
- ``evict``: ``--victims`` running one-pod workloads (1 GPU each, priority 0) filling their
  queue's quota, and as many waiting ones of priority 1000: every running one preempted
  (an eviction and a Preempted Event each), every waiting one nominated to the room its
  victim frees and its reason written (a patch each).

One ``Controller.reconcile_once`` is timed with ``api_concurrency`` 1 (the baseline: one
call after another) and with the default, alternating: medians of ``--runs``. Per run: the
cycle, the decision within it, when the case's last gate removal or eviction was answered,
the calls made and the most in flight at once as the server saw them, and CPU seconds.
The last line is one JSON object with the medians and the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# The API server stand-in is the test suite's; reuse, not copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kubefake import RECORDINGS, Fake
from kubernetes import client

from scheduler.model import PreemptionPolicy, Queue, Quota
from scheduler.reasons import Outcome
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.controller import OWN_CONNECTIONS, Controller
from webhook.kubeapi import KubeApi
from webhook.metrics import Metrics
from webhook.pods import ANNOTATION_PLACEMENT
from webhook.settings import ControllerSettings

NAMESPACE = "bench"
GANG_PODS = 4
GPUS_PER_NODE = 8
DEFAULT = ControllerSettings().api_concurrency
CASES = ("admit", "evict")
CALLS = rf"/api/v1/namespaces/{NAMESPACE}/.+"
"""Pod patches, evictions and Events: what the cycle's workers send."""


def _node(template: dict[str, Any], name: str) -> dict[str, Any]:
    node = copy.deepcopy(template)
    labels = {**node["metadata"]["labels"], "kubernetes.io/hostname": name}
    node["metadata"] = {"name": name, "labels": labels}
    return node


def _pod(
    template: dict[str, Any], name: str, gpus: int, gang: str | None, priority: int = 0
) -> dict[str, Any]:
    """A gated pod as Apportion's webhook leaves one that must wait."""
    pod = copy.deepcopy(template)
    workload = f"{NAMESPACE}/{gang or name}"
    annotations = {keys.ANNOTATION_WORKLOAD: workload, keys.ANNOTATION_DECISION: "pending"}
    labels = {keys.LABEL_QUEUE: "bench"}
    if gang is not None:
        annotations[keys.ANNOTATION_GANG_SIZE] = str(GANG_PODS)
        labels[keys.LABEL_GANG] = gang
    pod["metadata"] = {
        "name": name,
        "namespace": NAMESPACE,
        "labels": labels,
        "annotations": annotations,
    }
    for part in ("requests", "limits"):
        pod["spec"]["containers"][0]["resources"][part]["nvidia.com/gpu"] = str(gpus)
    pod["spec"]["priority"] = priority
    pod["status"] = {"phase": "Pending"}
    return pod


def _running(template: dict[str, Any], name: str, node: str, gpu: int) -> dict[str, Any]:
    """A one-GPU pod Apportion admitted to ``node``'s GPU ``gpu``, bound and running."""
    pod = _pod(template, name, 1, None)
    pod["metadata"]["annotations"].update(
        {keys.ANNOTATION_DECISION: "admitted", ANNOTATION_PLACEMENT: f"{node}:{gpu}"}
    )
    pod["spec"].pop("schedulingGates", None)
    pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": "Running"}
    return pod


def _cluster(case: str, sizes: dict[str, int]) -> Fake:
    """A fresh API server holding the case's nodes and pods."""
    recorded_nodes = json.loads((RECORDINGS / "nodelist.json").read_text())["items"]
    node = next(n for n in recorded_nodes if n["metadata"]["name"] == "gpu-node-a")
    recorded_pods = json.loads((RECORDINGS / "podlist-gpu-team-a.json").read_text())["items"]
    template = next(p for p in recorded_pods if p["metadata"]["name"] == "patched-gpu-1")
    fake = Fake()
    fake.put_namespace(NAMESPACE, {keys.NAMESPACE_ENABLED: "true"})
    if case == "admit":
        workloads, gangs = sizes["workloads"], sizes["gangs"]
        for i in range(-(-workloads // GPUS_PER_NODE) + gangs * GANG_PODS):
            fake.put_node(_node(node, f"node-{i:04}"))
        for i in range(workloads):
            fake.put_pod(_pod(template, f"solo-{i:04}", 1, None))
        for g in range(gangs):
            for i in range(GANG_PODS):
                fake.put_pod(_pod(template, f"gang-{g:03}-{i}", 8, f"gang-{g:03}"))
    else:
        victims = sizes["victims"]
        for i in range(-(-victims // GPUS_PER_NODE)):
            fake.put_node(_node(node, f"node-{i:04}"))
        for i in range(victims):
            where = f"node-{i // GPUS_PER_NODE:04}"
            fake.put_pod(_running(template, f"low-{i:04}", where, i % GPUS_PER_NODE))
            fake.put_pod(_pod(template, f"high-{i:04}", 1, None, priority=1000))
    return fake


def _queue(case: str, sizes: dict[str, int]) -> Queue:
    if case == "admit":
        nominal = sizes["workloads"] + sizes["gangs"] * GANG_PODS * 8
        return Queue(
            name="bench", namespaces=(NAMESPACE,), quota={"H100-80GB": Quota(nominal=nominal)}
        )
    return Queue(  # full: the waiting ones preempt the running ones of lower priority
        name="bench",
        namespaces=(NAMESPACE,),
        quota={"H100-80GB": Quota(nominal=sizes["victims"])},
        preemption=PreemptionPolicy(within_queue="LowerPriority"),
    )


def _serve(
    connection: Connection,
    case: str,
    sizes: dict[str, int],
    latency_s: float,
    prepare: Callable[[Fake], None] | None = None,
) -> None:
    """The API server's process: a fresh cluster (``prepare`` adds to it), its port sent,
    then, once the cycle has ended, what the server saw of it."""
    fake = _cluster(case, sizes)
    if prepare is not None:
        prepare(fake)
    latency = fake.add_latency(CALLS, latency_s)
    fake.start()
    connection.send(fake.port)
    connection.recv()  # the cycle starts
    cpu = time.process_time()
    connection.recv()  # and has ended
    cpu = time.process_time() - cpu
    if case == "admit":
        patches = fake.requests_to(CALLS, "PATCH")
        done = [r.at for r in patches if any("schedulingGates" in op["path"] for op in r.body)]
    else:
        done = [r.at for r in fake.requests_to(CALLS + "/eviction", "POST")]
    nominated = [
        r for r in fake.requests_to(CALLS, "PATCH") if "nominated-until" in json.dumps(r.body)
    ]
    connection.send(
        {
            "calls": len(fake.requests_to(CALLS)),
            "done": len(done),
            "last_done_at": max(done, default=0.0) + latency_s,
            "nominated": len(nominated),
            "peak": latency.peak,
            "cpu_s": cpu,
        }
    )
    fake.stop()


@dataclass
class Synced:
    """A controller synced against kubefake, which serves from a process of its own."""

    controller: Controller
    cluster: LiveCluster
    metrics: Metrics
    server: multiprocessing.process.BaseProcess
    ours: Connection
    """The server's end: send "start" before the cycle; ``finish`` reads what it saw."""
    informers: list[threading.Thread]

    def finish(self) -> dict[str, Any]:
        """Stop the controller and the server; what the server saw of the cycle."""
        self.controller.stop(timeout_s=0)  # its informers end with the server's watches
        self.ours.send("done")
        seen: dict[str, Any] = self.ours.recv()
        self.server.join()
        for thread in self.informers:
            thread.join()
        return seen


def synced(
    case: str,
    sizes: dict[str, int],
    latency_s: float,
    concurrency: int,
    queues: list[Queue],
    prepare: Callable[[Fake], None] | None = None,
) -> Synced:
    """kubefake's cluster for ``case`` (``_serve``) and a controller with ``concurrency``
    workers on ``queues``, its first lists in."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=_serve, args=(theirs, case, sizes, latency_s, prepare))
    server.start()
    port = ours.recv()
    settings = ControllerSettings(api_concurrency=concurrency)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False  # as apportion serve's client
    configuration.connection_pool_maxsize = concurrency + OWN_CONNECTIONS
    cluster = LiveCluster(clock=time.time, intent_ttl_s=settings.intent_ttl_s)
    metrics = Metrics(cluster)
    api = KubeApi(client.ApiClient(configuration), settings.api_timeout_s)
    controller = Controller(api, cluster, settings, metrics)
    cluster.replace_queues(queues)
    informers = [threading.Thread(target=i.run, daemon=True) for i in controller.informers]
    for thread in informers:
        thread.start()
    while not controller.synced():
        time.sleep(0.05)
    return Synced(controller, cluster, metrics, server, ours, informers)


def _cycle(case: str, concurrency: int, args: argparse.Namespace) -> dict[str, float]:
    sizes = {"workloads": args.workloads, "gangs": args.gangs, "victims": args.victims}
    run = synced(case, sizes, args.latency_ms / 1000, concurrency, [_queue(case, sizes)])
    run.ours.send("start")
    started, wall, cpu = time.perf_counter(), time.time(), time.process_time()
    decision = run.controller.reconcile_once()
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    seen = run.finish()
    assert decision is not None
    if case == "admit":
        admitted = sum(v.outcome is Outcome.ADMIT for v in decision.workloads)
        pods = args.workloads + args.gangs * GANG_PODS
        if admitted != args.workloads + args.gangs or seen["done"] != pods:
            raise SystemExit(f"not every workload was admitted: {admitted}, {seen['done']} pods")
    elif not len(decision.evictions) == seen["done"] == seen["nominated"] == args.victims:
        raise SystemExit(
            f"not every victim was evicted: {len(decision.evictions)} decided, "
            f"{seen['done']} evicted, {seen['nominated']} nominated"
        )
    return {
        "cycle_s": took,
        "decide_s": decision.stats.wall_ms / 1000,
        "last_s": seen["last_done_at"] - wall,
        "calls": seen["calls"],
        "peak": seen["peak"],
        "cpu_s": cpu,
        "server_cpu_s": seen["cpu_s"],
    }


def _run(case: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Print the case's runs and medians; return the medians by concurrency."""
    last = "last admission" if case == "admit" else "last eviction"
    if case == "admit":
        print(
            f"controller_bench: one cycle admitting {args.workloads:,} one-pod workloads and "
            f"{args.gangs} gangs of {GANG_PODS}, every call {args.latency_ms:g} ms late"
        )
    else:
        print(
            f"controller_bench: one cycle preempting {args.victims:,} running one-pod workloads "
            f"for as many waiting, every call {args.latency_ms:g} ms late"
        )
    runs: dict[int, list[dict[str, float]]] = {1: [], DEFAULT: []}
    for _ in range(args.runs):
        for concurrency, done in runs.items():
            figures = _cycle(case, concurrency, args)
            done.append(figures)
            print(
                f"   api_concurrency {concurrency:>2}: cycle {figures['cycle_s']:6.2f} s "
                f"(decision {figures['decide_s']:5.2f} s), {last} at "
                f"{figures['last_s']:6.2f} s, {figures['calls']:,.0f} calls, "
                f"at most {figures['peak']:.0f} in flight; CPU {figures['cpu_s']:5.2f} s "
                f"(the server's {figures['server_cpu_s']:5.2f} s)"
            )
    medians = {
        concurrency: {key: statistics.median(f[key] for f in done) for key in done[0]}
        for concurrency, done in runs.items()
    }
    for concurrency, figures in medians.items():
        print(
            f"   median, api_concurrency {concurrency:>2}: cycle {figures['cycle_s']:6.2f} s, "
            f"{last} at {figures['last_s']:6.2f} s"
        )
    ratio = medians[1]["cycle_s"] / medians[DEFAULT]["cycle_s"]
    print(f"   the default ({DEFAULT}) against one call at a time: {ratio:.1f}× faster")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1000, help="admit: one-pod workloads")
    parser.add_argument("--gangs", type=int, default=50, help=f"admit: gangs of {GANG_PODS} pods")
    parser.add_argument("--victims", type=int, default=500, help="evict: running workloads")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="per pod call, Event")
    parser.add_argument("--cases", default=",".join(CASES), help="admit, evict or both")
    parser.add_argument("--runs", type=int, default=2, help="each (default 2: ~3 minutes)")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases):
        parser.error(f"--cases: one or more of {', '.join(CASES)}")
    summary: dict[str, float] = {}
    for case in cases:
        medians = _run(case, args)
        base, ours = medians[1], medians[DEFAULT]
        prefix, last = (
            ("", "last_admission_s") if case == "admit" else ("evict_", "last_eviction_s")
        )
        summary |= {
            f"{prefix}cycle_s": round(ours["cycle_s"], 2),
            f"{prefix}{last}": round(ours["last_s"], 2),
            f"{prefix}baseline_cycle_s": round(base["cycle_s"], 2),
            f"{prefix}baseline_{last}": round(base["last_s"], 2),
            f"{prefix}speedup": round(base["cycle_s"] / ours["cycle_s"], 1),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
