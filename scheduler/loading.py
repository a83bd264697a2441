"""Snapshot files in; one error that lists every problem out.

Snapshots are written by hand (demo clusters, fixtures, capacity plans) and by converters,
so a bad one must be answered with all of its problems at once, each naming the field path
the way the file spells it (``queues[2].quota.H100.nominal: -1 is negative``), and never with
a traceback. pydantic checks each object on its own; what needs the whole snapshot (names
that must exist or be unique, GPU models and MIG geometry from the catalog, running
placements that must not overcommit) is checked here afterwards, and ``validate_snapshot``
offers the same checks to snapshots built in code.

``node_pools`` exists only in the file format: hundreds of identical nodes are written as a
few pools and expanded here into plain ``Node`` objects, so the core never sees pools.
Everything here is pure: text and data in, values out; callers read the files.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import types
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from scheduler.catalog import MILLI_PER_GPU, Catalog, catalog_with, default_catalog
from scheduler.mig import layout_problems
from scheduler.model import (
    Gpu,
    MigSlice,
    Node,
    NonNegative,
    PodPlacement,
    Positive,
    Queue,
    Snapshot,
    Taint,
    Workload,
    flavor_of_mig,
)

__all__ = [
    "NodePool",
    "SnapshotError",
    "SnapshotFile",
    "load_snapshot_text",
    "snapshot_from_data",
    "validate_snapshot",
]

_PRODUCT_LABEL = "nvidia.com/gpu.product"
_HOSTNAME_LABEL = "kubernetes.io/hostname"

# Bounds that keep a typo (count: 1000000000) from expanding into a hang, far above any
# real cluster.
_MAX_POOL_NODES = 100_000
_MAX_NODE_GPUS = 1024


class SnapshotError(ValueError):
    """A snapshot that cannot be used. ``problems`` holds every reason, each with its path."""

    def __init__(self, problems: Sequence[str], source: str = "<input>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[SnapshotError], tuple[list[str], str]]:
        return (type(self), (self.problems, self.source))


class NodePool(BaseModel):
    """``count`` identical nodes named ``<name>-000``, ``<name>-001``, …"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    count: NonNegative = Field(le=_MAX_POOL_NODES)
    gpu_model: str = Field(min_length=1)
    gpus_per_node: Positive = Field(le=_MAX_NODE_GPUS)
    labels: dict[str, str] = Field(default_factory=dict)
    """Added to the generated GFD and hostname labels."""
    taints: tuple[Taint, ...] = ()
    cpu_milli: NonNegative | None = None
    memory_mib: NonNegative | None = None
    shared: bool = False
    """Time-slice the GPUs that have no MIG layout."""
    mig_layout: tuple[MigSlice, ...] | None = None
    """The MIG layout of each of the first ``mig_gpus`` GPUs of every node."""
    mig_gpus: NonNegative | None = None
    """How many GPUs (lowest indices) get ``mig_layout``; all of them when omitted."""


class SnapshotFile(Snapshot):
    """The file format: a Snapshot plus ``node_pools``, appended after ``nodes``."""

    node_pools: tuple[NodePool, ...] = ()


def load_snapshot_text(text: str, source: str = "<input>") -> Snapshot:
    """Parse YAML or JSON text (``source`` names it in messages) into a checked Snapshot."""
    return snapshot_from_data(_parse(text, source), source)


def snapshot_from_data(data: object, source: str = "<input>") -> Snapshot:
    """Build a checked Snapshot from parsed data; raise SnapshotError listing every problem."""
    if data is None:
        raise SnapshotError([f"{source}: is empty; expected a mapping of snapshot fields"], source)
    if not isinstance(data, dict):
        raise SnapshotError(
            [f"{source}: the top level must be a mapping of snapshot fields, not {_show(data)}"],
            source,
        )
    try:
        parsed = SnapshotFile.model_validate(data)
    except ValidationError as error:
        raise SnapshotError(_pydantic_problems(error), source) from None
    catalog, problems = _checked_catalog(parsed)
    nodes = list(parsed.nodes)
    pool_of_node: dict[int, int] = {}
    problems += _already_used("node_pools", [pool.name for pool in parsed.node_pools])
    for p, pool in enumerate(parsed.node_pools):
        problems += _pool_problems(pool, f"node_pools[{p}]", catalog)
        for node in _expand_pool(pool, catalog):
            pool_of_node[len(nodes)] = p
            nodes.append(node)
    fields = {name: getattr(parsed, name) for name in Snapshot.model_fields}
    snapshot = Snapshot.model_validate({**fields, "nodes": tuple(nodes)})
    problems += _Checks(snapshot, catalog, pool_of_node).run()
    if problems:
        raise SnapshotError(problems, source)
    return snapshot


def validate_snapshot(snapshot: Snapshot) -> list[str]:
    """Every cross-reference problem of a snapshot (empty when it is consistent)."""
    catalog, problems = _checked_catalog(snapshot)
    return problems + _Checks(snapshot, catalog, {}).run()


# --- parsing -------------------------------------------------------------------------------


class _DuplicateKeyError(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML keeps the last one silently)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    "in the mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Times are integer seconds here; an unquoted date must stay a string for pydantic to name,
# not become a datetime (or a ValueError for a date like 2024-13-01).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _DuplicateKeyError
    return dict(pairs)


def _parse(text: str, source: str) -> object:
    json_problem = None
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as error:
            json_problem = f"{source}: line {error.lineno} column {error.colno}: {error.msg}"
        except _DuplicateKeyError:
            pass  # YAML reads JSON too and names the duplicate with its line
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        problem = json_problem or _yaml_problem(error, source)
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        problem = json_problem or f"{source}: {error}"
    raise SnapshotError([problem], source)


def _yaml_problem(error: yaml.MarkedYAMLError, source: str) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    message = error.problem or "not valid YAML"
    if error.context:
        context = error.context
        cmark = error.context_mark
        if cmark is not None and (mark is None or cmark.line != mark.line):
            context += f" at line {cmark.line + 1} column {cmark.column + 1}"
        message += f" ({context})"
    return f"{source}: {where}{message}"


# --- messages ------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_\-/+]+\Z")


def _join(prefix: str, *parts: object) -> str:
    """``_join("queues[2]", "quota", "H100")`` → ``queues[2].quota.H100``."""
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _BARE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _repeats(names: Sequence[Hashable]) -> list[tuple[int, int]]:
    """(index, index of its first use) for every name used before."""
    first: dict[Hashable, int] = {}
    return [(i, first[n]) for i, n in enumerate(names) if first.setdefault(n, i) != i]


def _already_used(section: str, names: Sequence[str], field: str = "name") -> list[str]:
    return [
        f"{section}[{i}].{field}: {names[i]!r} is already used by {section}[{j}]"
        for i, j in _repeats(names)
    ]


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_model(name: str, catalog: Catalog) -> str:
    return f"{name!r} is not a known GPU model (known: {', '.join(catalog.names())})"


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind, msg, value = item["type"], item["msg"], item.get("input")
        path = _join("", *loc) or "(top level)"
        if kind == "missing":
            problems.append(f"{path}: is required")
        elif kind == "extra_forbidden":
            problems.append(f"{path}: {_unknown_field(loc)}")
        elif kind == "invalid_key":
            problems.append(
                f"{_join('', *loc[:-1]) or '(top level)'}: key {_show(value)} is not a string"
            )
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
            scalar = not isinstance(value, Mapping | list | tuple)
            problems.append(f"{path}: {_show(value)} {msg}" if scalar else f"{path}: {msg}")
        elif msg.startswith("Input should be "):
            wanted = msg.removeprefix("Input should be ")
            wanted = wanted.replace("valid tuple", "list").replace("valid dictionary", "mapping")
            hint = " (quote it in YAML)" if kind == "string_type" else ""
            problems.append(f"{path}: {_show(value)} is not {wanted}{hint}")
        else:
            problems.append(f"{path}: {_show(value)}: {msg[:1].lower()}{msg[1:]}")
    return problems


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    owner = _model_at(SnapshotFile, loc[:-1])
    if owner is None:
        return "unknown field"
    fields = list(owner.model_fields)
    label = "snapshot" if owner is SnapshotFile else owner.__name__
    return (
        f"unknown field{_did_you_mean(str(loc[-1]), fields)} ({label} fields: {', '.join(fields)})"
    )


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model a location points into, for listing its fields."""
    current: object = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
            continue
        args = get_args(current)
        if get_origin(current) in (tuple, list) and args:
            current = args[0]
        elif get_origin(current) is dict and len(args) == 2:
            current = args[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: object) -> object:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


# --- catalog and node pools ----------------------------------------------------------------


def _checked_catalog(snapshot: Snapshot) -> tuple[Catalog, list[str]]:
    """The snapshot's catalog, built from what is usable, and the problems of the rest."""
    problems = []
    base = default_catalog()
    keys = [model.name.lower() for model in snapshot.gpu_models]
    repeated = dict(_repeats(keys))
    problems += [
        f"gpu_models[{i}].name: {snapshot.gpu_models[i].name!r} is already used by gpu_models[{j}]"
        for i, j in repeated.items()
    ]
    extra = []
    for i, model in enumerate(snapshot.gpu_models):
        path = f"gpu_models[{i}]"
        key = keys[i]
        builtin = base.get(model.name)
        if i in repeated:
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
            if owner is not None and owner.name.lower() != key:
                clash = True
                problems.append(
                    f"{path}.products[{j}]: {product!r} is already a product of "
                    f"the built-in {owner.name}"
                )
        if not (math.isfinite(model.relative_throughput) and model.relative_throughput > 0):
            problems.append(
                f"{path}.relative_throughput: {model.relative_throughput} must be "
                "a finite number greater than 0"
            )
        if not (math.isfinite(model.price_per_hour) and model.price_per_hour >= 0):
            problems.append(
                f"{path}.price_per_hour: {model.price_per_hour} must be a finite number, 0 or more"
            )
        if clash:
            continue  # adding it would make a product label ambiguous
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
        path = _join("prices", name)
        if catalog.get(name) is None:
            problems.append(f"{path}: {_unknown_model(name, catalog)}")
        elif not (math.isfinite(price) and price >= 0):
            problems.append(f"{path}: {price} must be a finite number, 0 or more")
        else:
            prices[name] = price
    return (catalog.with_prices(prices) if prices else catalog), problems


def _pool_problems(pool: NodePool, path: str, catalog: Catalog) -> list[str]:
    model = catalog.get(pool.gpu_model)
    if model is None:
        return [f"{path}.gpu_model: {_unknown_model(pool.gpu_model, catalog)}"]
    problems = []
    if pool.mig_gpus is not None and pool.mig_layout is None:
        problems.append(f"{path}.mig_gpus: {pool.mig_gpus} needs a mig_layout to apply")
    if pool.mig_gpus is not None and pool.mig_gpus > pool.gpus_per_node:
        problems.append(
            f"{path}.mig_gpus: {pool.mig_gpus} is more than gpus_per_node ({pool.gpus_per_node})"
        )
    if pool.mig_layout is not None:
        problems += layout_problems(model, pool.mig_layout, f"{path}.mig_layout")
    product = pool.labels.get(_PRODUCT_LABEL)
    named = catalog.get(product) if product is not None else model
    if named is not model:
        problems.append(
            f"{_join(path, 'labels', _PRODUCT_LABEL)}: {product!r} is not a product of "
            f"{model.name}, the pool's gpu_model"
        )
    if _HOSTNAME_LABEL in pool.labels:
        problems.append(
            f"{_join(path, 'labels', _HOSTNAME_LABEL)}: "
            f"{pool.labels[_HOSTNAME_LABEL]!r} is set per node from its name; "
            "remove it"
        )
    return problems


def _expand_pool(pool: NodePool, catalog: Catalog) -> list[Node]:
    model = catalog.get(pool.gpu_model)
    model_name = model.name if model else pool.gpu_model
    product = model.products[0] if model and model.products else model_name
    mig_gpus = 0
    if pool.mig_layout is not None:
        mig_gpus = pool.gpus_per_node if pool.mig_gpus is None else pool.mig_gpus
    gpus = tuple(
        Gpu(
            index=i,
            model=model_name,
            mig=pool.mig_layout if i < mig_gpus else None,
            shared=pool.shared and i >= mig_gpus,
        )
        for i in range(pool.gpus_per_node)
    )
    width = max(3, len(str(pool.count - 1)))
    generated = {
        _PRODUCT_LABEL: product,
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
        "nvidia.com/gpu.present": "true",
    }
    nodes = []
    for n in range(pool.count):
        name = f"{pool.name}-{n:0{width}d}"
        nodes.append(
            Node(
                name=name,
                labels={**generated, **pool.labels, _HOSTNAME_LABEL: name},
                taints=pool.taints,
                gpus=gpus,
                cpu_milli=pool.cpu_milli,
                memory_mib=pool.memory_mib,
            )
        )
    return nodes


# --- cross-reference checks ----------------------------------------------------------------


class _Checks:
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
        for i, j in _repeats([node.name for node in nodes]):
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
        for j, k in _repeats([gpu.index for gpu in node.gpus]):
            self.problems.append(
                f"{path}.gpus[{j}].index: {node.gpus[j].index} is already used by {path}.gpus[{k}]"
            )
        for j, gpu in enumerate(node.gpus):
            where = f"{path}.gpus[{j}]"
            model = self.catalog.get(gpu.model)
            if model is None:
                self.problems.append(f"{where}.model: {_unknown_model(gpu.model, self.catalog)}")
            elif gpu.mig is not None:
                if gpu.shared:
                    self.problems.append(
                        f"{where}.shared: true conflicts with mig: fractional "
                        "pods share whole GPUs, not MIG-partitioned ones"
                    )
                self.problems += layout_problems(model, gpu.mig, f"{where}.mig")

    def _flavor(self, flavor: str) -> tuple[str | None, str]:
        """The canonical flavor name, or None and why not."""
        if flavor.startswith("mig-"):
            profile = flavor.removeprefix("mig-")
            if profile in self.profiles:
                return flavor, ""
            return None, (
                f"{flavor!r} is not a known flavor: no GPU model has MIG profile "
                f"{profile!r}{_did_you_mean(profile, self.profiles)}"
            )
        model = self.catalog.get(flavor)
        if model is not None:
            return model.name, ""
        return None, (
            f"{flavor!r} is not a known flavor (a GPU model: "
            f"{', '.join(self.catalog.names())}; or mig-<profile>)"
        )

    def _queues(self) -> None:
        self.problems += _already_used("queues", [q.name for q in self.snapshot.queues])
        for i, queue in enumerate(self.snapshot.queues):
            path = f"queues[{i}]"
            if not math.isfinite(queue.weight):
                self.problems.append(f"{path}.weight: {queue.weight} is not a finite number")
            flavors: dict[str, str] = {}
            for key, quota in queue.quota.items():
                where = _join(path, "quota", key)
                flavor, why = self._flavor(key)
                if flavor is None:
                    self.problems.append(f"{where}: {why}")
                elif flavor in flavors:
                    self.problems.append(
                        f"{where}: {key!r} is the same flavor as {flavors[flavor]!r}"
                    )
                else:
                    flavors[flavor] = key
                for limit in ("borrowing_limit", "lending_limit"):
                    value = getattr(quota, limit)
                    if value is not None and queue.cohort is None:
                        self.problems.append(
                            f"{where}.{limit}: {value} needs a cohort, and "
                            f"queue {queue.name!r} has none"
                        )
                if quota.lending_limit is not None and quota.lending_limit > quota.nominal:
                    self.problems.append(
                        f"{where}.lending_limit: {quota.lending_limit} is more "
                        f"than the nominal quota {quota.nominal}"
                    )

    def _workloads(self) -> None:
        self.problems += _already_used("workloads", [w.name for w in self.snapshot.workloads])
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
            if workload.flavor is not None:
                flavor, why = self._flavor(workload.flavor)
                if flavor is None:
                    self.problems.append(f"{path}.flavor: {why}")
            if workload.placement is not None:
                self._running(workload, path)

    def _demand(self, workload: Workload, path: str) -> None:
        demand = workload.demand
        for k, name in enumerate(demand.models):
            if self.catalog.get(name) is None:
                self.problems.append(
                    f"{path}.demand.models[{k}]: {_unknown_model(name, self.catalog)}"
                )
        if demand.mig_profile is not None and demand.mig_profile not in self.profiles:
            self.problems.append(
                f"{path}.demand.mig_profile: {demand.mig_profile!r} is not a "
                "MIG profile of any known GPU model"
                f"{_did_you_mean(demand.mig_profile, self.profiles)}"
            )
        for name, speed in workload.throughput.items():
            where = _join(path, "throughput", name)
            if self.catalog.get(name) is None:
                self.problems.append(f"{where}: {_unknown_model(name, self.catalog)}")
            elif not (math.isfinite(speed) and speed > 0):
                self.problems.append(f"{where}: {speed} must be a finite number greater than 0")

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
