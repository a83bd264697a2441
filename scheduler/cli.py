"""The ``apportion`` command: a thin shell that finds its subcommands through entry points.

Subcommands register in the ``apportion.commands`` entry-point group (pyproject.toml), so
the webhook's ``serve`` and the simulator's ``simulate`` plug in without the core ever
importing them. This module and ``commands`` are the only scheduler modules that touch
files, stdout or the environment.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import entry_points, version

__all__ = ["CommandError", "main", "stop_on_sigterm"]


class CommandError(Exception):
    """A failure the user can fix; printed without a traceback, exit code 2."""


_terminated = False
"""Whether the KeyboardInterrupt under way came from SIGTERM (``stop_on_sigterm``)."""


def stop_on_sigterm() -> None:
    """Let SIGTERM (a Job's deadline, its pod deleted) stop a long run as Ctrl-C does: what
    it kept is kept and said in one line; the exit code is 143, as a shell reports it.
    For simulate and plan; serve has a graceful shutdown of its own."""

    def terminated(signum: int, frame: object) -> None:
        global _terminated
        _terminated = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apportion",
        description="GPU capacity scheduler and fair-share admission controller.",
    )
    # What a bug report needs first; an error that a COMMAND is required, before.
    parser.add_argument("--version", action="version", version=f"apportion {version('apportion')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in sorted(entry_points(group="apportion.commands"), key=lambda e: e.name):
        register = entry.load()
        register(sub)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)
    return parser


_UNWRITABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
"""Write errors no command can do anything about: said in a line, exit code 2."""


def _exit_on_interrupt() -> bool:
    """Until a command runs, Ctrl-C exits at once: loading the commands imports numpy,
    pulp and the kubernetes client (about a second), there is nothing to keep yet, and an
    interrupt inside an import left a half-imported module behind (an AttributeError
    traceback). False where the handler cannot be set (not the main thread) or SIGINT is
    ignored (a background job)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False

    def interrupted(signum: int, frame: object) -> None:
        os.write(2, b"apportion: interrupted\n")
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)
    return True


def _discard_stdout() -> None:
    """What is left in stdout's buffer would fail again when Python flushes it at exit."""
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):
        return  # not a file (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Messages carry names as written and signs like × and →, and JSON is UTF-8 by
        # definition: a terminal or pipe set to ASCII or cp1252 must not make printing a
        # decision a UnicodeEncodeError.
        sys.stdout.reconfigure(encoding="utf-8")
    starting = _exit_on_interrupt()
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:
            # Under the command's own usage: argparse's own error shows the top level's,
            # which lists commands, not the flags the user mistyped.
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    finally:
        if starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a full disk shows here, not as a traceback at exit
    except CommandError as error:
        print(f"apportion {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except OSError as error:
        if error.errno not in _UNWRITABLE:
            raise
        _discard_stdout()
        where = "the output" if error.filename is None else error.filename
        print(f"apportion {args.command}: cannot write {where}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        # Ctrl-C (or SIGTERM) on a long simulation or plan: a line, not a traceback; like a
        # shell, 130 (143). A command may raise it again with what it kept ('9 simulations
        # kept in ...').
        kept = f"; {stop}" if str(stop) else ""
        how, code = ("terminated", 143) if _terminated else ("interrupted", 130)
        print(f"apportion {args.command}: {how}{kept}", file=sys.stderr)
        return code
    return code
