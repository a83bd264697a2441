"""Snapshot files in; one error that lists every problem out.

Snapshots are written by hand (demo clusters, fixtures, capacity plans) and by converters,
so a bad one must be answered with all of its problems at once, each naming the field path
the way the file spells it (``queues[2].quota.H100.nominal: -1 is negative``), and never with
a traceback. pydantic checks each object on its own; what needs the whole snapshot (names
that must exist or be unique, GPU models and MIG geometry from the catalog, running
placements that must not overcommit) is checked here afterwards, and ``validate_snapshot``
offers the same checks to snapshots built in code.

``node_pools`` and ``namespaces`` exist only in the file format: hundreds of identical nodes
are written as a few pools and expanded here into plain ``Node`` objects, so the core never
sees pools; ``namespaces`` (the labels that opt namespaces in) make the same file a
standalone cluster for ``apportion serve --cluster``, and the other commands read the file
as the snapshot it also is. Everything here is pure: text and data in, values out; callers
read the files.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.nodes import Node as YamlNode

from scheduler.catalog import Catalog
from scheduler.consistency import MAX_NODE_GPUS, Checks, checked_catalog, validate_snapshot
from scheduler.fieldpaths import (
    already_used,
    did_you_mean,
    join,
    json_sentence,
    show,
    unknown_model,
)
from scheduler.mig import layout_problems
from scheduler.model import (
    CpuMilli,
    Gpu,
    MemoryMib,
    MigSlice,
    Node,
    NonNegative,
    Positive,
    Snapshot,
    Taint,
)
from scheduler.names import MAX_SUBDOMAIN, namespace_name, node_name, queue_problems

__all__ = [
    "FieldProblem",
    "Namespaces",
    "NodePool",
    "SnapshotError",
    "SnapshotFile",
    "field_problems",
    "load_cluster_text",
    "load_snapshot_text",
    "parse_document",
    "problem_lines",
    "snapshot_from_data",
    "validate_snapshot",
    "validated",
]

_PRODUCT_LABEL = "nvidia.com/gpu.product"
_HOSTNAME_LABEL = "kubernetes.io/hostname"

# A bound that keeps a typo (count: 1000000000) from expanding into a hang, far above any
# real cluster.
_MAX_POOL_NODES = 100_000
MAX_CLUSTER_GPUS = 1_000_000
"""GPUs in one snapshot, nodes and pools together: ten times the largest clusters built,
and what pools within their own bounds (100,000 nodes × 1,024 GPUs) must not exhaust
memory expanding into (250,000 GPUs take under 200 MB)."""
MAX_EXPANDED_VALUES = 10_000_000
"""Values a document may hold once its YAML aliases are expanded: each alias is one more
copy for validation to walk, so 7 KB of nested aliases read as 100 million values."""


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
    gpus_per_node: Positive = Field(le=MAX_NODE_GPUS)
    labels: dict[str, str] = Field(default_factory=dict)
    """Added to the generated GFD and hostname labels."""
    taints: tuple[Taint, ...] = ()
    cpu_milli: CpuMilli | None = None
    memory_mib: MemoryMib | None = None
    shared: bool = False
    """Time-slice the GPUs that have no MIG layout."""
    mig_layout: tuple[MigSlice, ...] | None = None
    """The MIG layout of each of the first ``mig_gpus`` GPUs of every node."""
    mig_gpus: NonNegative | None = None
    """How many GPUs (lowest indices) get ``mig_layout``; all of them when omitted."""


Namespaces = dict[str, dict[str, str]]
"""Namespace → its labels, as on the Namespace objects of a cluster."""


class SnapshotFile(Snapshot):
    """The file format: a Snapshot plus ``node_pools``, appended after ``nodes``, and the
    ``namespaces`` a standalone webhook serves (one file for decide, simulate, plan and
    serve)."""

    model_config = ConfigDict(title="snapshot")

    node_pools: tuple[NodePool, ...] = ()
    namespaces: Namespaces = Field(default_factory=dict)
    """Standalone serving: the labels of each namespace, which opt it in exactly as labels
    on real Namespace objects do. What a decision or a simulation decides does not depend
    on them."""


def load_snapshot_text(text: str, source: str = "<input>") -> Snapshot:
    """Parse YAML or JSON text (``source`` names it in messages) into a checked Snapshot."""
    return snapshot_from_data(parse_document(text, source), source)


def load_cluster_text(text: str, source: str = "<input>") -> tuple[Snapshot, Namespaces]:
    """A cluster file's snapshot and the labels of its namespaces (``serve --cluster``)."""
    return _from_data(parse_document(text, source), source)


def snapshot_from_data(data: object, source: str = "<input>") -> Snapshot:
    """Build a checked Snapshot from parsed data; raise SnapshotError listing every problem."""
    return _from_data(data, source)[0]


def _from_data(data: object, source: str) -> tuple[Snapshot, Namespaces]:
    if data is None:
        raise SnapshotError([f"{source}: is empty; expected a mapping of snapshot fields"], source)
    if not isinstance(data, dict):
        raise SnapshotError(
            [f"{source}: the top level must be a mapping of snapshot fields, not {show(data)}"],
            source,
        )
    parsed, found = validated(SnapshotFile, data)
    if parsed is None:
        raise SnapshotError(problem_lines(found), source)
    catalog, problems = checked_catalog(parsed)
    nodes = list(parsed.nodes)
    gpus = sum(len(n.gpus) for n in nodes) + sum(
        p.count * p.gpus_per_node for p in parsed.node_pools
    )
    if gpus > MAX_CLUSTER_GPUS:
        where = "node_pools" if parsed.node_pools else "nodes"
        raise SnapshotError(
            [f"{where}: {gpus:,} GPUs in all (nodes and pools); at most {MAX_CLUSTER_GPUS:,}"],
            source,
        )
    problems += _name_problems(parsed)
    pool_of_node: dict[int, int] = {}
    problems += already_used("node_pools", [pool.name for pool in parsed.node_pools])
    for p, pool in enumerate(parsed.node_pools):
        problems += _pool_problems(pool, f"node_pools[{p}]", catalog)
        for node in _expand_pool(pool, catalog):
            pool_of_node[len(nodes)] = p
            nodes.append(node)
    # Only the fields the file gives: whether it gave ``now`` is part of what it says.
    fields = {
        name: getattr(parsed, name)
        for name in parsed.model_fields_set & Snapshot.model_fields.keys()
    }
    snapshot = Snapshot.model_validate({**fields, "nodes": tuple(nodes)})
    problems += Checks(snapshot, catalog, pool_of_node).run()
    if problems:
        raise SnapshotError(problems, source)
    return snapshot, parsed.namespaces


def _name_problems(parsed: SnapshotFile) -> list[str]:
    """Names the file's cluster must have as Kubernetes has them (``scheduler.names``): its
    nodes (a pool's with ``-000`` … appended), queues, cohorts and namespaces. The core
    compares names as given, so a trace's tenant (``user 7``) may name a simulated queue;
    a file describes a cluster, where such names are refused."""
    problems = [
        f"nodes[{i}].name: {show(node.name)} {why}"
        for i, node in enumerate(parsed.nodes)
        if (why := node_name(node.name))
    ]
    suffix = len(f"-{_MAX_POOL_NODES - 1}")
    problems += [
        f"node_pools[{p}].name: {show(pool.name)} {why}"
        for p, pool in enumerate(parsed.node_pools)
        if (why := node_name(pool.name, MAX_SUBDOMAIN - suffix))
    ]
    for i, queue in enumerate(parsed.queues):
        problems += queue_problems(queue, f"queues[{i}]")
    problems += [
        f"workloads[{i}].namespace: {show(w.namespace)} {why}"
        for i, w in enumerate(parsed.workloads)
        if (why := namespace_name(w.namespace))
    ]
    problems += [
        f"{join('namespaces', name)}: {show(name)} {why}"
        for name in parsed.namespaces
        if (why := namespace_name(name))
    ]
    return problems


# --- parsing -------------------------------------------------------------------------------


class _DuplicateKeyError(Exception):
    pass


_TAG = "tag:yaml.org,2002:"
_INT, _FLOAT = _TAG + "int", _TAG + "float"
_YAML11_NUMBER = "tag:apportion.io,2024:yaml11-number"
"""The tag of a plain scalar that YAML 1.1 reads as a number, and YAML 1.2 as text or
another number: ``parse_document`` refuses it, with its path."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads numbers as YAML 1.2 does, rejects duplicate keys (YAML keeps the
    last one silently) and counts the aliases it reads (``parse_document`` bounds what they
    expand to).

    PyYAML reads YAML 1.1, where ``1:30`` is 90 (base 60), ``017`` is 15 (octal) and
    ``1_000`` is 1000: a count, a time or a weight written so was quietly another number.
    Numbers here are those of the 1.2 core schema (JSON's, and current YAML tools'):
    decimal, ``0o`` octal or ``0x`` hex. A plain value that YAML 1.1 reads as another
    number than 1.2 does is refused, with its path: read either way, it means something
    else to someone (kubectl reads YAML 1.1). ``yes``, ``no``, ``on`` and ``off`` stay
    booleans, as YAML 1.1 and kubectl read them, so they mean the same to both: refused
    where a number or a text is wanted, never quietly the text ``"no"``."""

    aliases = 0
    yaml11_numbers = 0

    def compose_node(self, parent: YamlNode | None, index: int) -> YamlNode | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
        return super().compose_node(parent, index)

    def resolve(self, kind: type[YamlNode], value: str, implicit: tuple[bool, bool]) -> str:
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        if kind is ScalarNode and implicit[0] and _yaml11_differs(value, tag):
            self.yaml11_numbers += 1
            return _YAML11_NUMBER
        return tag

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


def _yaml12_int(value: str) -> int:
    """A 1.2 core integer: decimal (with leading zeros too), ``0o`` octal or ``0x`` hex
    (PyYAML's constructor reads a leading 0 as octal, and ``08`` fails)."""
    if value.startswith(("0o", "0x")):
        return int(value[2:], 8 if value[1] == "o" else 16)
    return int(value)


_INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
"""The 1.2 core schema's integers."""
# The YAML 1.2 core schema's plain scalars (its spec's section 10.3.2), YAML 1.1's
# booleans (see _Loader) and the merge key ('<<') files use with anchors, each with the
# characters it may start with. No timestamps: times are integer seconds here, and an
# unquoted date stays a string for pydantic to name.
_CORE = (
    (_TAG + "null", r"^(?:~|null|Null|NULL|)$", ("~", "n", "N", "")),
    (
        _TAG + "bool",
        r"^(?:true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$",
        tuple("tTfFyYnNoO"),
    ),
    (_INT, _INT_12.pattern, tuple("-+0123456789")),
    (
        _FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        tuple("-+.0123456789"),
    ),
    (_TAG + "merge", r"^(?:<<)$", ("<",)),
)
_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _firsts in _CORE:
    for _first in _firsts:
        _Loader.yaml_implicit_resolvers.setdefault(_first, []).append((_tag, re.compile(_pattern)))
_Loader.add_constructor(_INT, lambda _, node: _yaml12_int(node.value))
_YAML11 = {
    first: [(tag, rx) for tag, rx in resolvers if tag in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_NUMBERS = SafeConstructor()
"""PyYAML's YAML 1.1 number constructors, to tell what a 1.1 reader makes of a value."""


def _yaml11_number(value: str) -> int | float | None:
    """The number YAML 1.1 (PyYAML) reads a plain scalar as; None for anything else."""
    for tag, pattern in _YAML11.get(value[:1], []):
        if pattern.match(value):
            node = ScalarNode(tag, value)
            number: int | float
            if tag == _INT:
                number = _NUMBERS.construct_yaml_int(node)
            else:
                number = _NUMBERS.construct_yaml_float(node)
            return number
    return None


def _yaml11_differs(value: str, tag: str) -> bool:
    """Whether YAML 1.1 reads the plain scalar ``value`` as a number other than what the
    1.2 core schema (``tag``) reads."""
    yaml11 = _yaml11_number(value)
    if yaml11 is None:
        return False
    if tag == _INT:
        return yaml11 != _yaml12_int(value)
    # A float is written the same way but for '_' and ':', with which 1.2 reads it as text.
    return tag != _FLOAT


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _DuplicateKeyError
    return dict(pairs)


def parse_document(text: str, source: str) -> object:
    """YAML or JSON text as plain data; SnapshotError naming line and column, or a
    duplicate key, when it does not parse (files that wrap a snapshot use it too)."""
    json_problem = None
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as error:
            json_problem = (
                f"{source}: line {error.lineno} column {error.colno}: {json_sentence(error.msg)}"
            )
        except _DuplicateKeyError:
            pass  # YAML reads JSON too and names the duplicate with its line
        except (ValueError, RecursionError) as error:  # YAML would fail the same way, slower
            raise SnapshotError([f"{source}: {_unreadable(error)}"], source) from None
    loader = None
    problems: list[str] = []
    try:
        loader = _Loader(text)  # reads the text: a character YAML refuses raises here
        node = loader.get_single_node()
        if loader.yaml11_numbers:
            assert node is not None
            problems = _yaml11_problems(node, source)
        else:
            data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        problems = [json_problem or _yaml_problem(error, source)]
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        problems = [json_problem or f"{source}: {_unreadable(error)}"]
    else:
        if not problems and loader.aliases and not _within(data, MAX_EXPANDED_VALUES):
            problems = [
                f"{source}: its {loader.aliases:,} YAML aliases expand it to more than "
                f"{MAX_EXPANDED_VALUES:,} values"
            ]
        elif not problems:
            return data
    finally:
        if loader is not None:
            loader.dispose()
    raise SnapshotError(problems, source)


def _yaml11_problems(root: YamlNode, source: str) -> list[str]:
    """Every plain value YAML 1.1 reads as another number than 1.2 does, by line, column and
    path, in the order of the text (each once, however many aliases name it)."""
    found: list[tuple[ScalarNode, tuple[int | str, ...]]] = []
    seen: set[int] = set()
    stack: list[tuple[YamlNode, tuple[int | str, ...]]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        # Children pushed last first: a node aliases name is found where it is written.
        if isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                merged = key.tag == _TAG + "merge"  # its entries are this mapping's
                stack.append((value, loc if merged else (*loc, str(key.value))))
                stack.append((key, loc))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, ScalarNode) and node.tag == _YAML11_NUMBER:
            found.append((node, loc))
    return [_yaml11_problem(node, loc, source) for node, loc in found]


def _yaml11_problem(node: ScalarNode, loc: tuple[int | str, ...], source: str) -> str:
    value = node.value
    yaml11 = show(_yaml11_number(value))
    if ":" in value:
        how = "base 60"
    elif "_" in value:
        how = "'_' left out"
    elif "b" in value or "x" in value:
        how = "binary" if "b" in value else "hex"
    else:
        how = "octal"
    if _INT_12.match(value):
        yaml12 = show(_yaml12_int(value))
        write = f"{yaml11} or {yaml12}, whichever you mean, without the leading 0"
    else:
        yaml12 = "text"
        write = f"{yaml11}, or quote it for text"
    mark = node.start_mark
    return (
        f"{source}: line {mark.line + 1} column {mark.column + 1}: "
        f"{join('', *loc) or '(top level)'}: {value} is {yaml11} in YAML 1.1 ({how}) but "
        f"{yaml12} in YAML 1.2, which Apportion reads: write {write}"
    )


def _unreadable(error: ValueError | RecursionError | yaml.YAMLError) -> str:
    """Python's words for a document it cannot hold, as a user reads them."""
    if isinstance(error, RecursionError):
        return "nested too deeply to read"
    if "integer string conversion" in str(error):  # int() past 4,300 digits
        return "a number has too many digits (more than 4,300)"
    return str(error)


def _within(data: object, limit: int) -> bool:
    """Whether ``data``, walked as a tree (a value reached twice counted twice, as
    validation walks it), holds at most ``limit`` values; stops once past it."""
    stack = [data]
    count = 0
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            return False
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


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


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field's problem as people read it, for files of every kind (snapshots, queue
    files, trace rows): where (``loc``), what is wrong with the value as written (``text``:
    ``-1 is negative``), and the same without the value (``why``: ``is negative``), by
    which alike problems are counted."""

    loc: tuple[int | str, ...]
    text: str
    why: str


_M = TypeVar("_M", bound=BaseModel)


def validated(
    root: type[_M], data: object, from_yaml: bool = True
) -> tuple[_M | None, list[FieldProblem]]:
    """``data`` as a ``root``, or None and every problem: pydantic's, and the numbers it
    would take though they were not written as numbers of their kind (``_loose_numbers``),
    one problem per field. ``from_yaml``: the data was YAML, whose booleans a hint spells."""
    loose = _loose_numbers(data, root, from_yaml)
    try:
        model = root.model_validate(data)
    except ValidationError as error:
        named = {p.loc for p in loose}
        return None, loose + [p for p in field_problems(error, root) if p.loc not in named]
    return (None, loose) if loose else (model, [])


def problem_lines(problems: Iterable[FieldProblem], prefix: str = "") -> list[str]:
    """Problems as ``path: value why`` lines, paths under ``prefix``."""
    return [f"{join(prefix, *p.loc) or '(top level)'}: {p.text}" for p in problems]


def field_problems(error: ValidationError, root: type[BaseModel]) -> list[FieldProblem]:
    """pydantic's errors for data of ``root`` in our words, not pydantic's."""
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind, msg, value = item["type"], item["msg"], item.get("input")
        if kind == "missing":
            why = text = "is required"
        elif kind == "extra_forbidden":
            why = text = _unknown_field(root, loc)
        elif kind == "invalid_key":
            loc = loc[:-1]
            why = text = f"key {show(value)} is not a string"
        elif kind == "value_error":
            why = msg.removeprefix("Value error, ")
            scalar = not isinstance(value, Mapping | list | tuple)
            text = f"{show(value)} {why}" if scalar else why
        elif msg.startswith("Input should be "):
            wanted = msg.removeprefix("Input should be ")
            wanted = wanted.replace("valid tuple", "list").replace("valid dictionary", "mapping")
            hint = " (put it in quotes)" if kind == "string_type" else ""  # YAML, JSON, JSONL
            why = f"is not {wanted}{hint}"
            text = f"{show(value)} {why}"
        else:
            why = f"{msg[:1].lower()}{msg[1:]}"
            text = f"{show(value)}: {why}"
        problems.append(FieldProblem(loc, text, why))
    return problems


def _unknown_field(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    owner = _model_at(root, loc[:-1])
    if owner is None:
        return "unknown field"
    fields = list(owner.model_fields)
    # A model may name itself for people (SnapshotFile: 'snapshot'), as pydantic's title.
    label = owner.model_config.get("title") or owner.__name__
    return (
        f"unknown field{did_you_mean(str(loc[-1]), fields)} ({label} fields: {', '.join(fields)})"
    )


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model a location points into, for listing its fields."""
    current = _type_at(root, loc)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _type_at(root: type[BaseModel], loc: Sequence[int | str]) -> object:
    """The type a location of ``root``'s data must have (None when it has no field there)."""
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
    return _unwrap(current)


_YAML_BOOLEANS = " (YAML reads yes, no, on and off as booleans)"
_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
"""A number, as text: written in quotes, it would be one without them."""


def _loose_numbers(data: object, root: type[BaseModel], from_yaml: bool) -> list[FieldProblem]:
    """Numbers in data for ``root`` that pydantic would take though they are not written as
    numbers of their kind: true and false (its 1 and 0: ``gpus: true`` was one GPU), text
    (``"2"``: a count in quotes is not one, and ``"1_000"`` was 1000) and, where an integer
    is wanted, a float (``2.0``; ``1e3`` in YAML 1.2). ``from_yaml``: the data was YAML,
    whose booleans are spelt yes, no, on and off too."""
    problems: list[FieldProblem] = []
    _walk_numbers(data, root, (), problems, from_yaml)
    return problems


def _walk_numbers(
    data: object,
    annotation: object,
    loc: tuple[int | str, ...],
    problems: list[FieldProblem],
    from_yaml: bool,
) -> None:
    kind = _unwrap(annotation)
    if kind in (int, float):
        why = _loose_number(data, kind, from_yaml)
        if why is not None:
            problems.append(FieldProblem(loc, f"{show(data)} {why}", why))
    elif isinstance(kind, type) and issubclass(kind, BaseModel):
        if isinstance(data, dict):
            for key, value in data.items():
                field = kind.model_fields.get(key) if isinstance(key, str) else None
                if field is not None:
                    _walk_numbers(value, field.annotation, (*loc, key), problems, from_yaml)
    elif get_origin(kind) in (tuple, list) and get_args(kind) and isinstance(data, list):
        for i, item in enumerate(data):
            _walk_numbers(item, get_args(kind)[0], (*loc, i), problems, from_yaml)
    elif get_origin(kind) is dict and len(get_args(kind)) == 2 and isinstance(data, dict):
        for key, value in data.items():
            _walk_numbers(value, get_args(kind)[1], (*loc, key), problems, from_yaml)


def _loose_number(value: object, kind: object, from_yaml: bool) -> str | None:
    """Why ``value`` is not a number of ``kind`` as written; None when it is one, or is no
    number at all (pydantic names that)."""
    if isinstance(value, bool):
        return "is a boolean, not a number" + (_YAML_BOOLEANS if from_yaml else "")
    if isinstance(value, str):
        quoted = _NUMBER_TEXT.fullmatch(value.strip())
        return "is text, not a number" + (" (write it without quotes)" if quoted else "")
    if kind is int and isinstance(value, float):
        whole = value.is_integer()
        return "is not an integer" + (f" (write {value:.0f})" if whole else "")
    return None


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


# --- node pools ------------------------------------------------------------------------------


def _pool_problems(pool: NodePool, path: str, catalog: Catalog) -> list[str]:
    model = catalog.get(pool.gpu_model)
    if model is None:
        return [f"{path}.gpu_model: {unknown_model(pool.gpu_model, catalog)}"]
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
            f"{join(path, 'labels', _PRODUCT_LABEL)}: {product!r} is not a product of "
            f"{model.name}, the pool's gpu_model"
        )
    if _HOSTNAME_LABEL in pool.labels:
        problems.append(
            f"{join(path, 'labels', _HOSTNAME_LABEL)}: "
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
