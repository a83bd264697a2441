"""/mutate's latency while clients poll /queues, on a cache of tens of thousands of pods.

    .venv/bin/python benchmarks/queues_bench.py [--pods 20000] [--pollers 4 16] [--reviews 40]

``apportion serve`` answers /mutate and /validate on one event loop, and the API server
gives up on a mutating call after 5 s (failurePolicy Fail: the pod is refused). The queue
view (``webhook.queueview``) walks every waiting workload: 0.15–0.3 s at 20,000 pods. Here
(b)'s cluster of ``decide_bench`` is cached as ``live_bench`` caches it, with ``--pods``
pods in all, the HTTPS app (without TLS) and the probe app on one event loop; for each
``--pollers`` count, that many clients (threads of a process apart, as pods are) ask
/queues (every queue) again as soon as answered, while /mutate is sent ``--reviews``
dry-run reviews (a one-GPU pod), each 20 ms after the last is answered, for at most
``--seconds``. Two ways of serving /queues, side by side: ``loop``, the view worked out
and written on the event loop for each request (as /queues was served before), and
``served``, the server's own (``server.QueueViews``: on worker threads, at most once per
``QUEUE_VIEW_MAX_AGE_S``).
Per run: /mutate's p50, p90 and max, the /queues answers and the views worked out. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import http.client
import json
import multiprocessing
import statistics
import sys
import threading
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import instances  # the sibling module (benchmarks/ is not a package)
from decide_bench import SEED
from live_bench import Clock, cache
from webhook_support import review

from webhook.admission import Admission
from webhook.cluster import LiveCluster
from webhook.metrics import Metrics
from webhook.queueview import QueueView, queue_view
from webhook.server import QueueViews, Readiness, build_app, build_probe_app
from webhook.settings import AdmissionSettings


def _on_the_loop(cluster: LiveCluster) -> web.Application:
    """/queues as it was served: the view worked out and written per request, on the loop."""

    async def queues(request: web.Request) -> web.Response:
        view = queue_view(cluster).of(request.query.get("queue"))
        return web.Response(body=orjson.dumps(view), content_type="application/json")

    app = web.Application()
    app.router.add_get("/queues", queues)
    return app


class _Counted(QueueViews):
    """The server's own, counting the views it works out."""

    computed = 0

    def _compute(self) -> QueueView:
        self.computed += 1
        return super()._compute()


def _poll(port: int, clients: int, stop: EventType, answered: Any) -> None:
    """``clients`` threads asking /queues again as soon as answered, in a process apart (as
    pods polling it are): reading 3 MB answers here would be the event loop's work."""

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            connection.request("GET", "/queues")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            with answered.get_lock():
                answered.value += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _review(namespace: str, index: int) -> str:
    body = copy.deepcopy(review("create-pod-gpu-1.mutate-create"))
    request = body["request"]
    name = f"bench-{index}"
    request.update(uid=f"uid-{index}", namespace=namespace, name=name, dryRun=True)
    request["object"]["metadata"].update(namespace=namespace, name=name)
    request["object"]["metadata"]["labels"].pop("apportion.io/queue", None)
    return json.dumps(body)


async def _run(
    admission: Admission,
    probes: web.Application,
    pollers: int,
    reviews: int,
    seconds: float,
    namespace: str,
) -> dict[str, float]:
    metrics = Metrics(admission.cluster)
    app = build_app(admission, metrics, Readiness(synced=True), 8 * 1024 * 1024)
    async with TestClient(TestServer(app)) as https, TestClient(TestServer(probes)) as plain:

        async def mutate(index: int) -> float:
            started = time.perf_counter()
            answer = await https.post(
                "/mutate",
                data=_review(namespace, index),
                headers={"Content-Type": "application/json"},
            )
            await answer.read()
            assert answer.status == 200
            return (time.perf_counter() - started) * 1000.0

        await mutate(-1)
        context = multiprocessing.get_context("fork")
        stop, answered = context.Event(), context.Value("i", 0)
        assert plain.port is not None
        polling = context.Process(target=_poll, args=(plain.port, pollers, stop, answered))
        polling.start()
        await asyncio.sleep(1.0)
        walls: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(walls) < reviews and time.perf_counter() < deadline:
            walls.append(await mutate(len(walls)))
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.get_running_loop().run_in_executor(None, polling.join)
    walls.sort()
    return {
        "p50_ms": statistics.median(walls),
        "p90_ms": walls[int(0.9 * (len(walls) - 1))],
        "max_ms": walls[-1],
        "reviews": float(len(walls)),
        "answers": float(answered.value),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20_000, help="pods cached (default 20,000)")
    parser.add_argument(
        "--pollers", type=int, nargs="+", default=[4, 16], help="clients polling /queues"
    )
    parser.add_argument("--reviews", type=int, default=40, help="/mutate reviews per run")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="at most this long sending them, per run"
    )
    args = parser.parse_args(argv)
    instance = instances.synthetic_instance("b", nodes=1250, pending=5000, seed=SEED)
    cluster = cache(instance, args.pods, Clock())
    queue = sorted(cluster.queues)[0]
    namespace = "bench"
    cluster.put_namespace(
        namespace, {"apportion.io/enabled": "true", "apportion.io/default-queue": queue}
    )
    admission = Admission(cluster, AdmissionSettings())
    print(
        f"queues_bench: {len(cluster.managed_pods()):,} pods cached; "
        "/mutate while /queues is polled"
    )
    results: dict[str, dict[str, float]] = {}
    for pollers in args.pollers:
        for way in ("loop", "served"):
            views = _Counted(admission)
            probes = (
                _on_the_loop(cluster)
                if way == "loop"
                else build_probe_app(Metrics(cluster), Readiness(synced=True), views)
            )
            figures = asyncio.run(
                _run(admission, probes, pollers, args.reviews, args.seconds, namespace)
            )
            figures["views"] = float(views.computed if way == "served" else figures["answers"])
            results[f"{way}_{pollers}"] = figures
            print(
                f"   {pollers:>3} pollers, /queues {way:<6}  "
                f"/mutate p50 {figures['p50_ms']:8.1f} ms"
                f"   p90 {figures['p90_ms']:8.1f} ms   max {figures['max_ms']:8.1f} ms "
                f"({figures['reviews']:.0f} reviews)   "
                f"{figures['answers']:.0f} /queues answers, {figures['views']:.0f} views"
            )
    print(json.dumps({k: {f: round(v, 1) for f, v in r.items()} for k, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
