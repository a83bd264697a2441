"""`Fake`: the store, its HTTP server on a loopback port, and the test-side helpers.

The server runs its own event loop in a daemon thread, so a test can call the synchronous
`kubernetes` client (urllib3) directly. Helpers are called from the test's thread.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
from aiohttp import web

from . import status as st
from .patch import json_patch, merge_patch, strategic_merge_patch
from .server import Bookmark, make_app
from .store import ResourceType, Store, Watcher, now

__all__ = [
    "RECORDINGS",
    "WRITES",
    "Failure",
    "Fake",
    "Latency",
    "Methods",
    "RequestRecord",
    "running_fake",
]

RECORDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "objects"

_FAILURE_REASONS = {
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
    429: "TooManyRequests",
    401: "Unauthorized",
    403: "Forbidden",
}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    client: str | None = None
    """Who sent it: its User-Agent (``ApiClient.user_agent``), one per process in a test."""
    at: float = field(default_factory=time.time)
    """When it arrived (wall clock, as a Lease's renewTime)."""


Methods = str | tuple[str, ...] | None
"""The methods a failure or latency applies to: one, any of several, or None for every one."""

WRITES = ("POST", "PUT", "PATCH", "DELETE")
"""Every method that changes something (creates, evictions and bindings are POSTs)."""


@dataclass
class Failure:
    """The next `times` requests matching `method`, the `path` regex and `client` fail,
    once the first `after` of them have been carried out as usual."""

    path: str
    times: int
    status: int | str  # an HTTP code, "drop" (close the connection without an answer),
    # "stall" (keep it open, never answer: a network path that died without a word) or
    # "lost" (carry the request out, then close the connection: the answer lost on its way)
    # or "slow" (carry it out and answer after `delay_s`: a slow server or network)
    method: Methods = None
    message: str = "kubefake: injected failure"
    delay_s: float = 1.0
    after: int = 0
    """Matching requests still to let through before the failures start."""
    client: str | None = None
    """Only requests of this User-Agent (None: anyone's)."""

    def matches(self, method: str, path: str, client: str | None) -> bool:
        return self.client in (None, client) and _matches(self.method, self.path, method, path)


@dataclass
class Latency:
    """Every request matching `method` and the `path` regex waits `delay_s` before it is
    carried out, as over a real API server's round trip (5–20 ms), and is counted while in
    flight: from its arrival until it is answered (a watch: until its stream ends), so a
    test can see how many calls a client makes at once (`peak`)."""

    path: str
    delay_s: float
    method: Methods = None
    in_flight: int = 0
    peak: int = 0
    """The most matching requests in flight at once so far."""

    def matches(self, method: str, path: str) -> bool:
        return _matches(self.method, self.path, method, path)


def _matches(wanted: Methods, pattern: str, method: str, path: str) -> bool:
    methods = (wanted,) if isinstance(wanted, str) else wanted
    return (methods is None or method in methods) and bool(re.fullmatch(pattern, path))


class Fake:
    """An in-memory kube-apiserver for controller tests (see tests/README.md)."""

    def __init__(
        self, *, kubelet: bool = True, gone_as_http: bool = False, history_limit: int = 10_000
    ) -> None:
        self.store = Store(history_limit=history_limit)
        # kubelet: a deleted bound pod goes Terminating (MODIFIED) then away (DELETED), as a
        # node would confirm; False keeps it Terminating until `finish_termination`.
        self.kubelet = kubelet
        # gone_as_http: a watch from a compacted resourceVersion answers HTTP 410 instead of
        # 200 with an ERROR event (the watch cache's way, the default).
        self.gone_as_http = gone_as_http
        self.requests: list[RequestRecord] = []
        self.failures: list[Failure] = []
        self.latencies: list[Latency] = []
        self.evictions: list[dict] = []
        self.open_watches: set[Watcher] = set()
        self.stopping = False
        self._blocked: dict[tuple[str | None, str | None], str] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- seeding -------------------------------------------------------------------------
    @classmethod
    def from_recordings(cls, directory: Path = RECORDINGS, **options: Any) -> Fake:
        """Nodes and pods of nodelist.json and podlist-gpu-team-a.json, with their
        resourceVersions (the counter continues from the lists' 314), and a Namespace for
        each namespace seen (synthesized: the recordings hold none)."""
        fake = cls(**options)
        nodes = json.loads((directory / "nodelist.json").read_text())
        pods = json.loads((directory / "podlist-gpu-team-a.json").read_text())
        namespaces = sorted({p["metadata"]["namespace"] for p in pods["items"]} | {"default"})
        created = min(p["metadata"]["creationTimestamp"] for p in nodes["items"])
        for i, name in enumerate(namespaces, start=1):
            fake.store.seed(
                fake.rtype("namespaces"),
                {
                    "metadata": {
                        "name": name,
                        "uid": f"00000000-0000-4000-8000-{i:012d}",
                        "resourceVersion": str(i),
                        "creationTimestamp": created,
                        "labels": {"kubernetes.io/metadata.name": name},
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        for node in nodes["items"]:
            fake.store.seed(fake.rtype("nodes"), node)
        for pod in pods["items"]:
            fake.store.seed(fake.rtype("pods"), pod)
        fake.store.rv = max(
            fake.store.rv,
            int(nodes["metadata"]["resourceVersion"]),
            int(pods["metadata"]["resourceVersion"]),
        )
        fake.store.compacted = fake.store.rv
        return fake

    # ---- server --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Fake:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(make_app(self), handler_cancellation=True, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="kubefake", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("kubefake: the server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        self.stopping = True
        with self.store.lock:
            for watcher in list(self.store.watchers):
                watcher.deliver(None)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._runner = self._thread = None

    def configuration(self) -> kubernetes.client.Configuration:
        config = kubernetes.client.Configuration()
        config.host = self.url
        return config

    def api_client(self) -> kubernetes.client.ApiClient:
        """A real `kubernetes` ApiClient pointed at the fake (plain HTTP, no auth)."""
        return kubernetes.client.ApiClient(self.configuration())

    # ---- request log and failure injection ----------------------------------------------
    def record_request(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        content_type: str | None,
        body: Any,
        client: str | None = None,
    ) -> dict | str | float | None:
        """Log the request; return an injected failure (Status body, "drop", "stall",
        "lost", or the seconds to wait before answering) if one fires."""
        with self._lock:
            self.requests.append(RequestRecord(method, path, query, content_type, body, client))
            for failure in self.failures:
                if failure.times > 0 and failure.matches(method, path, client):
                    if failure.after > 0:
                        failure.after -= 1
                        continue
                    failure.times -= 1
                    if failure.status == "slow":
                        return failure.delay_s
                    if failure.status in ("drop", "stall", "lost"):
                        return str(failure.status)
                    code = int(failure.status)
                    return st.status(
                        code, _FAILURE_REASONS.get(code, "InternalError"), failure.message
                    )
        return None

    def fail(
        self,
        path: str,
        *,
        times: int = 1,
        status: int | str = 500,
        method: Methods = None,
        delay_s: float = 1.0,
        after: int = 0,
        client: str | None = None,
    ) -> Failure:
        """Make the next `times` requests whose path fully matches regex `path` fail (or,
        with status "slow", answer after `delay_s`), once `after` of them went through as
        usual; `client`: only those of that User-Agent. A process killed after its Nth
        write: ``fail(".*", method=WRITES, after=N, times=10**9, status=503, client=...)``."""
        failure = Failure(path, times, status, method, delay_s=delay_s, after=after, client=client)
        with self._lock:
            self.failures.append(failure)
        return failure

    def add_latency(self, path: str, delay_s: float, *, method: Methods = None) -> Latency:
        """Delay every request whose path fully matches regex `path` by `delay_s` from now
        on (unlike a "slow" failure, not a number of times), and count those in flight."""
        latency = Latency(path, delay_s, method)
        with self._lock:
            self.latencies.append(latency)
        return latency

    def latencies_for(self, method: str, path: str) -> list[Latency]:
        with self._lock:
            return [latency for latency in self.latencies if latency.matches(method, path)]

    def requests_to(self, path: str, method: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [
                r
                for r in self.requests
                if re.fullmatch(path, r.path) and (method is None or r.method == method)
            ]

    # ---- resources -----------------------------------------------------------------------
    def rtype(self, plural: str, group: str = "", version: str = "v1") -> ResourceType:
        rtype = self.store.resolve(group, version, plural)
        if rtype is None:
            raise KeyError(f"kubefake: no resource {plural!r} in {group or 'core'}/{version}")
        return rtype

    def register_custom(
        self, group: str, version: str, plural: str, kind: str, *, namespaced: bool = False
    ) -> ResourceType:
        """Serve a custom resource (CRD-like: list items keep apiVersion/kind, no strategic
        merge)."""
        rtype = ResourceType(group, version, plural, kind, namespaced, builtin=False)
        self.store.register(rtype)
        return rtype

    def get(
        self,
        plural: str,
        name: str,
        namespace: str | None = None,
        *,
        group: str = "",
        version: str = "v1",
    ) -> dict:
        rtype = self.rtype(plural, group, version)
        return self.store.typed(rtype, self.store.get(rtype, namespace, name))

    def put(self, obj: dict) -> dict:
        """Create or replace any object by its apiVersion/kind (no validation)."""
        group, _, version = obj["apiVersion"].rpartition("/")
        rtype = next(
            (
                t
                for t in self.store.types.values()
                if (t.group, t.version, t.kind) == (group, version, obj["kind"])
            ),
            None,
        )
        if rtype is None:
            raise KeyError(f"kubefake: no resource of kind {obj['kind']} in {obj['apiVersion']}")
        return self.store.typed(rtype, self.store.put(rtype, obj))

    def put_node(self, obj: dict) -> dict:
        return self.put({"apiVersion": "v1", "kind": "Node", **obj})

    def put_pod(self, obj: dict) -> dict:
        return self.put({"apiVersion": "v1", "kind": "Pod", **obj})

    def put_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        existing = self.store.find(self.rtype("namespaces"), None, name)
        obj = (
            copy.deepcopy(existing)
            if existing
            else {
                "metadata": {"name": name},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
        )
        obj["metadata"]["labels"] = {"kubernetes.io/metadata.name": name, **(labels or {})}
        return self.put({"apiVersion": "v1", "kind": "Namespace", **obj})

    def delete_pod(self, namespace: str, name: str) -> None:
        """Remove a pod at once (DELETED), as if deleted with gracePeriodSeconds=0."""
        self.store.remove(self.rtype("pods"), namespace, name)

    def delete_node(self, name: str) -> None:
        self.store.remove(self.rtype("nodes"), None, name)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        grace: int | None = None,
        precondition_rv: str | None = None,
    ) -> tuple[dict, bool]:
        """A client DELETE: bound pods terminate gracefully; returns (object, gone)."""
        old = self.store.get(rtype, namespace, name)
        graceful = (
            rtype.plural == "pods"
            and bool(old.get("spec", {}).get("nodeName"))
            and (grace is None or grace > 0)
        )
        obj = self.store.delete(
            rtype, namespace, name, graceful=graceful, precondition_rv=precondition_rv
        )
        if graceful and self.kubelet and not obj["metadata"].get("finalizers"):
            return self.store.remove(rtype, namespace, name), True
        return obj, self.store.find(rtype, namespace, name) is None

    def finish_termination(self, namespace: str, name: str) -> None:
        """What the kubelet does for a Terminating pod when `kubelet=False`."""
        self.store.remove(self.rtype("pods"), namespace, name)

    def bind(self, namespace: str, name: str, node: str) -> dict:
        """What the scheduler's Binding does: spec.nodeName and PodScheduled=True."""
        pods = self.rtype("pods")
        with self.store.lock:
            pod = copy.deepcopy(self.store.get(pods, namespace, name))
            if pod["spec"].get("schedulingGates"):
                raise st.ApiError(
                    st.status(409, "Conflict", f"pod {name} has non-empty .spec.schedulingGates")
                )
            if pod["spec"].get("nodeName"):
                raise st.ApiError(
                    st.status(
                        409,
                        "Conflict",
                        f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
                    )
                )
            pod["spec"]["nodeName"] = node
            status = pod.setdefault("status", {})
            status["conditions"] = [
                c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"
            ]
            status["conditions"].insert(
                0,
                {
                    "lastProbeTime": None,
                    "lastTransitionTime": now(),
                    "status": "True",
                    "type": "PodScheduled",
                },
            )
            return self.store.typed(pods, self.store.put(pods, pod))

    def set_pod_phase(self, namespace: str, name: str, phase: str) -> dict:
        pods = self.rtype("pods")
        with self.store.lock:
            pod = copy.deepcopy(self.store.get(pods, namespace, name))
            pod.setdefault("status", {})["phase"] = phase
            return self.store.typed(pods, self.store.put(pods, pod))

    def write_status(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        method: str,
        request: Any,
        body: Any,
    ) -> dict:
        """PUT/PATCH of the `status` subresource: only `status` changes."""
        with self.store.lock:
            old = self.store.get(rtype, namespace, name)
            if method == "PATCH":
                content_type = (request.headers.get("Content-Type") or "").split(";")[0]
                apply = {
                    "application/json-patch+json": json_patch,
                    "application/merge-patch+json": merge_patch,
                }.get(content_type, strategic_merge_patch)
                body = apply(self.store.typed(rtype, old), body)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise st.conflict(rtype.group, rtype.plural, name)
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status"))
            return self.store.put(
                rtype, {"apiVersion": rtype.api_version, "kind": rtype.kind, **new}
            )

    # ---- watch control -------------------------------------------------------------------
    def expire_history(self) -> None:
        """Compact the history: watches from any older resourceVersion now get 410 Gone."""
        self.store.expire_history()

    def send_bookmark(self) -> None:
        """A BOOKMARK (current resourceVersion) to every watch that allowed bookmarks."""
        with self.store.lock:
            for watcher in list(self.store.watchers):
                watcher.deliver(Bookmark(self.store.rv))  # type: ignore[arg-type]

    # ---- evictions and events ------------------------------------------------------------
    def block_evictions(
        self, namespace: str | None = None, name: str | None = None, *, pdb: str = "apportion-pdb"
    ) -> None:
        """Evictions of matching pods (None: any) get 429, as a PodDisruptionBudget does."""
        self._blocked[(namespace, name)] = pdb

    def allow_evictions(self) -> None:
        self._blocked.clear()

    def eviction_block(self, namespace: str, name: str) -> st.ApiError | None:
        for (ns, pod), pdb in self._blocked.items():
            if ns in (None, namespace) and pod in (None, name):
                return st.ApiError(
                    st.status(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption "
                                    f"budget {pdb} needs 1 healthy pods and has 1 currently",
                                }
                            ]
                        },
                    )
                )
        return None

    def events(self, namespace: str | None = None) -> list[dict]:
        """Every stored Event (core v1 and events.k8s.io/v1), oldest first."""
        found: list[dict] = []
        for rtype in (self.rtype("events"), self.rtype("events", "events.k8s.io")):
            items, _ = self.store.list(rtype, namespace, lambda o: True)
            found += [self.store.typed(rtype, o) for o in items]
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))


@contextmanager
def running_fake(fake: Fake | None = None, **options: Any) -> Iterator[Fake]:
    """`with running_fake() as fake:` — the recordings served on a loopback port."""
    fake = fake or Fake.from_recordings(**options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
