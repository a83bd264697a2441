"""What the GPU-metrics rules need to know: fatal XIDs, quiet period, idleness, staleness.

One frozen settings object with safe defaults; the drivers build it at their entry point
(environment, flags, config file) and pass it down. Durations are whole seconds and the
idle threshold is per-mille of the GPU's time (50 = 5 %), integers like every quantity here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_FATAL_XIDS", "SeriesLabels", "TelemetrySettings"]

DEFAULT_FATAL_XIDS = frozenset({48, 63, 64, 74, 79, 94, 95, 154})
"""XID codes that take a GPU out of capacity by default (the project's chosen list).
Configurable: which XIDs a site treats as fatal is policy, and NVIDIA's XID catalog is the
reference for what each code means. 154 is the driver saying so itself ("GPU recovery
action changed … to GPU Reset Required", or node reboot): it follows a fault whose own
code, 62 or 119/120 from the GSP for one, the exporter's last-XID gauge may never show."""


@dataclass(frozen=True, slots=True)
class SeriesLabels:
    """The label names dcgm-exporter writes (facts §3.2). ``--use-old-namespace`` exporters
    write ``pod_name``/``pod_namespace``/``container_name``; a relabelling ServiceMonitor may
    put the node name in another label than ``Hostname``."""

    node: str = "Hostname"
    """Label holding the Kubernetes node name. dcgm-exporter's ``Hostname`` has been seen to
    hold the exporter pod's name instead; then relabel the node name into a label and name
    it here (rows still join by a GPU UUID learned earlier)."""
    gpu: str = "gpu"
    uuid: str = "UUID"
    gi_id: str = "GPU_I_ID"
    gi_profile: str = "GPU_I_PROFILE"
    namespace: str = "namespace"
    pod: str = "pod"
    container: str = "container"

    def device(self) -> tuple[str, ...]:
        """Labels that name one device (a GPU, or a MIG instance of it)."""
        return (self.node, self.gpu, self.gi_id)

    def grouping(self) -> tuple[str, ...]:
        """Labels that identify one device row and whose it is: the identity query keeps
        these, the other queries only ``device()`` (half the payload)."""
        return (
            self.node,
            self.gpu,
            self.uuid,
            self.gi_id,
            self.gi_profile,
            self.namespace,
            self.pod,
            self.container,
        )


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    fatal_xids: frozenset[int] = DEFAULT_FATAL_XIDS
    """XID codes that make a GPU unhealthy."""
    quiet_period_s: int = 600
    """A GPU comes back this long after its last fatal event (XID, new double-bit ECC
    errors, or a row-remap failure still reported)."""
    idle_threshold_milli: int = 50
    """A device is idle when its average utilization over the window is below this
    (per-mille: 50 = 5 % of the time busy)."""
    idle_window_s: int = 3600
    """The window utilization is averaged over; a workload must have run at least this long
    to be called idle."""
    staleness_s: int = 120
    """Samples older than this are stale: they are reported, but never used for decisions."""
    rightsizing_headroom_pct: int = 10
    """Headroom over the peak memory used, and over the busiest device's compute, when naming
    the smallest MIG profile that fits."""
    labels: SeriesLabels = field(default_factory=SeriesLabels)
    series_selector: str = ""
    """Label matchers added to every metric selector, e.g. ``job="dcgm-exporter"`` when other
    jobs export the same names; empty: all series."""
    indices_name_devices: bool = True
    """Whether a snapshot GPU's index is the device's NVML index, as in a snapshot written
    from the nodes. On a live cluster it is not: a Node object only counts its GPUs, so
    Apportion numbers them itself, and the kubelet picks the device a pod gets. Then a row
    without pod labels names a workload only on a node that workload holds whole, and
    metrics take a node's GPUs out only beyond those the snapshot already has out (the
    device plugin withholds a broken GPU too, at an index of Apportion's choosing)."""

    def __post_init__(self) -> None:
        problems = []
        if any(x <= 0 for x in self.fatal_xids):
            problems.append(f"fatal_xids: {sorted(self.fatal_xids)} must be positive XID codes")
        for name in ("quiet_period_s", "idle_window_s", "staleness_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: {getattr(self, name)} must be at least 1 second")
        if not 0 < self.idle_threshold_milli <= 1000:
            problems.append(
                f"idle_threshold_milli: {self.idle_threshold_milli} must be 1–1000 (per-mille)"
            )
        if self.rightsizing_headroom_pct < 0:
            problems.append(
                f"rightsizing_headroom_pct: {self.rightsizing_headroom_pct} is negative"
            )
        if problems:
            raise ValueError("; ".join(problems))
