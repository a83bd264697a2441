"""`Status` bodies and field errors exactly as kube-apiserver words them.

Every failure the fake returns is one of these, so a client's `ApiException.status`, `.reason`
and body read the same as against a real server (apimachinery's `errors` package).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApiError",
    "FieldError",
    "already_exists",
    "bad_request",
    "conflict",
    "continue_expired",
    "expired",
    "generate_name_conflict",
    "invalid",
    "not_found",
    "status",
    "unsupported_media_type",
]

_OMIT = object()


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict:
    """A failure `Status` with the real field order (kind, apiVersion, metadata, …, code)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class ApiError(Exception):
    """An HTTP error with its `Status` body; raised by the store, written by the server."""

    def __init__(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(body["message"])
        self.body = body
        self.code: int = body["code"]
        self.headers = headers or {}


def _details(name: str, group: str, plural: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    message = f'{_qualified(group, plural)} "{name}" not found'
    return ApiError(status(404, "NotFound", message, _details(name, group, plural)))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    message = f'{_qualified(group, plural)} "{name}" already exists'
    return ApiError(status(409, "AlreadyExists", message, _details(name, group, plural)))


def generate_name_conflict(group: str, plural: str, name: str) -> ApiError:
    """What a create with ``generateName`` gets once every name the server drew was taken
    (apimachinery's ``NewGenerateNameConflict``): the last name tried, retry after 1 s."""
    message = (
        f'{_qualified(group, plural)} "{name}" already exists, the server was not able to '
        "generate a unique name for the object"
    )
    details = {**_details(name, group, plural), "retryAfterSeconds": 1}
    return ApiError(status(409, "AlreadyExists", message, details))


def conflict(group: str, plural: str, name: str) -> ApiError:
    """What a write with a stale `metadata.resourceVersion` gets (optimistic concurrency)."""
    message = (
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(status(409, "Conflict", message, _details(name, group, plural)))


def expired(requested: int, oldest: int) -> dict[str, Any]:
    """The 410 a watch from a compacted resourceVersion gets (as an ERROR event or HTTP 410)."""
    return status(410, "Expired", f"too old resource version: {requested} ({oldest})")


def continue_expired() -> dict[str, Any]:
    """The 410 a list continued after etcd compacted its resourceVersion away gets."""
    return status(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You "
        "can start a new list without the continue parameter, or use the continue token in "
        "this response to retrieve the remainder of the results. Continuing with the provided "
        "token results in an inconsistent list - objects that were created, modified, or "
        "deleted between the time the first chunk was returned and now may show up in the list.",
    )


def bad_request(message: str) -> ApiError:
    return ApiError(status(400, "BadRequest", message))


def unsupported_media_type(accepted: list[str]) -> ApiError:
    message = (
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted)
    )
    return ApiError(status(415, "UnsupportedMediaType", message))


@dataclass(frozen=True, slots=True)
class FieldError:
    """apimachinery's `field.Error`: renders as `<field>: <Type>: <value>: <detail>`."""

    kind: str  # "Invalid", "Forbidden" or "Required"
    field: str
    detail: str
    bad_value: Any = _OMIT

    @property
    def cause_type(self) -> str:
        return "FieldValue" + self.kind

    def body(self) -> str:
        if self.kind != "Invalid" or self.bad_value is _OMIT:
            text = "Required value" if self.kind == "Required" else self.kind
        elif isinstance(self.bad_value, str):
            text = f"Invalid value: {json.dumps(self.bad_value)}"
        else:
            # v1.36 prints structured bad values as compact JSON (sorted map keys).
            value = json.dumps(self.bad_value, separators=(",", ":"), sort_keys=True)
            text = f"Invalid value: {value}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid: `Pod "x" is invalid: <err>` (several errors: `[<err>, <err>]`)."""
    qualified_kind = f"{kind}.{group}" if group else kind
    joined = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [
        {"reason": e.cause_type, "message": e.body(), "field": e.field} for e in errors
    ]
    return ApiError(
        status(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {joined}', details)
    )
