"""How many pods a gang of Job pods has, from the Jobs the controller watches.

A Job's pods carry no gang size of their own: the Job's ``spec.parallelism`` says how many
run at once, and a JobSet's pods are the sum over its Jobs, known once every Job of the
JobSet (its ``global-replicas``) is seen. The webhook asks at admission, the controller's
Job watch keeps the answer current.
"""

from __future__ import annotations

import threading
from typing import Any

from scheduler.model import MAX_PODS
from webhook import keys
from webhook.pods import PodAsk

__all__ = ["JobIndex", "JobRow", "job_row"]

JobRow = tuple[str, str, int | None, str | None]
"""A Job as (namespace, name, parallelism, the JobSet owning it)."""


def job_row(obj: dict[str, Any]) -> JobRow:
    """A Job object as the index keeps it."""
    metadata = obj.get("metadata") or {}
    parallelism = (obj.get("spec") or {}).get("parallelism")
    jobset = (metadata.get("labels") or {}).get(keys.JOBSET_NAME)
    return (
        str(metadata.get("namespace", "")),
        str(metadata.get("name", "")),
        parallelism if isinstance(parallelism, int) and 0 <= parallelism <= MAX_PODS else None,
        jobset if isinstance(jobset, str) else None,
    )


class JobIndex:
    """Thread-safe: the informer's thread writes, the webhook's reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.parallelism: dict[tuple[str, str], int] = {}
        """(namespace, Job name) → spec.parallelism."""
        self.jobsets: dict[tuple[str, str], str] = {}
        """(namespace, Job name) → the JobSet that owns the Job."""

    def put(
        self, namespace: str, name: str, parallelism: int | None, jobset: str | None = None
    ) -> None:
        """A Job's parallelism (None: the Job is gone), and the JobSet it belongs to."""
        with self._lock:
            self._put(namespace, name, parallelism, jobset)

    def replace(self, jobs: list[JobRow]) -> None:
        """Every Job, as a relist sees them: one deleted while the watch was down goes, and
        its JobSet mapping with it."""
        with self._lock:
            self.parallelism.clear()
            self.jobsets.clear()
            for job in jobs:
                self._put(*job)

    def _put(self, namespace: str, name: str, parallelism: int | None, jobset: str | None) -> None:
        key = (namespace, name)
        if parallelism is None:
            self.parallelism.pop(key, None)
            self.jobsets.pop(key, None)
            return
        self.parallelism[key] = parallelism
        if jobset is not None:
            self.jobsets[key] = jobset
        else:  # its JobSet label removed: no longer counted in that JobSet's gang
            self.jobsets.pop(key, None)

    def gang_size(self, ask: PodAsk) -> int | None:
        """The gang's declared size, else what its owners say: a JobSet's pods are the sum
        of its Jobs' parallelism once all its Jobs are seen; a Job's, its parallelism."""
        if ask.gang_size is not None or ask.owner is None:
            return ask.gang_size
        kind, name = ask.owner
        if kind != "Job":
            return None
        with self._lock:
            jobset = self.jobsets.get((ask.namespace, name))
            if jobset is None:
                return self.parallelism.get((ask.namespace, name))
            jobs = [
                self.parallelism[key]
                for key, owner in self.jobsets.items()
                if owner == jobset and key[0] == ask.namespace
            ]
            if ask.jobset_jobs is None or len(jobs) < ask.jobset_jobs:
                return None  # not every Job of the JobSet is known yet
            total = sum(jobs)
            return total if total <= MAX_PODS else None
