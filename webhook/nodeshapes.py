"""What one node of each GPU model can ever hold: what "can this pod ever fit" checks need,
and what devices and product labels the nodes have, whatever is in use: a device chosen at
creation is fixed for the pod's life, and a waiting pod's node affinity can only narrow.

A cluster has few node shapes, so each answer is a handful of numbers per model, worked out
again only when the nodes change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scheduler.catalog import Catalog
from scheduler.demand import Kind, Option
from scheduler.model import Node, Workload
from scheduler.pools import tolerated
from webhook import keys

__all__ = ["NodeShapes", "Offer", "Offers"]

HostShape = tuple[int | None, int | None]
"""A node's allocatable (CPU milli, memory MiB), None where it does not say."""


@dataclass(frozen=True, slots=True)
class Offer:
    """The devices one node has of one GPU model, in use or not."""

    node: Node
    model: str
    whole: int
    """GPUs not partitioned (MIG off)."""
    whole_memory_mib: int
    """Usable memory of one of them (``usable_memory``)."""
    profiles: frozenset[str]
    """MIG profiles in its GPUs' layouts."""

    def holds(self, option: Option, need_mib: int) -> bool:
        """Whether a device of this memory-need option is here, and holds the need."""
        if option.kind is Kind.MIG:
            return option.profile in self.profiles
        return self.whole >= option.per_pod and self.whole_memory_mib >= need_mib

    def may_host(self, workload: Workload) -> bool:
        """Whether the workload's pods may land here, as the core reads their node selector,
        required affinity and tolerations (``Capacity``), with the CPU and memory one needs
        allocatable."""
        node = self.node
        labels = node.labels
        return (
            all(labels.get(k) == v for k, v in workload.node_selector.items())
            and (
                not workload.node_affinity
                or any(term.matches(node.name, labels) for term in workload.node_affinity)
            )
            and tolerated(node.taints, workload.tolerations)
            and (node.cpu_milli is None or node.cpu_milli >= workload.cpu_milli)
            and (node.memory_mib is None or node.memory_mib >= workload.memory_mib)
        )


@dataclass(frozen=True, slots=True)
class Offers:
    """What the nodes have, whatever is in use (``NodeShapes.offers``)."""

    nodes: tuple[Offer, ...]
    largest: dict[str, tuple[int, frozenset[str]]]
    """Per GPU model: the most usable memory of one of its whole GPUs on any node (0: none
    has one) and every MIG profile its nodes have: a node-free answer to "is it offered"."""

    def has(self, option: Option, need_mib: int) -> bool:
        """Whether some node has a device of this memory-need option that holds the need."""
        for model in option.models:
            memory, profiles = self.largest.get(model, (0, frozenset()))
            if option.profile in profiles if option.kind is Kind.MIG else memory >= need_mib:
                return True
        return False

    def where(self, option: Option, need_mib: int) -> Iterator[Offer]:
        """The nodes that have a device of this option holding the need."""
        return (o for o in self.nodes if o.model in option.models and o.holds(option, need_mib))


def usable_memory(node: Node, model: str, catalog: Catalog) -> int:
    """Usable MiB of one whole GPU of ``node``: the catalog's figure for the model, which
    the decision core fits memory needs to, or its GFD label ``nvidia.com/gpu.memory`` where
    that says less. Never more than the catalog's: a need the label holds but the core's
    figure does not would be offered here and never placed (an A100-80GB node says 81,920
    MiB, the catalog 79,872)."""
    usable = catalog[model].usable_memory_mib
    label = node.labels.get(keys.NODE_GPU_MEMORY, "")
    return min(int(label), usable) if label.isascii() and label.isdigit() else usable


class NodeShapes:
    """The answers for the nodes as they are, until ``forget``. ``LiveCluster`` keeps one
    under its lock: every method expects its caller to hold it."""

    def __init__(self) -> None:
        self._largest: dict[str, int] | None = None
        self._hosts: dict[str, frozenset[HostShape]] | None = None
        self._offers: Offers | None = None
        self._products: dict[str, frozenset[str]] | None = None

    def forget(self) -> None:
        """The nodes changed."""
        self._largest = None
        self._hosts = None
        self._offers = None
        self._products = None

    def relabelled(self, before: Node, after: Node) -> None:
        """A node's labels changed, its GPUs did not (``LiveCluster.put_node`` follows it in
        place): the offers read every label (a pod's selector may name any), the products
        one."""
        self._offers = None
        if before.labels.get(keys.NODE_PRODUCT) != after.labels.get(keys.NODE_PRODUCT):
            self._products = None

    def largest(self, nodes: Iterable[Node]) -> dict[str, int]:
        """Per GPU model present: the most whole GPUs one node has (0 for all-MIG models)."""
        if self._largest is None:
            largest: dict[str, int] = {}
            for node in nodes:
                for model in {g.model for g in node.gpus}:
                    whole = sum(1 for g in node.gpus if g.model == model and g.mig is None)
                    largest[model] = max(largest.get(model, 0), whole)
            self._largest = largest
        return self._largest

    def hosts(self, nodes: Iterable[Node]) -> dict[str, frozenset[HostShape]]:
        """Per GPU model present: the (CPU milli, memory MiB) its nodes have allocatable."""
        if self._hosts is None:
            shapes: dict[str, set[HostShape]] = {}
            for node in nodes:
                shape = (node.cpu_milli, node.memory_mib)
                for model in {g.model for g in node.gpus}:
                    shapes.setdefault(model, set()).add(shape)
            self._hosts = {m: frozenset(s) for m, s in shapes.items()}
        return self._hosts

    def offers(self, nodes: Iterable[Node], catalog: Catalog) -> Offers:
        """Per node and GPU model: its devices, whatever is in use or out of service (a
        cordon or a device plugin restarting passes; what a node is partitioned into is
        what it offers until its administrator changes it)."""
        if self._offers is None:
            found: list[Offer] = []
            largest: dict[str, tuple[int, frozenset[str]]] = {}
            for node in nodes:
                devices: dict[str, tuple[list[int], set[str]]] = {}
                for gpu in node.gpus:
                    whole, profiles = devices.setdefault(gpu.model, ([0], set()))
                    if gpu.mig is None:
                        whole[0] += 1
                    else:
                        profiles.update(s.profile for s in gpu.mig)
                for model, (whole, profiles) in devices.items():
                    memory = usable_memory(node, model, catalog)
                    offer = Offer(node, model, whole[0], memory, frozenset(profiles))
                    found.append(offer)
                    most, known = largest.get(model, (0, frozenset()))
                    size = memory if whole[0] else 0
                    if size > most or not offer.profiles <= known:
                        largest[model] = (max(most, size), known | offer.profiles)
            self._offers = Offers(tuple(found), largest)
        return self._offers

    def products(self, nodes: Iterable[Node]) -> dict[str, frozenset[str]]:
        """Per GPU model present: the ``nvidia.com/gpu.product`` values its nodes carry."""
        if self._products is None:
            found: dict[str, set[str]] = {}
            for node in nodes:
                product = node.labels.get(keys.NODE_PRODUCT)
                if product is not None:
                    for model in {g.model for g in node.gpus}:
                        found.setdefault(model, set()).add(product)
            self._products = {m: frozenset(p) for m, p in found.items()}
        return self._products
