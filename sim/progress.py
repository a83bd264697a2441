"""One progress line on stderr, as a terminal wants it and as a log does.

On a terminal the line is redrawn in place (``\\r``), at most ten times a second. In a log
— a Kubernetes Job's (``deploy/jobs`` runs the planner), a file, CI — each redraw would
lengthen one endless line: there the line is written whole, at most every
``LOG_EVERY_S`` seconds, and when it says something new that matters (``now``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["LOG_EVERY_S", "ProgressLine"]

REDRAW_EVERY_S = 0.1
LOG_EVERY_S = 30.0


class ProgressLine:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.clock = clock
        self.last = -math.inf
        self.width = 0
        """Characters of the line drawn in place now (0: none)."""

    def draw(self, text: str, *, now: bool = False) -> None:
        """Show ``text``; ``now``: whatever the pace (a count moved, a run ended)."""
        at = self.clock()
        if not now and at - self.last < (REDRAW_EVERY_S if self.terminal else LOG_EVERY_S):
            return
        self.last = at
        if self.terminal:
            self.stream.write(f"\r{text}{' ' * max(0, self.width - len(text))}")
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """End a line drawn in place, so that what is written next has a line of its own."""
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0
