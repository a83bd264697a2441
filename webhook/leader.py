"""Lease-based leader election: any number of replicas serve the webhook, one controller acts.

The protocol is client-go's: a ``coordination.k8s.io/v1`` Lease names the holder and when
it last renewed; others take it over only after ``leaseDurationSeconds`` without renewal.
Writes are PUTs carrying the resourceVersion that was read, so two replicas racing for an
expired lease cannot both win (the loser gets 409 Conflict).

Like client-go's ``RenewDeadline < LeaseDuration``, the holder stops acting before another
replica could take its Lease over: ``leading`` is a deadline on the clock, not the last
round's outcome, so a renewal that hangs or a long cycle cannot outlive the Lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiException

from webhook.kubeapi import UNANSWERED, KubeApi, failure
from webhook.metrics import Metrics

__all__ = ["LeaderElector", "NotLeading"]

log = logging.getLogger("apportion.leader")


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class NotLeading(Exception):
    """Raised where a replica was about to act without a Lease it is sure to hold."""


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        duration_s: float,
        metrics: Metrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = int(duration_s)
        """What the Lease says (whole seconds): how long others wait after a renewal."""
        self.deadline_s = self.duration_s - api.timeout_s
        """How long after a renewal began this replica may start a call: one started then
        is answered or given up (``api.timeout_s``) before others could take over."""
        if self.deadline_s <= 0:
            raise ValueError(
                f"the API timeout ({api.timeout_s} s) must be shorter than the lease "
                f"({self.duration_s} s)"
            )
        self._now = now
        self._clock = clock
        self._until = float("-inf")
        self._observed: tuple[object, ...] = ()
        self._observed_at = clock()
        """When this replica last saw the Lease's record change, on its own clock."""

    @property
    def leading(self) -> bool:
        """Whether this replica may act now."""
        return self._clock() < self._until

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; returns whether this replica leads afterwards. A round
        that got no answer, or an error, changes nothing: the Lease, if held, is held until
        its deadline."""
        started = self._clock()
        try:
            won = self._round()
        except ApiException as error:
            if error.status != 409:
                return self._failed(error)
            won = False  # another replica wrote it first: the protocol, not a failure
        except UNANSWERED as error:
            return self._failed(error)
        self._until = started + self.deadline_s if won else float("-inf")
        return self.leading

    def _failed(self, error: Exception) -> bool:
        """Counted and logged: a replica that cannot renew stops acting at its deadline,
        one that cannot read the Lease never leads, and only the count says why."""
        self.metrics.api_failed("lease", error)
        log.warning("lease %s/%s: %s", self.namespace, self.name, failure(error))
        return self.leading

    def _round(self) -> bool:
        now = self._now()
        lease = self.api.read_lease(self.namespace, self.name)
        if lease is None:
            self.api.create_lease(self.namespace, self._body(now, now, transitions=0))
            log.info("lease %s/%s created; leading as %s", self.namespace, self.name, self.identity)
            return True
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        # Expiry is timed on this replica's clock from when it saw the record change, as
        # client-go does: the holder's renewTime read against a clock running ahead would
        # end a live Lease early, and two replicas would act at once.
        record = (holder, spec.get("renewTime"), spec.get("acquireTime"), duration)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        expired = self._clock() - self._observed_at > duration
        if holder not in (None, "", self.identity) and not expired:
            return False
        acquired = now if holder != self.identity else _parse_time(spec.get("acquireTime")) or now
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        body = self._body(acquired, now, transitions)
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        self.api.replace_lease(self.namespace, self.name, body)
        if holder != self.identity:
            log.info("lease %s/%s taken over from %s", self.namespace, self.name, holder)
        return True

    def _body(self, acquired: datetime, renewed: datetime, transitions: int) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration_s,
                "acquireTime": _micro_time(acquired),
                "renewTime": _micro_time(renewed),
                "leaseTransitions": transitions,
            },
        }
