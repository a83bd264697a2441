"""Time one controller cycle admitting many workloads, against an API server that takes its time.

    .venv/bin/python benchmarks/controller_bench.py [--workloads 1000] [--gangs 50] [--runs 3]

Against a real API server each call takes 5–20 ms; the controller's decision over 10,000–
32,000 GPUs takes 1–3 s at most, so a cycle admitting 1,000 workloads one call after another
spent most of its time waiting for answers. Here ``tests/kubefake`` serves, in a process of
its own (an API server is not in the controller's process, nor does its CPU share the
controller's interpreter), the nodes and gated pods of ``--workloads`` one-pod workloads (1
GPU each) and ``--gangs`` gangs of 4 pods × 8 GPUs in one queue, every pod patch and Event
answered ``--latency-ms`` (10) late. One ``Controller.reconcile_once`` is timed on a fresh
cluster per run, with ``api_concurrency`` 1 (the baseline: one call after another, as every
cycle was before) and with the default, alternating: medians of ``--runs``. Per run: the
cycle, the decision within it, when the last gate was removed (the last admission), the
calls made and the most in flight at once as the server saw them.
The last line is one JSON object with the medians and the ratio.
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# The API server stand-in is the test suite's; reuse, not copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kubefake import RECORDINGS, Fake
from kubernetes import client

from scheduler.model import Queue, Quota
from scheduler.reasons import Outcome
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.controller import OWN_CONNECTIONS, Controller
from webhook.kubeapi import KubeApi
from webhook.metrics import Metrics
from webhook.settings import ControllerSettings

NAMESPACE = "bench"
GANG_PODS = 4
DEFAULT = ControllerSettings().api_concurrency


def _node(template: dict[str, Any], name: str) -> dict[str, Any]:
    node = copy.deepcopy(template)
    labels = {**node["metadata"]["labels"], "kubernetes.io/hostname": name}
    node["metadata"] = {"name": name, "labels": labels}
    return node


def _pod(template: dict[str, Any], name: str, gpus: int, gang: str | None) -> dict[str, Any]:
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
    pod["status"] = {"phase": "Pending"}
    return pod


def _serve(connection: Connection, workloads: int, gangs: int, latency_s: float) -> None:
    """The API server's process: a fresh cluster, its port sent, then, once the cycle
    has ended, what the server saw of it."""
    recorded_nodes = json.loads((RECORDINGS / "nodelist.json").read_text())["items"]
    node = next(n for n in recorded_nodes if n["metadata"]["name"] == "gpu-node-a")
    recorded_pods = json.loads((RECORDINGS / "podlist-gpu-team-a.json").read_text())["items"]
    template = next(p for p in recorded_pods if p["metadata"]["name"] == "patched-gpu-1")
    fake = Fake()
    fake.put_namespace(NAMESPACE, {keys.NAMESPACE_ENABLED: "true"})
    for i in range(-(-workloads // 8) + gangs * GANG_PODS):
        fake.put_node(_node(node, f"node-{i:04}"))
    for i in range(workloads):
        fake.put_pod(_pod(template, f"solo-{i:04}", 1, None))
    for g in range(gangs):
        for i in range(GANG_PODS):
            fake.put_pod(_pod(template, f"gang-{g:03}-{i}", 8, f"gang-{g:03}"))
    calls = rf"/api/v1/namespaces/{NAMESPACE}/.+"  # pod patches and Events
    latency = fake.add_latency(calls, latency_s)
    fake.start()
    connection.send(fake.port)
    connection.recv()  # the cycle starts
    cpu = time.process_time()
    connection.recv()  # and has ended
    cpu = time.process_time() - cpu
    patches = fake.requests_to(calls, "PATCH")
    releases = [r.at for r in patches if any("schedulingGates" in op["path"] for op in r.body)]
    connection.send(
        {
            "calls": len(fake.requests_to(calls)),
            "released": len(releases),
            "last_release_at": max(releases, default=0.0) + latency_s,
            "peak": latency.peak,
            "cpu_s": cpu,
        }
    )
    fake.stop()


def _cycle(concurrency: int, args: argparse.Namespace) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(
        target=_serve, args=(theirs, args.workloads, args.gangs, args.latency_ms / 1000)
    )
    server.start()
    port = ours.recv()
    settings = ControllerSettings(api_concurrency=concurrency)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False  # as apportion serve's client
    configuration.connection_pool_maxsize = concurrency + OWN_CONNECTIONS
    cluster = LiveCluster(clock=time.time, intent_ttl_s=settings.intent_ttl_s)
    api = KubeApi(client.ApiClient(configuration), settings.api_timeout_s)
    controller = Controller(api, cluster, settings, Metrics(cluster))
    nominal = args.workloads + args.gangs * GANG_PODS * 8
    queue = Queue(
        name="bench", namespaces=(NAMESPACE,), quota={"H100-80GB": Quota(nominal=nominal)}
    )
    cluster.replace_queues([queue])
    informers = [threading.Thread(target=i.run, daemon=True) for i in controller.informers]
    for thread in informers:
        thread.start()
    while not controller.synced():
        time.sleep(0.05)
    ours.send("start")
    started, wall, cpu = time.perf_counter(), time.time(), time.process_time()
    decision = controller.reconcile_once()
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    controller.stop(timeout_s=0)  # its informers end with the server's watches
    ours.send("done")
    seen = ours.recv()
    server.join()
    for thread in informers:
        thread.join()
    assert decision is not None
    admitted = sum(v.outcome is Outcome.ADMIT for v in decision.workloads)
    pods = args.workloads + args.gangs * GANG_PODS
    if admitted != args.workloads + args.gangs or seen["released"] != pods:
        raise SystemExit(f"not every workload was admitted: {admitted}, {seen['released']} pods")
    return {
        "cycle_s": took,
        "decide_s": decision.stats.wall_ms / 1000,
        "last_admission_s": seen["last_release_at"] - wall,
        "calls": seen["calls"],
        "peak": seen["peak"],
        "cpu_s": cpu,
        "server_cpu_s": seen["cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1000, help="one-pod workloads")
    parser.add_argument("--gangs", type=int, default=50, help=f"gangs of {GANG_PODS} pods")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="per pod patch, Event")
    parser.add_argument("--runs", type=int, default=2, help="each (default 2: ~2 minutes)")
    args = parser.parse_args()
    print(
        f"controller_bench: one cycle admitting {args.workloads:,} one-pod workloads and "
        f"{args.gangs} gangs of {GANG_PODS}, every call {args.latency_ms:g} ms late"
    )
    runs: dict[int, list[dict[str, float]]] = {1: [], DEFAULT: []}
    for _ in range(args.runs):
        for concurrency, done in runs.items():
            figures = _cycle(concurrency, args)
            done.append(figures)
            print(
                f"   api_concurrency {concurrency:>2}: cycle {figures['cycle_s']:6.2f} s "
                f"(decision {figures['decide_s']:5.2f} s), last admission at "
                f"{figures['last_admission_s']:6.2f} s, {figures['calls']:,.0f} calls, "
                f"at most {figures['peak']:.0f} in flight; CPU {figures['cpu_s']:5.2f} s "
                f"(the server's {figures['server_cpu_s']:5.2f} s)"
            )
    medians = {
        concurrency: {key: statistics.median(f[key] for f in done) for key in done[0]}
        for concurrency, done in runs.items()
    }
    base, ours = medians[1], medians[DEFAULT]
    ratio = base["cycle_s"] / ours["cycle_s"]
    for concurrency, figures in medians.items():
        print(
            f"   median, api_concurrency {concurrency:>2}: cycle {figures['cycle_s']:6.2f} s, "
            f"last admission at {figures['last_admission_s']:6.2f} s"
        )
    print(f"   the default ({DEFAULT}) against one call at a time: {ratio:.1f}× faster")
    print(
        json.dumps(
            {
                "cycle_s": round(ours["cycle_s"], 2),
                "last_admission_s": round(ours["last_admission_s"], 2),
                "baseline_cycle_s": round(base["cycle_s"], 2),
                "baseline_last_admission_s": round(base["last_admission_s"], 2),
                "speedup": round(ratio, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
