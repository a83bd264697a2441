"""Admissions per queue over the last hour: what the queue view's wait estimate divides a
position by (``queueview.py``), honest about being a rate."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["AdmissionRates"]

WINDOW_S = 3600.0


class AdmissionRates:
    """Thread-safe: admissions are recorded on the webhook's and the controller's paths,
    read by the queue view."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._times: dict[str, deque[float]] = {}

    def record(self, queue: str) -> None:
        with self._lock:
            times = self._times.setdefault(queue, deque())
            now = self._clock()
            times.append(now)
            while times and times[0] < now - WINDOW_S:
                times.popleft()

    def per_s(self, queue: str) -> float:
        with self._lock:
            since = self._clock() - WINDOW_S
            recent = sum(1 for t in self._times.get(queue, ()) if t >= since)
        return recent / WINDOW_S
