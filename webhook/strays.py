"""Pods that carry Apportion's gate but that Apportion never decided ("strays").

A pod created with ``apportion.io/admission`` (a manifest copied from a waiting pod) that
the webhook never saw has no recorded decision (``pods.decided_workload``: none, or a copied
one naming another namespace), and nobody else removes that gate: it would wait for ever.
The controller's informer keeps such pods apart (``LiveCluster.put_stray``); at every cycle
the leader settles each one by its namespace's labels of the moment:
- Apportion does not manage it (it asks no GPU, a DaemonSet chooses its node, or its
  namespace did not opt in: ``pods.not_managed``): Apportion's gate, and only it, is
  removed, with an Event ``NotManaged`` saying why.
- In shadow mode (global, or its namespace's ``apportion.io/mode=shadow``) Apportion
  holds no pod: Apportion's gate is removed the same way.
- It is Apportion's (a GPU pod of an opted-in namespace: created before the namespace
  opted in, or past the webhook): it is *adopted*, as Kueue's pod integration makes a
  Workload for a gated pod. The controller records on it what the mutating webhook records
  on a pod that must wait (``Admission.adopt``: queue, workload, gang size, tolerations),
  with an Event ``Adopted``; its next cycle decides it in fair-share order. One the
  validating webhook would refuse (no or an unknown queue, one closed to its namespace,
  a request no node can hold) keeps the gate: released, it would run outside every quota.
  A Warning Event ``Refused`` says why, once per reason (and again after a restart or a
  change of leader); it is adopted once the reason is gone (the queue created, say).
A GPU pod of a namespace not seen yet keeps its gate until its Namespace is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from webhook import keys
from webhook.admission import Verdict
from webhook.cluster import LiveCluster
from webhook.metrics import Metrics
from webhook.patches import remove_gate, same_pod
from webhook.pods import gate_names, not_managed, raw_identity

__all__ = ["StrayGates", "may_be_stray"]

log = logging.getLogger("apportion.controller")

Raw = dict[str, Any]
Identity = tuple[str, str, str]

NOT_MANAGED = "NotManaged"
"""The Event reason on a pod whose gate Apportion removed."""
ADOPTED = "Adopted"
"""The Event reason on a pod the controller took into its queue."""
REFUSED = "Refused"
"""The Warning Event reason on a pod Apportion would refuse, which keeps its gate."""


def may_be_stray(pod: Raw) -> bool:
    """Carries Apportion's gate, is not being deleted, and Apportion never decided it (or
    does not manage it): ``StrayGates.settle`` judges with its namespace's labels then."""
    metadata = pod.get("metadata") or {}
    return (
        keys.GATE in gate_names(pod.get("spec") or {})
        and not metadata.get("deletionTimestamp")
        and not_managed(pod, False) is not None
    )


class StrayGates:
    """Acts through the controller's own steps (``patch`` stops at a lost Lease and counts
    its failures, ``event``), as an admission does; counts what it settled
    (``apportion_strays_settled_total``). A pass stops at the first patch or Refused
    Event it would start without the Lease (``before_acting``): the next leader tells
    those pods itself."""

    def __init__(
        self,
        cluster: LiveCluster,
        metrics: Metrics,
        *,
        adopt: Callable[[Raw], Verdict],
        patch: Callable[[str, str, list[Raw], str], bool],
        event: Callable[[Raw, str, str, str], None],
        before_acting: Callable[[], None],
        shadow: bool = False,
    ) -> None:
        """``before_acting`` raises ``NotLeading`` once this replica may no longer hold
        the Lease; ``shadow``: Apportion runs in shadow mode (``AdmissionSettings.mode``)."""
        self.cluster = cluster
        self.metrics = metrics
        self.shadow = shadow
        self.adopt = adopt
        self.patch = patch
        self.event = event
        self.before_acting = before_acting
        self._settled: set[Identity] = set()
        """Pods released or adopted, until the watch shows them so."""
        self._told: dict[Identity, str] = {}
        """Pods refused, and what they were told."""

    def settle(self) -> None:
        """Release the strays Apportion does not manage and adopt the others."""
        strays = self.cluster.strays()
        present = {raw_identity(raw) for raw in strays}
        self._settled &= present
        self._told = {pod: told for pod, told in self._told.items() if pod in present}
        for raw in strays:
            identity = raw_identity(raw)
            if identity in self._settled:
                continue
            policy = self.cluster.known_policy(identity[0])
            why = not_managed(raw, None if policy is None else policy.enabled)
            if why is None and policy is not None:
                why = self._shadow(identity[0], policy.shadow)
            if why is not None:
                self._release(raw, identity, why)
            elif policy is not None:  # opted in: Apportion's to decide
                self._adopt(raw, identity)

    def _shadow(self, namespace: str, namespace_shadow: bool) -> str | None:
        """Why a pod of an opted-in namespace is not held, in shadow mode: there its pods
        run as if Apportion were not there (the webhook gates none), so adopted, it would
        be held by a mode that only records."""
        if self.shadow:
            return "Apportion runs in shadow mode: it only records what it would do"
        if namespace_shadow:
            return (
                f"its namespace {namespace} is in shadow mode: Apportion only records what it "
                "would do"
            )
        return None

    def _release(self, raw: Raw, identity: Identity, why: str) -> None:
        namespace, name, _ = identity
        # Not one created since under its name, which its webhook may have decided.
        ungate = same_pod(raw) + remove_gate(raw)
        if not self.patch(namespace, name, ungate, "removing the gate of"):
            return
        self._settled.add(identity)
        self.metrics.strays_settled.labels("released").inc()
        self.cluster.remove_pod(namespace, name)  # not Apportion's to decide
        message = (
            f"Apportion does not manage this pod ({why}); its scheduling gate {keys.GATE} "
            "is removed"
        )
        log.info("%s/%s: %s", namespace, name, message)
        self.event(raw, NOT_MANAGED, message, "Normal")

    def _adopt(self, raw: Raw, identity: Identity) -> None:
        namespace, name, _ = identity
        verdict = self.adopt(raw)
        never = (
            "Apportion's webhook never decided this pod, created with its scheduling gate "
            f"{keys.GATE}"
        )
        if not verdict.answer.allowed:
            message = (
                f"{never}, and would refuse it: {verdict.answer.message}. It keeps that gate, "
                "so that it never runs outside Apportion's quotas: it joins its queue once "
                "that is fixed, or delete it and create it again"
            )
            if self._told.get(identity) != message:
                # No patch before it checks the Lease: told without it, the pod would be
                # told again by the next leader.
                self.before_acting()
                self._told[identity] = message
                self.metrics.strays_settled.labels("refused").inc()
                log.warning("%s/%s: %s", namespace, name, message)
                self.event(raw, REFUSED, message, "Warning")
            return
        # Made twice (a lost answer), it would append the tolerations and AND the node
        # affinity twice.
        adoption = same_pod(raw, unchanged=True) + list(verdict.answer.patch)
        if not self.patch(namespace, name, adoption, "adopting"):
            return
        self._settled.add(identity)
        self.metrics.strays_settled.labels("adopted").inc()
        message = (
            f"{never}: it waits in its queue as workload {verdict.workload}, decided in "
            "fair-share order"
        )
        log.info("%s/%s: %s", namespace, name, message)
        self.event(raw, ADOPTED, message, "Normal")
