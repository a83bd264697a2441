"""Reading the text files users hand us (snapshots, clusters, traces, queue files).

Every way reading can fail is an OSError, so each command's one ``except OSError`` names
the file and the cause: bytes that are not UTF-8 (a binary or a Latin-1 file given by
mistake) would otherwise escape as a UnicodeDecodeError and a traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["read_text"]


def read_text(path: Path) -> str:
    """The file's text, UTF-8 (a leading byte-order mark is dropped). Bytes that are not
    UTF-8 raise OSError(EILSEQ) whose ``strerror`` says which and where."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        data = path.read_bytes()  # again, whole: the error's offset was within a chunk
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            where = f"byte 0x{data[error.start]:02x} at offset {error.start}"
        else:  # the file changed between the two reads
            where = "changed while read"
        raise OSError(errno.EILSEQ, f"not UTF-8 text ({where})", str(path)) from None
