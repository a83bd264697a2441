"""Cross-reference checks of a snapshot: names unique, models and profiles known, MIG layouts
valid, quotas on known flavors, running placements possible. Every problem is collected
with its field path; nothing stops at the first."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from scheduler.catalog import MILLI_PER_GPU, Catalog, catalog_with, default_catalog
from scheduler.fieldpaths import (
    already_used,
    did_you_mean,
    join,
    not_a_mig_profile,
    repeats,
    unknown_model,
)
from scheduler.mig import layout_problems
from scheduler.model import (
    Gpu,
    Node,
    PodPlacement,
    Queue,
    Snapshot,
    Workload,
    flavor_of_mig,
)

__all__ = [
    "MAX_NODE_GPUS",
    "MAX_PRICE",
    "Checks",
    "checked_catalog",
    "ineffective_limits",
    "price_problem",
    "validate_snapshot",
]

MAX_NODE_GPUS = 1024
"""More GPUs than any node has, or than a pod can ask for: a bound far above real clusters
that catches typos (gpus: 80000000 for 80 GB), which the ILP would take as coefficients."""


MAX_PRICE = 1000.0
"""$ per GPU-hour: the catalog's dearest GPU (B200) lists at $9/h. A price a hundred times
that is in another unit (per node, per month), and 1e308 made every cost inf and NaN."""


def price_problem(price: float) -> str | None:
    """Why a $/GPU-hour price cannot be used, or None."""
    if not (math.isfinite(price) and price >= 0):
        return "must be a finite number, 0 or more"
    if price > MAX_PRICE:
        return (
            f"is more than ${MAX_PRICE:,.0f} per GPU-hour (the catalog's dearest GPU lists at "
            "$9/h: a larger price is likely per node or per month)"
        )
    return None


def ineffective_limits(queue: Queue, path: str) -> list[str]:
    """The borrowing and lending limits of a queue's quota that cannot take effect: without
    a cohort there is nobody to borrow from or lend to, and a queue lends at most its
    nominal quota. A snapshot refuses them; a served queue is kept, warned about."""
    problems = []
    for key, quota in queue.quota.items():
        where = join(path, "quota", key)
        for limit in ("borrowing_limit", "lending_limit"):
            value = getattr(quota, limit)
            if value is not None and queue.cohort is None:
                problems.append(
                    f"{where}.{limit}: {value} needs a cohort, and queue {queue.name!r} has none"
                )
        if quota.lending_limit is not None and quota.lending_limit > quota.nominal:
            problems.append(
                f"{where}.lending_limit: {quota.lending_limit} is more "
                f"than the nominal quota {quota.nominal}"
            )
    return problems


def validate_snapshot(snapshot: Snapshot) -> list[str]:
    """Every cross-reference problem of a snapshot (empty when it is consistent)."""
    catalog, problems = checked_catalog(snapshot)
    return problems + Checks(snapshot, catalog, {}).run()


def checked_catalog(snapshot: Snapshot) -> tuple[Catalog, list[str]]:
    """The snapshot's catalog, built from what is usable, and the problems of the rest."""
    problems = []
    base = default_catalog()
    keys = [model.name.lower() for model in snapshot.gpu_models]
    repeated = dict(repeats(keys))
    problems += [
        f"gpu_models[{i}].name: {snapshot.gpu_models[i].name!r} is already used by gpu_models[{j}]"
        for i, j in repeated.items()
    ]
    extra = []
    products: dict[str, int] = {}
    """Products of the models added so far (lower case) → the model's index."""
    for i, model in enumerate(snapshot.gpu_models):
        path = f"gpu_models[{i}]"
        key = keys[i]
        builtin = base.get(model.name)
        if i in repeated:
            continue
        if key.startswith("mig-"):
            problems.append(
                f"{path}.name: {model.name!r} starts with 'mig-', which names MIG flavors "
                "in quotas (mig-<profile>); choose another name"
            )
            continue
        if builtin is not None and builtin.name.lower() != key:
            problems.append(
                f"{path}.name: {model.name!r} already names the built-in {builtin.name}; "
                f"use {builtin.name!r} to replace it, or another name"
            )
            continue
        clash = False
        for j, product in enumerate(model.products):
            owner = base.get(product)
            named = keys.index(product.lower()) if product.lower() in keys else i
            earlier = products.get(product.lower(), i)
            if owner is not None and owner.name.lower() != key:
                problems.append(
                    f"{path}.products[{j}]: {product!r} is already a product of "
                    f"the built-in {owner.name}"
                )
            elif named != i:
                problems.append(
                    f"{path}.products[{j}]: {product!r} is the name of gpu_models[{named}]"
                )
            elif earlier != i:
                problems.append(
                    f"{path}.products[{j}]: {product!r} is already a product of "
                    f"gpu_models[{earlier}]"
                )
            else:
                continue
            clash = True
        if not (math.isfinite(model.relative_throughput) and model.relative_throughput > 0):
            problems.append(
                f"{path}.relative_throughput: {model.relative_throughput} must be "
                "a finite number greater than 0"
            )
        if (why := price_problem(model.price_per_hour)) is not None:
            problems.append(f"{path}.price_per_hour: {model.price_per_hour:g} {why}")
        if clash:
            continue  # adding it would make a product label ambiguous
        products.update((product.lower(), i) for product in model.products)
        extra.append(
            (
                model.name,
                model.memory_mib,
                model.relative_throughput,
                model.price_per_hour,
                model.products,
            )
        )
    catalog = catalog_with(tuple(extra), {})
    prices = {}
    for name, price in snapshot.prices.items():
        path = join("prices", name)
        if catalog.get(name) is None:
            problems.append(f"{path}: {unknown_model(name, catalog)}")
        elif (why := price_problem(price)) is not None:
            problems.append(f"{path}: {price:g} {why}")
        else:
            prices[name] = price
    problems += _named_twice("prices", snapshot.prices, catalog)
    return (catalog.with_prices(prices) if prices else catalog), problems


def _named_twice(path: str, names: Iterable[str], catalog: Catalog) -> list[str]:
    """Keys of one mapping that name a model an earlier key named (``H100`` after
    ``H100-80GB``): one of the two values would be dropped without a word."""
    first: dict[str, str] = {}
    problems = []
    for name in names:
        model = catalog.get(name)
        known = name if model is None else first.setdefault(model.name, name)
        if known != name:
            problems.append(f"{join(path, name)}: {name!r} is the same model as {known!r}")
    return problems


class Checks:
    """The whole-snapshot checks, run once over nodes, queues and workloads."""

    def __init__(self, snapshot: Snapshot, catalog: Catalog, pool_of_node: Mapping[int, int]):
        self.snapshot = snapshot
        self.catalog = catalog
        self.pool_of_node = pool_of_node
        self.model_names = set(catalog.names())
        self.profiles = catalog.mig_profile_names()
        self.problems: list[str] = []
        self.nodes: dict[str, Node] = {}
        for node in snapshot.nodes:
            self.nodes.setdefault(node.name, node)
        self.queues: dict[str, Queue] = {}
        for queue in snapshot.queues:
            self.queues.setdefault(queue.name, queue)
        self.whole_users: dict[tuple[str, int], str] = {}
        self.slice_users: dict[tuple[str, int, int], str] = {}
        self.milli_used: dict[tuple[str, int], int] = {}
        self.milli_users: dict[tuple[str, int], str] = {}

    def run(self) -> list[str]:
        self._nodes()
        self._queues()
        self._workloads()
        return self.problems

    def _nodes(self) -> None:
        nodes = self.snapshot.nodes
        for i, j in repeats([node.name for node in nodes]):
            pool = self.pool_of_node.get(i)
            if pool is not None and j in self.pool_of_node:
                continue  # two pools of one name, reported on the pool
            where = f"nodes[{i}].name" if pool is None else f"node_pools[{pool}]"
            self.problems.append(
                f"{where}: node name {nodes[i].name!r} is already used by nodes[{j}]"
            )
        for i, node in enumerate(nodes):
            if i not in self.pool_of_node:  # a pool's GPUs were checked once, on the pool
                self._gpus(node, f"nodes[{i}]")

    def _gpus(self, node: Node, path: str) -> None:
        if len(node.gpus) > MAX_NODE_GPUS:
            self.problems.append(
                f"{path}.gpus: {len(node.gpus)} GPUs, more than a node can have ({MAX_NODE_GPUS})"
            )
        for j, gpu in enumerate(node.gpus if len(node.gpus) <= MAX_NODE_GPUS else ()):
            if gpu.index >= MAX_NODE_GPUS:
                self.problems.append(
                    f"{path}.gpus[{j}].index: {gpu.index} is past the last index a node can "
                    f"have ({MAX_NODE_GPUS - 1})"
                )
        for j, k in repeats([gpu.index for gpu in node.gpus]):
            self.problems.append(
                f"{path}.gpus[{j}].index: {node.gpus[j].index} is already used by {path}.gpus[{k}]"
            )
        for j, gpu in enumerate(node.gpus):
            where = f"{path}.gpus[{j}]"
            model = self.catalog.get(gpu.model)
            if model is None:
                self.problems.append(f"{where}.model: {unknown_model(gpu.model, self.catalog)}")
            elif gpu.mig is not None:
                if gpu.shared:
                    self.problems.append(
                        f"{where}.shared: true conflicts with mig: fractional "
                        "pods share whole GPUs, not MIG-partitioned ones"
                    )
                if gpu.held:
                    self.problems.append(
                        f"{where}.held: true conflicts with mig: a pod holds a MIG GPU's "
                        "slices, so mark the slices it holds (mig[i].held)"
                    )
                self.problems += layout_problems(model, gpu.mig, f"{where}.mig")

    def _flavor(self, flavor: str) -> tuple[str | None, str]:
        """The canonical flavor name, or None and why not."""
        canonical = self.catalog.flavor(flavor)
        if canonical is not None:
            return canonical, ""
        if flavor.startswith("mig-"):
            profile = flavor.removeprefix("mig-")
            return None, (
                f"{flavor!r} is not a known flavor: no GPU model has MIG profile "
                f"{profile!r}{did_you_mean(profile, self.profiles)}"
            )
        return None, (
            f"{flavor!r} is not a known flavor (a GPU model: "
            f"{', '.join(self.catalog.names())}; or mig-<profile>)"
        )

    def _queues(self) -> None:
        self.problems += already_used("queues", [q.name for q in self.snapshot.queues])
        for i, queue in enumerate(self.snapshot.queues):
            path = f"queues[{i}]"
            flavors: dict[str, str] = {}
            for key in queue.quota:
                where = join(path, "quota", key)
                flavor, why = self._flavor(key)
                if flavor is None:
                    self.problems.append(f"{where}: {why}")
                elif flavor in flavors:
                    self.problems.append(
                        f"{where}: {key!r} is the same flavor as {flavors[flavor]!r}"
                    )
                else:
                    flavors[flavor] = key
            self.problems += ineffective_limits(queue, path)

    def _workloads(self) -> None:
        self.problems += already_used("workloads", [w.name for w in self.snapshot.workloads])
        for i, workload in enumerate(self.snapshot.workloads):
            path = f"workloads[{i}]"
            queue = self.queues.get(workload.queue)
            if queue is None:
                known = ", ".join(self.queues) or "none"
                self.problems.append(
                    f"{path}.queue: {workload.queue!r} is not a queue (queues: {known})"
                )
            elif queue.max_priority is not None and workload.priority > queue.max_priority:
                self.problems.append(
                    f"{path}.priority: {workload.priority} is above the "
                    f"max_priority {queue.max_priority} of queue {queue.name!r}"
                )
            self._demand(workload, path)
            self._times(workload, path)
            if workload.flavor is not None:
                flavor, why = self._flavor(workload.flavor)
                if flavor is None:
                    self.problems.append(f"{path}.flavor: {why}")
            if workload.placement is not None:
                self._running(workload, path)

    def _times(self, workload: Workload, path: str) -> None:
        """A start only with a placement, after the creation; neither after ``now`` when the
        snapshot gives it (without it, times are relative and ``now`` is 0)."""
        started, created = workload.started, workload.created
        if started is not None and workload.placement is None:
            self.problems.append(
                f"{path}.started: {started} is set, but the workload has no placement (a "
                "running workload needs both; a waiting one has neither)"
            )
        if started is not None and started < created:
            self.problems.append(
                f"{path}.started: {started} is before the workload was created ({created})"
            )
        if "now" not in self.snapshot.model_fields_set:
            return
        now = self.snapshot.now
        for field, value in (("created", created), ("started", started)):
            if value is not None and value > now:
                self.problems.append(f"{path}.{field}: {value} is after the snapshot's now ({now})")

    def _demand(self, workload: Workload, path: str) -> None:
        demand = workload.demand
        if demand.gpus is not None and demand.gpus > MAX_NODE_GPUS:
            self.problems.append(
                f"{path}.demand.gpus: {demand.gpus} is more GPUs than a node can have "
                f"({MAX_NODE_GPUS})"
            )
        for k, name in enumerate(demand.models):
            if self.catalog.get(name) is None:
                self.problems.append(
                    f"{path}.demand.models[{k}]: {unknown_model(name, self.catalog)}"
                )
        if demand.mig_profile is not None and demand.mig_profile not in self.profiles:
            self.problems.append(
                f"{path}.demand.mig_profile: {demand.mig_profile!r} "
                f"{not_a_mig_profile(demand.mig_profile, self.profiles)}"
            )
        for name, speed in workload.throughput.items():
            where = join(path, "throughput", name)
            if self.catalog.get(name) is None:
                self.problems.append(f"{where}: {unknown_model(name, self.catalog)}")
            elif not (math.isfinite(speed) and speed > 0):
                self.problems.append(f"{where}: {speed} must be a finite number greater than 0")
        self.problems += _named_twice(join(path, "throughput"), workload.throughput, self.catalog)

    def _running(self, workload: Workload, path: str) -> None:
        placement = workload.placement or ()
        demand = workload.demand
        flavor = self._flavor(workload.flavor)[0] if workload.flavor is not None else None
        if workload.flavor is None:
            self.problems.append(
                f"{path}.flavor: is required on a running workload (placement is set)"
            )
        if len(placement) != workload.pods:
            self.problems.append(
                f"{path}.placement: {len(placement)} pod placements for {workload.pods} pods"
            )
        mig_flavor = flavor is not None and flavor.startswith("mig-")
        if demand.mig_profile is not None:
            expected = "mig"
            wanted = flavor_of_mig(demand.mig_profile)
            if flavor is not None and flavor != wanted:
                self.problems.append(
                    f"{path}.flavor: {workload.flavor!r} does not match the "
                    f"demand's MIG profile ({wanted!r})"
                )
        elif demand.gpu_memory_mib is not None:
            expected = "mig" if mig_flavor else "whole"
        else:
            expected = "whole" if demand.gpus is not None else "milli"
            if mig_flavor:
                self.problems.append(
                    f"{path}.flavor: {workload.flavor!r} is a MIG flavor, but "
                    "the demand is not for a MIG profile or GPU memory"
                )
        allowed = {m.name for name in demand.models if (m := self.catalog.get(name))}
        if flavor is not None and not mig_flavor and allowed and flavor not in allowed:
            self.problems.append(
                f"{path}.flavor: {workload.flavor!r} is not one of the "
                f"demand's models ({', '.join(demand.models)})"
            )
        for p, pod in enumerate(placement):
            self._pod(workload, f"{path}.placement[{p}]", pod, expected, flavor)

    def _pod(
        self, workload: Workload, path: str, pod: PodPlacement, expected: str, flavor: str | None
    ) -> None:
        node = self.nodes.get(pod.node)
        if node is None:
            self.problems.append(f"{path}.node: {pod.node!r} is not a node")
            return
        gpus = {gpu.index: gpu for gpu in node.gpus}
        missing = [k for k, index in enumerate(pod.gpus) if index not in gpus]
        for k in missing:
            have = ", ".join(str(i) for i in sorted(gpus)) or "none"
            self.problems.append(
                f"{path}.gpus[{k}]: {pod.gpus[k]} is not a GPU index on node "
                f"{pod.node!r} (indices: {have})"
            )
        if len(set(pod.gpus)) != len(pod.gpus):
            self.problems.append(f"{path}.gpus: {list(pod.gpus)} lists a GPU twice")
        kind = "mig" if pod.mig_start is not None else "whole" if pod.milli is None else "milli"
        # The model already rejected both kinds at once, empty gpus and milli out of range.
        if kind != expected:
            self.problems.append(
                f"{path}: a {_KINDS[kind]} placement, but the demand needs a {_KINDS[expected]} one"
            )
        elif len(pod.gpus) != (want := workload.demand.gpus or 1):
            self.problems.append(f"{path}.gpus: {len(pod.gpus)} GPUs for a pod that needs {want}")
        elif not missing:
            for k, index in enumerate(pod.gpus):
                self._use(workload.name, path, k, pod, gpus[index], flavor)

    def _use(
        self, owner: str, path: str, k: int, pod: PodPlacement, gpu: Gpu, flavor: str | None
    ) -> None:
        """Charge one GPU (whole, one MIG slice of it, or milli) to a running pod."""
        where = f"{path}.gpus[{k}]"
        key = (pod.node, gpu.index)
        what = f"GPU {gpu.index} on node {pod.node!r}"
        model = self.catalog.get(gpu.model)
        if flavor in self.model_names and model is not None and model.name != flavor:
            self.problems.append(
                f"{where}: {what} is a {model.name}, not the workload's flavor {flavor}"
            )
        if pod.mig_start is not None:
            self._slice(owner, f"{path}.mig_start", gpu, what, key, pod.mig_start, flavor)
        elif pod.milli is not None:
            self._milli(owner, f"{path}.milli", gpu, what, key, pod.milli)
        elif gpu.mig is not None:
            self.problems.append(f"{where}: {what} is MIG-partitioned; it has no whole GPU to give")
        elif gpu.held:
            self.problems.append(f"{where}: {what} is held by a pod outside the workloads")
        elif (user := self.whole_users.get(key) or self.milli_users.get(key)) is not None:
            self.problems.append(f"{where}: {what} is already used by workload {user!r}")
        else:
            self.whole_users[key] = owner

    def _slice(
        self,
        owner: str,
        where: str,
        gpu: Gpu,
        what: str,
        key: tuple[str, int],
        start: int,
        flavor: str | None,
    ) -> None:
        if gpu.mig is None:
            self.problems.append(f"{where}: {start} is on {what}, which is not MIG-partitioned")
            return
        piece = next((s for s in gpu.mig if s.start == start), None)
        if piece is None:
            have = ", ".join(f"{s.profile}@{s.start}" for s in gpu.mig) or "none"
            self.problems.append(
                f"{where}: {start} is not the start of a MIG slice on {what} (slices: {have})"
            )
            return
        if flavor is not None and flavor != flavor_of_mig(piece.profile):
            self.problems.append(
                f"{where}: the slice at {start} on {what} is "
                f"{piece.profile}, not the workload's flavor {flavor}"
            )
        if piece.held:
            self.problems.append(
                f"{where}: slice {piece.profile}@{start} on {what} is held by a pod outside "
                "the workloads"
            )
        if (user := self.slice_users.get((*key, start))) is not None:
            self.problems.append(
                f"{where}: slice {piece.profile}@{start} on {what} is already "
                f"used by workload {user!r}"
            )
        self.slice_users.setdefault((*key, start), owner)

    def _milli(
        self, owner: str, where: str, gpu: Gpu, what: str, key: tuple[str, int], milli: int
    ) -> None:
        if gpu.mig is not None or not gpu.shared:
            self.problems.append(
                f"{where}: {milli} is on {what}, which is not shared (time-sliced)"
            )
        if gpu.held:
            self.problems.append(f"{where}: {what} is held whole by a pod outside the workloads")
        if key in self.whole_users:
            self.problems.append(
                f"{where}: {what} is already used whole by workload {self.whole_users[key]!r}"
            )
        before = self.milli_used.get(key, 0)
        if before <= MILLI_PER_GPU < before + milli:
            self.problems.append(
                f"{where}: {milli} takes {what} to {before + milli} milli-GPU, "
                f"more than {MILLI_PER_GPU}"
            )
        self.milli_used[key] = before + milli
        self.milli_users.setdefault(key, owner)


_KINDS = {"whole": "whole-GPU", "mig": "MIG-slice", "milli": "fractional (milli-GPU)"}
