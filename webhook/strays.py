"""Pods that carry Apportion's gate but are not Apportion's to decide ("strays").

A pod created with ``apportion.io/admission`` (a manifest copied from a waiting pod) that
Apportion does not manage — it asks no GPU, a DaemonSet chooses its node, or its namespace
did not opt in and Apportion never decided it (``pods.not_managed``) — would wait for ever:
the webhook configuration never sends it to Apportion, and nobody else removes that gate.
The controller's informer keeps such pods apart (``LiveCluster.put_stray``); at every cycle
the leader removes Apportion's gate, and only it, from those its namespace's labels of the
moment say are not Apportion's, with an Event saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from webhook import keys
from webhook.cluster import LiveCluster
from webhook.patches import remove_gate
from webhook.pods import gate_names, not_managed, raw_identity

__all__ = ["StrayGates", "may_be_stray"]

log = logging.getLogger("apportion.controller")

Raw = dict[str, Any]

NOT_MANAGED = "NotManaged"
"""The Event reason on a pod whose gate Apportion removed."""


def may_be_stray(pod: Raw) -> bool:
    """Carries Apportion's gate, is not being deleted, and is not Apportion's to decide if
    its namespace did not opt in (``StrayGates.release`` judges with the labels then)."""
    metadata = pod.get("metadata") or {}
    return (
        keys.GATE in gate_names(pod.get("spec") or {})
        and not metadata.get("deletionTimestamp")
        and not_managed(pod, False) is not None
    )


class StrayGates:
    """Acts through the controller's own steps (``patch`` stops at a lost Lease and counts
    its failures, ``event``), as an admission does."""

    def __init__(
        self,
        cluster: LiveCluster,
        *,
        patch: Callable[[str, str, list[Raw], str], bool],
        event: Callable[[Raw, str, str], None],
    ) -> None:
        self.cluster = cluster
        self.patch = patch
        self.event = event
        self._ungated: set[tuple[str, str, str]] = set()
        """Pods whose gate was removed, until the watch shows it gone."""

    def release(self) -> list[tuple[str, str]]:
        """Remove Apportion's gate from the strays Apportion does not manage; the
        (namespace, name) of those released now. A GPU pod of an opted-in namespace, or
        of one not seen yet, is never released here."""
        strays = self.cluster.strays()
        self._ungated &= {raw_identity(raw) for raw in strays}
        released: list[tuple[str, str]] = []
        for raw in strays:
            namespace, name, _ = identity = raw_identity(raw)
            policy = self.cluster.known_policy(namespace)
            why = not_managed(raw, None if policy is None else policy.enabled)
            if why is None or identity in self._ungated:
                continue
            if not self.patch(namespace, name, remove_gate(raw), "removing the gate of"):
                continue
            self._ungated.add(identity)
            self.cluster.remove_pod(namespace, name)  # not Apportion's to decide
            message = (
                f"Apportion does not manage this pod ({why}); its scheduling gate {keys.GATE} "
                "is removed"
            )
            log.info("%s/%s: %s", namespace, name, message)
            self.event(raw, NOT_MANAGED, message)
            released.append((namespace, name))
        return released
