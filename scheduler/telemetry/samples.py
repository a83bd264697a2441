"""Plain per-device samples: one row of dcgm-exporter series, as the rules consume it.

A *device row* is what dcgm-exporter labels one series with (facts §3.2): a whole GPU (its
index ``gpu`` and physical ``UUID``), or a MIG instance of it (the same ``gpu`` and UUID plus
``GPU_I_ID`` and ``GPU_I_PROFILE``); on time-sliced GPUs one copy per sharing container,
told apart by the pod labels. Values are integers in base units: per-mille, MiB,
milliwatts, °C, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeviceKey", "DeviceSample"]


@dataclass(frozen=True, slots=True)
class DeviceKey:
    node: str
    """The node-name label (``Hostname`` unless configured otherwise)."""
    gpu: int
    """Device index; on MIG rows the parent GPU's index."""
    uuid: str = ""
    """Physical GPU UUID (also on MIG rows: MIG UUIDs are never emitted)."""
    gi_id: int | None = None
    """GPU-instance ID on MIG rows; not the placement start."""
    gi_profile: str = ""
    """MIG profile on MIG rows, e.g. ``1g.10gb``; empty for a whole GPU."""
    namespace: str = ""
    pod: str = ""
    """Empty when the device is not allocated to a pod (or pod mapping is off)."""
    container: str = ""

    @property
    def is_mig(self) -> bool:
        return self.gi_id is not None or bool(self.gi_profile)

    def describe(self) -> str:
        where = f"{self.node or '?'} GPU {self.gpu}"
        if self.is_mig:
            where += f" MIG {self.gi_profile or '?'} (GI {self.gi_id})"
        if self.pod:
            where += f" pod {self.namespace}/{self.pod}"
        return where


@dataclass(frozen=True, slots=True)
class DeviceSample:
    key: DeviceKey
    util_milli: int | None = None
    """Average busy time over the idle window, per-mille (GR_ENGINE_ACTIVE, else GPU_UTIL)."""
    util_source: str = ""
    """The metric ``util_milli`` came from; empty when neither was reported."""
    fb_used_mib: int | None = None
    fb_used_peak_mib: int | None = None
    """Peak framebuffer used over the idle window."""
    fb_free_mib: int | None = None
    xid: int | None = None
    """The last XID the GPU reported (0: none)."""
    dbe_volatile: int | None = None
    """Volatile double-bit ECC error count (DCGM_FI_DEV_ECC_DBE_VOL_TOTAL; commented out in
    the default counters, so often absent)."""
    row_remap_failure: bool | None = None
    temperature_c: int | None = None
    power_mw: int | None = None
    sampled_at: int | None = None
    """Timestamp of the row's newest sample, seconds since the epoch (Prometheus time)."""

    def age(self, now: int) -> int | None:
        return None if self.sampled_at is None else max(0, now - self.sampled_at)
