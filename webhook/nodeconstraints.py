"""Where a pod may go, as its spec says: its required node affinity and its tolerations,
read as the core models them (``NodeSelectorTerm``, ``Toleration``). A waiting pod is
decided again each cycle, and must be placed where the kube-scheduler will let it run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from scheduler.fieldpaths import join
from scheduler.model import NodeSelectorTerm, Toleration

__all__ = ["affinity_parts", "core_tolerations", "required_affinity"]

_AFFINITY = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
_REQUIREMENT_FIELDS = {"matchExpressions": "match_expressions", "matchFields": "match_fields"}


def affinity_parts(spec: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``spec.affinity``, its ``nodeAffinity`` and that one's required part, as written
    (None where a level is absent; the caller checks each one's type)."""
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = (
        node.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node, dict)
        else None
    )
    return affinity, node, required


def required_affinity(spec: dict[str, Any]) -> tuple[tuple[NodeSelectorTerm, ...], list[str]]:
    """The pod's required node affinity as the core reads it, and what is wrong with it (the
    API server validates a pod only after the mutating webhooks: a bad term reaches us)."""
    _, _, required = affinity_parts(spec)
    if required is None:
        return (), []
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(terms, list):
        return (), [f"{_AFFINITY}.nodeSelectorTerms: not a list"]
    out: list[NodeSelectorTerm] = []
    problems: list[str] = []
    for i, term in enumerate(terms):
        where = f"{_AFFINITY}.nodeSelectorTerms[{i}]"
        if not isinstance(term, dict):
            problems.append(f"{where}: not a mapping")
            continue
        data = {ours: term.get(theirs) or [] for theirs, ours in _REQUIREMENT_FIELDS.items()}
        try:
            out.append(NodeSelectorTerm.model_validate(data))
        except ValidationError as error:
            for e in error.errors():
                loc = [_camel(part) for part in e["loc"]]
                problems.append(f"{join(where, *loc)}: {e['msg'].removeprefix('Value error, ')}")
    return tuple(out), problems


def _camel(part: int | str) -> int | str:
    if isinstance(part, int):
        return part
    head, *rest = part.split("_")
    return head + "".join(word.title() for word in rest)


def core_tolerations(tolerations: Iterable[dict[str, Any]]) -> tuple[Toleration, ...]:
    """The tolerations the core models (NoExecute/NoSchedule/PreferNoSchedule,
    Equal/Exists), as the core's type. An empty effect tolerates every effect, as in
    Kubernetes; one the API server would refuse (a key that is not a string) is left out:
    reading a pod never fails on it."""
    out: list[Toleration] = []
    for t in tolerations:
        if t.get("operator", "Equal") not in ("Equal", "Exists") or t.get("effect") not in _EFFECTS:
            continue
        data = {k: t[k] for k in _TOLERATION_FIELDS if k in t and (k != "effect" or t[k])}
        try:
            out.append(Toleration.model_validate(data))
        except ValidationError:
            continue
    return tuple(out)


_TOLERATION_FIELDS = ("key", "operator", "value", "effect")
_EFFECTS = (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute")
