"""The webhook's latency while a big controller cycle makes its calls in the same process.

    .venv/bin/python benchmarks/webhook_during_cycle.py [--rate 200] [--alone-s 10] [--runs 2]

``apportion serve`` runs the admission webhook (aiohttp, one event loop) and the controller
(its reconcile thread, the informers' threads and, during a cycle, ``api_concurrency``
client threads) in one interpreter, so they share one GIL: does a cycle's burst of calls
make AdmissionReviews wait? Here, as in ``controller_bench.py`` (admit case: 1,000 one-pod
workloads and 50 gangs of 4, every call 10 ms late), ``tests/kubefake`` serves the cluster
from a process of its own, plus a namespace ``load`` with its own queue (8 GPUs) and two
nodes more. This process runs the controller and the webhook over TLS on a thread's event
loop (uvloop when installed, as ``apportion serve``), both over one ``LiveCluster``. A load
generator in a process of its own sends ``/mutate`` reviews to it at a fixed rate (open
loop, ``--rate`` a second: each timed from when it was due, so a stalled server is not
hidden by fewer requests), webhook_load.py's mix in namespace ``load``: 70 % pods without
GPUs, 30 % GPU pods (whole, MIG, memory needs), each its own uid and name.

Per run, on a fresh cluster: the controller synced, its heap frozen as ``apportion serve``
freezes it then (``runtime.freeze_long_lived``) or left as listed (``--heap``, both by
default), ``--alone-s`` seconds with the controller idle, then one ``reconcile_once``, with
each ``--concurrency`` (1 and the default), the variants alternating. The
p50, p99 and max of the reviews due in each window, and the cyclic garbage collector's full
collections during the cycle (each stops every thread, the event loop's too); medians of
``--runs``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from controller_bench import (
    DEFAULT,
    GPUS_PER_NODE,
    NAMESPACE,
    _node,
    _queue,
    synced,
)
from kubefake import RECORDINGS, Fake
from webhook_load import _bodies

from scheduler.model import Queue, Quota
from webhook import keys
from webhook.admission import Admission
from webhook.cluster import LiveCluster
from webhook.kubeobjects import node_from_object
from webhook.metrics import Metrics
from webhook.runtime import freeze_long_lived
from webhook.server import Readiness, build_app
from webhook.settings import AdmissionSettings, ControllerSettings

LOAD = "load"
"""The namespace and queue of the reviews: apart from the cycle's, which they must not
change."""
SIZES = {"workloads": 1000, "gangs": 50, "victims": 0}


def _with_load_namespace(fake: Fake) -> None:
    """The reviews' namespace, opted in, and two nodes more than the cycle needs: the
    GPUs the webhook admits at creation do not take the cycle's room."""
    fake.put_namespace(LOAD, {keys.NAMESPACE_ENABLED: "true"})
    template = fake.get("nodes", "node-0000")
    for i in range(2):
        fake.put_node(_node(template, f"load-{i}"))


def _generate(connection: Connection, url: str, rate: float, bodies: list[str]) -> None:
    """The load generator's process: reviews at ``rate`` a second until told to stop, then
    (due wall-clock time, latency from then, HTTP status) of each sent."""
    import aiohttp

    async def main() -> list[tuple[float, float, int]]:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(connection.fileno(), stop.set)
        done: list[tuple[float, float, int]] = []
        connector = aiohttp.TCPConnector(limit=64, ssl=False)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send(i: int, due: float, due_wall: float) -> None:
                body = bodies[i % len(bodies)].replace("__N__", str(i))
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    status = 0
                done.append((due_wall, time.perf_counter() - due, status))

            started, wall, sent = time.perf_counter(), time.time(), 0
            tasks: set[asyncio.Task[None]] = set()
            while not stop.is_set():
                due = started + sent / rate
                if due > time.perf_counter():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), due - time.perf_counter())
                    continue
                task = asyncio.create_task(send(sent, due, wall + (due - started)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.gather(*tasks)
        return done

    connection.send(asyncio.run(main()))


class _Webhook:
    """The webhook's HTTPS app on an event loop of its own thread, as ``apportion serve``
    runs it beside the controller's threads."""

    def __init__(self, cluster: LiveCluster, metrics: Metrics, certificate: Path) -> None:
        admission = Admission(cluster, AdmissionSettings(), admits_now=lambda: True)
        self.app = build_app(admission, metrics, Readiness(synced=True), 8 * 1024 * 1024)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certificate / "tls.crt", certificate / "tls.key")
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="webhook", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.context, backlog=1024)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class _Pauses:
    """The cyclic garbage collector's full collections (generation 2), when and how long:
    they stop every thread of the process, the webhook's event loop too."""

    def __init__(self) -> None:
        self.full: list[tuple[float, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.time()
        else:
            self.full.append((self._started, (time.time() - self._started) * 1000))

    def close(self) -> None:
        gc.callbacks.remove(self._note)


def _apart(connection: Connection, certificate: Path) -> None:
    """The webhook in a process of its own (``--apart``): its own ``LiveCluster`` holding
    the reviews' namespace, queue and two nodes, as the shared one does; serves until
    told to stop. It shares the machine's cores with the cycle, not its GIL."""
    recorded = json.loads((RECORDINGS / "nodelist.json").read_text())["items"]
    template = next(n for n in recorded if n["metadata"]["name"] == "gpu-node-a")
    cluster = LiveCluster(clock=time.time, intent_ttl_s=ControllerSettings().intent_ttl_s)
    for i in range(2):
        node, _ = node_from_object(_node(template, f"load-{i}"), cluster.catalog)
        assert node is not None
        cluster.put_node(node)
    cluster.put_namespace(LOAD, {keys.NAMESPACE_ENABLED: "true"})
    cluster.replace_queues([_load_queue()])
    freeze_long_lived()
    webhook = _Webhook(cluster, Metrics(cluster), certificate)
    connection.send(webhook.port)
    connection.recv()
    webhook.stop()


def _load_queue() -> Queue:
    return Queue(name=LOAD, namespaces=(LOAD,), quota={"H100-80GB": Quota(nominal=8)})


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50_ms": at(0.50) * 1000,
        "p99_ms": at(0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def _run(
    concurrency: int, frozen: bool, args: argparse.Namespace, certificate: Path
) -> dict[str, Any]:
    run = synced(
        "admit", SIZES, 0.010, concurrency, [_queue("admit", SIZES), _load_queue()],
        _with_load_namespace,
    )  # fmt: skip
    controller, cluster, metrics = run.controller, run.cluster, run.metrics
    context = multiprocessing.get_context("spawn")
    if frozen:
        freeze_long_lived()  # as apportion serve does once synced, before it is ready
    if args.apart:
        apart, theirs_apart = context.Pipe()
        webhook_process = context.Process(target=_apart, args=(theirs_apart, certificate))
        webhook_process.start()
        webhook_port = apart.recv()
    else:
        webhook = _Webhook(cluster, metrics, certificate)
        webhook_port = webhook.port
    pauses = _Pauses()
    bodies = [b.replace('"team-a"', f'"{LOAD}"') for b in _bodies("mutate")]
    stop, theirs_load = context.Pipe()
    generator = context.Process(
        target=_generate,
        args=(theirs_load, f"https://127.0.0.1:{webhook_port}/mutate", args.rate, bodies),
    )
    generator.start()
    time.sleep(2.0)  # connections open, the first requests answered
    alone = (time.time(), time.time() + args.alone_s)
    time.sleep(args.alone_s)
    run.ours.send("start")
    load = os.getloadavg()[0]
    during, cpu = (time.time(), 0.0), time.process_time()
    decision = controller.reconcile_once()
    during, cpu = (during[0], time.time()), time.process_time() - cpu
    stop.send("stop")
    sent = stop.recv()
    generator.join()
    if args.apart:
        apart.send("stop")
        webhook_process.join()
    else:
        webhook.stop()
    pauses.close()
    seen = run.finish()
    assert decision is not None
    failed = [s for _, _, s in sent if s != 200]
    if failed:
        raise SystemExit(f"{len(failed)} reviews failed (status {sorted(set(failed))})")

    def window(bounds: tuple[float, float]) -> dict[str, float]:
        return _percentiles([latency for due, latency, _ in sent if bounds[0] <= due < bounds[1]])

    return {
        "alone": window(alone),
        "during": window(during),
        "cycle_s": during[1] - during[0],
        "cpu_s": cpu,
        "load": load,
        "peak": seen["peak"],
        "full_gc_ms": [ms for at, ms in pauses.full if during[0] <= at < during[1]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="reviews a second")
    parser.add_argument("--alone-s", type=float, default=10.0, help="the idle window")
    parser.add_argument(
        "--concurrency", default=f"1,{DEFAULT}", help=f"api_concurrency values (1,{DEFAULT})"
    )
    parser.add_argument(
        "--heap",
        choices=("frozen", "listed", "both"),
        default="both",
        help="frozen once synced, as apportion serve does (runtime.freeze_long_lived); "
        "listed: left to every full garbage collection, as before; both (default)",
    )
    parser.add_argument(
        "--apart",
        action="store_true",
        help="the webhook in a process of its own, sharing the cores but not the GIL with "
        "the cycle: what the machine, not the interpreter, costs the reviews",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="the interpreter's thread switch interval (sys.setswitchinterval; default: "
        "Python's, 5 ms): how long a thread waiting for the GIL waits before it asks for it",
    )
    parser.add_argument("--runs", type=int, default=2, help="each (default 2: ~6 minutes)")
    args = parser.parse_args()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    heaps = {"frozen": [True], "listed": [False], "both": [False, True]}[args.heap]
    variants = [(int(c), frozen) for frozen in heaps for c in args.concurrency.split(",")]
    print(
        f"webhook_during_cycle: /mutate at {args.rate:g}/s, alone for {args.alone_s:g} s and "
        f"during a cycle admitting {SIZES['workloads']:,} workloads and {SIZES['gangs']} gangs "
        f"(every call 10 ms late), in the same process; {GPUS_PER_NODE}-GPU nodes, namespace "
        f"{NAMESPACE} and {LOAD}"
        + ("; the webhook in a process of its own (--apart)" if args.apart else "")
        + f"; switch interval {sys.getswitchinterval() * 1000:g} ms"
    )
    runs: dict[tuple[int, bool], list[dict[str, Any]]] = {v: [] for v in variants}

    def label(concurrency: int, frozen: bool) -> str:
        return f"api_concurrency {concurrency:>2}, heap {'frozen' if frozen else 'listed'}"

    with tempfile.TemporaryDirectory(prefix="apportion-bench-") as work:
        certificate = Path(work)
        leaf = trustme.CA().issue_cert("localhost", "127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(certificate / "tls.crt"))
        leaf.private_key_pem.write_to_path(str(certificate / "tls.key"))
        for _ in range(args.runs):
            for (concurrency, frozen), done in runs.items():
                figures = _run(concurrency, frozen, args, certificate)
                done.append(figures)
                alone, during = figures["alone"], figures["during"]
                print(
                    f"   {label(concurrency, frozen)}: alone p50 {alone['p50_ms']:5.1f} ms "
                    f"p99 {alone['p99_ms']:6.1f} ms max {alone['max_ms']:6.1f} ms "
                    f"({alone['count']:,.0f}); during the cycle ({figures['cycle_s']:5.1f} s, "
                    f"{figures['peak']} calls in flight at most, this process's CPU "
                    f"{figures['cpu_s']:4.1f} s, load average {figures['load']:.1f}) p50 "
                    f"{during['p50_ms']:5.1f} ms "
                    f"p99 {during['p99_ms']:6.1f} ms max {during['max_ms']:6.1f} ms "
                    f"({during['count']:,.0f}); full garbage collections in the cycle: "
                    + (", ".join(f"{ms:.0f} ms" for ms in figures["full_gc_ms"]) or "none"),
                    flush=True,
                )
    summary: dict[str, float] = {}
    for (concurrency, frozen), done in runs.items():
        medians = {
            f"{phase}_{key}": statistics.median(f[phase][key] for f in done)
            for phase in ("alone", "during")
            for key in ("p50_ms", "p99_ms", "max_ms")
        }
        print(
            f"   median, {label(concurrency, frozen)}: p99 alone {medians['alone_p99_ms']:.1f}"
            f" ms, during the cycle {medians['during_p99_ms']:.1f} ms (p50 "
            f"{medians['alone_p50_ms']:.1f} → {medians['during_p50_ms']:.1f} ms, max "
            f"{medians['alone_max_ms']:.0f} → {medians['during_max_ms']:.0f} ms)"
        )
        prefix = f"c{concurrency}_{'frozen' if frozen else 'listed'}"
        summary |= {f"{prefix}_{k}": round(v, 1) for k, v in medians.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
