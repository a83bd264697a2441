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
            enabled=labels.get(keys.NAMESPACE_ENABLED, "").lower() == "true",
            default_queue=labels.get(keys.NAMESPACE_DEFAULT_QUEUE) or None,
            shadow=labels.get(keys.NAMESPACE_MODE, "").lower() == "shadow",
        )


def is_system(namespace: str) -> bool:
    """The cluster's own namespaces: never managed, even where every namespace is."""
    return namespace in ("kube-system", "kube-public", "kube-node-lease") or namespace.startswith(
        "openshift"
    )
