"""Every Kubernetes API call Apportion makes, in one place.

Least-privilege RBAC (deploy/) is checked against the calls written here, so adding a
call means adding a rule. Objects travel as the raw JSON dicts the API server sends (the
same shapes as tests/fixtures/objects), never as the client's generated model classes:
cheaper, and nothing is lost in translation. They are decoded with orjson, as reviews are:
a watch event in 8 µs against json's 20, a page of a list in three quarters of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from scheduler.crds import GROUP, QUEUE_PLURAL, VERSION
from webhook.settings import ControllerSettings

__all__ = ["UNANSWERED", "KubeApi", "Listing", "Raw", "Resource", "failure", "failure_code"]

Raw = dict[str, Any]
"""A Kubernetes object as the API sends it (decoded JSON), for every module that reads one."""

UNANSWERED = (HTTPError, OSError)
"""What a call raises when no answer came (connection refused or reset, read timeout):
unlike an ``ApiException``, the change it asked for may or may not have been made."""


def failure(error: Exception) -> str:
    """One log line's worth of why a call failed (an ApiException's text spans lines)."""
    if isinstance(error, client.ApiException):
        return f"{error.status} {error.reason}"
    return f"no answer ({error})"


def failure_code(error: Exception) -> str:
    """Why a call failed in a metric label's few values: the HTTP status code, or
    ``unanswered`` (never an object's name)."""
    if isinstance(error, client.ApiException):
        return str(error.status)
    return "unanswered"


WATCH_GRACE_S = 10
"""How long past its own timeout a watch may stay silent before it is given up: the API
server ends it by then, so only a network path that died without a word is still open."""

LIST_TIMEOUT_S = 60 + WATCH_GRACE_S
"""How long a list may stay silent: kube-apiserver ends any request after its
``--request-timeout`` (60 s by default). Longer than the other calls' timeout: the server
may take seconds to start answering a large cluster's list."""


LIST_PAGE_SIZE = 500
"""Objects per list request, as client-go's informers ask for them. A cluster of
thousands of nodes holds tens of thousands of pods (DaemonSets' alone: ten or so a node):
listed in one answer they were all held at once, as JSON and as decoded dicts (100 MB and
450 MB at 25,000 small pods), beside the cache the list replaces. In pages, a replica holds
one page at a time while the informer's handler reads each object into what it keeps."""


@dataclass(frozen=True, slots=True)
class Listing:
    """A list's objects, read page by page as ``items`` is iterated (once): a later page's
    failure raises from the iteration, an ``ApiException`` 410 when the list outlived the
    version it reads (etcd compacted it: list again)."""

    items: Iterator[Raw]
    resource_version: str


@dataclass(frozen=True, slots=True)
class Resource:
    """One watched kind: how to list it and how to watch it from a resourceVersion."""

    kind: str
    list_call: Callable[..., Any]
    args: tuple[Any, ...] = ()


class KubeApi:
    """Thin, typed wrapper over the official client; all methods are blocking, and none
    waits longer than its timeout for an answer."""

    def __init__(
        self,
        api_client: client.ApiClient,
        timeout_s: float = ControllerSettings().api_timeout_s,
        list_timeout_s: float = LIST_TIMEOUT_S,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        """``list_page_size`` 0: every list in one answer."""
        self.api_client = api_client
        self.timeout_s = timeout_s
        self.list_timeout_s = list_timeout_s
        self.list_page_size = list_page_size
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # -- what the controller watches -------------------------------------------------------

    def nodes(self) -> Resource:
        return Resource("Node", self.core.list_node)

    def pods(self) -> Resource:
        return Resource("Pod", self.core.list_pod_for_all_namespaces)

    def namespaces(self) -> Resource:
        return Resource("Namespace", self.core.list_namespace)

    def jobs(self) -> Resource:
        return Resource("Job", self.batch.list_job_for_all_namespaces)

    def queues(self) -> Resource:
        return Resource(
            "Queue", self.custom.list_cluster_custom_object, (GROUP, VERSION, QUEUE_PLURAL)
        )

    def list_all(self, resource: Resource) -> Listing:
        """Every object of ``resource``: the first page now (its resourceVersion is the
        whole list's), the others as ``items`` reaches them."""
        first = self._list_page(resource, None)
        return Listing(self._items(resource, first), str(first["metadata"]["resourceVersion"]))

    def _items(self, resource: Resource, page: Raw) -> Iterator[Raw]:
        while True:
            yield from page.get("items") or ()
            after = (page.get("metadata") or {}).get("continue")
            if not after:
                return
            page = self._list_page(resource, str(after))

    def _list_page(self, resource: Resource, after: str | None) -> Raw:
        query: dict[str, Any] = {}
        if self.list_page_size > 0:
            query["limit"] = self.list_page_size
        if after is not None:
            query["_continue"] = after
        response = resource.list_call(
            *resource.args,
            _preload_content=False,
            _request_timeout=(self.timeout_s, self.list_timeout_s),
            **query,
        )
        page: Raw = orjson.loads(response.data)
        return page

    def watch(
        self, resource: Resource, resource_version: str, timeout_s: int, **query: Any
    ) -> Iterator[Raw]:
        """Events ``{"type", "object"}`` from ``resource_version`` until the server ends the
        stream; ``ApiException`` with the server's code (410 when the version is too old:
        relist) on an ERROR event; urllib3's read timeout when the stream went silent.

        Read line by line here rather than through ``kubernetes.watch``: its raw mode
        mishandles ERROR events, and its typed mode builds a model object per event.
        """
        response = resource.list_call(
            *resource.args,
            watch=True,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=(self.timeout_s, timeout_s + WATCH_GRACE_S),
            **query,
        )
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line.strip():
                    continue
                event: Raw = orjson.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise client.ApiException(
                        status=int(status.get("code") or 500),
                        reason=f"{status.get('reason')}: {status.get('message')}",
                    )
                yield event
        finally:
            response.close()
            response.release_conn()

    # -- what the controller changes -------------------------------------------------------

    def patch_pod(self, namespace: str, name: str, patch: list[Raw]) -> None:
        """A JSONPatch (the only patch type that can remove one gate by index with a test).

        The answer, the whole pod, is read to its end, which gives the connection back to
        the pool, but not parsed: nothing reads it (the watch brings the pod). A refusal
        still raises ``ApiException``, before the answer is returned."""
        response: Any = self.core.patch_namespaced_pod(
            name,
            namespace,
            patch,
            _content_type="application/json-patch+json",
            _preload_content=False,
            _request_timeout=self.timeout_s,
        )
        response.read(decode_content=False)

    def patch_queue_status(self, name: str, status: Raw) -> None:
        """Set a Queue's whole status subresource (what ``kubectl get queues`` shows).

        A JSON Patch ``add`` replaces it: a merge patch would keep every usage entry it no
        longer names (a flavor the queue stopped using would show its last count)."""
        self.custom.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            QUEUE_PLURAL,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            _content_type="application/json-patch+json",
            _request_timeout=self.timeout_s,
        )

    def evict_pod(self, namespace: str, name: str) -> None:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        self.core.create_namespaced_pod_eviction(
            name, namespace, body, _request_timeout=self.timeout_s
        )

    def record_event(self, pod: Raw, reason: str, message: str, event_type: str = "Normal") -> None:
        metadata = pod.get("metadata") or {}
        namespace = str(metadata.get("namespace", "default"))
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{metadata.get('name', 'pod')}."),
            involved_object=client.V1ObjectReference(
                api_version="v1",
                kind="Pod",
                name=metadata.get("name"),
                namespace=namespace,
                uid=metadata.get("uid"),
            ),
            reason=reason,
            message=message[:1024],
            type=event_type,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="apportion"),
            reporting_component="apportion.io/controller",
            reporting_instance="apportion",
        )
        self.core.create_namespaced_event(namespace, body, _request_timeout=self.timeout_s)

    # -- leader election ---------------------------------------------------------------------

    def read_lease(self, namespace: str, name: str) -> Raw | None:
        try:
            response: Any = self.coordination.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self.timeout_s
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        result: Raw = orjson.loads(response.data)
        return result

    def create_lease(self, namespace: str, body: Raw) -> Raw:
        response: Any = self.coordination.create_namespaced_lease(
            namespace, cast(Any, body), _preload_content=False, _request_timeout=self.timeout_s
        )
        result: Raw = orjson.loads(response.data)
        return result

    def replace_lease(self, namespace: str, name: str, body: Raw) -> Raw:
        """PUT with the read resourceVersion: a 409 means another replica got there first."""
        response: Any = self.coordination.replace_namespaced_lease(
            name,
            namespace,
            cast(Any, body),
            _preload_content=False,
            _request_timeout=self.timeout_s,
        )
        result: Raw = orjson.loads(response.data)
        return result
