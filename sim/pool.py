"""Processes that simulate side by side: the planner's candidates, ``simulate``'s runs.

A simulation is pure Python and CPU-bound, so threads would share one core; each runs in a
worker process instead. ``executor(1)`` runs in this process (tests, one-core machines).
A worker can report progress (``report``): it is relayed to the main process's callback,
where the terminal is.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = [
    "MAX_WORKERS",
    "WORKERS_WHY",
    "Inline",
    "WorkerPool",
    "default_workers",
    "executor",
    "report",
]

T = TypeVar("T")
Progress = Callable[[str, float], None]

_relay: Any = None
"""In a worker: the queue to the main process's progress callback (None: nobody listens)."""
_last: dict[str, float] = {}


MAX_WORKERS = 256
"""--workers of simulate and plan: a process per core of the largest common servers. Past
the cores, workers only share them, and each holds a whole replay in memory: 100,000 was
a process per run or candidate, as many as the machine could fork."""
WORKERS_WHY = "a process per core of the largest common servers; each holds a whole replay"
"""Why, in the error past ``MAX_WORKERS``."""


def default_workers() -> int:
    """One per core this process may use, at most 8 (memory: each holds its own replay)."""
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def report(label: str, fraction: float) -> None:
    """In a worker, tell the main process how far ``label`` is (at most ten times a second,
    and always its end)."""
    if _relay is None:
        return
    now = time.monotonic()
    if fraction < 1.0 and now - _last.get(label, 0.0) < 0.1:
        return
    _last[label] = now
    _relay.put((label, fraction))


class Inline:
    """One worker: run in this process."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress

    def __enter__(self) -> Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        global _relay
        done: Future[T] = Future()
        listening, _relay = _relay, (_Direct(self.progress) if self.progress else None)
        try:
            done.set_result(fn(*args))
        finally:
            _relay = listening
        return done


class _Direct:
    """``report`` in this process: straight to the callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def put(self, item: tuple[str, float]) -> None:
        self.progress(*item)


class WorkerPool(ProcessPoolExecutor):
    """Ctrl-C reaches every process of the terminal's group. The workers ignore it (an idle
    worker would die with a traceback, a busy one break the pool before the main process
    has seen the signal); the main process, interrupted, stops them at once rather than
    wait for their simulations."""

    def __init__(self, workers: int, progress: Progress | None = None) -> None:
        self._queue: Any = None
        self._drain: threading.Thread | None = None
        self._stopped = False
        if progress is not None:
            self._queue = multiprocessing.get_context().SimpleQueue()
            self._drain = threading.Thread(
                target=_drain, args=(self._queue, progress), name="progress", daemon=True
            )
            self._drain.start()
        super().__init__(max_workers=workers, initializer=_worker_init, initargs=(self._queue,))

    def __exit__(self, kind: Any, *rest: Any) -> Any:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.stop_workers()
        try:
            return super().__exit__(kind, *rest)
        finally:
            # A worker stopped mid-report may hold the queue's lock: then the daemon thread
            # is left waiting, as the process ends anyway.
            if self._drain is not None and not self._stopped:
                self._queue.put(None)
                self._drain.join(timeout=5)

    def stop_workers(self) -> None:
        self._stopped = True
        for process in list((self._processes or {}).values()):
            process.terminate()


def _drain(queue: Any, progress: Progress) -> None:
    while (item := queue.get()) is not None:
        progress(*item)


def _worker_init(queue: Any) -> None:
    """A worker ignores Ctrl-C and ends quietly on SIGTERM (how the main process stops it),
    whatever handlers it inherited from the main process (``scheduler.cli.stop_on_sigterm``);
    its progress goes to ``queue``."""
    global _relay
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _relay = queue
    _last.clear()  # the main process's report times, copied by fork: none were made here


def executor(workers: int, progress: Progress | None = None) -> Inline | WorkerPool:
    return Inline(progress) if workers <= 1 else WorkerPool(workers, progress)
