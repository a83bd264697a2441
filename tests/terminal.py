"""Child processes started as a terminal starts them: Ctrl-C's SIGINT not ignored.

A shell without job control that starts a command in the background (a CI runner's
script, ``make test &``) makes it ignore SIGINT, and every process it starts inherits
that: Python then installs no KeyboardInterrupt handler, and a test that sends SIGINT to
stand for a terminal's Ctrl-C saw the run finish with exit 0 (a clean clone's CI run
started that way failed three tests)."""

from __future__ import annotations

import signal

__all__ = ["sigint_as_in_a_terminal"]


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` of a child process that must take SIGINT as Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
