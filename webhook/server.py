"""The aiohttp shell around admission: HTTPS endpoints, probes, metrics, certificate reload.

Everything that decides lives in ``admission``; this module turns bytes into a parsed
request and an answer back into bytes, times it, and never lets an exception escape as
a 5xx: a failure answers "allowed" with a warning (the pod is not lost, and a pod we do
not manage is never blocked by our bug).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webhook.admission import Admission, Verdict
from webhook.metrics import Metrics
from webhook.queueview import QueueView, queue_view
from webhook.review import ReviewError, allow, parse_review, review_response

__all__ = [
    "QUEUE_VIEW_MAX_AGE_S",
    "CertificateError",
    "CertificateReloader",
    "QueueViews",
    "Readiness",
    "build_app",
    "build_probe_app",
]

log = logging.getLogger("apportion.server")


@dataclass(slots=True)
class Readiness:
    """Ready only after the first full sync of cluster state (standalone: after loading)."""

    synced: bool = False
    reason: str = "cluster state not loaded yet"


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
    )


def _review_handler(
    endpoint: str, decide: Callable[..., Verdict], metrics: Metrics, max_body: int
) -> Callable[[web.Request], Awaitable[web.Response]]:
    histogram = metrics.admission_seconds
    decisions = metrics.decisions

    async def handle(request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.content_length is not None and request.content_length > max_body:
            metrics.bad_requests.labels(endpoint).inc()
            return web.Response(status=413, text=f"body over {max_body} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.bad_requests.labels(endpoint).inc()
            return web.Response(status=413, text=f"body over {max_body} bytes")
        except web.RequestPayloadError as error:  # a body its Content-Encoding cannot decode
            metrics.bad_requests.labels(endpoint).inc()
            encoding = request.headers.get("Content-Encoding", "")
            return web.Response(status=400, text=f"body not readable as {encoding!r}: {error}")
        try:
            review = parse_review(body)
        except ReviewError as error:
            metrics.bad_requests.labels(endpoint).inc()
            return web.Response(status=400, text=f"not an AdmissionReview v1: {error}")
        try:
            verdict = decide(review)
        except Exception:
            log.exception("admission failed; answering allowed", extra={"uid": review.uid})
            verdict = Verdict(
                allow(warnings=("Apportion failed on this request; the pod was let through",)),
                "error",
            )
        histogram.labels(endpoint, verdict.outcome).observe(time.perf_counter() - started)
        if verdict.outcome != "ignored":
            if not review.dry_run:  # nothing was admitted: admission rates stay true
                decisions.labels(verdict.outcome).inc()
            log.info(
                "%s %s",
                endpoint,
                verdict.outcome,
                extra={
                    "uid": review.uid,
                    "namespace": review.namespace,
                    "workload": verdict.workload,
                    "operation": review.operation,
                    "dry_run": review.dry_run,
                    "denial": verdict.answer.message,
                },
            )
        return _json(review_response(review.uid, verdict.answer))

    return handle


QUEUE_VIEW_MAX_AGE_S = 2.0
"""How old a queue view /queues may serve: however many clients poll, it is worked out at
most once in that time."""


class QueueViews:
    """The queue view /queues serves, worked out and written as JSON on worker threads: on
    the event loop that answers /mutate and /validate, its 0.15–0.3 s at 20,000 pods (and
    7–11 ms per answer for 3 MB of JSON) held every review behind it: 4 clients polling
    took /mutate's median from 0.7 ms to 0.8 s, 24 past the API server's timeout. A request
    takes the view under way, or the last one if it is younger than ``max_age_s``, else
    starts a new one; each queue's answer is written once per view."""

    def __init__(
        self,
        admission: Admission,
        max_age_s: float = QUEUE_VIEW_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admission = admission
        self._max_age_s = max_age_s
        self._clock = clock
        self._view: asyncio.Future[QueueView] | None = None
        self._started = 0.0
        self._bodies: dict[str | None, asyncio.Future[bytes]] = {}
        """Per queue asked (None: all), the view's answer, written or being written."""

    def _compute(self) -> QueueView:
        admission = self._admission
        return queue_view(admission.cluster, controlled=not admission.standalone)

    def _current(self) -> asyncio.Future[QueueView]:
        view = self._view
        if view is None or (
            view.done()
            and (view.exception() is not None or self._clock() - self._started >= self._max_age_s)
        ):
            self._started = self._clock()
            view = self._view = asyncio.get_running_loop().run_in_executor(None, self._compute)
            self._bodies = {}
        return view

    async def body(self, queue: str | None) -> bytes:
        """The JSON answer for ``queue`` (None: every queue), ``QueueView.of``'s."""
        view = self._current()
        body = self._bodies.get(queue)
        if body is None:
            body = self._bodies[queue] = asyncio.ensure_future(_written(view, queue))
        # Shielded: a client that hangs up does not cancel what the others wait for.
        return await asyncio.shield(body)


async def _written(view: asyncio.Future[QueueView], queue: str | None) -> bytes:
    done = await view
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: orjson.dumps(done.of(queue))
    )


def _probes(app: web.Application, readiness: Readiness) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if readiness.synced:
            return web.Response(text="ready")
        return web.Response(status=503, text=f"not ready: {readiness.reason}")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def _reads(app: web.Application, metrics: Metrics, views: QueueViews) -> None:
    """/metrics and /queues: what they tell (every queue's waiting workloads, by name and
    namespace) is for the monitoring stack and the platform team, and each costs a worker
    thread's time."""

    async def metrics_endpoint(_: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, metrics.registry
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def queues(request: web.Request) -> web.Response:
        body = await views.body(request.query.get("queue"))
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/queues", queues)


def build_app(
    admission: Admission,
    metrics: Metrics,
    readiness: Readiness,
    max_body: int,
    views: QueueViews | None = None,
) -> web.Application:
    """The HTTPS application: /mutate, /validate and the probes; with ``views`` (no probe
    port: everything on one) /metrics and /queues too."""
    # aiohttp refuses larger bodies itself (413) before our handler reads them.
    app = web.Application(client_max_size=max_body)
    app.router.add_post("/mutate", _review_handler("mutate", admission.mutate, metrics, max_body))
    app.router.add_post(
        "/validate", _review_handler("validate", admission.validate, metrics, max_body)
    )
    _probes(app, readiness)
    if views is not None:
        _reads(app, metrics, views)
    return app


def build_probe_app(metrics: Metrics, readiness: Readiness, views: QueueViews) -> web.Application:
    """Plain HTTP for kubelet probes, Prometheus scrapes and /queues (no certificates
    needed), on the port the NetworkPolicy opens to the monitoring namespaces only."""
    app = web.Application()
    _probes(app, readiness)
    _reads(app, metrics, views)
    return app


class CertificateError(ValueError):
    """The certificate or key file cannot serve TLS; the message names which, and why
    (OpenSSL says only 'PEM lib')."""


def _unusable(cert_file: Path, key_file: Path, error: ssl.SSLError) -> str:
    if error.reason == "KEY_VALUES_MISMATCH":
        return (
            f"--key-file {key_file} is not the private key of the certificate in "
            f"--cert-file {cert_file}"
        )
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(cert_file))
    except ssl.SSLError:
        return f"--cert-file {cert_file}: no PEM certificate in it"
    return f"--key-file {key_file}: no PEM private key in it (an encrypted key cannot be used)"


class CertificateReloader:
    """Serves the certificate files as they are on disk, reloading them when they change.

    cert-manager and OpenShift's service-CA rotate the Secret in place; the kubelet
    updates the mounted files. Loading new files into the same SSLContext changes what
    new handshakes present, while open connections keep going.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._current_stamp()
        try:
            self.context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as error:
            raise CertificateError(_unusable(cert_file, key_file, error)) from None
        self.reloads = 0

    def _current_stamp(self) -> tuple[float, float, int, int]:
        cert, key = self.cert_file.stat(), self.key_file.stat()
        return (cert.st_mtime, key.st_mtime, cert.st_size, key.st_size)

    def check(self) -> bool:
        """Reload if the files changed; a half-written pair is retried on the next check."""
        try:
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            log.warning("certificate reload failed, keeping the current one: %s", error)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("certificate reloaded from %s", self.cert_file)
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()
