"""What ``/metrics`` exports (Prometheus text format), names shared with deploy/'s alerts.

Request-path metrics are updated as requests are answered; queue gauges are computed
from the live cluster at scrape time (one snapshot per scrape, not per request, and its
quota book alone: not the whole state a cycle compiles), so the admission path pays for a
histogram observation and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import pending_options, quota_book
from webhook.cluster import LiveCluster
from webhook.kubeapi import failure_code

__all__ = ["ApiAction", "Metrics", "StrayOutcome"]

ApiAction = Literal["patch", "evict", "event", "status", "lease", "list", "watch"]
"""What a failed Kubernetes API call was for: patch a pod (admission, reason, nomination),
evict a pod (preemption, stuck replacement), write an Event, set a Queue's status, renew or
take the Lease, list or watch what the controller sees (Nodes, Pods, Namespaces, Jobs,
Queues)."""

StrayOutcome = Literal["released", "adopted", "refused"]
"""How the controller settled a pod carrying Apportion's gate that it never decided
(``strays.py``): its gate removed (not Apportion's to hold), adopted into its queue, or
refused (told why; it keeps the gate)."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """One registry per server (tests build several side by side).

    ``memory_limit``: the replica's memory limit in bytes (``memorylimit.py``), exported
    beside the process's resident memory for the alert on a replica nearing it; None (no
    limit, or not known) exports no series.
    """

    def __init__(self, cluster: LiveCluster, memory_limit: int | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds
        if memory_limit is not None:
            Gauge(
                "apportion_memory_limit_bytes",
                "The replica's memory limit (its container's cgroup): at it, the replica is "
                "killed.",
                registry=r,
            ).set(memory_limit)
        self.admission_seconds = Histogram(
            "apportion_admission_duration_seconds",
            "Time to answer an AdmissionReview, by endpoint and outcome.",
            ["endpoint", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "apportion_decisions",
            "Admission decisions on managed pods, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.bad_requests = Counter(
            "apportion_bad_requests",
            "Requests answered 400/413 (not an AdmissionReview, too large).",
            ["endpoint"],
            registry=r,
        )
        self.preemptions = Counter(
            "apportion_preemptions",
            "Workloads evicted to make room, by the victim's queue.",
            ["queue"],
            registry=r,
        )
        self.stuck_replaced = Counter(
            "apportion_stuck_replaced",
            "Admitted workloads the kube-scheduler could not place, evicted for their owners "
            "to recreate, by queue.",
            ["queue"],
            registry=r,
        )
        self.stuck_reported = Gauge(
            "apportion_stuck_pods",
            "Admitted pods the kube-scheduler has not placed for longer than the grace period "
            "that Apportion only reports (no controller owns them, part of their gang is "
            "bound, or shadow mode), by queue.",
            ["queue"],
            registry=r,
        )
        self.allocator_seconds = Histogram(
            "apportion_allocator_duration_seconds",
            "Wall time of the controller's global decision, by the path that answered.",
            ["path"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.synced = Gauge(
            "apportion_cluster_synced",
            "1 once the first full list of the cluster has been loaded.",
            registry=r,
        )
        self.leader = Gauge(
            "apportion_controller_leader", "1 while this replica's controller leads.", registry=r
        )
        self.api_failures = Counter(
            "apportion_api_failures",
            "Kubernetes API calls that failed, by action and code (the HTTP status, or "
            "unanswered): the controller could not act.",
            ["action", "code"],
            registry=r,
        )
        self.strays_settled = Counter(
            "apportion_strays_settled",
            "Gated pods Apportion's webhook never decided that the controller settled, by "
            "outcome: released (not Apportion's), adopted into their queue, or refused (told "
            "why, once per reason; the pod keeps the gate).",
            ["outcome"],
            registry=r,
        )
        for outcome in get_args(StrayOutcome):
            self.strays_settled.labels(outcome)  # exported from 0: increase() sees the first
        r.register(_QueueCollector(cluster))

    def api_failed(self, action: ApiAction, error: Exception) -> None:
        """Count one failed call; its log line names the object, the labels never do."""
        self.api_failures.labels(action, failure_code(error)).inc()


class _QueueCollector(Collector):
    """Per-queue gauges read from the live cluster at scrape time."""

    def __init__(self, cluster: LiveCluster) -> None:
        self._cluster = cluster

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._cluster.snapshot()
        catalog = self._cluster.catalog
        # The book and the options alone, not the whole state a cycle compiles: a scrape
        # holds the GIL the webhook's answers wait for (benchmarks/scrape_bench.py).
        book = quota_book(snapshot, catalog)
        models = {m.name for m in catalog.models}
        usage = GaugeMetricFamily(
            "apportion_queue_usage_gpus",
            "Admitted usage per queue and flavor (GPUs, or MIG instances for mig-* flavors).",
            labels=["queue", "flavor"],
        )
        nominal = GaugeMetricFamily(
            "apportion_queue_nominal_gpus",
            "Nominal quota per queue and flavor (same units as usage).",
            labels=["queue", "flavor"],
        )
        share = GaugeMetricFamily(
            "apportion_queue_weighted_share",
            "Weighted dominant share of borrowed capacity (0 = within nominal quota).",
            labels=["queue"],
        )
        pending = GaugeMetricFamily(
            "apportion_queue_pending_workloads", "Workloads waiting.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "apportion_oldest_pending_seconds",
            "Age of the oldest waiting workload, per queue and flavor it could be admitted "
            "on (flavor empty: of all the queue's waiting workloads).",
            labels=["queue", "flavor"],
        )
        waiting: dict[str, list[int]] = {}
        # Per queue and flavor, the creation of the oldest workload that one of its options
        # would charge to that flavor: a queue below nominal on H100 with H100 work waiting
        # is a broken guarantee; with only MIG work waiting, it is not.
        earliest: dict[str, dict[str, int]] = {}
        for workload, options in pending_options(snapshot, catalog):
            waiting.setdefault(workload.queue, []).append(workload.created)
            by_flavor = earliest.setdefault(workload.queue, {})
            for option in options:
                known = by_flavor.get(option.flavor, workload.created)
                by_flavor[option.flavor] = min(known, workload.created)
        for queue in snapshot.queues:
            flavors = set(queue.quota) | set(book.accounts[queue.name].usage)
            by_flavor = earliest.get(queue.name, {})
            for flavor in sorted(flavors | set(by_flavor)):
                since = by_flavor.get(flavor)
                oldest.add_metric(
                    [queue.name, flavor], max(0, snapshot.now - since) if since is not None else 0
                )
            for flavor in sorted(flavors):
                unit = MILLI_PER_GPU if flavor in models else 1
                usage.add_metric([queue.name, flavor], book.usage(queue.name, flavor) / unit)
                nominal.add_metric([queue.name, flavor], book.nominal(queue.name, flavor) / unit)
            share.add_metric([queue.name], book.share(queue.name))
            created = waiting.get(queue.name, [])
            pending.add_metric([queue.name], len(created))
            oldest.add_metric(
                [queue.name, ""], max(0, snapshot.now - min(created)) if created else 0
            )
        unhealthy = GaugeMetricFamily(
            "apportion_unhealthy_gpus",
            "GPUs kept out of capacity, by node and reason.",
            labels=["node", "reason"],
        )
        for node in snapshot.nodes:
            reasons: dict[str, int] = {}
            for gpu in node.gpus:
                if not gpu.healthy:
                    reason = gpu.health_reason or "unknown"
                    reasons[reason] = reasons.get(reason, 0) + 1
            for reason, count in sorted(reasons.items()):
                unhealthy.add_metric([node.name, reason], count)
        yield from (usage, nominal, share, pending, oldest, unhealthy)
        yield from _telemetry_metrics(self._cluster)


def _telemetry_metrics(cluster: LiveCluster) -> Iterator[GaugeMetricFamily]:
    """GPU metrics as Apportion sees them: their state and age, idle and unknown GPUs."""
    report = cluster.telemetry
    if report is None:
        return
    status = GaugeMetricFamily(
        "apportion_gpu_metrics_status",
        "1 for the current state of DCGM metrics: fresh, partial, stale or missing.",
        labels=["status"],
    )
    for name in ("fresh", "partial", "stale", "missing"):
        status.add_metric([name], 1 if report.note.status == name else 0)
    age = GaugeMetricFamily(
        "apportion_gpu_metrics_age_seconds", "Age of the newest DCGM sample used."
    )
    age.add_metric([], report.age_s if report.age_s is not None else float("nan"))
    idle = GaugeMetricFamily(
        "apportion_idle_gpus",
        "Allocated GPUs (or MIG instances) idle over the window, per queue.",
        labels=["queue"],
    )
    for queue, count in sorted(report.idle.per_queue.items()):
        idle.add_metric([queue], count)
    unknown = GaugeMetricFamily(
        "apportion_gpu_metrics_unknown_gpus",
        "GPU series that match no known node and GPU, or a MIG slice its GPU's layout lacks.",
    )
    unknown.add_metric([], len(report.unknown))
    unmatched = GaugeMetricFamily(
        "apportion_gpu_metrics_unmatched_pods",
        "GPU series whose pod labels name no running workload: not attributed (idleness and "
        "right-sizing go without them). Every row, on a scrape that renames the exporter's "
        "pod labels without keeping exported_ ones.",
    )
    unmatched.add_metric([], len(report.unmatched_pods))
    yield from (status, age, idle, unknown, unmatched)
