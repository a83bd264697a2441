"""What /metrics exports from the live cluster (webhook/metrics.py): the queue gauges the
alerts in deploy/monitoring read."""

from __future__ import annotations

from webhook_support import fixture_cluster

from scheduler.model import Demand
from scheduler.telemetry import DeviceKey, DeviceSample, TelemetrySettings, assess
from webhook.metrics import Metrics
from webhook.pods import ManagedPod

NOW = 1_764_091_500  # fixture_cluster's clock


def _waiting(name: str, demand: Demand, waited_s: int) -> ManagedPod:
    return ManagedPod(
        namespace="gpu-team-a", name=name, workload=f"gpu-team-a/{name}", queue="team-a",
        demand=demand, priority=0, created=NOW - waited_s, gang_size=1, gated=True,
    )  # fmt: skip


def test_oldest_pending_is_per_flavor_the_waiting_work_could_use() -> None:
    """ApportionQueueStarving compares a queue's usage with its nominal quota flavor by
    flavor; the wait it weighs must be of work that flavor's quota would serve. Here
    team-a waits 2000 s for a whole H100 and 600 s for a MIG slice: its MIG wait is 600 s,
    not 2000. The empty flavor keeps the queue's oldest wait over all flavors."""
    cluster = fixture_cluster()
    cluster.put_pod(_waiting("train", Demand(gpus=1), 2000))
    cluster.put_pod(_waiting("infer", Demand(mig_profile="1g.10gb"), 600))
    registry = Metrics(cluster).registry

    def oldest(queue: str, flavor: str) -> float | None:
        labels = {"queue": queue, "flavor": flavor}
        return registry.get_sample_value("apportion_oldest_pending_seconds", labels)

    assert oldest("team-a", "H100-80GB") == 2000
    assert oldest("team-a", "mig-1g.10gb") == 600
    assert oldest("team-a", "") == 2000
    assert oldest("team-b", "H100-80GB") == 0  # nothing waits: 0, as the per-queue value
    assert oldest("team-b", "") == 0
    for flavor in ("H100-80GB", "mig-1g.10gb"):  # the same flavor names as usage and quota
        labels = {"queue": "team-a", "flavor": flavor}
        assert registry.get_sample_value("apportion_queue_nominal_gpus", labels) is not None


def test_gpu_series_whose_pods_are_no_workloads_are_counted() -> None:
    """Was only in the report: a scrape that renamed the exporter's pod labels (and kept no
    exported_ ones) attributed nothing, while the note said the metrics were fresh."""
    cluster = fixture_cluster()
    rows = [
        DeviceSample(DeviceKey("gpu-node-a", g, f"GPU-{g}", None, "", "monitoring", "exporter"),
                     sampled_at=NOW)
        for g in range(2)
    ]  # fmt: skip
    cluster.set_telemetry(assess(cluster.snapshot(with_telemetry=False), rows, TelemetrySettings()))
    registry = Metrics(cluster).registry
    assert registry.get_sample_value("apportion_gpu_metrics_unmatched_pods") == 2
