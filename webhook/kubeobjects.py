"""Kubernetes Nodes and bound Pods as the core's ``Node`` and running ``Workload`` values.

Nodes carry what GPU Feature Discovery and the NVIDIA device plugin publish (see
tests/fixtures/objects): ``nvidia.com/gpu.product`` and ``nvidia.com/gpu.count`` labels,
and allocatable ``nvidia.com/gpu`` (whole GPUs; those only in capacity are unhealthy) plus
``nvidia.com/mig-<profile>`` (instances, mixed strategy; a node under the single strategy is
left out, ``_single_strategy``). The API does not say which physical GPU or MIG slice a pod
holds; the core needs indices, so ``NodeLedger`` assigns them consistently — lowest free
first — which is exact for counting and for every decision the core makes. (Foreign pods
are counted from the highest, ``observed.foreign_hold``, so the two seldom meet.)
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.catalog import Catalog, GpuModel, MigProfile, mig_resource_name
from scheduler.mig import pack_profiles
from scheduler.model import Gpu, MigSlice, Node, PodPlacement, Taint
from webhook import keys
from webhook.quantities import QuantityError, parse_bytes_mib, parse_cpu_milli

__all__ = [
    "SHARED_PRODUCT_SUFFIX",
    "Free",
    "FreeDevices",
    "Ledgers",
    "NodeLedger",
    "free_on",
    "node_from_object",
    "node_problem",
]

SHARED_PRODUCT_SUFFIX = "-SHARED"
"""What GFD appends to a product label under time-slicing or MPS without renaming."""

_MIG_SINGLE = re.compile(r"-MIG-(\d+g\.\d+gb.*|INVALID)$")
"""GFD's product label suffix under the device plugin's single MIG strategy."""


def _single_strategy(name: str, product: str) -> str:
    """Why a node under the device plugin's single MIG strategy is left out, or ''. It
    offers every MIG device as ``nvidia.com/gpu``, which a pod cannot tell from a whole GPU
    elsewhere (its request, fixed at creation, would mean a slice on one node and a GPU on
    another), and GFD's ``nvidia.com/gpu.count`` counts MIG devices: modelled as whole
    GPUs it was over-counted (56 GPUs for an 8-GPU node in all-1g.10gb)."""
    if _MIG_SINGLE.search(product.removesuffix(SHARED_PRODUCT_SUFFIX)) is None:
        return ""
    return (
        f"node {name} uses the NVIDIA device plugin's single MIG strategy "
        f"({keys.NODE_PRODUCT}={product}): each MIG device is offered as {keys.GPU_RESOURCE}, "
        "which Apportion cannot tell from a whole GPU; left out of its capacity (the mixed "
        "strategy is supported)"
    )


def _int(text: object) -> int:
    value = str(text).strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else 0


def _cpu_milli(text: object) -> int | None:
    try:
        return parse_cpu_milli(str(text))
    except QuantityError:
        return None


def _memory_mib(text: object) -> int | None:
    try:
        return parse_bytes_mib(str(text))
    except QuantityError:
        return None


def _layout(model: GpuModel, instances: list[MigProfile], gpus: int) -> list[tuple[MigSlice, ...]]:
    """Spread the advertised MIG instances over the node's MIG GPUs, largest first."""
    layouts: list[tuple[MigSlice, ...]] = [() for _ in range(gpus)]
    for profile in sorted(instances, key=lambda p: (-p.memory_slices, -p.compute_slices)):
        for index, base in enumerate(layouts):
            packed = pack_profiles(model, [profile], base)
            if packed is not None:
                layouts[index] = packed
                break
    return layouts


def node_from_object(obj: dict[str, Any], catalog: Catalog) -> tuple[Node | None, str]:
    """The core's view of a Node object; ``None`` with the reason when Apportion counts no
    GPUs of it ('' for a node without GPUs, nothing worth saying)."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    product = labels.get(keys.NODE_PRODUCT)
    if product is None:
        return None, ""
    if why := _single_strategy(name, product):
        return None, why
    model = catalog.get(product.removesuffix(SHARED_PRODUCT_SUFFIX))
    if model is None:
        return None, f"node {name}: GPU product {product!r} is not in the catalog; left out"
    status = obj.get("status") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    capacity = status.get("capacity") or {}

    def offered(resource: str) -> tuple[int, int]:
        """(allocatable, present) devices of a resource. The kubelet counts a device its
        plugin does not offer (unhealthy, or the plugin restarting: none at all for a
        while) in capacity only. Pods may still run on it, so it stays, unhealthy: their
        devices stay held and charged, and nothing new lands there."""
        usable = _int(allocatable.get(resource, 0))
        return usable, max(usable, _int(capacity.get(resource, 0)))

    whole, present = offered(keys.GPU_RESOURCE)
    instances: list[MigProfile] = []
    withheld_mig: dict[str, int] = {}
    """MIG profile → instances present but not offered."""
    for profile in model.mig_profiles:
        usable, there = offered(mig_resource_name(profile.name))
        instances += [profile] * there
        withheld_mig[profile.name] = there - usable
    per_gpu = model.mig_compute_slices or 1
    mig_gpus = _int(labels.get("nvidia.com/gpu.count", 0)) - present
    if instances and mig_gpus <= 0:
        mig_gpus = -(-sum(p.compute_slices for p in instances) // per_gpu)
    mig_gpus = max(mig_gpus, 0) if instances else 0
    spec = obj.get("spec") or {}
    problem = node_problem(obj)
    withheld = f"its device plugin offers {whole} of the node's {present} GPUs"
    gpus = [
        Gpu(
            index=i,
            model=model.name,
            healthy=not problem and i < whole,
            health_reason=problem or (withheld if i >= whole else ""),
        )
        for i in range(present)
    ]
    offered_mig = len(instances) - sum(withheld_mig.values())
    short = f"its device plugin offers {offered_mig} of the node's {len(instances)} MIG instances"
    for offset, layout in enumerate(_layout(model, instances, mig_gpus)):
        reason = problem or (short if _withheld_from(layout, withheld_mig) else "")
        gpus.append(
            Gpu(
                index=present + offset,
                model=model.name,
                mig=layout,
                healthy=not reason,
                health_reason=reason,
            )
        )
    taints = tuple(
        Taint(
            key=str(t.get("key", "")),
            value=str(t.get("value", "")),
            effect=t.get("effect", "NoSchedule"),
        )
        for t in spec.get("taints") or ()
        if isinstance(t, dict)
        and t.get("effect") in ("NoSchedule", "PreferNoSchedule", "NoExecute")
    )
    node = Node(
        name=name,
        labels=labels,
        taints=taints,
        gpus=tuple(gpus),
        cpu_milli=_cpu_milli(allocatable.get("cpu", "")),
        memory_mib=_memory_mib(allocatable.get("memory", "")),
    )
    return node, ""


def _withheld_from(layout: tuple[MigSlice, ...], withheld: dict[str, int]) -> bool:
    """Whether this MIG GPU is out of service for instances its device plugin withholds.
    The API does not say which GPU's they are: the first GPUs holding such profiles take
    the blame (``withheld`` counts down), as many as the missing instances need."""
    hit = [s.profile for s in layout if withheld.get(s.profile, 0) > 0]
    for name in hit:
        withheld[name] = max(0, withheld[name] - 1)
    return bool(hit)


def node_problem(obj: dict[str, Any]) -> str:
    """Why new work must not land on this Node object (cordoned, not Ready), or ''."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if spec.get("unschedulable"):
        return "node is cordoned (spec.unschedulable)"
    for condition in status.get("conditions") or ():
        ready = isinstance(condition, dict) and condition.get("type") == "Ready"
        if ready and condition.get("status") != "True":
            return f"node is not Ready ({condition.get('reason') or condition.get('status')})"
    return ""


Free = tuple[tuple[int, ...], dict[str, tuple[tuple[int, int], ...]]]
"""A node's free whole GPU indices and, per MIG profile, its free slices (gpu, start)."""


def free_on(node: Node) -> Free:
    """What of ``node`` no pod outside the workloads holds (``Gpu.held``), lowest first."""
    whole: list[int] = []
    slices: dict[str, list[tuple[int, int]]] = {}
    for gpu in node.gpus:
        if gpu.mig is None:
            if not gpu.held:
                whole.append(gpu.index)
        else:
            for mig in gpu.mig:
                if not mig.held:
                    slices.setdefault(mig.profile, []).append((gpu.index, mig.start))
    return tuple(whole), {profile: tuple(free) for profile, free in slices.items()}


class FreeDevices:
    """Per node, ``free_on`` kept for the next build while the node's GPUs are the same
    tuple (a node changed, or with foreign pods' devices marked held anew, has new ones):
    working it out for every node, MIG slice by slice, took 17 ms a snapshot at 4,000
    nodes. ``LiveCluster`` keeps one for builds on any thread, under its lock or not: an
    entry is stored whole and never changed, so any thread's is the one every other would
    make; ``keep_only`` (the lock held) drops the nodes gone."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[Gpu, ...], Free]] = {}

    def of(self, node: Node) -> Free:
        kept = self._kept.get(node.name)
        if kept is not None and kept[0] is node.gpus:
            return kept[1]
        free = free_on(node)
        self._kept[node.name] = (node.gpus, free)
        return free

    def keep_only(self, names: Container[str]) -> None:
        self._kept = {name: kept for name, kept in self._kept.items() if name in names}


@dataclass(slots=True)
class NodeLedger:
    """Which GPU indices and MIG slices of one node are taken, for building placements."""

    node: Node
    free_whole: list[int] = field(default_factory=list)
    free_slices: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Node, free: Free) -> NodeLedger:
        """The node's ledger, nothing taken yet (``free``: ``free_on(node)``)."""
        whole, slices = free
        return cls(node, list(whole), {profile: list(s) for profile, s in slices.items()})

    def take_whole(self, count: int) -> PodPlacement | None:
        if count > len(self.free_whole) or count <= 0:
            return None
        taken, self.free_whole = self.free_whole[:count], self.free_whole[count:]
        return PodPlacement(node=self.node.name, gpus=tuple(taken))

    def take_slice(self, profile: str) -> PodPlacement | None:
        free = self.free_slices.get(profile)
        if not free:
            return None
        gpu, start = free.pop(0)
        return PodPlacement(node=self.node.name, gpus=(gpu,), mig_start=start)

    def claim(self, placement: PodPlacement) -> bool:
        """Mark a placement the core chose as taken; False if it is not free here."""
        if placement.mig_start is not None:
            for _profile, free in self.free_slices.items():
                key = (placement.gpus[0], placement.mig_start)
                if key in free:
                    free.remove(key)
                    return True
            return False
        if not set(placement.gpus) <= set(self.free_whole):
            return False
        self.free_whole = [i for i in self.free_whole if i not in placement.gpus]
        return True


class Ledgers:
    """A build's ledgers by node name, each made when first asked for: most nodes hold
    none of Apportion's running pods or admissions (2,412 of 4,000 at (c)), and making
    theirs cost more than placing every pod."""

    __slots__ = ("_free", "_made", "_nodes")

    def __init__(self, nodes: Mapping[str, Node], free: FreeDevices | None = None) -> None:
        self._nodes = nodes
        self._free = free
        self._made: dict[str, NodeLedger] = {}

    def get(self, name: str) -> NodeLedger | None:
        """The ledger of node ``name``, None if it is not one of the build's nodes."""
        ledger = self._made.get(name)
        if ledger is None:
            node = self._nodes.get(name)
            if node is None:
                return None
            free = free_on(node) if self._free is None else self._free.of(node)
            ledger = self._made[name] = NodeLedger.of(node, free)
        return ledger
