"""What the controller tests against kubefake share: their settings and queue, waiting for
a condition, and the pods Apportion's webhook leaves waiting."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from kubefake import Fake

from scheduler.model import PreemptionPolicy, Queue, Quota
from webhook import keys
from webhook.settings import ControllerSettings

__all__ = ["SETTINGS", "TEAM_A", "eventually", "gates_of", "waiting_pod"]

SETTINGS = ControllerSettings(
    tick_s=0.3,
    debounce_s=0.05,
    lease_duration_s=1.0,
    watch_timeout_s=2,
    api_timeout_s=0.5,
    backoff_max_s=0.5,
    lease_namespace="apportion-system",
)
TEAM_A = Queue(
    name="team-a",
    namespaces=("gpu-team-a",),
    quota={"H100-80GB": Quota(nominal=24), "mig-1g.10gb": Quota(nominal=14)},
    preemption=PreemptionPolicy(within_queue="LowerPriority"),
)


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``check``'s first true value, polled every 50 ms: a condition, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(0.05)


def waiting_pod(
    fake: Fake,
    name: str,
    gpus: int = 1,
    priority: int = 0,
    workload: str | None = None,
    gang: int | None = None,
    queue: str = "team-a",
    spec: dict[str, Any] | None = None,
    requests: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as Apportion's mutating webhook leaves a waiting one (from the recording), in
    ``queue``'s namespace; ``spec`` adds to its spec (node selector, affinity, tolerations),
    ``requests`` to its container's (CPU, memory)."""
    pod = copy.deepcopy(fake.get("pods", "patched-gpu-1", "gpu-team-a"))
    metadata = pod["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        metadata.pop(key, None)
    namespace = f"gpu-{queue}"
    metadata["name"], metadata["namespace"] = name, namespace
    metadata["labels"][keys.LABEL_QUEUE] = queue
    metadata["annotations"] = {
        keys.ANNOTATION_WORKLOAD: workload or f"{namespace}/{name}",
        keys.ANNOTATION_DECISION: "pending",
    }
    if gang is not None:
        metadata["annotations"][keys.ANNOTATION_GANG_SIZE] = str(gang)
        metadata["labels"][keys.LABEL_GANG] = (workload or name).split("/")[-1]
    container = pod["spec"]["containers"][0]["resources"]
    container["limits"]["nvidia.com/gpu"] = container["requests"]["nvidia.com/gpu"] = str(gpus)
    container["requests"].update(requests or {})
    pod["spec"]["priority"] = priority
    pod["spec"]["schedulingGates"] = [{"name": keys.GATE}]
    pod["spec"].pop("affinity", None)
    pod["spec"].update(spec or {})
    pod["status"] = {"phase": "Pending"}
    return fake.put_pod(pod)


def gates_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"].get("schedulingGates") or []
