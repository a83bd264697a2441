"""A controller cycle's API calls, many workloads' at once.

Against a real API server a call takes 5–20 ms: made one after another, a cycle admitting
1,000 workloads spent 10–40 s in calls while the pods, and the next cycle, waited, though
the decision itself takes seconds at most. Here each workload's calls are one task, made in
their order on one thread, and at most ``api_concurrency`` tasks run at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from types import TracebackType

from webhook.leader import NotLeading

__all__ = ["Workers"]

log = logging.getLogger("apportion.controller")

Task = tuple[str, Callable[[], object]]
"""What a task does, for the log (``admitting team-a/job``), and the calls it makes."""


class Workers:
    """One cycle's threads (``with Workers(...) as workers``), started as tasks need them;
    leaving the block waits for every call given, the Events left ``later`` included, so
    no call of a cycle outlives it."""

    def __init__(self, size: int, stop: threading.Event, *, leading: Callable[[], bool]) -> None:
        """``stop``: set when the controller stops; what has not started by then never
        does, so that a stopping process does not wait for a whole cycle's calls.
        ``leading``: whether this replica may still act (the Lease's deadline), asked
        before each call left ``later``."""
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="api")
        self._stop = stop
        self._leading = leading
        self._lost = threading.Event()
        """A task found the Lease lost: nothing left for later is made any more."""
        self._lock = threading.Lock()
        self.dropped = 0
        """Calls left for later that were never made: the Lease was lost first."""

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pool.shutdown(wait=True)
        if self.dropped:
            log.warning(
                "%d Event(s) dropped, queued before this replica lost the Lease: only the "
                "leader writes to the cluster",
                self.dropped,
            )

    def each(self, tasks: Iterable[Task]) -> None:
        """Run the tasks, started in their order, at most ``size`` at once, and return
        once every one has ended. A task that raises ``NotLeading`` (the Lease may be lost)
        ends there, those not started yet are not, and ``NotLeading`` is raised here once
        those running have ended: the cycle stops as it would have one call at a time. Any
        other error ends its own task only, logged as ``Controller._step`` logs a failed
        step."""
        not_leading = threading.Event()

        def run(what: str, task: Callable[[], object]) -> None:
            if not_leading.is_set() or self._stop.is_set():
                return
            try:
                task()
            except NotLeading:
                not_leading.set()
                self._lost.set()
            except Exception:
                log.exception("%s failed; retrying on the next change or tick", what)

        wait([self._pool.submit(run, what, task) for what, task in tasks])
        if not_leading.is_set():
            raise NotLeading

    def later(self, what: str, call: Callable[[], object]) -> None:
        """A call no task waits for (an Event: best effort, read back by nothing), queued
        behind the tasks given so far (an ``each`` gives its tasks one by one, as the
        first run) and made before the cycle ends — unless the Lease is lost before it
        starts: a replica that may no longer lead writes nothing more, and the call is
        dropped (counted, and logged once as the cycle ends)."""

        def run() -> None:
            if self._stop.is_set():
                return
            if self._lost.is_set() or not self._leading():
                with self._lock:
                    self.dropped += 1
                log.debug("%s dropped: this replica may no longer hold the Lease", what)
                return
            try:
                call()
            except Exception:
                log.exception("%s failed", what)

        self._pool.submit(run)
