"""What a replica's memory holds at (b) and (c): the cluster's pods listed, kept and decided.

    .venv/bin/python benchmarks/memory_bench.py [--only b,c] [--host-pods-per-node 8]

A replica of ``apportion serve`` lists every pod in the cluster and keeps what it needs of
the GPU pods; the Deployment caps its memory (``deploy/base/deployment.yaml``), and a
replica over the cap is killed, first on a relist, when the new list arrives while the
old cache is still held. Here ``tests/kubefake``, in a process of its own, serves the pods
of ``decide_bench``'s instance: each of its workloads' GPU pods (running ones bound where
the instance placed them, waiting ones gated), and ``--host-pods-per-node`` pods asking no
GPU on every node (DaemonSets': the device plugin, the DCGM exporter, kube-proxy, ...).
Each pod is the recorded one (``tests/fixtures/objects``: 2.7 KB of JSON with its managed
fields; real pods, with environments, volumes and container statuses, are larger).

A fresh process per variant holds the instance's nodes and queues in a ``LiveCluster``
and runs the controller's pod informer (the real ``kubernetes`` client) until it has
listed; then lists again with its cache full (a relist), then takes a snapshot and
decides it within the controller's budget. Per step, the process's resident memory after
it (VmRSS) and its peak during it (VmHWM, reset before each step), in MiB; and how long
the first list took, and its CPU in this process (the rest is the server's):

  paged       as ``apportion serve`` lists: pages of ``kubeapi.LIST_PAGE_SIZE``
  one answer  every list in one answer (the baseline: how a replica listed before)

Against the Deployment's memory limit, read from its manifest. The last line is one JSON
object with the peaks per instance and variant.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import multiprocessing
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The API server stand-in is the test suite's; reuse, not copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import instances  # the sibling module (benchmarks/ is not a package)
from decide_bench import SEED
from kubefake import RECORDINGS, Fake
from kubernetes import client
from live_bench import managed, pods_of

from scheduler.allocator import decide
from scheduler.catalog import mig_resource_name
from scheduler.collector import paused
from scheduler.model import Node, Queue
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.controller import Controller
from webhook.kubeapi import LIST_PAGE_SIZE, KubeApi
from webhook.metrics import Metrics
from webhook.pods import ANNOTATION_PLACEMENT, ManagedPod, format_placement, rfc3339
from webhook.settings import ControllerSettings

SIZES = {"b": (1250, 5000), "c": (4000, 20000)}
"""Nodes and waiting workloads per instance, as ``decide_bench`` builds them."""
VARIANTS = {"paged": LIST_PAGE_SIZE, "one answer": 0}
DEPLOYMENT = Path(__file__).resolve().parents[1] / "deploy" / "base" / "deployment.yaml"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
"""What Kubernetes' ExtendedResourceToleration plugin adds to a GPU pod, and the instance's
nodes' taint asks."""


def memory_limit_mib() -> float:
    """The Deployment's memory limit (``2Gi`` → 2048)."""
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    limit = str(container["resources"]["limits"]["memory"])
    units = {"Gi": 1024.0, "Mi": 1.0}
    return float(limit[:-2]) * units[limit[-2:]]


def _template() -> dict[str, Any]:
    pod: dict[str, Any] = json.loads((RECORDINGS / "pod-bound-gpu-1.json").read_text())
    return pod


def gpu_pod(template: dict[str, Any], pod: ManagedPod) -> dict[str, Any]:
    """``pod`` as the API serves it once Apportion's webhook has decided it (its uid and
    resourceVersion are the server's, ``_serve``)."""
    raw = copy.deepcopy(template)
    name = pod.name.replace("/", "-")
    workload = pod.workload.replace("/", "-")
    annotations = {
        keys.ANNOTATION_WORKLOAD: f"{pod.namespace}/{workload}",
        keys.ANNOTATION_DECISION: "admitted" if pod.placement else "pending",
    }
    labels = {"app": workload, keys.LABEL_QUEUE: pod.queue}
    if pod.gang_size > 1:
        labels[keys.LABEL_GANG] = workload
        annotations[keys.ANNOTATION_GANG_SIZE] = str(pod.gang_size)
    if pod.demand.models:
        annotations[keys.ANNOTATION_GPU_MODELS] = ",".join(pod.demand.models)
    metadata = raw["metadata"]
    metadata.update(
        name=name,
        namespace=pod.namespace,
        creationTimestamp=rfc3339(pod.created),
        labels=labels,
        annotations=annotations,
    )
    spec = raw["spec"]
    resources = spec["containers"][0]["resources"]
    if pod.demand.mig_profile is not None:
        device, count = mig_resource_name(pod.demand.mig_profile), 1
    else:
        device, count = keys.GPU_RESOURCE, pod.demand.gpus or 1
    for part in ("requests", "limits"):
        resources[part].pop(keys.GPU_RESOURCE)
        resources[part][device] = str(count)
    spec["priority"] = pod.priority
    spec["tolerations"] = [*spec.get("tolerations", ()), GPU_TOLERATION]
    if pod.placement is None:
        spec.pop("nodeName")
        spec["schedulingGates"] = [{"name": keys.GATE}]
        raw["status"] = {"phase": "Pending"}
    else:
        annotations[ANNOTATION_PLACEMENT] = format_placement(pod.placement)
        spec["nodeName"] = pod.placement.node
    return raw


def host_pod(template: dict[str, Any], node: str, index: int) -> dict[str, Any]:
    """A pod asking no GPU, bound to ``node`` (a DaemonSet's)."""
    raw = copy.deepcopy(template)
    name = f"daemon-{index}-{node}"
    raw["metadata"].update(
        name=name,
        namespace="kube-system",
        labels={"app": f"daemon-{index}"},
    )
    for part in ("requests", "limits"):
        raw["spec"]["containers"][0]["resources"][part].pop(keys.GPU_RESOURCE)
    raw["spec"]["nodeName"] = node
    return raw


def _serve(connection: Connection, key: str, host_pods_per_node: int) -> None:
    """The API server's process: the instance's pods; its port, then the pods' count and
    JSON size sent; serves until told to stop."""
    nodes, pending = SIZES[key]
    instance = instances.synthetic_instance(key, nodes=nodes, pending=pending, seed=SEED)
    template = _template()
    raws = [
        gpu_pod(template, pod)
        for workload in managed(instance)
        for pod in pods_of(workload, workload.name)
    ]
    raws += [
        host_pod(template, node.name, i)
        for node in instance.snapshot.nodes
        for i in range(host_pods_per_node)
    ]
    fake = Fake()
    pods = fake.rtype("pods")
    size = 0
    for serial, raw in enumerate(raws, start=1):
        raw["metadata"]["uid"] = f"{serial:08x}-0000-4000-8000-000000000000"
        raw["metadata"]["resourceVersion"] = str(serial)
        size += len(json.dumps(raw, separators=(",", ":")))
        fake.store.seed(pods, raw)
    fake.start()
    connection.send((fake.port, len(raws), size))
    connection.recv()
    fake.stop()


def _mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _step() -> None:
    """Collect what the step before left, and start the peak afresh."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")


def _replica(
    connection: Connection,
    port: int,
    page_size: int,
    cluster_parts: tuple[list[Node], list[Queue], list[str]],
) -> None:
    """A replica's pod informer, then a relist, then a decision: memory after each."""
    nodes, queues, namespaces = cluster_parts
    settings = ControllerSettings()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False
    cluster = LiveCluster(clock=time.time, intent_ttl_s=settings.intent_ttl_s)
    cluster.replace_nodes(nodes)
    cluster.replace_queues(queues)
    cluster.replace_namespaces({ns: {keys.NAMESPACE_ENABLED: "true"} for ns in namespaces})
    api = KubeApi(client.ApiClient(configuration), settings.api_timeout_s, list_page_size=page_size)
    controller = Controller(api, cluster, settings, Metrics(cluster))
    informer = next(i for i in controller.informers if i.resource.kind == "Pod")
    del nodes, queues, cluster_parts
    figures: dict[str, float] = {}
    _step()
    figures["start"] = _mib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    threading.Thread(target=informer.run, daemon=True).start()
    informer.synced.wait()
    figures["list_s"] = time.perf_counter() - started
    figures["list_cpu_s"] = time.process_time() - cpu
    figures["list_peak"] = _mib("VmHWM")
    _step()
    figures["listed"] = _mib("VmRSS")
    with paused():  # as the informer reads a list
        controller.watched.replace_pods(api.list_all(api.pods()).items)
    figures["relist_peak"] = _mib("VmHWM")
    _step()
    figures["relisted"] = _mib("VmRSS")
    decision = decide(cluster.snapshot(), budget_ms=settings.budget_ms)
    figures["decide_peak"] = _mib("VmHWM")
    figures["pods_kept"] = len(cluster.pods)
    figures["workloads"] = len(decision.workloads)
    controller.stop(timeout_s=0)
    connection.send(figures)


def run(key: str, host_pods_per_node: int) -> dict[str, dict[str, float]]:
    nodes, pending = SIZES[key]
    instance = instances.synthetic_instance(key, nodes=nodes, pending=pending, seed=SEED)
    parts = (
        list(instance.snapshot.nodes),
        list(instance.snapshot.queues),
        sorted({w.namespace for w in managed(instance)}),
    )
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=_serve, args=(theirs, key, host_pods_per_node))
    server.start()
    port, count, size = ours.recv()
    print(
        f"   ({key}) {nodes:,} nodes, {count:,} pods listed ({size / 2**20:,.0f} MiB of JSON), "
        f"{host_pods_per_node} per node asking no GPU"
    )
    results: dict[str, dict[str, float]] = {}
    for variant, page_size in VARIANTS.items():
        mine, replica_end = context.Pipe()
        replica = context.Process(target=_replica, args=(replica_end, port, page_size, parts))
        replica.start()
        f = results[variant] = mine.recv()
        replica.join()
        print(
            f"       {variant:<10}  start {f['start']:6,.0f}   list: peak {f['list_peak']:6,.0f}, "
            f"after {f['listed']:6,.0f} ({f['list_s']:4.1f} s, CPU {f['list_cpu_s']:4.1f} s)   "
            f"relist: peak "
            f"{f['relist_peak']:6,.0f}, after {f['relisted']:6,.0f}   decide: peak "
            f"{f['decide_peak']:6,.0f}   ({f['pods_kept']:,.0f} GPU pods kept, "
            f"{f['workloads']:,.0f} workloads decided)"
        )
    ours.send("stop")
    server.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="b,c", help="instances (default b,c)")
    parser.add_argument(
        "--host-pods-per-node", type=int, default=8, help="pods asking no GPU on every node"
    )
    args = parser.parse_args()
    limit = memory_limit_mib()
    print(
        f"memory_bench: a replica's resident memory in MiB (VmRSS; peaks VmHWM), against the "
        f"Deployment's limit of {limit:,.0f} MiB"
    )
    summary: dict[str, float] = {"limit_mib": limit}
    for key in args.only.split(","):
        results = run(key, args.host_pods_per_node)
        for variant, figures in results.items():
            peak = max(figures["list_peak"], figures["relist_peak"], figures["decide_peak"])
            name = variant.replace(" ", "_")
            summary[f"{key}_{name}_peak_mib"] = round(peak, 1)
            summary[f"{key}_{name}_kept_mib"] = round(figures["listed"], 1)
            verdict = "within" if peak <= limit else "OVER"
            print(f"       {variant:<10}  highest peak {peak:6,.0f} MiB: {verdict} the limit")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
