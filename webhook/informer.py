"""One informer: list a kind, then watch it from the listed resourceVersion.

A list is read in pages (``KubeApi.list_all``): ``replace`` gets the objects as an iterator
that fetches the next page as it goes, and must change nothing until it has read them all,
since a page may fail. The cyclic garbage collector is paused meanwhile: decoding and
reading 57,742 pods makes millions of objects, and the collector's full passes over the
growing heap, which freed nothing, were half of that list's CPU (9.5 s against 4.0).

A watch that expires (410 Gone), or a list that outlived the version it reads, lists again
at once; any other error backs off exponentially up to ``backoff_max_s`` and relists, so
the cluster view is rebuilt from a list whatever went wrong. ``synced`` is set after the
first list (the controller's readiness). A kind that may not be installed (the Queue CRD)
answers 404: that means none, not an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from kubernetes.client import ApiException

from scheduler.collector import paused
from webhook.kubeapi import KubeApi, Raw, Resource
from webhook.metrics import ApiAction
from webhook.settings import ControllerSettings

__all__ = ["Informer"]

log = logging.getLogger("apportion.controller")


class Informer:
    """List, then watch from the listed version; relist on 410 or after errors."""

    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        replace: Callable[[Iterator[Raw]], None],
        apply: Callable[[str, Raw], None],
        settings: ControllerSettings,
        stop: threading.Event,
        *,
        optional: bool = False,
        failed: Callable[[ApiAction, Exception], None] | None = None,
    ) -> None:
        self.api = api
        self.optional = optional
        """A kind that may not be installed (the Queue CRD): 404 means none, not an error."""
        self.resource = resource
        self._replace = replace
        self._apply = apply
        self.settings = settings
        self._stop = stop
        self.synced = threading.Event()
        self.relists = 0
        self.errors = 0
        self._count_failure = failed
        """Counts a failed list or watch (``Metrics.api_failed``); 410 Gone is no failure."""

    def run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            stage: ApiAction = "list"
            try:
                started = time.monotonic()
                listing = self.api.list_all(self.resource)
                read = _Counted(listing.items)
                with paused():  # the module says why
                    self._replace(read)
                log.info(
                    "%s list read: %d objects in %.1f s",
                    self.resource.kind,
                    read.count,
                    time.monotonic() - started,
                )
                self.relists += 1
                self.synced.set()
                backoff = 0.5
                version = listing.resource_version
                stage = "watch"
                while not self._stop.is_set():
                    version = self._watch_once(version)
            except ApiException as error:
                if error.status == 410:
                    log.info("%s %s expired (410 Gone); relisting", self.resource.kind, stage)
                    continue
                if error.status == 404 and self.optional:
                    if not self.synced.is_set():
                        log.info("%s is not installed; looking again later", self.resource.kind)
                        self._replace(iter(()))
                        self.synced.set()
                    self._stop.wait(self.settings.backoff_max_s)
                    continue
                self._failed(stage, error, backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_s)
            except Exception as error:  # network errors, bad JSON: back off, relist
                self._failed(stage, error, backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_s)

    def _failed(self, stage: ApiAction, error: Exception, backoff: float) -> None:
        self.errors += 1
        if self._count_failure is not None:
            self._count_failure(stage, error)
        log.warning("%s informer: %s; retrying in %.1fs", self.resource.kind, error, backoff)
        self._stop.wait(backoff)

    def _watch_once(self, version: str) -> str:
        for event in self.api.watch(self.resource, version, self.settings.watch_timeout_s):
            if self._stop.is_set():
                break
            kind = event.get("type")
            obj = event.get("object") or {}
            new_version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "BOOKMARK":
                version = str(new_version or version)
                continue
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(str(kind), obj)
                version = str(new_version or version)
        return version


class _Counted(Iterator[Raw]):
    """A list's objects as the handler reads them, counted (for the log: how large a list
    the replica read, and how long it took, is what sizing its memory and readiness asks)."""

    def __init__(self, items: Iterator[Raw]) -> None:
        self._items = items
        self.count = 0

    def __next__(self) -> Raw:
        item = next(self._items)
        self.count += 1
        return item
