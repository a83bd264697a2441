"""Loopback ports for tests: one to start a server on, and one where nothing ever answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["free_port", "refused_port"]


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server the test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port kept bound but never listening while the block runs: a connection
    to it is refused at once. A port ``free_port`` only found free could be taken meanwhile
    by another test run's server, which then left a client waiting for its timeouts (a
    Prometheus-down test took 20 s instead of milliseconds)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
