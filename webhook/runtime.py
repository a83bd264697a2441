"""Assemble and run one ``apportion serve`` process: cluster source, admission, servers,
controller, certificate reload; shut down cleanly on SIGTERM (the kubelet's stop)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml
from aiohttp import web
from kubernetes import client, config

from scheduler.defaults import default_snapshot
from scheduler.model import Queue
from webhook.admission import Admission
from webhook.cluster import LiveCluster
from webhook.controller import OWN_CONNECTIONS, Controller
from webhook.dcgm import DcgmReader
from webhook.kubeapi import KubeApi
from webhook.memorylimit import memory_limit_bytes
from webhook.metrics import Metrics
from webhook.queuefile import QueueFileError, watch_queue_file
from webhook.server import (
    CertificateReloader,
    QueueViews,
    Readiness,
    build_app,
    build_probe_app,
)
from webhook.settings import ServeSettings
from webhook.standalone import load_cluster_file, seed_cluster

__all__ = ["KubeconfigError", "Server", "freeze_long_lived", "run_server", "start_server"]

log = logging.getLogger("apportion.serve")


@dataclass(slots=True)
class Server:
    """A running server's parts, for tests and for shutdown."""

    cluster: LiveCluster
    admission: Admission
    metrics: Metrics
    readiness: Readiness
    certificates: CertificateReloader
    runners: list[web.AppRunner]
    tasks: list[asyncio.Task[None]]
    controller: Controller | None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
        for runner in self.runners:
            await runner.cleanup()


class KubeconfigError(Exception):
    """The kubeconfig given cannot be read or names no usable cluster."""


def _kube_api(settings: ServeSettings) -> KubeApi | None:
    """The API client from a kubeconfig or the pod's service account; None = standalone."""
    configuration = client.Configuration()
    if settings.kubeconfig is not None:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(settings.kubeconfig), client_configuration=configuration
            )
        except UnicodeDecodeError as error:  # a ValueError, in Python's words
            where = f"byte 0x{error.object[error.start]:02x} at offset {error.start}"
            raise KubeconfigError(f"not a usable kubeconfig: not UTF-8 text ({where})") from None
        except (config.ConfigException, yaml.YAMLError, OSError, ValueError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise KubeconfigError(f"not a usable kubeconfig: {reason}") from None
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            return None
    # No retries inside a call: urllib3 would try a GET up to four times and reconnect any
    # call three times, each with the whole timeout, so an answer could come long after the
    # leader's deadline. A failed call is retried by the next cycle or the informer's backoff.
    configuration.retries = False
    # A connection kept open for each thread that may call at once: beyond the client's
    # default pool (5 per CPU), urllib3 opens and closes a connection per call, and warns
    # "Connection pool is full" each time.
    configuration.connection_pool_maxsize = settings.controller.api_concurrency + OWN_CONNECTIONS
    return KubeApi(client.ApiClient(configuration), settings.controller.api_timeout_s)


async def _listen(site: web.TCPSite, host: str) -> None:
    """Start listening; a listen address that does not resolve is named (alone, "Name or
    service not known" left the user to guess which name)."""
    try:
        await site.start()
    except socket.gaierror as error:
        raise OSError(f"listen address {host!r}: {error.strerror}") from None


async def start_server(settings: ServeSettings, queues: Sequence[Queue] | None = None) -> Server:
    cluster = LiveCluster(
        clock=time.time,
        intent_ttl_s=settings.controller.intent_ttl_s,
        all_namespaces=settings.all_namespaces,
    )
    metrics = Metrics(cluster, memory_limit_bytes())
    readiness = Readiness()
    api = None if settings.cluster_file is not None else _kube_api(settings)
    controller: Controller | None = None
    if api is None:
        if settings.queues_file is not None and not settings.queues_file.exists():
            # No Queue objects here: a path with a typo would leave no queue at all.
            raise QueueFileError(
                f"{settings.queues_file}: no such file (standalone, the queues come only from it)"
            )
        if settings.cluster_file is not None:
            snapshot, namespaces = load_cluster_file(settings.cluster_file)
        else:
            snapshot, namespaces = default_snapshot(), {}
            cluster.all_namespaces = True
        seed_cluster(cluster, snapshot, namespaces)
        if queues is not None:
            cluster.replace_queues(queues)
        readiness.synced = True
        log.info("standalone: %d nodes, %d queues", len(snapshot.nodes), len(cluster.queues))
    else:
        from webhook.leader import LeaderElector

        # Which cluster, said first: KUBECONFIG left set in a shell turns a try-out meant
        # to be standalone into a controller on that cluster.
        source = f"kubeconfig {settings.kubeconfig}" if settings.kubeconfig else "in-cluster"
        log.info("cluster %s (%s): the controller runs", api.api_client.configuration.host, source)
        elector = LeaderElector(
            api,
            settings.controller.lease_namespace,
            settings.controller.lease_name,
            settings.controller.identity,
            settings.controller.lease_duration_s,
            metrics,
        )
        controller = Controller(
            api,
            cluster,
            settings.controller,
            metrics,
            admission=settings.admission,
            queues=(lambda: list(queues)) if queues is not None else None,
            elector=elector,
        )
        controller.start()
    admission = Admission(
        cluster,
        settings.admission,
        standalone=api is None,
        admits_now=_single_writer(controller),
    )
    assert settings.server.cert_file is not None and settings.server.key_file is not None
    certificates = CertificateReloader(settings.server.cert_file, settings.server.key_file)
    runners = []
    views = QueueViews(admission)
    app = build_app(
        admission,
        metrics,
        readiness,
        settings.admission.max_body_bytes,
        views=None if settings.server.probe_port else views,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host = settings.server.host
    await _listen(
        web.TCPSite(
            runner, host, settings.server.port, ssl_context=certificates.context, backlog=1024
        ),
        host,
    )
    runners.append(runner)
    if settings.server.probe_port:
        probe = web.AppRunner(build_probe_app(metrics, readiness, views), access_log=None)
        await probe.setup()
        await _listen(web.TCPSite(probe, host, settings.server.probe_port), host)
        runners.append(probe)
    tasks = [asyncio.create_task(certificates.watch(settings.server.cert_check_s))]
    if settings.queues_file is not None:
        tasks.append(
            asyncio.create_task(
                watch_queue_file(settings.queues_file, cluster, settings.server.cert_check_s)
            )
        )
    if settings.prometheus is not None:
        reader = DcgmReader(settings.prometheus, settings.telemetry)
        tasks.append(asyncio.create_task(_refresh_gpu_metrics(reader, cluster)))
    if controller is not None:
        tasks.append(asyncio.create_task(_track_sync(controller, readiness, metrics)))
    else:
        metrics.synced.set(1)
    log.info("serving https on %s:%d", settings.server.host, settings.server.port)
    return Server(cluster, admission, metrics, readiness, certificates, runners, tasks, controller)


def _single_writer(controller: Controller | None) -> Callable[[], bool]:
    """Admit at creation only where admissions have one writer: standalone, or the
    replica whose controller holds the Lease."""
    elector = controller.elector if controller is not None else None
    if elector is None:
        return lambda: True
    return lambda: elector.leading


async def _refresh_gpu_metrics(reader: DcgmReader, cluster: LiveCluster) -> None:
    """GPU metrics off the request path: decisions use the last report, never wait for one."""
    while True:
        report = await reader.refresh_async(
            cluster.snapshot(with_telemetry=False), cluster.pod_owner()
        )
        cluster.set_telemetry(report)
        if report.note.status != "fresh":
            log.warning("GPU metrics %s: %s", report.note.status, report.note.message)
        await asyncio.sleep(reader.prometheus.refresh_interval_s)


async def _track_sync(controller: Controller, readiness: Readiness, metrics: Metrics) -> None:
    while not controller.synced():
        readiness.reason = "waiting for the first list of nodes, pods, namespaces and jobs"
        await asyncio.sleep(0.2)
    freeze_long_lived()
    readiness.synced = True
    metrics.synced.set(1)
    log.info("cluster state synced; ready")


def freeze_long_lived() -> None:
    """Leave what lives as long as the process — modules, classes, the cluster as first
    listed — out of the cyclic garbage collector's full collections from now on. A full
    collection stops every thread, the webhook's event loop too, and walked all of it: at
    1,250 pods 120–460 ms in the middle of a controller cycle, freeing nothing, and the
    reviews due meanwhile waited (benchmarks/webhook_during_cycle.py). Collected once
    first, so no garbage is kept for ever; called before the replica reports ready, so no
    review waits for that collection."""
    gc.collect()
    gc.freeze()


async def run_server(
    settings: ServeSettings,
    queues: Sequence[Queue] | None = None,
    stop_signals: Sequence[signal.Signals] = (),
) -> None:
    server = await start_server(settings, queues)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await server.close()
