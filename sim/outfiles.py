"""Where simulate and plan write: the output directory, made before any work, and files
written whole.

Both commands run for minutes; a bad --out must fail at once, and a run stopped while
writing (Ctrl-C, a Job's deadline) must leave the previous file or the new one.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from scheduler.cli import CommandError

__all__ = ["make_out", "out_dir", "write_whole"]


def out_dir(text: str) -> Path:
    """An argparse type for --out and --journal: a directory, never the empty path, which
    ``Path`` reads as '.' (results and plots went into the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is an empty path; give a directory ('.' for the current one)"
        )
    return Path(text)


def make_out(out: Path, flag: str = "--out") -> None:
    """Create the output directory before any work, so a path that is a file or cannot be
    written fails at once (exit 2), not after the whole run."""
    # mkdir's own words ('File exists', 'Not a directory') do not say which part is a file.
    file = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if file == out:
        raise CommandError(
            f"{flag} {out}: is a file, not a directory ({flag} names a directory, made if missing)"
        )
    if file is not None:
        raise CommandError(f"{flag} {out}: {file} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"{flag} {out}: cannot create the directory: {error.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {out}: the directory is not writable")


def write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename: a crash leaves the old file or
    the new one, never half of one (results.json, plots, the plan's report and journal
    header)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:  # a full disk's error names no file: name the one written
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
