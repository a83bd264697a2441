"""The ``apportion`` command: a thin shell that finds its subcommands through entry points.

Subcommands register in the ``apportion.commands`` entry-point group (pyproject.toml), so
the webhook's ``serve`` and the simulator's ``simulate`` plug in without the core ever
importing them. This module and ``commands`` are the only scheduler modules that touch
files, stdout or the environment.
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
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


def main(argv: Sequence[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Messages carry names as written and signs like × and →, and JSON is UTF-8 by
        # definition: a terminal or pipe set to ASCII or cp1252 must not make printing a
        # decision a UnicodeEncodeError.
        sys.stdout.reconfigure(encoding="utf-8")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        # Under the command's own usage: argparse's own error shows the top level's, which
        # lists commands, not the flags the user mistyped.
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code: int = args.run(args)
    except CommandError as error:
        print(f"apportion {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt as stop:
        # Ctrl-C (or SIGTERM) on a long simulation or plan: a line, not a traceback; like a
        # shell, 130 (143). A command may raise it again with what it kept ('9 simulations
        # kept in ...').
        kept = f"; {stop}" if str(stop) else ""
        how, code = ("terminated", 143) if _terminated else ("interrupted", 130)
        print(f"apportion {args.command}: {how}{kept}", file=sys.stderr)
        return code
    return code
