"""What kube-apiserver lets an update change on an existing Pod (`ValidatePodUpdate`).

The subset that matters to Apportion, with the v1.36 wording: scheduling gates can only be
removed; tolerations only added; while the pod is gated, `spec.nodeSelector` may only gain keys
and a required node affinity may only gain match expressions in existing terms; everything
else in `spec` but images, `activeDeadlineSeconds` and `terminationGracePeriodSeconds` is
immutable (the catch-all Forbidden, whose trailing diff is the fake's own JSON diff, not the
server's Go struct diff — match on the text before the first newline).
"""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

from .status import FieldError

__all__ = ["SPEC_FORBIDDEN", "pod_update_errors"]

SPEC_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)
_TERMS = (
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
)


def _gate_errors(new: list, old: list) -> list[FieldError]:
    old_names = {g.get("name") for g in old}
    return [
        FieldError(
            "Forbidden",
            f"spec.schedulingGates[{i}].name",
            f"only deletion is allowed, but found new scheduling gate '{g.get('name')}'",
        )
        for i, g in enumerate(new)
        if g.get("name") not in old_names
    ]


def _toleration_errors(new: list, old: list) -> list[FieldError]:
    def same(a: dict, b: dict) -> bool:
        return {k: v for k, v in a.items() if k != "tolerationSeconds"} == {
            k: v for k, v in b.items() if k != "tolerationSeconds"
        }

    for toleration in old:
        if not any(same(toleration, t) for t in new):
            return [
                FieldError(
                    "Forbidden",
                    "spec.tolerations",
                    "existing toleration can not be modified except its tolerationSeconds",
                )
            ]
    return []


def _node_selector_errors(new: dict | None, old: dict | None) -> list[FieldError]:
    new = new or {}
    for key, value in (old or {}).items():
        if new.get(key) != value:
            return [
                FieldError(
                    "Invalid",
                    "spec.nodeSelector",
                    "only additions to spec.nodeSelector are allowed (no mutations or deletions)",
                    new,
                )
            ]
    return []


def _internal_requirements(reqs: list | None) -> list | None:
    if reqs is None:
        return None
    return [
        {"Key": r.get("key", ""), "Operator": r.get("operator", ""), "Values": r.get("values")}
        for r in reqs
    ]


def _internal_term(term: dict) -> dict:
    """How the server prints a NodeSelectorTerm: the internal type's Go field names."""
    return {
        "MatchExpressions": _internal_requirements(term.get("matchExpressions")),
        "MatchFields": _internal_requirements(term.get("matchFields")),
    }


def _required_terms(spec: dict) -> list | None:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    return None if required is None else (required.get("nodeSelectorTerms") or [])


def _affinity_errors(new_spec: dict, old_spec: dict) -> list[FieldError]:
    old_terms = _required_terms(old_spec)
    if not old_terms:
        return []
    new_terms = _required_terms(new_spec) or []
    if len(new_terms) != len(old_terms):
        value = [_internal_term(t) for t in new_terms] if new_terms else None
        return [
            FieldError(
                "Invalid",
                _TERMS,
                "no additions/deletions to non-empty NodeSelectorTerms list are allowed",
                value,
            )
        ]
    errors = []
    for i, (old, new) in enumerate(zip(old_terms, new_terms, strict=True)):
        for field in ("matchExpressions", "matchFields"):
            before, after = old.get(field) or [], new.get(field) or []
            if len(before) > len(after) or after[: len(before)] != before:
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{_TERMS}[{i}]",
                        "only additions are allowed (no mutations or deletions)",
                        _internal_term(new),
                    )
                )
                break
    return errors


def _normalized(value: Any) -> Any:
    """Semantic equality: an empty list or map equals an absent one."""
    if isinstance(value, dict):
        kept = {k: _normalized(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def pod_update_errors(new: dict, old: dict) -> list[FieldError]:
    """Field errors for replacing Pod `old` by `new` (empty when the server accepts it)."""
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    errors: list[FieldError] = []
    for field in ("containers", "initContainers"):
        if len(new_spec.get(field) or []) != len(old_spec.get(field) or []):
            return [
                FieldError(
                    "Forbidden", f"spec.{field}", "pod updates may not add or remove containers"
                )
            ]
    errors += _gate_errors(
        new_spec.get("schedulingGates") or [], old_spec.get("schedulingGates") or []
    )
    errors += _toleration_errors(
        new_spec.get("tolerations") or [], old_spec.get("tolerations") or []
    )
    munged = copy.deepcopy(new_spec)
    for field in ("containers", "initContainers"):
        for mine, theirs in zip(munged.get(field) or [], old_spec.get(field) or [], strict=True):
            mine["image"] = theirs.get("image")
    for field in (
        "activeDeadlineSeconds",
        "terminationGracePeriodSeconds",
        "tolerations",
        "schedulingGates",
    ):
        munged[field] = old_spec.get(field)
    if old_spec.get("schedulingGates"):
        errors += _node_selector_errors(new_spec.get("nodeSelector"), old_spec.get("nodeSelector"))
        errors += _affinity_errors(new_spec, old_spec)
        munged["nodeSelector"] = old_spec.get("nodeSelector")
        old_node_affinity = (old_spec.get("affinity") or {}).get("nodeAffinity")
        if (munged.get("affinity") or {}).get("nodeAffinity") is not None or old_node_affinity:
            munged["affinity"] = dict(munged.get("affinity") or {})
            munged["affinity"]["nodeAffinity"] = old_node_affinity
    if _normalized(munged) != _normalized(old_spec):
        before = json.dumps(_normalized(old_spec), indent=1, sort_keys=True).splitlines()
        after = json.dumps(_normalized(munged), indent=1, sort_keys=True).splitlines()
        diff = "\n".join(difflib.unified_diff(before, after, lineterm="", n=1))
        errors.append(FieldError("Forbidden", "spec", f"{SPEC_FORBIDDEN}\n{diff}"))
    return errors
