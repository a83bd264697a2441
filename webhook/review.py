"""AdmissionReview ``admission.k8s.io/v1``: the request as kube-apiserver sends it, the
response it accepts.

Parsing is strict where the answer depends on it (uid, operation, kind) and lenient
everywhere else: unknown fields are ignored, as the API server's own decoders do.
Anything else is a ``ReviewError`` that names the field and becomes HTTP 400 — never a
stack trace, never a 5xx.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "AdmissionRequest",
    "Answer",
    "ReviewError",
    "allow",
    "deny",
    "parse_review",
    "review_response",
]

API_VERSION = "admission.k8s.io/v1"


class ReviewError(ValueError):
    """The body is not an AdmissionReview we can answer (HTTP 400, with this message)."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    operation: str
    """CREATE, UPDATE, DELETE or CONNECT."""
    kind: str
    """``request.kind.kind``: Pod, Binding, …"""
    resource: str
    sub_resource: str
    namespace: str
    name: str | None
    """Absent for pods created from ``generateName`` in the mutating call."""
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool
    username: str
    groups: tuple[str, ...]
    options: dict[str, Any] | None = None
    """The operation's options: for a DELETE, the DeleteOptions as the API server settled
    them (``gracePeriodSeconds``: 0 for a pod that never ran or a force delete)."""


def _field(data: dict[str, Any], key: str, kind: type, path: str, required: bool = True) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{path}.{key} is missing")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ReviewError(f"{path}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _check_object(value: object, where: str) -> None:
    """What every handler reads of an object without checking its type, as the API server
    always sends it: an object with ``metadata``, its labels and annotations maps of
    strings, and ``spec`` an object where there is one."""
    if not isinstance(value, dict):
        raise ReviewError(f"{where}: expected object, got {type(value).__name__}")
    metadata = value.get("metadata")
    if metadata is None:
        raise ReviewError(f"{where}.metadata is missing")
    if not isinstance(metadata, dict):
        raise ReviewError(f"{where}.metadata: expected object, got {type(metadata).__name__}")
    for part in ("labels", "annotations"):
        values = metadata.get(part)
        if values is not None and not (
            isinstance(values, dict) and all(isinstance(v, str) for v in values.values())
        ):
            raise ReviewError(f"{where}.metadata.{part}: expected a map of strings")
    spec = value.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise ReviewError(f"{where}.spec: expected object, got {type(spec).__name__}")


def parse_review(body: bytes) -> AdmissionRequest:
    """The request inside an AdmissionReview body, or a ReviewError naming what is wrong."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ReviewError(f"body is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ReviewError(f"body is a JSON {type(data).__name__}, not an AdmissionReview object")
    if data.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind is {data.get('kind')!r}, expected 'AdmissionReview'")
    if data.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion is {data.get('apiVersion')!r}, expected {API_VERSION!r}")
    request = _field(data, "request", dict, "AdmissionReview")
    uid = _field(request, "uid", str, "request")
    kind = _field(request, "kind", dict, "request")
    resource = _field(request, "resource", dict, "request")
    user = _field(request, "userInfo", dict, "request", required=False) or {}
    raw_groups = user.get("groups")
    groups: list[Any] = raw_groups if isinstance(raw_groups, list) else []
    obj = request.get("object")
    old = request.get("oldObject")
    for where, value in (("request.object", obj), ("request.oldObject", old)):
        if value is not None:
            _check_object(value, where)
    operation = _field(request, "operation", str, "request")
    # What a review is about: compared with nothing, an update would read as everything
    # removed (Apportion's gate and labels among them) and be refused for it.
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise ReviewError("request.object is missing: a CREATE or UPDATE review carries the object")
    if old is None and operation == "UPDATE":
        raise ReviewError(
            "request.oldObject is missing: an UPDATE review carries the object as it was"
        )
    dry_run = request.get("dryRun", False)
    options = request.get("options")
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        kind=str(kind.get("kind", "")),
        resource=str(resource.get("resource", "")),
        sub_resource=str(request.get("subResource") or ""),
        namespace=str(request.get("namespace") or ""),
        name=request.get("name") if isinstance(request.get("name"), str) else None,
        object=obj,
        old_object=old,
        dry_run=dry_run is True,
        username=str(user.get("username", "")),
        groups=tuple(str(g) for g in groups),
        options=options if isinstance(options, dict) else None,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """What the webhook decided; serialised by ``review_response``."""

    allowed: bool
    patch: tuple[dict[str, Any], ...] = ()
    message: str = ""
    code: int = 200
    warnings: tuple[str, ...] = ()


def allow(patch: Sequence[dict[str, Any]] = (), warnings: Sequence[str] = ()) -> Answer:
    return Answer(True, tuple(patch), warnings=tuple(warnings))


def deny(message: str, code: int = 403, warnings: tuple[str, ...] = ()) -> Answer:
    return Answer(False, message=message, code=code, warnings=warnings)


def review_response(uid: str, answer: Answer) -> dict[str, Any]:
    """The AdmissionReview the API server expects back, echoing the request uid."""
    response: dict[str, Any] = {"uid": uid, "allowed": answer.allowed}
    if answer.patch:
        encoded = orjson.dumps(list(answer.patch))
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode()
    if not answer.allowed:
        response["status"] = {"code": answer.code, "message": answer.message}
    if answer.warnings:
        response["warnings"] = list(answer.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
