"""Queues from a YAML/JSON file — e.g. a ConfigMap mounted into the pod — reloaded when the
kubelet updates it. A broken edit is logged and the last good queues stay in force: a typo
in a ConfigMap must not take admission down."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from scheduler.fieldpaths import already_used, show
from scheduler.loading import SnapshotError, parse_document, problem_lines, validated
from scheduler.model import Queue
from scheduler.names import queue_problems
from scheduler.textfile import read_text
from webhook.cluster import LiveCluster

__all__ = ["QueueFileError", "load_queue_file", "watch_queue_file"]

log = logging.getLogger("apportion.queues")


class QueueFile(BaseModel):
    """A queue file as a mapping (a bare list is its ``queues``), checked as one model so a
    problem reads as a snapshot's does (``queues[0].quota.H100.nominl: unknown field; did
    you mean 'nominal'?``) and a mistyped ``queues`` key is one, not no queues."""

    model_config = ConfigDict(extra="forbid")

    queues: list[Queue] | None = None


class QueueFileError(ValueError):
    """The queue file cannot be read or is not a valid list of queues (the message says where)."""


def load_queue_file(path: Path) -> list[Queue]:
    """Queues from a file holding a list, or a mapping with a ``queues`` list.

    A missing file is no queues: the ConfigMap is an optional mount, for clusters that do
    not use the Queue CRD.
    """
    if not path.exists():
        log.info("no queue file at %s; queues come from Queue objects only", path)
        return []
    try:
        data = parse_document(read_text(path), str(path))
    except OSError as error:
        raise QueueFileError(f"cannot read {path}: {error.strerror}") from None
    except SnapshotError as error:
        raise QueueFileError(str(error)) from None
    if data is None:
        return []
    if isinstance(data, list):
        data = {"queues": data}
    if not isinstance(data, dict):
        raise QueueFileError(f"{path}: {show(data)} is not a list of queues or a mapping")
    parsed, found = validated(QueueFile, data)
    if parsed is None:
        raise QueueFileError(f"{path}: {'; '.join(problem_lines(found))}")
    queues = parsed.queues or []
    problems = [p for i, q in enumerate(queues) for p in queue_problems(q, f"queues[{i}]")]
    problems += already_used("queues", [q.name for q in queues])
    if problems:
        raise QueueFileError(f"{path}: {'; '.join(problems)}")
    return queues


async def watch_queue_file(path: Path, cluster: LiveCluster, interval_s: float) -> None:
    """Reload the queues whenever the file's content changes (the first check always loads,
    so an edit between startup and the first check is not missed)."""
    last: bytes | None = None
    while True:
        await asyncio.sleep(interval_s)
        try:
            current = path.read_bytes() if path.exists() else b""
        except OSError:
            continue
        if current == last:
            continue
        last = current
        try:
            queues = load_queue_file(path)
        except QueueFileError as error:
            log.error("queue file changed but is invalid; keeping the previous queues: %s", error)
            continue
        cluster.replace_queues(queues)
        log.info("queues reloaded from %s: %d queues", path, len(queues))
