"""What a namespace's labels ask of Apportion: whether it manages the namespace's GPU pods,
the queue a pod naming none goes to, and shadow mode (its decisions only annotated)."""

from __future__ import annotations

from dataclasses import dataclass

from webhook import keys

__all__ = ["NamespacePolicy", "is_system"]


@dataclass(frozen=True, slots=True)
class NamespacePolicy:
    enabled: bool = False
    default_queue: str | None = None
    shadow: bool = False

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> NamespacePolicy:
        return cls(
            # As the webhook configurations' namespaceSelector matches it: exactly. A
            # namespace they send no pod of is not Apportion's either.
            enabled=labels.get(keys.NAMESPACE_ENABLED) == "true",
            default_queue=labels.get(keys.NAMESPACE_DEFAULT_QUEUE) or None,
            shadow=labels.get(keys.NAMESPACE_MODE, "").lower() == "shadow",
        )


SYSTEM_NAMESPACES = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "openshift", "apportion-system"}
)
"""Never managed: the names the webhook configurations leave out (deploy/base/webhooks.yaml),
and with them every ``openshift-*``."""


def is_system(namespace: str) -> bool:
    """The cluster's own namespaces and Apportion's: never managed, even where every
    namespace is (standalone). As the webhook configurations judge them: ``openshiftlab`` is
    a team's, and the webhook's own pods ask no GPU."""
    return namespace in SYSTEM_NAMESPACES or namespace.startswith("openshift-")
