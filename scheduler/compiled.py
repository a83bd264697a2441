"""A snapshot compiled for one cycle: free capacity, quotas with running work charged, and
pending workloads with their options resolved — everything the cycle and the ILP read."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

from scheduler.catalog import MILLI_PER_GPU, Catalog
from scheduler.demand import Kind, Option, OptionsByDemand
from scheduler.model import Gpu, Queue, Snapshot, Workload
from scheduler.objective import segment_width
from scheduler.preemption import Running
from scheduler.quota import QuotaBook
from scheduler.state import Allocation, ClusterState

__all__ = [
    "Alike",
    "Compiled",
    "Entry",
    "InAnyOrder",
    "charge_quota",
    "charge_running",
    "compile_snapshot",
    "pending_options",
    "quota_book",
    "recorded_allocation",
]


class Alike:
    """``Entry.alike``: a key with its hash worked out once. A cycle looks these up tens of
    thousands of times, and hashing the tuple again hashes every option and constraint."""

    __slots__ = ("_hash", "key")

    def __init__(self, key: tuple[object, ...]) -> None:
        self.key = key
        self._hash = hash(key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alike) and (self is other or self.key == other.key)


@dataclass(slots=True)
class Entry:
    """A pending workload with its resolved options."""

    workload: Workload
    options: tuple[Option, ...]
    tier: float = 0.0
    size: float = 0.0
    """GPU-equivalents of work it asks for: its smallest option, whatever it lands on, so
    the objective values work done, not devices consumed."""
    _alike: Alike | None = field(default=None, repr=False, compare=False)
    queue_order: tuple[str, int, int, str] = field(init=False, repr=False, compare=False)
    """(queue, ``order``): where it stands among all pending workloads, queue by queue. Set
    once: each pass of a cycle sorts its entries by it (``Compiled.in_queue_order``)."""

    def __post_init__(self) -> None:
        w = self.workload
        self.queue_order = (w.queue, -w.priority, w.created, w.name)

    @property
    def order(self) -> tuple[int, int, str]:
        return (-self.workload.priority, self.workload.created, self.workload.name)

    @property
    def alike(self) -> Alike:
        """What makes pending workloads interchangeable in a cycle: the same queue, priority,
        options, pods, CPU, memory and node constraints (selector, affinity, tolerations).
        They fit or fail together against one state, and one fits exactly where another was
        placed."""
        if self._alike is None:
            w = self.workload
            selector = w.node_selector
            self._alike = Alike(
                (
                    w.queue,
                    w.priority,
                    self.options,
                    w.pods,
                    w.cpu_milli,
                    w.memory_mib,
                    tuple(sorted(selector.items())) if selector else (),
                    w.node_affinity,
                    w.tolerations,
                )
            )
        return self._alike


class InAnyOrder:
    """``Entry.alike`` with the options in one fixed order (cheapest first), whatever order
    the workload tries them in. A workload's throughput orders its options (fastest
    first), not which it accepts: two alike but for that fit each other's places exactly
    (``settle.older_alike_first``), though they are not one class for the ILP or the
    cycle's refusals, which try options in order. Most workloads try theirs in the fixed
    order already and keep their own ``alike``: its hash is worked out, a new key's is not."""

    __slots__ = ("_fixed", "_keys")

    def __init__(self) -> None:
        self._fixed: dict[int, tuple[Option, ...]] = {}
        """By ``id`` of an options tuple (entries share them, and keep them alive)."""
        self._keys: dict[Alike, Alike] = {}

    def __call__(self, entry: Entry) -> Alike:
        options = entry.options
        fixed = self._fixed.get(id(options))
        if fixed is None:
            ranked = tuple(sorted(options, key=_fixed_rank))
            fixed = self._fixed[id(options)] = options if ranked == options else ranked
        if fixed is options:
            return entry.alike
        key = self._keys.get(entry.alike)
        if key is None:
            queue, priority, _, *rest = entry.alike.key
            key = self._keys[entry.alike] = Alike((queue, priority, fixed, *rest))
        return key


def _fixed_rank(option: Option) -> tuple[float, str, str, tuple[str, ...], int, str]:
    return (
        option.cost,
        option.flavor,
        option.kind.name,
        option.models,
        option.per_pod,
        option.profile or "",
    )


@dataclass(slots=True)
class Compiled:
    snapshot: Snapshot
    catalog: Catalog
    state: ClusterState
    book: QuotaBook
    running: list[Running]
    pending: list[Entry]
    in_queue_order: list[Entry]
    """``pending`` by ``Entry.queue_order``, sorted once: the cycle's first pass and the
    Decision walk it in that order (each sorting 20,000 entries was ~10 ms on (c))."""
    headroom: dict[tuple[str, str], float]
    widths: dict[tuple[str, str], float]
    options: OptionsByDemand
    """Options of a workload by its demand; the online path resolves arrivals with it too."""


def _gpu_eq(option: Option, catalog: Catalog) -> float:
    return option.gpu_equivalents_per_pod(catalog)


def compile_snapshot(snapshot: Snapshot, catalog: Catalog) -> Compiled:
    """Step 1–2: state and quota book with running workloads charged; pending entries."""
    state = ClusterState(snapshot, catalog)
    book = _uncharged_book(snapshot, catalog)
    running: list[Running] = []
    pending: list[Entry] = []
    options = OptionsByDemand(catalog, state.models_present)
    for workload in snapshot.workloads:
        if workload.running:
            running.append(charge_running(workload, catalog, state, book))
        else:
            pending.append(Entry(workload, options(workload)))
    _assign_tiers(pending)
    smallest: dict[int, float] = {}
    """Per options tuple (shared by workloads that ask alike, by id): its smallest option."""
    for entry in pending:
        least = smallest.get(id(entry.options))
        if least is None:
            least = smallest[id(entry.options)] = min(
                (_gpu_eq(o, catalog) for o in entry.options), default=0.0
            )
        entry.size = entry.workload.pods * least
    headroom: dict[tuple[str, str], float] = {}
    widths: dict[tuple[str, str], float] = {}
    wanted = {o.flavor for e in pending for o in e.options}
    for name, account in book.accounts.items():
        for flavor in sorted(set(account.nominal) | wanted):
            unit = 1.0 if flavor.startswith("mig-") else float(MILLI_PER_GPU)
            room = max(0, account.nominal.get(flavor, 0) - account.usage.get(flavor, 0))
            headroom[(name, flavor)] = room / unit
            assert account.cohort is not None
            lendable = book.lendable(account.cohort, flavor) / unit
            widths[(name, flavor)] = segment_width(account.weight, lendable)
    in_queue_order = sorted(pending, key=attrgetter("queue_order"))
    return Compiled(
        snapshot, catalog, state, book, running, pending, in_queue_order, headroom, widths, options
    )


def quota_book(snapshot: Snapshot, catalog: Catalog) -> QuotaBook:
    """``compile_snapshot``'s quota book, without the cluster state (what metrics and Queue
    statuses read, at an eighth of the cost): each running workload charged to the flavor
    its placement holds, read from the one GPU its first pod names. Placements are neither
    applied nor checked (``PlacementError``): the book of a snapshot ``compile_snapshot``
    accepts, as the live cluster's are (their build claims every device once)."""
    book = _uncharged_book(snapshot, catalog)
    nodes = {node.name: node for node in snapshot.nodes}  # the last of a name, as compiled
    gpus: dict[str, dict[int, Gpu]] = {}
    names: dict[str, str] = {}  # as written → catalog name
    for workload in snapshot.workloads:
        if workload.placement is None:  # waiting (``running`` costs a call per workload)
            continue
        first = workload.placement[0]
        node = nodes.get(first.node)
        on_node = gpus.get(first.node)
        if on_node is None and node is not None:
            on_node = gpus[first.node] = {gpu.index: gpu for gpu in node.gpus}
        gpu = None if on_node is None else on_node.get(first.gpus[0])
        model, profile = "", ""
        if gpu is not None:
            model = names.get(gpu.model, "")
            if not model:
                model = names[gpu.model] = catalog[gpu.model].name
            if gpu.mig and first.mig_start is not None:
                layout = {s.start: s.profile for s in gpu.mig}
                profile = layout.get(first.mig_start, "")
        option = _running_option(workload, catalog, model, profile)
        book.charge(workload.queue, option.flavor, option.quota_per_pod * workload.pods)
    return book


def pending_options(
    snapshot: Snapshot, catalog: Catalog
) -> list[tuple[Workload, tuple[Option, ...]]]:
    """``compile_snapshot``'s pending entries as (workload, options), without the cluster
    state: options need only the models present, in the order the GPUs name them."""
    names: dict[str, str] = {}
    for node in snapshot.nodes:
        for gpu in node.gpus:
            if gpu.model not in names:
                names[gpu.model] = catalog[gpu.model].name
    options = OptionsByDemand(catalog, tuple(dict.fromkeys(names.values())))
    return [(w, options(w)) for w in snapshot.workloads if w.placement is None]


def _uncharged_book(snapshot: Snapshot, catalog: Catalog) -> QuotaBook:
    """The queues' quota book, nothing charged yet."""
    model_flavors = frozenset(m.name for m in catalog.models)
    return QuotaBook(_keyed_by_flavor(snapshot.queues, catalog), model_flavors)


def _keyed_by_flavor(queues: tuple[Queue, ...], catalog: Catalog) -> tuple[Queue, ...]:
    """The queues with quotas keyed by the flavors options charge (``H100-80GB``): a file
    or a Queue object may name a model by any of its names (``H100``, a GFD product)."""
    keyed = []
    for queue in queues:
        quota = {catalog.flavor(key) or key: value for key, value in queue.quota.items()}
        same = list(quota) == list(queue.quota)
        keyed.append(queue if same else queue.model_copy(update={"quota": quota}))
    return tuple(keyed)


def charge_running(
    workload: Workload, catalog: Catalog, state: ClusterState, book: QuotaBook
) -> Running:
    """Charge a running workload's recorded placement to the state and its quota."""
    option, allocation = recorded_allocation(workload, catalog, state)
    state.apply_running(allocation, workload.name)
    return charge_quota(workload, option, allocation, catalog, state, book)


def recorded_allocation(
    workload: Workload, catalog: Catalog, state: ClusterState
) -> tuple[Option, Allocation]:
    """The option a running workload holds and its recorded placement, not applied
    (``PlacementError`` if the placement names a node or GPU the cluster lacks)."""
    assert workload.placement is not None
    first = workload.placement[0]
    node = state.node_index.get(first.node)
    g = None if node is None else state.node_gpus[node].get(first.gpus[0])
    model, profile = "", ""
    if g is not None:
        model = state.gpu_model[g]
        layout = state.gpu_mig[g]
        if layout and first.mig_start is not None:
            profile = str(layout.get(first.mig_start, ("",))[0])
    option = _running_option(workload, catalog, model, profile)
    return option, state.allocation_of(workload, option)


def charge_quota(
    workload: Workload,
    option: Option,
    allocation: Allocation,
    catalog: Catalog,
    state: ClusterState,
    book: QuotaBook,
) -> Running:
    """Charge ``workload``, its ``allocation`` applied to the state, to its queue's quota:
    the running workload it now is."""
    amount = option.quota_per_pod * workload.pods
    book.charge(workload.queue, option.flavor, amount)
    models = frozenset(state.gpu_model[g] for pod in allocation.pods for g in pod.gpus)
    return Running(
        workload,
        allocation,
        option.flavor,
        amount,
        _gpu_eq(option, catalog) * workload.pods,
        models,
    )


def _running_option(workload: Workload, catalog: Catalog, model: str, profile: str) -> Option:
    """The option a running workload holds, read from its placement: ``model`` and
    ``profile`` are those of the GPU, and of its MIG slice, that its first pod names (""
    where the cluster has none)."""
    assert workload.placement is not None
    first = workload.placement[0]
    # Charged to the flavor as quotas key it, however the workload names it.
    flavor = workload.flavor and (catalog.flavor(workload.flavor) or workload.flavor)
    if first.mig_start is not None:
        named = (
            workload.flavor[4:] if workload.flavor and workload.flavor.startswith("mig-") else ""
        )
        profile = named or profile
        return Option("mig-" + profile, Kind.MIG, (model,), 1, profile)
    if first.milli is not None:
        return Option(flavor or model, Kind.FRACTION, (model,), first.milli)
    return Option(flavor or model, Kind.WHOLE, (model,), len(first.gpus))


def _assign_tiers(pending: list[Entry]) -> None:
    """Priority rank within each queue, 0 … 1, for the objective's priority term."""
    levels: dict[str, list[int]] = {}
    for entry in pending:
        levels.setdefault(entry.workload.queue, []).append(entry.workload.priority)
    ranks = {
        q: {p: i / max(1, len(set(ps)) - 1) for i, p in enumerate(sorted(set(ps)))}
        for q, ps in levels.items()
    }
    for entry in pending:
        entry.tier = ranks[entry.workload.queue][entry.workload.priority]
