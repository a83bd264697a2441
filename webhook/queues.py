"""The queues Apportion decides with: those of each source (a mounted file, Queue objects)
merged, each quota keyed by the flavor workloads are charged to."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from scheduler.catalog import Catalog
from scheduler.consistency import ineffective_limits
from scheduler.model import Queue, Quota

log = logging.getLogger("apportion.cluster")

__all__ = ["QueueSources"]


class QueueSources:
    """The queues of each source, by name. ``LiveCluster`` keeps one under its lock:
    ``replace`` expects its caller to hold it."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._sources: dict[str, dict[str, Queue]] = {}
        self._given: dict[str, dict[str, Queue]] = {}
        """Each source's queues as given (before ``_by_flavor``), by name."""

    def replace(self, source: str, queues: Iterable[Queue]) -> dict[str, Queue]:
        """The queues of one source (``file``: a mounted file; ``crd``: Queue objects) are
        now ``queues``: every source's, merged.

        Both may be in use while a cluster moves to the CRD; a Queue object wins over a
        file entry of the same name.
        """
        before, kept = self._given.get(source, {}), self._sources.get(source, {})
        given = self._given[source] = {q.name: q for q in queues}
        # A queue as it was given last time is kept as converted then: every Queue event
        # republishes every object, and its warnings would repeat with each.
        self._sources[source] = {
            name: kept[name] if before.get(name) == queue else self._by_flavor(queue)
            for name, queue in given.items()
        }
        merged: dict[str, Queue] = {}
        for name in ("file", "crd"):
            merged.update(self._sources.get(name, {}))
        return merged

    def _by_flavor(self, queue: Queue) -> Queue:
        """The queue with its quota keyed by the flavors workloads are charged to: a model
        named by an alias or GFD product (``H100``) is its catalog name, so metrics and
        status show one series per flavor. A key that names no model or MIG profile is a
        typo that leaves the queue without that quota: warned, not fatal to the others. So
        is a limit that cannot take effect (a snapshot refuses it): a queue served before
        this check must not drop out of a running cluster on an upgrade."""
        for problem in ineffective_limits(queue, ""):
            log.warning("queue %s: %s; the limit has no effect", queue.name, problem)
        quota: dict[str, Quota] = {}
        for key, value in queue.quota.items():
            flavor = self._catalog.flavor(key)
            if flavor is None:
                log.warning(
                    "queue %s: quota %r names no GPU model or MIG profile this cluster knows",
                    queue.name,
                    key,
                )
            elif flavor in quota:
                log.warning("queue %s: quota %r repeats flavor %s", queue.name, key, flavor)
            quota[flavor or key] = value
        if list(quota) == list(queue.quota):
            return queue
        return queue.model_copy(update={"quota": quota})
