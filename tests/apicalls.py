"""Which Kubernetes API permissions a package's source needs, read with ``ast``.

The official client names every call after its endpoint (``patch_namespaced_pod``,
``create_namespaced_pod_eviction``, ``list_cluster_custom_object``), and its generated
source holds each method's HTTP method and path. From those this module derives
(apiGroup, resource, verb) for every client call in the scanned source:

- the HTTP method and path give the verb (GET on an item: get, on a collection: list; POST:
  create; PUT: update; PATCH: patch; DELETE: delete or deletecollection) and the resource,
  with its subresource (``pods/eviction``, ``queues/status``);
- a ``list_*`` method passed, uncalled, to ``Watch().stream`` is a watch; passed to
  ``Resource(kind, method, (args…))`` (webhook/kubeapi.py's informers) a list and a watch;
- for custom objects, ``group`` and ``plural`` come from the call's arguments: string
  literals, module constants, or names imported from another module (imported to read them);
- the API class (CoreV1Api or EventsV1Api both have ``create_namespaced_event``) is taken
  from what the receiver was assigned or annotated as; a method name that belongs to one
  class only needs no binding.

A call that cannot be resolved is a ``problem`` (say which resource it touches by binding the
API object to a name or using constants), never silently skipped.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["Permission", "Scan", "client_endpoints", "rule_permissions", "scan_source"]

_API_DIR_MODULE = "kubernetes.client.api"


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.resource}:{self.verb}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    api_class: str
    http_method: str
    path: str


@dataclass(slots=True)
class Scan:
    permissions: dict[Permission, list[str]] = field(default_factory=dict)
    """Each permission needed, with the places (``file line N``) that need it."""
    problems: list[str] = field(default_factory=list)

    def add(self, permission: Permission, where: str) -> None:
        self.permissions.setdefault(permission, []).append(where)


# --- the client's endpoints, from its generated source ---------------------------------------

# Client 30+ (``_<method>_serialize``: ``method=``, ``resource_path=``) and older clients
# (``<method>_with_http_info``: ``call_api('<path>', '<METHOD>'``), read line by line.
_DEF = re.compile(r"^    def _?(\w+?)(?:_serialize|_with_http_info)\(")
_NEW_METHOD = re.compile(r"^\s+method='(\w+)',")
_NEW_PATH = re.compile(r"^\s+resource_path='([^']+)',")
_OLD_CALL = re.compile(r"call_api\(\s*'([^']+)',\s*'(\w+)'")
_CLASS = re.compile(r"^class (\w+Api)\b", re.MULTILINE)


@cache
def client_endpoints() -> Mapping[str, tuple[Endpoint, ...]]:
    """Method name → its endpoint in every API class of the installed kubernetes client."""
    package = importlib.import_module(_API_DIR_MODULE)
    found: dict[str, list[Endpoint]] = {}
    for path in sorted(Path(package.__file__ or "").parent.glob("*_api.py")):
        text = path.read_text(encoding="utf-8")
        names = _CLASS.findall(text)
        if not names:
            continue
        for method, http_method, url in _endpoints_in(text):
            found.setdefault(method, []).append(Endpoint(names[0], http_method.upper(), url))
    return {name: tuple(endpoints) for name, endpoints in found.items()}


def _endpoints_in(text: str) -> list[tuple[str, str, str]]:
    found: dict[str, tuple[str, str, str]] = {}
    method = http_method = None
    for line in text.splitlines():
        if match := _DEF.match(line):
            method, http_method = match.group(1), None
        elif method is None:
            continue
        elif match := _NEW_METHOD.match(line):
            http_method = match.group(1)
        elif (match := _NEW_PATH.match(line)) and http_method:
            found[method] = (method, http_method, match.group(1))
        elif match := _OLD_CALL.search(line):
            found[method] = (method, match.group(2), match.group(1))
    return list(found.values())


def _permission(endpoint: Endpoint, group: str | None, plural: str | None) -> Permission:
    parts = endpoint.path.strip("/").split("/")
    if parts[0] == "api":
        api_group, rest = "", parts[2:]
    else:
        api_group, rest = parts[1], parts[3:]
    if api_group == "{group}":
        api_group = group or "?"
    watch = bool(rest) and rest[0] == "watch"
    rest = rest[1:] if watch else rest
    if len(rest) >= 3 and rest[:2] == ["namespaces", "{namespace}"]:
        rest = rest[2:]
    resource = plural if rest[0] == "{plural}" and plural is not None else rest[0]
    item = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    if watch:
        verb = "watch"
    else:
        verb = {
            ("GET", True): "get",
            ("GET", False): "list",
            ("POST", True): "create",
            ("POST", False): "create",
            ("PUT", True): "update",
            ("PUT", False): "update",
            ("PATCH", True): "patch",
            ("PATCH", False): "patch",
            ("DELETE", True): "delete",
            ("DELETE", False): "deletecollection",
        }[(endpoint.http_method, item)]
    return Permission(api_group, resource, verb)


# --- the scan ----------------------------------------------------------------------------------


def scan_source(source: str, file: str = "<source>", scan: Scan | None = None) -> Scan:
    """Add the permissions one module's source needs to ``scan`` (a new one by default)."""
    scan = scan if scan is not None else Scan()
    tree = ast.parse(source, filename=file)
    endpoints = client_endpoints()
    classes = {e.api_class for es in endpoints.values() for e in es}
    bindings = _bindings(tree, classes)
    constants = _constants(tree)
    streamed: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "stream"
            and node.args
            and isinstance(node.args[0], ast.Attribute)
        ):
            streamed.add(id(node.args[0]))
            _record(node.args[0], node, True, bindings, constants, endpoints, file, scan)
    for node in ast.walk(tree):
        # ``Resource(kind, api.list_x, (args…))`` declares an informer (webhook/kubeapi.py):
        # the list call is made to list and to watch, with the tuple as its arguments.
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).rsplit(".", 1)[-1] == "Resource"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Attribute)
        ):
            method = node.args[1]
            extra = (
                node.args[2].elts
                if len(node.args) > 2 and isinstance(node.args[2], ast.Tuple)
                else []
            )
            streamed.add(id(method))
            for watching, args in ((False, extra), (True, [method, *extra])):
                call = ast.Call(func=method, args=args, keywords=[])
                call.lineno = node.lineno
                _record(method, call, watching, bindings, constants, endpoints, file, scan)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and id(node.func) not in streamed
        ):
            _record(node.func, node, False, bindings, constants, endpoints, file, scan)
    return scan


def _record(
    func: ast.Attribute,
    call: ast.Call,
    streamed: bool,
    bindings: Mapping[str, str],
    constants: Mapping[str, Any],
    endpoints: Mapping[str, tuple[Endpoint, ...]],
    file: str,
    scan: Scan,
) -> None:
    method = func.attr.removesuffix("_with_http_info")
    candidates = endpoints.get(method)
    if not candidates:
        return
    where = f"{file} line {call.lineno}"
    api_class = _receiver_class(func.value, bindings)
    if api_class is not None:
        candidates = tuple(e for e in candidates if e.api_class == api_class)
        if not candidates:
            return  # a method of the same name on another kind of object
    elif len({e.api_class for e in candidates}) > 1:
        owners = ", ".join(sorted({e.api_class for e in candidates}))
        scan.problems.append(
            f"{where}: `{ast.unparse(func)}` could be {owners}; assign or annotate "
            f"`{ast.unparse(func.value)}` with its API class"
        )
        return
    endpoint = candidates[0]
    group = plural = None
    if "{group}" in endpoint.path or "{plural}" in endpoint.path:
        if streamed:
            call_args: dict[str, ast.expr] = {k.arg: k.value for k in call.keywords if k.arg}
            positional = list(call.args[1:])
        else:
            call_args = {k.arg: k.value for k in call.keywords if k.arg}
            positional = list(call.args)
        names = _parameters(endpoint.api_class, method)
        for name, arg in zip(names, positional, strict=False):
            call_args.setdefault(name, arg)
        group = _value(call_args.get("group"), constants)
        plural = _value(call_args.get("plural"), constants)
        if group is None or plural is None:
            scan.problems.append(
                f"{where}: `{method}`: cannot tell the group and plural from the arguments; "
                "use string literals or module constants"
            )
            return
    permission = _permission(endpoint, group, plural)
    if streamed:
        if permission.verb != "list":
            scan.problems.append(f"{where}: `{method}` streamed, but it is not a list call")
            return
        permission = Permission(permission.group, permission.resource, "watch")
    scan.add(permission, where)


def _receiver_class(receiver: ast.expr, bindings: Mapping[str, str]) -> str | None:
    if isinstance(receiver, ast.Call):
        return _class_name(receiver.func)
    return bindings.get(ast.unparse(receiver))


def _class_name(expr: ast.expr) -> str | None:
    name = ast.unparse(expr).rsplit(".", 1)[-1]
    return name if name.endswith("Api") else None


def _bindings(tree: ast.AST, classes: set[str]) -> dict[str, str]:
    """``v1`` / ``self.core`` → API class, from assignments and annotations."""
    bound: dict[str, str] = {}

    def bind(target: ast.expr, cls: str | None) -> None:
        if cls in classes:
            bound[ast.unparse(target)] = cls

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for target in node.targets:
                bind(target, _class_name(node.value.func))
        elif isinstance(node, ast.AnnAssign):
            bind(node.target, _class_name(_unquote(node.annotation)))
        elif isinstance(node, ast.arg) and node.annotation is not None:
            bound_name = ast.Name(id=node.arg)
            bind(bound_name, _class_name(_unquote(node.annotation)))
    return bound


def _unquote(annotation: ast.expr) -> ast.expr:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return ast.parse(annotation.value, mode="eval").body
    return annotation


def _constants(tree: ast.Module | ast.AST) -> dict[str, Any]:
    """Module-level string constants, and names imported from other modules (resolved)."""
    values: dict[str, Any] = {}
    body = tree.body if isinstance(tree, ast.Module) else []
    for node in body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                values[ast.unparse(target)] = node.value.value
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                values[alias.asname or alias.name] = _Imported(node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                values[alias.asname or alias.name] = _Imported(alias.name, None)
    return values


@dataclass(frozen=True, slots=True)
class _Imported:
    module: str
    name: str | None

    def resolve(self, attribute: str | None = None) -> Any:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            return None
        value = getattr(module, self.name, None) if self.name else module
        return getattr(value, attribute, None) if attribute else value


def _value(expr: ast.expr | None, constants: Mapping[str, Any]) -> str | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, ast.Name):
        value = constants.get(expr.id)
        value = value.resolve() if isinstance(value, _Imported) else value
        return value if isinstance(value, str) else None
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        owner = constants.get(expr.value.id)
        value = owner.resolve(expr.attr) if isinstance(owner, _Imported) else None
        return value if isinstance(value, str) else None
    return None


@cache
def _parameters(api_class: str, method: str) -> tuple[str, ...]:
    cls = getattr(importlib.import_module("kubernetes.client"), api_class)
    names = list(inspect.signature(getattr(cls, method)).parameters)
    return tuple(n for n in names if n != "self")


# --- the other side: what RBAC rules grant ---------------------------------------------------


def rule_permissions(roles: Iterable[Mapping[str, Any]]) -> dict[Permission, list[str]]:
    """Every (group, resource, verb) the ClusterRoles and Roles grant, with the role's name.
    Wildcards are refused: least privilege is only checkable when everything is spelled out."""
    granted: dict[Permission, list[str]] = {}
    for role in roles:
        label = f"{role['kind']} {role['metadata']['name']}"
        for rule in role.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(key, []):
                    raise ValueError(f"{label}: wildcard in {key}: {rule}")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.setdefault(Permission(group, resource, verb), []).append(label)
    return granted
