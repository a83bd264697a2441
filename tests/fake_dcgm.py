"""A stand-in dcgm-exporter for the real-Prometheus tests and the benchmark.

It serves the Prometheus text exposition dcgm-exporter writes (facts §3.2–3.3, copied to
``tests/fixtures/dcgm/exposition.txt``): one series per metric and device row, labels in the
exporter's order — ``gpu``, ``UUID``, ``pci_bus_id``, ``device``, ``modelName``, on MIG rows
``GPU_I_PROFILE`` and ``GPU_I_ID``, ``Hostname``, the driver-version label, then ``pod``,
``namespace``, ``container`` (empty when unallocated). MIG rows carry only the metrics the
exporter reports per instance (GR_ENGINE_ACTIVE, FB_USED/FREE, XID); GPU_UTIL, temperature,
power and row-remap state are on the parent row only. Values change when a test says so.

It runs an aiohttp server on a background thread (tests and the reader are synchronous), on
a free loopback port. The same server can sit in front of Prometheus as a slow, token-checking
or overloaded proxy (``/slow/…``, ``/auth/…``, ``/busy/…``), for the timeout, bearer-token and
5xx tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

__all__ = ["DcgmExporter", "FakeGpu", "FakeMig", "exposition", "fleet"]

DRIVER = "535.129.03"


@dataclass(slots=True)
class FakeMig:
    profile: str
    gi_id: int
    util: float = 0.0
    """DCGM_FI_PROF_GR_ENGINE_ACTIVE, a ratio 0–1."""
    fb_used: int = 0
    fb_free: int = 9_000
    xid: int | None = 0
    """None: no DCGM_FI_DEV_XID_ERRORS series (dcgm-exporter 4.5.3–4.8.2 before any XID)."""
    pod: str = ""
    namespace: str = ""
    container: str = ""


@dataclass(slots=True)
class FakeGpu:
    host: str
    index: int
    model_name: str = "NVIDIA H100 80GB HBM3"
    util: float = 0.0
    """DCGM_FI_PROF_GR_ENGINE_ACTIVE (ratio 0–1); GPU_UTIL is served as the same in percent."""
    fb_used: int = 0
    fb_free: int = 81_000
    xid: int | None = 0
    """None: no DCGM_FI_DEV_XID_ERRORS series (dcgm-exporter 4.5.3–4.8.2 before any XID)."""
    row_remap_failure: int = 0
    temp: int = 34
    power: float = 71.5
    pod: str = ""
    namespace: str = ""
    container: str = ""
    mig: list[FakeMig] = field(default_factory=list)

    @property
    def uuid(self) -> str:
        # dcgm-exporter's UUID format (facts §3.3), unique per host and index.
        h = zlib.crc32(self.host.encode())
        return f"GPU-{h:08x}-0000-0000-0000-{self.index:012x}"


def fleet(hosts: int, gpus_per_host: int = 8, prefix: str = "gpu") -> list[FakeGpu]:
    return [
        FakeGpu(f"{prefix}-{h:05d}", i, util=0.5, fb_used=20_000, fb_free=61_000)
        for h in range(hosts)
        for i in range(gpus_per_host)
    ]


def _labels(gpu: FakeGpu, mig: FakeMig | None) -> str:
    parts = [
        f'gpu="{gpu.index}"',
        f'UUID="{gpu.uuid}"',
        f'pci_bus_id="00000000:{gpu.index + 0x18:02X}:00.0"',
        f'device="nvidia{gpu.index}"',
        f'modelName="{gpu.model_name}"',
    ]
    if mig is not None:
        parts += [f'GPU_I_PROFILE="{mig.profile}"', f'GPU_I_ID="{mig.gi_id}"']
    owner = mig if mig is not None else gpu
    parts += [
        f'Hostname="{gpu.host}"',
        f'DCGM_FI_DRIVER_VERSION="{DRIVER}"',
        f'container="{owner.container}"',
        f'namespace="{owner.namespace}"',
        f'pod="{owner.pod}"',
    ]
    return "{" + ",".join(parts) + "}"


# (metric, type, help, value of a whole-GPU row, value of a MIG row or None: parent only)
_METRICS: tuple[
    tuple[str, str, str, Callable[[FakeGpu], object], Callable[[FakeMig], object] | None], ...
] = (
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda g: round(g.util * 100),
     None),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", lambda g: g.fb_free,
     lambda m: m.fb_free),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda g: g.fb_used,
     lambda m: m.fb_used),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", lambda g: g.temp, None),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda g: g.power, None),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.",
     lambda g: g.xid, lambda m: m.xid),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed",
     lambda g: g.row_remap_failure, None),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.",
     lambda g: f"{g.util:.6f}", lambda m: f"{m.util:.6f}"),
)  # fmt: skip


def exposition(gpus: Iterable[FakeGpu], timestamp_ms: int | None = None) -> str:
    """The /metrics text for these GPUs; with ``timestamp_ms`` every sample carries it (how a
    frozen exporter's data looks to Prometheus: the same old sample time, again and again)."""
    gpus = list(gpus)
    suffix = "" if timestamp_ms is None else f" {timestamp_ms}"
    lines = []
    for name, kind, help_text, whole, per_mig in _METRICS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for gpu in gpus:
            rows = [(None, whole(gpu))]
            if per_mig is not None:
                rows += [(m, per_mig(m)) for m in gpu.mig]
            lines += [f"{name}{_labels(gpu, m)} {v}{suffix}" for m, v in rows if v is not None]
    return "\n".join(lines) + "\n"


class DcgmExporter:
    """The exporter (``/metrics``) and proxies, on a free loopback port, in a thread."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.frozen_at_ms: int | None = None
        self.upstream = ""
        """Prometheus base URL the proxies forward to."""
        self.slow_s = 0.0
        self.token = "s3cret"
        self.busy = 0
        """How many more queries ``/busy/…`` answers with 503, as an overloaded Prometheus."""
        self.scrapes = 0
        self._lock = threading.Lock()
        self._text: str | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-dcgm")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake dcgm-exporter did not start")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    def change(self, edit: Callable[[list[FakeGpu]], None]) -> None:
        """Change the served values (under the lock; the next scrape sees them)."""
        with self._lock:
            edit(self.gpus)
            self._text = None

    def freeze(self, ahead_s: float = 1.5) -> None:
        """From now on serve every sample with one fixed explicit timestamp: Prometheus keeps
        the values but their age grows, as with an exporter whose data stopped moving.

        The timestamp lies ``ahead_s`` (more than a scrape interval) in the future: when series
        switch to explicit timestamps Prometheus writes staleness markers at the next scrape's
        time, and samples older than those markers would be dropped as out of order."""
        with self._lock:
            self.frozen_at_ms = int((time.time() + ahead_s) * 1000)
            self._text = None

    def thaw(self) -> None:
        with self._lock:
            self.frozen_at_ms = None
            self._text = None

    def render(self) -> str:
        with self._lock:
            if self._text is None:
                self._text = exposition(self.gpus, self.frozen_at_ms)
            return self._text

    # -- server
    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        text = await asyncio.get_running_loop().run_in_executor(None, self.render)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _proxy(self, request: web.Request, path: str) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.upstream}/{path}", params=request.query) as answer,
        ):
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type="application/json")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_s)
        return await self._proxy(request, request.match_info["tail"])

    async def _auth(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"status": "error", "error": "unauthorized"}, status=401)
        return await self._proxy(request, request.match_info["tail"])

    async def _busy(self, request: web.Request) -> web.Response:
        with self._lock:
            refuse = self.busy > 0
            self.busy -= refuse
        if refuse:
            # Prometheus' error envelope (its API answers 503 with errorType "unavailable").
            error = {"status": "error", "errorType": "unavailable", "error": "too many queries"}
            return web.json_response(error, status=503)
        return await self._proxy(request, request.match_info["tail"])

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/slow/{tail:.*}", self._slow)
        app.router.add_get("/auth/{tail:.*}", self._auth)
        app.router.add_get("/busy/{tail:.*}", self._busy)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
