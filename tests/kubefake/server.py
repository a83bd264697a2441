"""The aiohttp application: kube-apiserver's REST paths over a `Store`.

Paths: `/api/v1/...` and `/apis/{group}/{version}/...`, cluster-scoped
(`{plural}[/{name}[/{sub}]]`) and namespaced (`namespaces/{ns}/{plural}[/{name}[/{sub}]]`).
Subresources: pods `eviction` and `binding`, `status` (GET/PUT/PATCH) for every kind.
Watches stream newline-delimited JSON events, one chunk each, as the real server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import status as st
from .selectors import field_selector, label_selector
from .store import ResourceType, Watcher

if TYPE_CHECKING:
    from .fake import Fake

__all__ = ["Bookmark", "Target", "make_app", "parse_path"]


@dataclass(frozen=True, slots=True)
class Bookmark:
    rv: int


@dataclass(frozen=True, slots=True)
class Target:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None


def _not_found_path() -> st.ApiError:
    return st.ApiError(
        st.status(404, "NotFound", "the server could not find the requested resource", {})
    )


def parse_path(fake: Fake, path: str) -> Target:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _not_found_path()
    store = fake.store
    if len(rest) >= 3 and rest[0] == "namespaces":
        rtype = store.resolve(group, version, rest[2])
        if rtype is not None and rtype.namespaced:
            name = rest[3] if len(rest) > 3 else None
            sub = rest[4] if len(rest) > 4 else None
            return Target(rtype, rest[1], name, sub)
    if not rest or len(rest) > 3:
        raise _not_found_path()
    rtype = store.resolve(group, version, rest[0])
    if rtype is None or (rtype.namespaced and len(rest) > 1):
        raise _not_found_path()
    return Target(
        rtype, None, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    )


def _dumps(body: Any) -> str:
    """Compact, as Go's encoding/json writes it."""
    return json.dumps(body, separators=(",", ":"))


def _json(body: Any, code: int = 200) -> web.Response:
    return web.Response(status=code, text=_dumps(body), content_type="application/json")


def _success(code: int, details: dict | None = None) -> web.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    }
    if details:
        body["details"] = details
    body["code"] = code
    return _json(body, code)


def make_app(fake: Fake) -> web.Application:
    @web.middleware
    async def record_and_inject(request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        content_type = request.headers.get("Content-Type")
        failure = fake.record_request(
            request.method,
            request.path,
            dict(request.query),
            content_type,
            body,
            request.headers.get("User-Agent"),
        )
        latencies = fake.latencies_for(request.method, request.path)
        for latency in latencies:  # counted on the server's one loop: no lock needed
            latency.in_flight += 1
            latency.peak = max(latency.peak, latency.in_flight)
        try:
            if latencies:
                await asyncio.sleep(max(latency.delay_s for latency in latencies))
            return await _answer(fake, request, handler, failure)
        finally:
            for latency in latencies:
                latency.in_flight -= 1

    async def dispatch(request: web.Request) -> web.StreamResponse:
        target = parse_path(fake, request.path)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError as error:
            raise st.bad_request(f"the request body is not JSON: {error}") from None
        method = request.method
        if method == "GET" and target.name is None:
            if request.query.get("watch") in ("true", "True", "1"):
                return await _watch(fake, request, target)
            return _list(fake, request, target)
        if target.name is None:
            if method == "POST":
                return _create(fake, target, body)
            raise st.ApiError(
                st.status(
                    405, "MethodNotAllowed", f"the server does not allow this method: {method}"
                )
            )
        return _object(fake, request, target, body)

    app = web.Application(middlewares=[record_and_inject], client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def _answer(
    fake: Fake, request: web.Request, handler: Any, failure: dict | str | float | None
) -> web.StreamResponse:
    """The handler's answer, or the injected failure instead of it (`Fake.fail`)."""
    if failure == "drop":
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError
    if failure == "stall":  # until the client gives up and hangs up, or the fake stops
        while not fake.stopping:
            await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError
    if isinstance(failure, dict):
        return _json(failure, failure["code"])
    if isinstance(failure, float):
        await asyncio.sleep(failure)
    try:
        answer = await handler(request)
    except st.ApiError as error:
        answer = web.Response(
            status=error.code,
            text=_dumps(error.body),
            content_type="application/json",
            headers=error.headers,
        )
    if failure == "lost":  # carried out; the client never hears of it
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError
    return answer


def _list(fake: Fake, request: web.Request, target: Target) -> web.Response:
    """A list, in pages when the client asks a ``limit`` (``Store.list_page``): each page
    but the last carries ``metadata.continue``, and without selectors the count of the
    items still to come (``remainingItemCount``), as kube-apiserver's."""
    query = request.query
    match_labels = label_selector(query.get("labelSelector"))
    match_fields = field_selector(query.get("fieldSelector"), target.rtype.plural)
    limit = query.get("limit", "0")
    if not limit.isdigit():
        raise st.bad_request(f"limit: Invalid value: {limit!r}: must be a non-negative integer")
    items, rv, after, remaining = fake.store.list_page(
        target.rtype,
        target.namespace,
        lambda o: match_labels(o) and match_fields(o),
        int(limit),
        query.get("continue") or None,
    )
    rtype = target.rtype
    metadata: dict[str, Any] = {"resourceVersion": str(rv)}
    if after is not None:
        metadata["continue"] = after
        if "labelSelector" not in query and "fieldSelector" not in query:
            metadata["remainingItemCount"] = remaining
    return _json(
        {
            "apiVersion": rtype.api_version,
            "kind": rtype.kind + "List",
            "metadata": metadata,
            "items": [fake.store.list_item(rtype, obj) for obj in items],
        }
    )


def _create(fake: Fake, target: Target, body: Any) -> web.Response:
    if not isinstance(body, dict):
        raise st.bad_request("the request body must be a JSON object")
    body_ns = (body.get("metadata") or {}).get("namespace")
    if target.rtype.namespaced and body_ns and body_ns != target.namespace:
        raise st.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    obj = fake.store.create(target.rtype, target.namespace, body)
    return _json(fake.store.typed(target.rtype, obj), 201)


def _object(fake: Fake, request: web.Request, target: Target, body: Any) -> web.Response:
    store, rtype, ns = fake.store, target.rtype, target.namespace
    name, sub = target.name, target.sub
    assert name is not None
    method = request.method
    if sub == "eviction" and rtype.plural == "pods" and method == "POST":
        return _evict(fake, ns, name, body)
    if sub == "binding" and rtype.plural == "pods" and method == "POST":
        node = ((body or {}).get("target") or {}).get("name", "")
        fake.bind(ns or "", name, node)
        return _success(201)
    if sub not in (None, "status"):
        raise _not_found_path()
    if method == "GET":
        return _json(store.typed(rtype, store.get(rtype, ns, name)))
    if method in ("PUT", "PATCH") and sub == "status":
        return _json(store.typed(rtype, fake.write_status(rtype, ns, name, method, request, body)))
    if method == "PUT":
        if not isinstance(body, dict):
            raise st.bad_request("the request body must be a JSON object")
        return _json(store.typed(rtype, store.replace(rtype, ns, name, body)))
    if method == "PATCH":
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        return _json(store.typed(rtype, store.patch(rtype, ns, name, content_type, body)))
    if method == "DELETE":
        options = body if isinstance(body, dict) else {}
        grace = options.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        precondition = (options.get("preconditions") or {}).get("resourceVersion")
        obj, gone = fake.delete(
            rtype,
            ns,
            name,
            grace=None if grace is None else int(grace),
            precondition_rv=precondition,
        )
        if not gone or rtype.plural == "pods":
            return _json(store.typed(rtype, obj))
        return _success(
            200,
            {
                "name": name,
                **({"group": rtype.group} if rtype.group else {}),
                "kind": rtype.plural,
                "uid": obj["metadata"].get("uid"),
            },
        )
    raise st.ApiError(
        st.status(405, "MethodNotAllowed", f"the server does not allow this method: {method}")
    )


def _evict(fake: Fake, namespace: str | None, name: str, body: Any) -> web.Response:
    body = body if isinstance(body, dict) else {}
    if (body.get("metadata") or {}).get("name") not in (None, name):
        raise st.bad_request("name in URL does not match name in Eviction object")
    pods = fake.store.resolve("", "v1", "pods")
    assert pods is not None
    fake.store.get(pods, namespace, name)  # 404 for a missing pod, before any PDB check
    blocked = fake.eviction_block(namespace or "", name)
    if blocked is not None:
        fake.evictions.append(
            {"namespace": namespace, "name": name, "allowed": False, "body": body}
        )
        raise blocked
    options = body.get("deleteOptions") or {}
    grace = options.get("gracePeriodSeconds")
    fake.delete(
        pods,
        namespace,
        name,
        grace=grace,
        precondition_rv=(options.get("preconditions") or {}).get("resourceVersion"),
    )
    fake.evictions.append({"namespace": namespace, "name": name, "allowed": True, "body": body})
    return _success(201)


async def _watch(fake: Fake, request: web.Request, target: Target) -> web.StreamResponse:
    query = request.query
    match_labels = label_selector(query.get("labelSelector"))
    match_fields = field_selector(query.get("fieldSelector"), target.rtype.plural)
    raw_rv = query.get("resourceVersion", "")
    try:
        since = None if raw_rv in ("", "0") else int(raw_rv)
    except ValueError:
        raise st.bad_request(f"invalid resource version: {raw_rv!r}") from None
    timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
    bookmarks = query.get("allowWatchBookmarks") in ("true", "True", "1")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def deliver(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    watcher = Watcher(
        target.rtype, target.namespace, lambda o: match_labels(o) and match_fields(o), deliver
    )
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    try:
        backlog = fake.store.subscribe(watcher, since)
    except st.ApiError as error:
        if fake.gone_as_http:
            raise
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(_dumps({"type": "ERROR", "object": error.body}).encode() + b"\n")
        await response.write_eof()
        return response
    store, rtype = fake.store, target.rtype
    fake.open_watches.add(watcher)
    try:
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(kind: str, obj: dict) -> None:
            line = _dumps({"type": kind, "object": obj}).encode() + b"\n"
            await response.write(line)

        for kind, obj in backlog:
            await send(kind, store.typed(rtype, obj))
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait = None if deadline is None else deadline - loop.time()
            if wait is not None and wait <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                break
            if item is None:
                break
            if isinstance(item, Bookmark):
                if bookmarks:
                    await send(
                        "BOOKMARK",
                        {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": {"resourceVersion": str(item.rv)},
                        },
                    )
                continue
            for kind, obj in store.translate(watcher, item):
                await send(kind, store.typed(rtype, obj))
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    except ConnectionError:
        pass
    finally:
        store.unsubscribe(watcher)
        fake.open_watches.discard(watcher)
    return response
