"""The GPU devices a pod asks, read as the kube-scheduler counts them.

Whole GPUs (``nvidia.com/gpu``) and MIG instances (``nvidia.com/mig-<profile>``), not
time-sliced replicas (``.shared``), from the app containers, the sidecars and the init
containers (Kubernetes' effective-request rule); the memory need Apportion turns into a
device. ``gpu_ask_of`` is what Apportion admits (one kind, one MIG instance) with the
problems a user can act on; ``held_devices`` is everything a bound pod holds, whatever
Apportion would make of it. The "not a GPU pod" answer (``wants_gpus``) comes first on
every request, so it must be cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from scheduler.catalog import mig_resource_name
from scheduler.model import Demand
from webhook import keys
from webhook.quantities import QuantityError, parse_bytes_mib, parse_count

__all__ = ["GpuAsk", "gpu_ask_of", "held_devices", "resource_of", "wants_gpus"]


def _count(text: object, where: str) -> int:
    """An extended-resource count: Kubernetes only allows whole numbers there."""
    try:
        return parse_count(str(text))
    except QuantityError as error:
        raise QuantityError(f"{where}: {error}") from None


@dataclass(frozen=True, slots=True)
class GpuAsk:
    """The GPU part of a pod: exactly one of whole GPUs, one MIG instance, or a memory need."""

    gpus: int = 0
    mig_profile: str | None = None
    memory_mib: int | None = None
    container: int = 0
    """Index of the container that gets the device when Apportion rewrites the request."""


def _resources(container: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = container.get("resources") if isinstance(container, dict) else None
    if not isinstance(resources, dict):
        return {}, {}
    requests = resources.get("requests")
    limits = resources.get("limits")
    return (
        requests if isinstance(requests, dict) else {},
        limits if isinstance(limits, dict) else {},
    )


def _is_gpu_resource(name: str) -> bool:
    """Whole GPUs or a MIG instance; not time-sliced replicas (``keys.SHARED_SUFFIX``),
    which Apportion neither counts on nodes nor manages on pods."""
    return name == keys.GPU_RESOURCE or (
        name.startswith(keys.MIG_RESOURCE_PREFIX) and not name.endswith(keys.SHARED_SUFFIX)
    )


def wants_gpus(pod: Any) -> bool:
    """Cheap test: does this pod ask for GPUs at all (resources or the memory annotation)?

    A GPU resource of ``0`` (charts template it for CPU-only runs) asks for nothing, in
    any form (``0``, the API server's, or ``0.0``): as ``gpu_ask_of`` reads it, so that a
    pod said to want GPUs always has a demand or a problem."""
    if not isinstance(pod, dict):
        return False
    metadata = pod.get("metadata")
    if isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and _asks_memory(
            annotations.get(keys.ANNOTATION_GPU_MEMORY)
        ):
            return True
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return False
    for group in ("containers", "initContainers"):
        containers = spec.get(group)
        if not isinstance(containers, list):
            continue
        for container in containers:
            requests, limits = _resources(container)
            for quantities in (requests, limits):
                for name, value in quantities.items():
                    if _is_gpu_resource(name) and _nonzero(value):
                        return True
    return False


def _asks_memory(value: object) -> bool:
    """A GPU-memory annotation that asks for something: empty or zero (``0``, ``0Gi``) asks
    for nothing, as a GPU resource of 0 does (charts template both for CPU-only runs)."""
    return value is not None and str(value).strip() != "" and _nonzero(value)


def _nonzero(value: object) -> bool:
    """A GPU quantity that asks for something (or is unreadable: a problem to report)."""
    text = str(value).strip()
    if text == "0":
        return False  # the API server's zero, without parsing
    try:
        return parse_count(text) != 0
    except QuantityError:
        return True


@dataclass(frozen=True, slots=True)
class _Asker:
    """One container's GPU request: ``kind`` container, init container or sidecar."""

    kind: str
    name: str
    count: int


def _several_kinds(totals: dict[str, int], askers: dict[str, list[_Asker]]) -> list[str]:
    """Why a pod asking several kinds of GPU device is refused, naming who asks what.

    The app containers asking one kind and init containers another (a MIG slice to
    prepare beside whole GPUs to train): Kubernetes accepts the pod and holds both devices
    for its whole life, but Apportion cannot charge one pod to two flavors and letting it
    through unmanaged would escape its quota, so each such init container is named with
    what to ask instead."""
    app = {r for r, who in askers.items() if any(a.kind == "container" for a in who)}
    others = [(r, a) for r, who in sorted(askers.items()) if r not in app for a in who]
    if len(app) != 1:
        who = "; ".join(
            f"{r}: {totals[r]} by " + ", ".join(f"{a.kind} {a.name}" for a in askers.get(r, ()))
            for r in sorted(totals)
        )
        return [
            f"the pod requests several kinds of GPU device ({who}); a pod gets whole GPUs "
            "or one MIG instance"
        ]
    (resource,) = app
    held = sum(a.count for a in askers[resource] if a.kind == "container")
    problems = []
    for other, asker in others:
        side = " (a sidecar)" if asker.kind == "sidecar" else ""
        instead = (
            "added to what the app containers hold: a sidecar runs beside them"
            if asker.kind == "sidecar"
            else f"up to {held}, which the pod holds anyway"
        )
        problems.append(
            f"spec.initContainers[{asker.name}]{side} requests {other}: {asker.count} beside "
            f"{resource}: {held} of the app containers; Kubernetes holds both for the pod's "
            "whole life (each resource at the larger of what the init containers and the "
            "app containers request), and Apportion admits a pod on whole GPUs or on one "
            f"MIG instance, not both: request {resource} in {asker.name} instead ({instead}), "
            "or no GPU there"
        )
    return problems


@dataclass(frozen=True, slots=True)
class _DeviceRequests:
    totals: dict[str, int]
    """Per GPU resource, the pod's effective request (only those above 0)."""
    askers: dict[str, list[_Asker]]
    first_gpu_container: int | None
    problems: list[str]
    """Requests that cannot be read, or whose request and limit differ (left out)."""


def _device_requests(spec: dict[str, Any]) -> _DeviceRequests:
    """Per GPU resource, what the pod holds, counted as kube-scheduler counts it (as
    ``quantities.pod_requests`` does for CPU): the app containers and the sidecars (init
    containers with ``restartPolicy: Always``) hold their devices together; each other
    init container runs alone beside the sidecars started before it; the pod needs the
    larger."""
    problems: list[str] = []
    totals: dict[str, int] = {}
    askers: dict[str, list[_Asker]] = {}
    first_gpu_container: int | None = None
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for group in ("containers", "initContainers"):
        containers = spec.get(group)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            requests, limits = _resources(container)
            cname = container.get("name", index) if isinstance(container, dict) else index
            sidecar = isinstance(container, dict) and container.get("restartPolicy") == "Always"
            for resource in sorted({*requests, *limits}):
                if not _is_gpu_resource(resource):
                    continue
                where = f"spec.{group}[{cname}].resources"
                try:
                    limit = (
                        _count(limits[resource], f"{where}.limits.{resource}")
                        if (resource in limits)
                        else None
                    )
                    request = (
                        _count(requests[resource], f"{where}.requests.{resource}")
                        if (resource in requests)
                        else limit
                    )
                except QuantityError as error:
                    problems.append(str(error))
                    continue
                if limit is None:
                    problems.append(
                        f"{where}: {resource} is requested ({request}) without a limit; GPU "
                        "requests and limits must be equal"
                    )
                    continue
                if request != limit:
                    problems.append(
                        f"{where}: {resource} request {request} != limit {limit}; GPU requests "
                        "and limits must be equal"
                    )
                    continue
                if limit > 0:
                    kind = "container" if group == "containers" else "init container"
                    kind = "sidecar" if sidecar else kind
                    askers.setdefault(resource, []).append(_Asker(kind, str(cname), limit))
                if group == "containers":
                    totals[resource] = totals.get(resource, 0) + limit
                    if first_gpu_container is None and limit > 0:
                        first_gpu_container = index
                elif sidecar:
                    sidecars[resource] = sidecars.get(resource, 0) + limit
                else:
                    alone = sidecars.get(resource, 0) + limit
                    init_max[resource] = max(init_max.get(resource, 0), alone)
    for resource in sidecars.keys() | init_max.keys():
        running = totals.get(resource, 0) + sidecars.get(resource, 0)
        totals[resource] = max(running, init_max.get(resource, 0))
    totals = {r: n for r, n in totals.items() if n > 0}
    return _DeviceRequests(totals, askers, first_gpu_container, problems)


def held_devices(spec: dict[str, Any], mig_profiles: dict[str, str]) -> tuple[int, tuple[str, ...]]:
    """The whole GPUs and MIG instances (a profile per instance) a bound pod holds,
    whatever Apportion would make of it: a pod Apportion does not manage may ask several
    kinds (a MIG slice in an init container beside whole GPUs) or several MIG instances,
    and holds every one. MIG resources no GPU model Apportion knows offers are left out."""
    totals = _device_requests(spec).totals
    slices = tuple(
        profile
        for resource, count in sorted(totals.items())
        if (profile := mig_profiles.get(resource)) is not None
        for _ in range(count)
    )
    return totals.get(keys.GPU_RESOURCE, 0), slices


def gpu_ask_of(
    spec: dict[str, Any], annotations: dict[str, str], mig_profiles: dict[str, str]
) -> tuple[GpuAsk, list[str]]:
    """The pod's effective GPU demand (``_device_requests``) and the problems that make
    it unusable: Apportion admits a pod on whole GPUs, one MIG instance or a memory need."""
    requests = _device_requests(spec)
    totals, problems = requests.totals, requests.problems
    first_gpu_container = requests.first_gpu_container
    memory_text = annotations.get(keys.ANNOTATION_GPU_MEMORY)
    memory_mib: int | None = None
    if memory_text is not None and _asks_memory(memory_text):
        try:
            memory_mib = parse_bytes_mib(memory_text)
        except QuantityError as error:
            problems.append(f"metadata.annotations[{keys.ANNOTATION_GPU_MEMORY}]: {error}")
    if memory_mib is not None and totals:
        problems.append(
            f"metadata.annotations[{keys.ANNOTATION_GPU_MEMORY}] asks Apportion to choose the "
            f"device, but the pod also requests {', '.join(sorted(totals))}; use one or the other"
        )
    if len(totals) > 1:
        problems += _several_kinds(totals, requests.askers)
    if problems:
        return GpuAsk(), problems
    container = first_gpu_container or 0
    if memory_mib is not None:
        return GpuAsk(memory_mib=memory_mib, container=container), []
    if not totals:
        return GpuAsk(), []
    ((resource, amount),) = totals.items()
    if resource == keys.GPU_RESOURCE:
        return GpuAsk(gpus=amount, container=container), []
    profile = mig_profiles.get(resource)
    if profile is None:
        # The catalog's MIG resources are some sixty: named all, the message ran past a
        # thousand characters (a shadow-mode warning of that, cut by the API server).
        close = get_close_matches(resource, sorted(mig_profiles), n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return GpuAsk(), [
            f"{resource} is not a MIG profile of any GPU model Apportion knows ({hint}"
            "'apportion catalog' lists them)"
        ]
    if amount != 1:
        return GpuAsk(), [
            f"the pod requests {amount} × {resource}; Apportion admits one MIG instance per "
            "pod (use several pods, or whole GPUs)"
        ]
    return GpuAsk(mig_profile=profile, container=container), []


def resource_of(demand: Demand) -> tuple[str, int]:
    """The extended resource and count a pod asks for a concrete device demand, as it is
    written in a pod spec (``nvidia.com/mig-1g.10gb: 1``, ``nvidia.com/gpu: 2``)."""
    if demand.mig_profile is not None:
        return mig_resource_name(demand.mig_profile), 1
    return keys.GPU_RESOURCE, demand.gpus or 1
