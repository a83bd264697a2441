"""Lease-based leader election: any number of replicas serve the webhook, one controller acts.

The protocol is client-go's: a ``coordination.k8s.io/v1`` Lease names the holder and when
it last renewed; others take it over only after ``leaseDurationSeconds`` without renewal.
Writes are PUTs carrying the resourceVersion that was read, so two replicas racing for an
expired lease cannot both win (the loser gets 409 Conflict).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiException

from webhook.kubeapi import UNANSWERED, KubeApi

__all__ = ["LeaderElector"]

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


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        duration_s: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self._now = now
        self.leading = False

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; returns whether this replica leads afterwards."""
        try:
            self.leading = self._round()
        except ApiException as error:
            if error.status != 409:
                log.warning("lease %s/%s: %s", self.namespace, self.name, error.reason)
            self.leading = False
        except UNANSWERED as error:  # unreachable: stop acting until it is back
            log.warning("lease %s/%s: %s", self.namespace, self.name, error)
            self.leading = False
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
        renewed = _parse_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        expired = renewed is None or (now - renewed).total_seconds() > duration
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
                "leaseDurationSeconds": int(self.duration_s),
                "acquireTime": _micro_time(acquired),
                "renewTime": _micro_time(renewed),
                "leaseTransitions": transitions,
            },
        }
