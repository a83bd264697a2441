"""What a Pod asks of Apportion, read from the pod JSON the API server sends.

The webhook sees pods exactly as kube-apiserver serialises them (see
tests/fixtures/admission): requests already defaulted from limits for extended
resources, ``spec.priority`` resolved from the priority class, no ``metadata.name`` for
pods created from ``generateName``. This module turns that into a ``PodAsk`` — the GPU
demand (``devices``), queue, gang and priority — or into problems a user can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.catalog import Catalog, mig_resource_name
from scheduler.model import (
    MAX_PODS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Demand,
    NodeSelectorTerm,
    PodPlacement,
    Toleration,
)
from scheduler.reasons import Reason
from webhook import keys
from webhook.devices import GpuAsk, gpu_ask_of, held_devices, wants_gpus
from webhook.nodeconstraints import core_tolerations, required_affinity
from webhook.quantities import pod_requests

__all__ = [
    "ANNOTATION_PLACEMENT",
    "EvictionMark",
    "ManagedPod",
    "PodAsk",
    "PodReader",
    "controller_owner",
    "daemonset_pod",
    "decided_workload",
    "epoch_seconds",
    "format_placement",
    "gate_names",
    "held_back",
    "not_managed",
    "other_gates",
    "parse_eviction_mark",
    "parse_placement",
    "placed_by_others",
    "raw_identity",
    "rfc3339",
]


@dataclass(frozen=True, slots=True)
class PodAsk:
    namespace: str
    name: str | None
    generate_name: str | None
    gpu: GpuAsk
    queue: str | None
    """From the pod label; ``None`` means the namespace's default queue."""
    gang: str | None
    gang_size: int | None
    priority: int
    models: tuple[str, ...]
    """Acceptable GPU models (catalog names), preference order; empty = any."""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    node_affinity: tuple[NodeSelectorTerm, ...] = ()
    """Its required node affinity: where the kube-scheduler will let it go."""
    tolerations: tuple[dict[str, Any], ...] = ()
    other_gates: tuple[str, ...] = ()
    """Scheduling gates other than Apportion's: another controller holds the pod back."""
    owner: tuple[str, str] | None = None
    """(kind, name) of the controlling owner, e.g. ("Job", "train"): sizes an unsized gang."""
    jobset_jobs: int | None = None
    """A JobSet pod's ``global-replicas``: how many Jobs the JobSet has."""
    problems: tuple[str, ...] = ()
    """Why the pod can never be admitted as written; the validating webhook denies these."""
    cpu_milli: int = 0
    memory_mib: int = 0
    """What the pod asks of its node besides GPUs (``quantities.pod_requests``)."""

    @property
    def demand(self) -> Demand | None:
        """The core's per-pod demand: whole GPUs, one MIG instance or a memory need."""
        gpu = self.gpu
        if gpu.gpus:
            return Demand(gpus=gpu.gpus, models=self.models)
        if gpu.mig_profile is not None:
            return Demand(mig_profile=gpu.mig_profile, models=self.models)
        if gpu.memory_mib is not None:
            return Demand(gpu_memory_mib=gpu.memory_mib, models=self.models)
        return None


def gate_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the pod's scheduling gates, Apportion's (``keys.GATE``) among them."""
    gates = spec.get("schedulingGates")
    if not isinstance(gates, list):
        return ()
    return tuple(str(g["name"]) for g in gates if isinstance(g, dict) and g.get("name"))


def other_gates(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the pod's scheduling gates other than Apportion's."""
    return tuple(name for name in gate_names(spec) if name != keys.GATE)


def held_back(gates: Iterable[str]) -> str:
    """Why a pod another controller's gates hold back waits (webhook and queue view)."""
    return (
        f"held back by scheduling gate(s) {', '.join(gates)}, not Apportion's: decided once "
        "they are removed"
    )


def placed_by_others(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's node was chosen before Apportion could choose it: created with
    ``spec.nodeName`` (a static pod's mirror, a pod that bypasses the scheduler: the API
    server refuses a gate on it) or a DaemonSet's (pinned to its node by affinity)."""
    spec = pod.get("spec")
    return bool(isinstance(spec, dict) and spec.get("nodeName")) or daemonset_pod(pod)


def daemonset_pod(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata")
    owner = (
        controller_owner(metadata.get("ownerReferences")) if isinstance(metadata, dict) else None
    )
    return owner is not None and owner[0] == "DaemonSet"


def not_managed(pod: Mapping[str, Any], namespace_enabled: bool | None) -> str | None:
    """Why Apportion does not manage ``pod`` as it stands, by the rules its webhook
    applies at creation: it asks no GPU, it is a DaemonSet's, or its namespace did not opt
    in (``namespace_enabled``; None: not known yet, so no answer on that ground). None when
    Apportion does manage it, or may. (A ``spec.nodeName`` is no ground here: a pod the
    kube-scheduler bound since may be one Apportion admitted.)

    A pod Apportion decided (``keys.ANNOTATION_WORKLOAD``) stays Apportion's when its
    namespace opts out later: it waits in its queue and is released in fair-share order,
    not all at once by a label change."""
    if not wants_gpus(pod):
        return "it asks for no GPU"
    if daemonset_pod(pod):
        return "a DaemonSet's pod: its DaemonSet chooses its node"
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    if namespace_enabled is False and decided_workload(pod) is None:
        return (
            f"its namespace {metadata.get('namespace')} is not opted in "
            f"({keys.NAMESPACE_ENABLED}=true)"
        )
    return None


def decided_workload(pod: Mapping[str, Any]) -> str | None:
    """The workload Apportion decided ``pod`` as (``keys.ANNOTATION_WORKLOAD``); None if it
    never decided it. Apportion names a pod's workload in the pod's own namespace
    (``<namespace>/<name or gang>``): one naming another namespace came with a manifest
    copied from a pod there, so this pod is one Apportion never decided (a stray,
    ``strays.py``), not a member of that workload."""
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    annotations = metadata.get("annotations")
    workload = (
        annotations.get(keys.ANNOTATION_WORKLOAD) if isinstance(annotations, Mapping) else None
    )
    if not isinstance(workload, str) or not workload.startswith(f"{metadata.get('namespace')}/"):
        return None
    return workload


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _models(
    annotations: dict[str, str], node_selector: dict[str, str], catalog: Catalog
) -> tuple[tuple[str, ...], list[str]]:
    """Acceptable models from the annotation, else from a product nodeSelector."""
    problems: list[str] = []
    names: list[str] = []
    text = annotations.get(keys.ANNOTATION_GPU_MODELS)
    if text is not None:
        for raw in (part.strip() for part in text.split(",")):
            if not raw:
                continue
            model = catalog.get(raw)
            if model is None:
                problems.append(
                    f"metadata.annotations[{keys.ANNOTATION_GPU_MODELS}]: unknown GPU model "
                    f"{raw!r} (known: {', '.join(catalog.names())})"
                )
            elif model.name not in names:
                names.append(model.name)
    product = node_selector.get(keys.NODE_PRODUCT)
    if product is not None:
        model = catalog.get(product)
        if model is None:
            problems.append(
                f"spec.nodeSelector[{keys.NODE_PRODUCT}]: {product!r} is not a GPU product "
                "Apportion knows"
            )
        elif names and model.name not in names:
            problems.append(
                f"spec.nodeSelector[{keys.NODE_PRODUCT}] = {product!r} contradicts "
                f"{keys.ANNOTATION_GPU_MODELS} = {text!r}"
            )
        else:
            names = [model.name]
    return tuple(names), problems


def _gang(
    labels: dict[str, str], annotations: dict[str, str], spec: dict[str, Any]
) -> tuple[str | None, int | None, list[str]]:
    """Gang name and size, when the pod says them.

    Explicit keys first: Apportion's own, or Kueue's pod-group keys (for migration). Then
    owners that are gangs by nature: a PyTorchJob's pods (their size is the WORLD_SIZE the
    training operator puts in every pod) and a JobSet's pods (sized by the controller from
    the JobSet's Jobs, which it watches).
    """
    for label, size_key in (
        (keys.LABEL_GANG, keys.ANNOTATION_GANG_SIZE),
        (keys.KUEUE_GROUP_LABEL, keys.KUEUE_GROUP_TOTAL),
    ):
        name = labels.get(label)
        if name is None:
            continue
        text = annotations.get(size_key)
        if text is None:
            return name, None, []
        size = _positive(text)
        if size is None:
            return (
                name,
                None,
                [
                    f"metadata.annotations[{size_key}]: {text!r} is not a whole number "
                    f"from 1 to {MAX_PODS:,}"
                ],
            )
        return name, size, []
    if keys.PYTORCHJOB_NAME in labels:
        return labels[keys.PYTORCHJOB_NAME], _positive(_env(spec, "WORLD_SIZE")), []
    if keys.JOBSET_NAME in labels:
        return labels[keys.JOBSET_NAME], None, []
    return None, None, []


def _env(spec: dict[str, Any], name: str) -> str | None:
    """A literal environment value of the pod's first container that sets ``name``."""
    for container in spec.get("containers") or ():
        for env in (container.get("env") or ()) if isinstance(container, dict) else ():
            if isinstance(env, dict) and env.get("name") == name and "value" in env:
                return str(env["value"])
    return None


def format_placement(placement: PodPlacement) -> str:
    """``node:0,1`` (whole GPUs) or ``node:3@4`` (MIG slice at start 4 of GPU 3)."""
    gpus = ",".join(str(g) for g in placement.gpus)
    return f"{placement.node}:{gpus}" + (
        f"@{placement.mig_start}" if placement.mig_start is not None else ""
    )


def parse_placement(text: str) -> PodPlacement | None:
    node, sep, rest = text.rpartition(":")
    if not sep or not node:
        return None
    gpus, _, start = rest.partition("@")
    try:
        indices = tuple(int(g) for g in gpus.split(","))
        return PodPlacement(node=node, gpus=indices, mig_start=int(start) if start else None)
    except ValueError:
        return None


ANNOTATION_PLACEMENT = keys.PREFIX + "placement"
"""Where Apportion placed the pod (``node:0,1``), so a restart keeps its bookkeeping."""


@dataclass(frozen=True, slots=True)
class EvictionMark:
    """``keys.ANNOTATION_EVICTED_FOR`` on a running pod: its workload's eviction started,
    for ``beneficiary``, and is to be completed until ``until`` (epoch seconds)."""

    beneficiary: str
    reason: Reason
    until: int

    def text(self) -> str:
        """The annotation's value: ``2026-11-25T17:35:04Z PreemptedByHigherPriority
        gpu-team-a/urgent``."""
        return f"{rfc3339(self.until)} {self.reason.value} {self.beneficiary}"


_EVICTION_REASONS = frozenset({Reason.PREEMPTED_PRIORITY.value, Reason.PREEMPTED_RECLAIM.value})
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def parse_eviction_mark(text: str | None) -> EvictionMark | None:
    """``EvictionMark.text`` read back; None for anything else (a mark Apportion did not
    write is no reason to evict a workload)."""
    if text is None:
        return None
    parts = text.split(" ", 2)
    if len(parts) != 3:
        return None
    stamp, reason, beneficiary = parts
    if not _STAMP.fullmatch(stamp) or reason not in _EVICTION_REASONS:
        return None
    namespace, slash, name = beneficiary.partition("/")
    if not (slash and namespace and name.strip()) or beneficiary != beneficiary.strip():
        return None
    until = epoch_seconds(stamp)
    return EvictionMark(beneficiary, Reason(reason), until) if until else None


@dataclass(frozen=True, slots=True)
class ManagedPod:
    """One pod of a managed workload as observed in the API: waiting (gated) or admitted."""

    namespace: str
    name: str
    workload: str
    queue: str
    demand: Demand
    priority: int
    created: int
    gang_size: int
    gated: bool
    node: str | None = None
    started: int | None = None
    """When the kubelet took the pod to start it (``status.startTime``, epoch seconds); None
    before. Not its creation: a pod may wait gated for hours before its GPUs are its own."""
    in_gang: bool = False
    """Its workload is a gang's (Apportion's gang label, Kueue's pod group, a PyTorchJob, a
    JobSet), not a pod's own: a gang and a pod of the same name must not be decided as one."""
    placement: PodPlacement | None = None
    flavor: str | None = None
    foreign: bool = False
    """A bound GPU pod Apportion did not decide (created before it was installed, or in a
    namespace that did not opt in): its devices are simply not capacity."""
    extra_slices: tuple[str, ...] = ()
    """A foreign pod's MIG instances (profiles) beside its ``demand``: it may hold several
    kinds of device, or several instances (``held_devices``)."""
    cpu_milli: int = 0
    memory_mib: int = 0
    """Its CPU and memory requests (``quantities.pod_requests``)."""
    nominated_until: int = 0
    """Epoch seconds until which its workload goes first (``keys.ANNOTATION_NOMINATED``)."""
    evicted_for: EvictionMark | None = None
    """Its workload's eviction started (``keys.ANNOTATION_EVICTED_FOR``), expired or not."""
    node_selector: dict[str, str] = field(default_factory=dict)
    node_affinity: tuple[NodeSelectorTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    """Where the pod may go, as its spec says (with the tolerations Apportion added at
    creation): a waiting pod is decided again each cycle, and must land where it can run."""
    other_gates: tuple[str, ...] = ()
    """Scheduling gates other than Apportion's: until they are gone the pod cannot run, so
    it is not decided (GPUs admitted to it would sit reserved and idle)."""
    raw: dict[str, Any] | None = field(default=None, compare=False)
    """What the controller reads of the pod object (``kept``): for its patches, its Events,
    its stuck watch."""

    @property
    def identity(self) -> tuple[str, str, str]:
        """Namespace, name and uid: the same pod, not one re-created under its name."""
        uid = str(((self.raw or {}).get("metadata") or {}).get("uid") or "")
        return self.namespace, self.name, uid

    @property
    def annotations(self) -> Mapping[str, Any]:
        """Its annotations as last seen: Apportion's only (``kept``)."""
        annotations = ((self.raw or {}).get("metadata") or {}).get("annotations")
        return annotations if isinstance(annotations, Mapping) else {}

    @property
    def terminating(self) -> bool:
        """Being deleted (an eviction or a delete was accepted): a bound one still holds its
        devices until it is gone."""
        return bool(((self.raw or {}).get("metadata") or {}).get("deletionTimestamp"))


KEPT_SPEC = ("schedulingGates", "affinity")
KEPT_STATUS = ("conditions",)


def kept(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the controller keeps of a GPU pod it watches: the metadata but its managed
    fields and other tools' annotations (uid, resourceVersion, Apportion's annotations,
    owners, deletion: what its patches test and extend, what its Events name), the spec its
    admission patches (``KEPT_SPEC``), the conditions the stuck watch reads. The rest
    (containers, volumes, container statuses, managed fields, kubectl's last applied
    configuration) was most of a pod's memory, held for every GPU pod in the cluster."""
    metadata = pod.get("metadata")
    spec = pod.get("spec")
    status = pod.get("status")
    return {
        "metadata": {
            k: _own_annotations(v) if k == "annotations" else v
            for k, v in metadata.items()
            if k != "managedFields"
        }
        if isinstance(metadata, Mapping)
        else {},
        "spec": {k: spec[k] for k in KEPT_SPEC if k in spec} if isinstance(spec, Mapping) else {},
        "status": {k: status[k] for k in KEPT_STATUS if k in status}
        if isinstance(status, Mapping)
        else {},
    }


def _own_annotations(annotations: object) -> object:
    """Apportion's annotations; still a map when there are none of them, as a patch adding
    one must know whether the pod has a map to add it to (``patches.set_metadata``)."""
    if not isinstance(annotations, Mapping):
        return annotations
    return {k: v for k, v in annotations.items() if k.startswith(keys.PREFIX)}


def epoch_seconds(timestamp: object) -> int:
    """RFC 3339 ``2026-11-25T17:25:04Z`` → seconds since the epoch (0 if absent)."""
    from datetime import datetime

    if not isinstance(timestamp, str):
        return 0
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch → RFC 3339 (``epoch_seconds`` reads it back)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def raw_identity(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    """Namespace, name and uid of a pod object as the API serves it."""
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return (
        str(metadata.get("namespace", "")),
        str(metadata.get("name", "")),
        str(metadata.get("uid") or ""),
    )


def _positive(text: str | None) -> int | None:
    """A whole number from 1 to ``MAX_PODS`` written in ASCII digits, else None.

    Not ``str.isdigit`` alone: it also takes '²', which ``int`` refuses, and ``int`` refuses
    more than 4,300 digits; a user's annotation must not make the webhook fail, nor a
    workload of more pods than the core takes (a count past any cluster)."""
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        return None
    value = int(text)
    return value if 0 < value <= MAX_PODS else None


def controller_owner(references: object) -> tuple[str, str] | None:
    """(kind, name) of the ``ownerReferences`` entry with ``controller: true``: the object
    that recreates the pod when it is gone (a Job, a ReplicaSet); None for a bare pod."""
    if not isinstance(references, list):
        return None
    for ref in references:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return str(ref.get("kind", "")), str(ref.get("name", ""))
    return None


class PodReader:
    """Reads pods against one catalog (MIG resource names are the catalog's)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.mig_profiles = {mig_resource_name(p): p for p in catalog.mig_profile_names()}

    def ask(self, pod: dict[str, Any], namespace: str) -> PodAsk:
        """Everything Apportion needs from a pod; problems are collected, never raised."""
        metadata = pod.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        spec = pod.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        labels = _str_map(metadata.get("labels"))
        annotations = _str_map(metadata.get("annotations"))
        gpu, problems = gpu_ask_of(spec, annotations, self.mig_profiles)
        node_selector = _str_map(spec.get("nodeSelector"))
        node_affinity, affinity_problems = required_affinity(spec)
        models, model_problems = _models(annotations, node_selector, self.catalog)
        tolerations = spec.get("tolerations")
        gang, gang_size, gang_problems = _gang(labels, annotations, spec)
        priority = spec.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            priority = 0
        # The API server keeps it within 32 bits; a recorded or hand-made pod may not.
        priority = min(max(priority, MIN_PRIORITY), MAX_PRIORITY)
        name = metadata.get("name")
        generate_name = metadata.get("generateName")
        cpu_milli, memory_mib = pod_requests(spec)
        return PodAsk(
            namespace=namespace,
            name=name if isinstance(name, str) and name else None,
            generate_name=generate_name if isinstance(generate_name, str) else None,
            gpu=gpu,
            queue=labels.get(keys.LABEL_QUEUE),
            gang=gang,
            gang_size=gang_size,
            priority=priority,
            models=models,
            labels=labels,
            annotations=annotations,
            node_selector=node_selector,
            node_affinity=node_affinity,
            tolerations=tuple(t for t in tolerations or () if isinstance(t, dict))
            if isinstance(tolerations, list)
            else (),
            other_gates=other_gates(spec),
            owner=controller_owner(metadata.get("ownerReferences")),
            jobset_jobs=_positive(
                annotations.get(keys.JOBSET_REPLICAS) or labels.get(keys.JOBSET_REPLICAS)
            ),
            problems=(*problems, *affinity_problems, *model_problems, *gang_problems),
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
        )

    def observed(self, pod: dict[str, Any]) -> ManagedPod | None:
        """A pod holding or waiting for GPUs: one Apportion decided (it carries the workload
        annotation), or a *foreign* bound GPU pod; None for everything else. (A pod carrying
        Apportion's gate that it never decided is adopted first, ``strays.py``: then it is.)

        Terminal pods (Succeeded, Failed) hold nothing and are not returned; terminating
        bound ones still hold their devices until they are gone, terminating unbound ones
        never will (an evicted pod the kube-scheduler could not place, kept a while by its
        Job's tracking finalizer). Pods asking no GPU (most of a cluster's, and what
        ``hostpods.host_pod_of`` reads) are turned away first, cheaply.
        """
        if not wants_gpus(pod):
            return None
        metadata = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return None
        if metadata.get("deletionTimestamp") and not (pod.get("spec") or {}).get("nodeName"):
            return None
        annotations = _str_map(metadata.get("annotations"))
        workload = decided_workload(pod)
        spec = pod.get("spec") or {}
        namespace = str(metadata.get("namespace") or "")
        name = str(metadata.get("name") or "")
        ask = self.ask(pod, namespace)
        demand = ask.demand
        node = spec.get("nodeName") or None
        gated = keys.GATE in gate_names(spec)
        if gated and placed_by_others(pod):
            return None  # a DaemonSet's: the controller removes the gate (``not_managed``)
        if workload is None:
            whole, slices = held_devices(spec, self.mig_profiles)
            if node is None or not (whole or slices):
                return None
            return ManagedPod(
                namespace=namespace,
                name=name,
                workload=f"foreign:{namespace}/{name}",
                queue="",
                demand=Demand(gpus=whole) if whole else Demand(mig_profile=slices[0]),
                extra_slices=slices if whole else slices[1:],
                priority=ask.priority,
                created=0,
                gang_size=1,
                gated=False,
                node=node,
                foreign=True,
                cpu_milli=ask.cpu_milli,
                memory_mib=ask.memory_mib,
                raw=kept(pod),
            )
        if demand is None or demand.gpu_memory_mib is not None:
            return None  # Apportion turns a memory need into a device at creation
        if ask.problems or ask.queue is None:
            return None
        placement_text = annotations.get(ANNOTATION_PLACEMENT)
        return ManagedPod(
            namespace=namespace,
            name=name,
            workload=workload,
            queue=ask.queue,
            demand=demand,
            priority=ask.priority,
            created=epoch_seconds(metadata.get("creationTimestamp")),
            gang_size=ask.gang_size or 1,
            gated=gated,
            node=node,
            started=epoch_seconds((pod.get("status") or {}).get("startTime")) or None,
            in_gang=ask.gang is not None,
            placement=parse_placement(placement_text) if placement_text else None,
            cpu_milli=ask.cpu_milli,
            memory_mib=ask.memory_mib,
            nominated_until=epoch_seconds(annotations.get(keys.ANNOTATION_NOMINATED)),
            evicted_for=parse_eviction_mark(annotations.get(keys.ANNOTATION_EVICTED_FOR)),
            node_selector=ask.node_selector,
            node_affinity=ask.node_affinity,
            tolerations=core_tolerations(ask.tolerations),
            other_gates=ask.other_gates,
            raw=kept(pod),
        )
