"""Settings for ``apportion serve``: grouped, documented, defaulted; one root object.

Read from flags and the environment only at the entry point (webhook/commands.py) and
passed down explicitly, so every part can be built in a test with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from scheduler.telemetry import TelemetrySettings
    from webhook.dcgm import PrometheusSettings

__all__ = [
    "MAX_API_CONCURRENCY",
    "AdmissionSettings",
    "ControllerSettings",
    "ServeSettings",
    "ServerSettings",
]

MAX_API_CONCURRENCY = 128
"""More calls at once than this would only queue at the API server: by default it serves
200 changes at once (``--max-mutating-requests-inflight``), for all its clients together,
and API Priority and Fairness gives a controller's service account a share of those."""

DEFAULT_GPU_TOLERATIONS: tuple[dict[str, Any], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    mode: Literal["enforce", "shadow"] = "enforce"
    """``shadow`` annotates what Apportion would do and changes nothing else (rollout)."""
    on_allocator_failure: Literal["gate", "allow"] = "gate"
    """When the allocator cannot answer: ``gate`` the pod for the controller (never lose a
    pod) or ``allow`` it unmanaged (then the validating call lets through every GPU pod the
    mutating one did not mark, instead of refusing it with 503)."""
    whole_gpu_fallback: bool = True
    """A memory need may become whole GPUs when no MIG slice fits or MIG capacity is out."""
    gpu_tolerations: tuple[dict[str, Any], ...] = DEFAULT_GPU_TOLERATIONS
    """Added to managed pods: GPU nodes are commonly tainted ``nvidia.com/gpu``."""
    trusted_users: frozenset[str] = frozenset()
    """Users allowed to set decision keys and remove the gate (Apportion's service account;
    ``system:serviceaccount:<ns>:<name>``)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """AdmissionReviews larger than this are refused (HTTP 413). A review of an UPDATE
    carries the pod twice (object and oldObject, each up to etcd's 1.5 MiB) and its
    wrapper: more than the API server's 3 MiB request limit, which an earlier default was,
    so a large pod's updates skipped the validating checks (failurePolicy Ignore)."""


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    evict: bool = True
    """Carry out preemptions. Off in global shadow mode: pods Apportion gated earlier are
    still released, but nothing running is ever evicted."""
    tick_s: float = 10.0
    """Global decision at least this often, even without changes."""
    debounce_s: float = 0.5
    """Coalesce bursts of changes into one global decision."""
    budget_ms: float = 2000.0
    """Wall-clock budget of one global decision (ILP, greedy fallback)."""
    lease_name: str = "apportion-controller"
    lease_namespace: str = "apportion-system"
    lease_duration_s: float = 15.0
    identity: str = "apportion"
    intent_ttl_s: float = 120.0
    """How long an admission the webhook answered waits for its pod to be observed."""
    watch_timeout_s: int = 300
    api_timeout_s: float = 5.0
    """Client-side timeout of every API call but lists and watches (patch, evict, Event,
    Queue status, Lease): a call whose network path died without a word is given up after
    this, not waited on for ever with the controller stalled behind it. Also how long
    before its Lease could be taken over the leader stops starting calls (client-go's
    ``RenewDeadline``, 10 s of a 15 s lease): shorter than ``lease_duration_s``."""
    backoff_max_s: float = 30.0
    stuck_after_s: float = 300.0
    """An admitted pod the kube-scheduler cannot place (PodScheduled=False/Unschedulable,
    or pinned to a node that is gone, cordoned or not Ready) this long is replaced: its
    workload evicted for its owner to recreate, or, for a bare pod, reported. 0 = never."""
    api_concurrency: int = 16
    """How many workloads' API calls a cycle makes at once (gated pods Apportion never
    decided settled, then evictions, nominations, admissions, waiting pods' reasons, then
    stuck workloads replaced; Events too), each workload's own in their order: at 5–20 ms
    a call, one at a time, a cycle admitting 1,000 workloads spent 10–40 s in calls.
    1 = one at a time."""

    def __post_init__(self) -> None:
        if not 0 < self.api_timeout_s < self.lease_duration_s:
            raise ValueError(
                f"the API timeout ({self.api_timeout_s} s) must be positive and shorter "
                f"than the lease ({self.lease_duration_s} s)"
            )
        concurrency = self.api_concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise ValueError(f"the API concurrency ({concurrency!r}) must be a whole number")
        if not 1 <= concurrency <= MAX_API_CONCURRENCY:
            raise ValueError(
                f"the API concurrency ({concurrency}) must be between 1 and {MAX_API_CONCURRENCY}"
            )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    cert_file: Path | None = None
    key_file: Path | None = None
    host: str = "0.0.0.0"
    port: int = 8443
    probe_port: int | None = 8080
    """Plain-HTTP port for /healthz, /readyz and /metrics (kubelet, Prometheus); None = off."""
    cert_check_s: float = 10.0
    """How often the certificate files are checked for rotation."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    server: ServerSettings = field(default_factory=ServerSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    cluster_file: Path | None = None
    """Standalone mode: nodes, queues and namespaces from this snapshot file."""
    queues_file: Path | None = None
    kubeconfig: Path | None = None
    all_namespaces: bool = False
    """Manage every namespace except system ones (standalone demos)."""
    prometheus: PrometheusSettings | None = None
    """Where dcgm-exporter's series are (GPU health, idleness); None: decide without."""
    telemetry: TelemetrySettings | None = None
    """How to judge them (``dcgm.telemetry_from_env``); None: the live defaults."""
