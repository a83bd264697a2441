"""The plan's journal: every simulation kept on disk the moment it completes, so a stopped
run (Ctrl-C, a crash, a Job's deadline) loses at most the simulations then running, and
the same command run again resumes.

A JSON-lines file. The first line names the run's input fingerprint (the one ``plan
merge`` compares shards by) and the Apportion version with a digest of the code that
simulates (a checkout edited since it was installed has the same version number but may
simulate differently); each other line is one evaluation:
the task's label, a digest of the simulated cluster, the evaluation and how long it took,
written with one ``write``, flushed and fsynced. A simulation is a function of the
cluster, the demand, the goals, the policy and the seed: the fingerprint covers all but
the cluster, the digest the cluster, so a line is reused only for the same simulation.
The search is a function of the evaluations it gets, so a resumed run answers exactly as
an uninterrupted one.

A journal written for other inputs (or by another version) is not reused: the run says so
in one line and starts it afresh, as it overwrites the plan.json beside it. A last line cut
short by a crash is dropped, blank lines are skipped; any other line that is not an entry
stops the run (exit 2), as does a journal that cannot be read or written (a directory of
its name, no permission).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import threading
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import scheduler
import sim
from scheduler.cli import CommandError
from sim.outfiles import write_whole
from sim.plan.evaluate import EvalTask

__all__ = ["Journal", "code_version", "journal_name"]

_KIND = "apportion plan journal"


def journal_name(shard: tuple[int, int]) -> str:
    """The file's name in its directory: shards of one sweep may share a directory."""
    index, count = shard
    return "plan-journal.jsonl" if count == 1 else f"plan-journal.shard-{index}-of-{count}.jsonl"


@functools.cache
def code_version() -> str:
    """The installed version and a digest of the simulating packages' files (``scheduler``
    and ``sim``, data included): 2-3 ms for the ~150 files."""
    digest = hashlib.sha256()
    for package in (scheduler, sim):
        root = Path(package.__file__ or "").parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
                digest.update(path.read_bytes())
    return f"{version('apportion')} (code {digest.hexdigest()[:12]})"


def _key(task: EvalTask) -> tuple[str, str]:
    snapshot = task.cluster.snapshot.model_dump_json().encode()
    return task.label, hashlib.sha256(snapshot).hexdigest()[:16]


class Journal:
    """Evaluations by (task label, cluster digest) for one input fingerprint, appended as
    they complete; ``keep`` is safe from a pool's callback thread."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.note: str | None = None
        """One line for stderr when an existing file was not reused."""
        self._kept: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()
        header = {"journal": _KIND, "fingerprint": fingerprint, "apportion": code_version()}
        try:  # a directory or a file we may not read: the file, not a traceback
            good = self._read(header) if path.exists() else 0
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        self.resumed = len(self._kept) if good else 0
        try:
            if good:
                with open(path, "r+b") as f:  # drop a last line cut short
                    f.truncate(good)
            else:
                write_whole(path, (json.dumps(header, sort_keys=True) + "\n").encode())
            self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror}") from None
        self._good = path.stat().st_size
        """Bytes of whole lines on disk: where a line the disk could not hold is cut."""
        self._written = len(self._kept)
        self.failure: str | None = None
        """Why a line could not be written (a full disk); ``check`` stops the run with it."""

    def _read(self, header: dict[str, str]) -> int:
        """Load the entries of a journal for ``header``; the length of its whole lines, or
        0 (and ``note`` says why) when it belongs to another run."""
        # One write per line, newline last: text after the last newline is a line cut short.
        whole = self.path.read_bytes().rpartition(b"\n")[0]
        lines = whole.split(b"\n") if whole else []
        ends = list(itertools.accumulate(len(line) + 1 for line in lines))
        # Blank lines (an editor's, a newline before the header) are skipped: one first
        # made the journal "not a plan journal" and its simulations were thrown away.
        filled = [i for i, line in enumerate(lines) if line.strip()]
        try:
            first = json.loads(lines[filled[0]]) if filled else None
        except ValueError:
            first = None
        if first != header:
            if isinstance(first, dict) and first.get("journal") == _KIND:
                self.note = (
                    f"{self.path} holds another run's simulations (inputs fingerprint "
                    f"{first.get('fingerprint')}, Apportion {first.get('apportion')}; this run: "
                    f"{header['fingerprint']}, {header['apportion']}): starting it afresh"
                )
            else:
                self.note = f"{self.path} is not a plan journal: starting it afresh"
            return 0
        good = ends[filled[0]]
        for i in filled[1:]:
            try:
                entry = json.loads(lines[i])
                key = (entry["task"], entry["cluster"])
                self._kept[key] = (entry["evaluation"], float(entry["wall_s"]))
            except (ValueError, KeyError, TypeError):
                if i == filled[-1]:
                    break  # garbage a crash left at the end: simulated again
                raise CommandError(
                    f"{self.path} line {i + 1}: not a journal entry; remove the file to start "
                    "afresh"
                ) from None
            good = ends[i]
        return good

    def __len__(self) -> int:
        return len(self._kept)

    def kept(self, task: EvalTask) -> tuple[dict[str, Any], float] | None:
        """The evaluation of ``task`` and its wall seconds, if a run simulated it."""
        return self._kept.get(_key(task))

    def keep(self, task: EvalTask, evaluation: dict[str, Any], wall_s: float) -> None:
        task_label, cluster = key = _key(task)
        line = json.dumps(
            {"task": task_label, "cluster": cluster, "wall_s": round(wall_s, 3),
             "evaluation": evaluation},
            sort_keys=True, separators=(",", ":"),
        )  # fmt: skip
        with self._lock:
            self._kept[key] = (evaluation, wall_s)
            if self.failure is not None:
                return
            try:
                self._file.write(line + "\n")
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as error:  # raised here, in a pool's callback, it would be lost
                self._failed(error)
                return
            self._good += len(line.encode()) + 1
            self._written += 1

    def _failed(self, error: OSError) -> None:
        """Keep the whole lines written so far (the disk may have taken part of this one)
        and write no more."""
        self.failure = f"cannot write {self.path}: {error.strerror}"
        # Closing flushes the buffer it could not write (cut below anyway); a cut that
        # fails leaves a line cut short, which a resumed run simulates again.
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            os.truncate(self.path, self._good)

    def check(self) -> None:
        """Stop the run once a simulation could not be kept: going on would spend hours on
        simulations a rerun could not resume from."""
        if self.failure is not None:
            raise CommandError(
                f"{self.failure}; {self._written} simulation(s) kept in it; make room and "
                "run the same command again to resume"
            )

    def close(self) -> None:
        self._file.close()
