"""Reading the text files users hand us (snapshots, clusters, traces, queue files).

Every way reading can fail is an OSError, so each command's one ``except OSError`` names
the file and the cause: bytes that are not UTF-8 (a binary or a Latin-1 file given by
mistake) would otherwise escape as a UnicodeDecodeError and a traceback.

A gzip file is read through (by its magic bytes, whatever its name): cluster traces are
exported and published compressed, and a user should not need to unpack a 1 GB file to
replay it.
"""

from __future__ import annotations

import argparse
import errno
import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

__all__ = ["given_path", "read_text"]

_GZIP_MAGIC = b"\x1f\x8b"


def given_path(kind: str = "file") -> Callable[[str], Path]:
    """An argparse type for a path users give: never the empty path, which ``Path`` reads as
    '.' (``decide ''`` said "cannot read .: Is a directory"; ``crds --output-dir ''`` wrote
    into the current directory)."""
    hint = " ('.' for the current one)" if kind == "directory" else ""

    def path(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{text!r} is an empty path; give a {kind}{hint}")
        return Path(text)

    path.__name__ = kind  # argparse names the type in its own errors
    return path


def read_text(path: Path) -> str:
    """The file's text, UTF-8 (a leading byte-order mark is dropped), gunzipped if it is
    gzip. Bytes that are not UTF-8 raise OSError(EILSEQ) whose ``strerror`` says which and
    where; a gzip file cut short or corrupt, OSError(EIO) saying so."""
    data = path.read_bytes()
    gzipped = data[:2] == _GZIP_MAGIC
    if gzipped:
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            why = "cut short" if isinstance(error, EOFError) else f"corrupt: {error}"
            raise OSError(errno.EIO, f"gzip file {why}", str(path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        where = f"byte 0x{data[error.start]:02x} at offset {error.start}"
        if gzipped:
            where += " of the uncompressed text"
        raise OSError(errno.EILSEQ, f"not UTF-8 text ({where})", str(path)) from None
