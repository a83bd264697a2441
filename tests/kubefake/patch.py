"""The three PATCH bodies the API server takes: JSON Patch, JSON merge patch, strategic merge.

JSON Patch (RFC 6902) is complete (add, remove, replace, move, copy, test). Strategic merge
knows only the merge keys of the Pod schema that matter here (see `MERGE_KEYS`): any other
list is replaced whole, as for lists without a `patchMergeKey`. Directives supported:
`$patch: delete` / `$patch: replace` inside list elements and maps, `$retainKeys` is not,
`$setElementOrder/<field>` is accepted and ignored, `$deleteFromPrimitiveList/<field>`.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "MERGE_KEYS",
    "PRIMITIVE_MERGE_LISTS",
    "PatchError",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]


class PatchError(Exception):
    """A patch that cannot apply (failed `test`, missing path, malformed operation)."""


# patchMergeKey of core/v1 list fields, by field name (the fake does not track the path).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "schedulingGates": "name",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars with patchStrategy "merge" (set union).
PRIMITIVE_MERGE_LISTS = frozenset({"finalizers"})


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _index(container: list, token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("operation on the document root is not supported")
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path {path!r}: missing {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"path {path!r}: {token!r} is not a container")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    parent, last = _parent(doc, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"path {path!r}: parent is not a container")


def _add(doc: Any, path: str, value: Any) -> None:
    parent, last = _parent(doc, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"path {path!r}: parent is not a container")


def _remove(doc: Any, path: str) -> Any:
    parent, last = _parent(doc, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"path {path!r}: parent is not a container")


def json_patch(doc: dict, operations: Any) -> dict:
    """RFC 6902 on a copy of `doc`; any failing operation fails the whole patch."""
    if not isinstance(operations, list):
        raise TypeError("a JSON Patch body must be a list of operations")
    result = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"malformed operation {op!r}")
        name, path = op["op"], op["path"]
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {name} on {path!r} has no value")
        if name == "add":
            _add(result, path, copy.deepcopy(op["value"]))
        elif name == "remove":
            _remove(result, path)
        elif name == "replace":
            _remove(result, path)
            _add(result, path, copy.deepcopy(op["value"]))
        elif name == "move":
            _add(result, path, _remove(result, op["from"]))
        elif name == "copy":
            _add(result, path, copy.deepcopy(_get(result, op["from"])))
        elif name == "test":
            if _get(result, path) != op["value"]:
                raise PatchError(f"test failed at {path!r}")
        else:
            raise PatchError(f"unknown operation {name!r}")
    return result


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: maps merge, `null` deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """Kubernetes strategic merge for core types, limited to `MERGE_KEYS` (module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$patch":
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key == "$retainKeys":
            raise PatchError("$retainKeys is not supported by the fake")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE_LISTS:
            old = list(result.get(key) or [])
            result[key] = old + [v for v in value if v not in old]
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_keyed_list(old: list, patch: list, key: str) -> list:
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [copy.deepcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    result = [copy.deepcopy(e) for e in old]
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise PatchError(f"list element {element!r} has no merge key {key!r}")
        position = next((i for i, e in enumerate(result) if e.get(key) == element[key]), None)
        if element.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(strategic_merge_patch({}, element))
        else:
            result[position] = strategic_merge_patch(result[position], element)
    return result
