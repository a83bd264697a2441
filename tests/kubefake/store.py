"""The fake's object store: one resourceVersion counter, a bounded event history, watchers.

Thread-safe (one lock): the HTTP server runs in its own thread and the test calls helpers from
its own. Stored objects carry no apiVersion/kind (added on the way out, as the real server's
lists of built-in types omit them) and are never mutated in place, so history shares them.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import status as st
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .podrules import pod_update_errors
from .selectors import Selector

__all__ = ["BUILTIN", "Event", "ResourceType", "Store", "Watcher", "now"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""What kube-apiserver draws a generated name's 5 random characters from (apimachinery's
``util/rand``: no vowels, nor the digits that read as letters)."""
MAX_GENERATE_NAME_BASE = 63 - 5
"""A ``generateName`` longer than this is cut, so the name stays within 63 characters."""
GENERATE_NAME_ATTEMPTS = 8
"""How many names kube-apiserver tries for a ``generateName`` before it answers 409: one
that collides with an existing object is drawn again (``RetryGenerateName``, KEP-4420:
beta and on by default since v1.31, GA in v1.32)."""


def random_suffix() -> str:
    return "".join(random.choices(NAME_SUFFIX_ALPHABET, k=5))


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    builtin: bool = True  # built-in kinds: list items lack apiVersion/kind, strategic merge works
    status_reset: bool = False  # writes to the main resource keep the old status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)


BUILTIN = [
    ResourceType("", "v1", "pods", "Pod", True, status_reset=True),
    ResourceType("", "v1", "nodes", "Node", False, status_reset=True),
    ResourceType("", "v1", "namespaces", "Namespace", False, status_reset=True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True),
    ResourceType("", "v1", "events", "Event", True),
    ResourceType("events.k8s.io", "v1", "events", "Event", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType("batch", "v1", "jobs", "Job", True),
]


@dataclass(frozen=True, slots=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: dict
    old: dict | None


@dataclass(eq=False)
class Watcher:
    rtype: ResourceType
    namespace: str | None
    match: Selector
    deliver: Callable[[Event | None], None]  # None: the fake is shutting down


@dataclass
class Store:
    history_limit: int = 10_000
    rv: int = 0
    compacted: int = 0  # watches from a resourceVersion below this get 410 Expired
    objects: dict[tuple, dict] = field(default_factory=dict)
    history: list[Event] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Called with (new, old) before a pod write is stored; raise ApiError to refuse.
    validators: dict[str, Callable[[dict, dict], None]] = field(default_factory=dict)
    # Draws a generated name's suffix; a test replaces it to make names collide.
    name_suffix: Callable[[], str] = random_suffix
    # Paged lists still to be continued, by continue token: (the list's resourceVersion,
    # its matching objects as they were then, where the next page starts).
    pages: dict[str, tuple[int, list[dict], int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rtype in BUILTIN:
            self.register(rtype)
        self.validators.setdefault("pods", validate_pod_update)

    def register(self, rtype: ResourceType) -> None:
        self.types[rtype.key] = rtype

    def resolve(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    # ---- output shapes -------------------------------------------------------------------
    def typed(self, rtype: ResourceType, obj: dict) -> dict:
        """A single object as GET, watch and writes return it: apiVersion and kind first."""
        return {"apiVersion": rtype.api_version, "kind": rtype.kind, **copy.deepcopy(obj)}

    def list_item(self, rtype: ResourceType, obj: dict) -> dict:
        return copy.deepcopy(obj) if rtype.builtin else self.typed(rtype, obj)

    # ---- reads ---------------------------------------------------------------------------
    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple:
        return (rtype.key, namespace if rtype.namespaced else None, name)

    def find(self, rtype: ResourceType, namespace: str | None, name: str) -> dict | None:
        with self.lock:
            return self.objects.get(self._key(rtype, namespace, name))

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        obj = self.find(rtype, namespace, name)
        if obj is None:
            raise st.not_found(rtype.group, rtype.plural, name)
        return obj

    def list(
        self, rtype: ResourceType, namespace: str | None, match: Selector
    ) -> tuple[list[dict], int]:
        with self.lock:
            items = [
                obj
                for (key, ns, _), obj in self.objects.items()
                if key == rtype.key and (namespace is None or ns == namespace) and match(obj)
            ]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return items, self.rv

    def list_page(
        self,
        rtype: ResourceType,
        namespace: str | None,
        match: Selector,
        limit: int,
        token: str | None,
    ) -> tuple[list[dict], int, str | None, int]:
        """One page of at most ``limit`` objects (all of them for 0), the list's
        resourceVersion, the token continuing it (None after the last page) and how many
        objects are left after the page.

        As kube-apiserver reads etcd: a continued list is the same snapshot as its first
        page, at its resourceVersion, until a compaction passes that version; then 410
        Expired. A token that was never handed out is a 400."""
        with self.lock:
            if token is None:
                items, rv = self.list(rtype, namespace, match)
                start = 0
            else:
                kept = self.pages.get(token)
                if kept is None:
                    raise st.bad_request(f"continue key is not valid: {token!r}")
                rv, items, start = kept
                if rv < self.compacted:
                    self.pages.pop(token)
                    raise st.ApiError(st.continue_expired())
            end = start + limit if limit > 0 else len(items)
            if end >= len(items):
                return items[start:], rv, None, 0
            last = items[end - 1]["metadata"]
            key = f"{last.get('namespace') or ''}/{last['name']}\x00"
            after = base64.urlsafe_b64encode(
                json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": key}).encode()
            ).decode()
            self.pages = {t: p for t, p in self.pages.items() if p[0] >= self.compacted}
            self.pages[after] = (rv, items, end)
            return items[start:end], rv, after, len(items) - end

    # ---- writes (all under the lock; every change gets the next resourceVersion) --------
    def _record(self, kind: str, rtype: ResourceType, obj: dict, old: dict | None) -> None:
        event = Event(self.rv, kind, rtype, obj, old)
        self.history.append(event)
        if len(self.history) > self.history_limit:
            dropped = self.history.pop(0)
            self.compacted = dropped.rv
        for watcher in list(self.watchers):
            if watcher.rtype.key == rtype.key:
                watcher.deliver(event)

    def _stamp(self, obj: dict) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def seed(self, rtype: ResourceType, obj: dict) -> None:
        """Load a recorded object as is (its own resourceVersion), without an event."""
        with self.lock:
            obj = {k: v for k, v in copy.deepcopy(obj).items() if k not in ("apiVersion", "kind")}
            meta = obj["metadata"]
            self.objects[self._key(rtype, meta.get("namespace"), meta["name"])] = obj
            self.rv = max(self.rv, int(meta.get("resourceVersion") or 0))
            self.compacted = self.rv

    def create(self, rtype: ResourceType, namespace: str | None, body: dict) -> dict:
        with self.lock:
            obj = {k: v for k, v in copy.deepcopy(body).items() if k not in ("apiVersion", "kind")}
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generated_name(rtype, namespace, meta["generateName"])
            if not meta.get("name"):
                raise st.invalid(
                    rtype.kind,
                    rtype.group,
                    "",
                    [
                        st.FieldError(
                            "Required", "metadata.name", "name or generateName is required"
                        )
                    ],
                )
            if rtype.namespaced:
                meta["namespace"] = namespace
            key = self._key(rtype, namespace, meta["name"])
            if key in self.objects:
                raise st.already_exists(rtype.group, rtype.plural, meta["name"])
            meta.pop("resourceVersion", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if rtype.plural == "pods":
                meta.setdefault("generation", 1)
            self._stamp(obj)
            self.objects[key] = obj
            self._record("ADDED", rtype, obj, None)
            return obj

    def _generated_name(self, rtype: ResourceType, namespace: str | None, base: str) -> str:
        """A name for ``generateName`` no object holds, drawn up to
        ``GENERATE_NAME_ATTEMPTS`` times as kube-apiserver does; 409 after that."""
        base = base[:MAX_GENERATE_NAME_BASE]
        for _ in range(GENERATE_NAME_ATTEMPTS):
            name = base + self.name_suffix()
            if self._key(rtype, namespace, name) not in self.objects:
                return name
        raise st.generate_name_conflict(rtype.group, rtype.plural, name)

    def put(self, rtype: ResourceType, body: dict) -> dict:
        """Test-side create-or-replace: no validation, no preconditions."""
        with self.lock:
            meta = body.get("metadata", {})
            old = self.find(rtype, meta.get("namespace"), meta["name"])
            if old is None:
                return self.create(rtype, meta.get("namespace"), body)
            obj = {k: v for k, v in copy.deepcopy(body).items() if k not in ("apiVersion", "kind")}
            return self._store_update(rtype, old, obj)

    def _store_update(self, rtype: ResourceType, old: dict, obj: dict) -> dict:
        meta, old_meta = obj.setdefault("metadata", {}), old["metadata"]
        for immutable in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if immutable in old_meta:
                meta[immutable] = old_meta[immutable]
        if "generation" in old_meta:
            changed = obj.get("spec") != old.get("spec")
            meta["generation"] = old_meta["generation"] + (1 if changed else 0)
        if _without_rv(obj) == _without_rv(old):
            return old  # a no-op write keeps its resourceVersion and sends no event
        self._stamp(obj)
        key = self._key(rtype, old_meta.get("namespace"), old_meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]
            self._record("DELETED", rtype, obj, old)
            return obj
        self.objects[key] = obj
        self._record("MODIFIED", rtype, obj, old)
        return obj

    def _validate_and_store(self, rtype: ResourceType, old: dict, new: dict) -> dict:
        new = {k: v for k, v in new.items() if k not in ("apiVersion", "kind")}
        new.setdefault("metadata", {})
        wanted = new["metadata"].get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise st.conflict(rtype.group, rtype.plural, old["metadata"]["name"])
        if rtype.status_reset:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        validate = self.validators.get(rtype.plural) if rtype.builtin else None
        if validate is not None:
            validate(new, old)
        return self._store_update(rtype, old, new)

    def replace(self, rtype: ResourceType, namespace: str | None, name: str, body: dict) -> dict:
        with self.lock:
            old = self.get(rtype, namespace, name)
            if not (body.get("metadata") or {}).get("resourceVersion") and rtype.plural == "pods":
                raise st.invalid(
                    rtype.kind,
                    rtype.group,
                    name,
                    [
                        st.FieldError(
                            "Invalid",
                            "metadata.resourceVersion",
                            "must be specified for an update",
                            0,
                        )
                    ],
                )
            return self._validate_and_store(rtype, old, copy.deepcopy(body))

    def patch(
        self, rtype: ResourceType, namespace: str | None, name: str, content_type: str, body: Any
    ) -> dict:
        with self.lock:
            old = self.get(rtype, namespace, name)
            if content_type == JSON_PATCH:
                if not isinstance(body, list):
                    raise st.bad_request(
                        "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                    )
                try:
                    new = json_patch(self.typed(rtype, old), body)
                except PatchError:
                    # The real server hides the json-patch library's reason.
                    raise st.ApiError(
                        st.status(
                            422,
                            "Invalid",
                            "the server rejected our request due to an error in our request",
                            {},
                        )
                    ) from None
            elif content_type == MERGE_PATCH:
                new = merge_patch(self.typed(rtype, old), body)
            elif content_type == STRATEGIC_PATCH and rtype.builtin:
                try:
                    new = strategic_merge_patch(self.typed(rtype, old), body)
                except PatchError as error:
                    raise st.bad_request(str(error)) from None
            else:
                accepted = [JSON_PATCH, MERGE_PATCH, "application/apply-patch+yaml"]
                if rtype.builtin:
                    accepted.insert(2, STRATEGIC_PATCH)
                raise st.unsupported_media_type(accepted)
            if not isinstance(new, dict):
                raise st.bad_request("the patch did not produce an object")
            return self._validate_and_store(rtype, old, new)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        graceful: bool = False,
        precondition_rv: str | None = None,
    ) -> dict:
        """Delete; `graceful` keeps the object terminating (deletionTimestamp) until removed."""
        with self.lock:
            old = self.get(rtype, namespace, name)
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise st.conflict(rtype.group, rtype.plural, name)
            meta = old["metadata"]
            if graceful or meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old
                obj = copy.deepcopy(old)
                obj["metadata"]["deletionTimestamp"] = now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 30 if graceful else 0
                self._stamp(obj)
                self.objects[self._key(rtype, namespace, name)] = obj
                self._record("MODIFIED", rtype, obj, old)
                return obj
            return self.remove(rtype, namespace, name)

    def remove(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        """Drop an object now (what a kubelet confirming termination, or GC, does)."""
        with self.lock:
            old = self.get(rtype, namespace, name)
            obj = self._stamp(copy.deepcopy(old))
            del self.objects[self._key(rtype, namespace, name)]
            self._record("DELETED", rtype, obj, old)
            return obj

    # ---- watch ---------------------------------------------------------------------------
    def subscribe(self, watcher: Watcher, since: int | None) -> list[tuple[str, dict]]:
        """Register `watcher`; return what it must send first (replay or initial ADDED).

        `since` None means "now, with the current state as ADDED events" (watch without a
        resourceVersion, or "0"). Raises ApiError 410 when `since` was compacted away.
        """
        with self.lock:
            backlog: list[tuple[str, dict]] = []
            if since is None:
                items, _ = self.list(watcher.rtype, watcher.namespace, watcher.match)
                backlog = [("ADDED", obj) for obj in items]
            else:
                if since < self.compacted:
                    raise st.ApiError(st.expired(since, self.compacted))
                for event in self.history:
                    if event.rv > since and event.rtype.key == watcher.rtype.key:
                        backlog += self.translate(watcher, event)
            self.watchers.append(watcher)
            return backlog

    def unsubscribe(self, watcher: Watcher) -> None:
        with self.lock:
            if watcher in self.watchers:
                self.watchers.remove(watcher)

    @staticmethod
    def translate(watcher: Watcher, event: Event) -> list[tuple[str, dict]]:
        """The event as this watcher sees it: selector transitions become ADDED/DELETED."""

        def visible(obj: dict | None) -> bool:
            if obj is None:
                return False
            ns = obj["metadata"].get("namespace")
            return (watcher.namespace is None or ns == watcher.namespace) and watcher.match(obj)

        now_in, was_in = visible(event.obj), visible(event.old)
        if event.type == "DELETED":
            return [("DELETED", event.obj)] if was_in or now_in else []
        if now_in and not was_in:
            return [("ADDED", event.obj)]
        if was_in and not now_in:
            return [("DELETED", event.obj)]
        return [(event.type, event.obj)] if now_in else []

    def expire_history(self) -> None:
        """Compact: every watch from a resourceVersion older than now gets 410 Gone."""
        with self.lock:
            self.history.clear()
            self.compacted = self.rv


def _without_rv(obj: dict) -> dict:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


def validate_pod_update(new: dict, old: dict) -> None:
    errors = pod_update_errors(new, old)
    if errors:
        raise st.invalid("Pod", "", old["metadata"]["name"], errors)
