"""Names that are Kubernetes names, checked as the API server checks them.

A file names nodes, namespaces and queues that must exist as such in a cluster: a node
called ``GPU_A`` or a namespace of 70 characters is one the API server refuses, so a
snapshot naming it describes no cluster, and a queue whose name no label can carry is one
no pod can join (pods name their queue in the label ``apportion.io/queue``). Each check
returns why a name is refused, said after it (``'Team A' is not …``), or None.
"""

from __future__ import annotations

import re

from scheduler.fieldpaths import show
from scheduler.model import Queue

__all__ = [
    "COHORT_SCHEMA",
    "MAX_LABEL",
    "MAX_SUBDOMAIN",
    "NAMESPACE_SCHEMA",
    "cohort_name",
    "namespace_name",
    "node_name",
    "queue_name",
    "queue_problems",
    "service_account_name",
]

MAX_LABEL = 63
"""A DNS-1123 label and a label value: at most 63 characters."""
MAX_SUBDOMAIN = 253
"""A DNS-1123 subdomain: at most 253 characters."""

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAMESPACE_SCHEMA = {"maxLength": MAX_LABEL, "pattern": f"^{_DNS_LABEL.pattern}$"}
"""The namespace rule as an OpenAPI schema states it (the Queue CRD), so that the API server
refuses what the controller would refuse, at ``kubectl apply``."""
COHORT_SCHEMA = {"maxLength": MAX_SUBDOMAIN, "pattern": f"^{_DNS_SUBDOMAIN.pattern}$"}
"""The cohort rule as an OpenAPI schema states it (the Queue CRD)."""
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

_SUBDOMAIN_RULE = (
    "a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', beginning "
    "and ending with a letter or digit"
)


def _check(name: str, pattern: re.Pattern[str], most: int, what: str) -> str | None:
    if len(name) > most:
        return f"is {len(name)} characters long, not {what}"
    if pattern.fullmatch(name) is None:
        return f"is not {what}"
    return None


def namespace_name(name: str) -> str | None:
    return _check(
        name,
        _DNS_LABEL,
        MAX_LABEL,
        "a namespace name (a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
        "beginning and ending with a letter or digit)",
    )


def node_name(name: str, most: int = MAX_SUBDOMAIN) -> str | None:
    """``most``: fewer characters, for a name that has more appended (a pool's nodes)."""
    rule = _SUBDOMAIN_RULE if most == MAX_SUBDOMAIN else _SUBDOMAIN_RULE.replace("253", str(most))
    return _check(name, _DNS_SUBDOMAIN, most, f"a node name ({rule})")


def cohort_name(name: str) -> str | None:
    return _check(
        name, _DNS_SUBDOMAIN, MAX_SUBDOMAIN, f"a cohort name (as Kueue's, {_SUBDOMAIN_RULE})"
    )


def service_account_name(name: str) -> str | None:
    return _check(
        name, _DNS_SUBDOMAIN, MAX_SUBDOMAIN, f"a service account name ({_SUBDOMAIN_RULE})"
    )


def queue_name(name: str) -> str | None:
    return _check(
        name,
        _LABEL_VALUE,
        MAX_LABEL,
        "a queue name (pods name their queue in the label apportion.io/queue, whose values "
        "are at most 63 letters, digits, '-', '_' and '.', beginning and ending with a "
        "letter or digit)",
    )


def queue_problems(queue: Queue, path: str, name_at: str | None = None) -> list[str]:
    """The queue's name (at ``name_at``, else ``path.name``), cohort and namespaces, each
    refused as ``path.field: value why``."""
    checks = [(name_at or f"{path}.name", queue.name, queue_name(queue.name))]
    if queue.cohort is not None:
        checks.append((f"{path}.cohort", queue.cohort, cohort_name(queue.cohort)))
    checks += [
        (f"{path}.namespaces[{i}]", n, namespace_name(n)) for i, n in enumerate(queue.namespaces)
    ]
    return [f"{where}: {show(name)} {why}" for where, name, why in checks if why]
