"""`labelSelector` and `fieldSelector` query parameters, as the API server parses them.

Labels: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-joined (AND).
Fields: `=`, `==`, `!=` on the fields the real server indexes for the resource
(`FIELDS`); any other field is refused with the server's "field label not supported".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .status import bad_request

__all__ = ["FIELDS", "Selector", "field_selector", "label_selector"]

Selector = Callable[[dict], bool]

_SET = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b=c`)."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def label_selector(selector: str | None) -> Selector:
    if not selector:
        return lambda obj: True
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in _split(selector):
        if eq := _EQ.match(part):
            key, op, value = eq.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif (found := _SET.match(part)) and not (found.group(1) and found.group(3)):
            negate, key, op, values = found.groups()
            if op:
                allowed = {v.strip() for v in values.split(",") if v.strip()}
                if op == "in":
                    tests.append(lambda labels, k=key, a=allowed: labels.get(k) in a)
                else:
                    tests.append(lambda labels, k=key, a=allowed: labels.get(k) not in a)
            elif negate:
                tests.append(lambda labels, k=key: k not in labels)
            else:
                tests.append(lambda labels, k=key: k in labels)
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")

    def matches(obj: dict) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return matches


def _path(*keys: str) -> Callable[[dict], str]:
    def read(obj: dict) -> str:
        node: Any = obj
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return "" if node is None else str(node)

    return read


_COMMON = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
FIELDS: dict[str, dict[str, Callable[[dict], str]]] = {
    "pods": {
        **_COMMON,
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    "nodes": {
        **_COMMON,
        "spec.unschedulable": lambda o: str(bool(o.get("spec", {}).get("unschedulable"))).lower(),
    },
    "namespaces": {**_COMMON, "status.phase": _path("status", "phase")},
    "events": {
        **_COMMON,
        "involvedObject.kind": _path("involvedObject", "kind"),
        "involvedObject.name": _path("involvedObject", "name"),
        "involvedObject.namespace": _path("involvedObject", "namespace"),
        "involvedObject.uid": _path("involvedObject", "uid"),
        "reason": _path("reason"),
        "type": _path("type"),
    },
}


def field_selector(selector: str | None, plural: str) -> Selector:
    if not selector:
        return lambda obj: True
    known = FIELDS.get(plural, _COMMON)
    tests: list[Selector] = []
    for part in _split(selector):
        eq = _EQ.match(part)
        if not eq:
            raise bad_request(f"invalid selector: {selector!r}; can't understand {part!r}")
        field, op, value = eq.groups()
        if field not in known:
            raise bad_request(f"field label not supported: {field}")
        read = known[field]
        if op == "!=":
            tests.append(lambda obj, r=read, v=value: r(obj) != v)
        else:
            tests.append(lambda obj, r=read, v=value: r(obj) == v)
    return lambda obj: all(test(obj) for test in tests)
