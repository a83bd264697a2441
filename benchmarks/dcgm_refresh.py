"""Time one DCGM metrics refresh for a 10,000-GPU fleet, against a real Prometheus.

A stand-in dcgm-exporter (``tests/fake_dcgm.py``) serves 1,250 nodes × 8 GPUs — 10 % of
them in MIG (3 instances each), most allocated to pods — and Debian's ``prometheus``
scrapes it every 5 s and evaluates Apportion's recording rules
(``scheduler.telemetry.recording_rules``, rendered for the benchmark's window) every 15 s,
as ``deploy/monitoring/dcgm-recording-rules.yaml`` does. Once Prometheus holds a few scrapes
and the recorded series, ``DcgmReader.refresh`` is timed as deployed (recorded series, the
informational gauges asked at every 4th refresh), median of ``--runs``: all queries,
reading, joining and the rules, on a matching snapshot. Side by side in the same run,
alternating: a reader asking every query every time (its fetch and its HTTP round trips
alone — bytes received, nothing decoded — below it); the same without the recording rules
(the raw PromQL, what a cluster without the rules gets, and what the reader did before
them); and, to show why queries are batched, per-GPU queries (one per metric per GPU) timed
on a sample of GPUs and scaled to the fleet. CPU seconds per refresh (the reader's process
and Prometheus', which also scrapes and evaluates its rules meanwhile) say where the time
goes whatever else runs on the machine.
The last line is one JSON object: ``{"refresh_10k_gpus_s": …}``.

    .venv/bin/python benchmarks/dcgm_refresh.py [--runs 7] [--hosts 1250]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

# The stand-in exporter and the Prometheus runner are the test suite's; reuse, not copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_dcgm import DcgmExporter, FakeGpu, FakeMig
from prometheus_process import PrometheusProcess

from scheduler.collector import paused
from scheduler.model import (
    Demand,
    Gpu,
    MigSlice,
    Node,
    PodPlacement,
    Queue,
    Quota,
    Snapshot,
    Workload,
)
from scheduler.telemetry import TelemetrySettings, queries, recording_rules
from webhook.dcgm import DcgmReader, PrometheusSettings

GPUS_PER_NODE = 8
MIG_LAYOUT = (("3g.40gb", 0, 1), ("2g.20gb", 4, 5), ("2g.20gb", 6, 6))
"""(profile, placement start, GPU-instance ID) on every MIG GPU."""


def build(hosts: int) -> tuple[list[FakeGpu], Snapshot, dict[tuple[str, str], str]]:
    """The exporter's fleet, the matching snapshot, and pod → workload."""
    fakes: list[FakeGpu] = []
    nodes: list[Node] = []
    workloads: list[Workload] = []
    owners: dict[tuple[str, str], str] = {}
    for h in range(hosts):
        host = f"gpu-{h:05d}"
        gpus = []
        for i in range(GPUS_PER_NODE):
            n = h * GPUS_PER_NODE + i
            is_mig = n % 10 == 0
            fake = FakeGpu(host, i, util=(n % 7) / 7, fb_used=(n % 80) * 1000, fb_free=1000)
            if is_mig:
                for profile, start, gi in MIG_LAYOUT:
                    name = f"nb-{n}-{start}"
                    fake.mig.append(FakeMig(profile, gi, util=0.3, fb_used=4000, pod=name,
                                            namespace="team"))  # fmt: skip
                    owners[("team", name)] = name
                    workloads.append(
                        Workload(
                            name=name,
                            queue="team",
                            namespace="team",
                            demand=Demand(mig_profile=profile),
                            placement=(PodPlacement(node=host, gpus=(i,), mig_start=start),),
                            started=0,
                        )
                    )
            elif n % 3:  # two in three whole GPUs run a pod
                name = f"job-{n}"
                fake.pod, fake.namespace, fake.container = name, "team", "main"
                owners[("team", name)] = name
                workloads.append(
                    Workload(
                        name=name,
                        queue="team",
                        namespace="team",
                        demand=Demand(gpus=1),
                        placement=(PodPlacement(node=host, gpus=(i,)),),
                        started=0,
                    )
                )
            fakes.append(fake)
            layout = tuple(MigSlice(profile=p, start=s) for p, s, _ in MIG_LAYOUT)
            gpus.append(Gpu(index=i, model="H100-80GB", mig=layout if is_mig else None))
        nodes.append(Node(name=host, gpus=tuple(gpus)))
    queue = Queue(name="team", quota={"H100-80GB": Quota(nominal=hosts * GPUS_PER_NODE)})
    snap = Snapshot(nodes=tuple(nodes), queues=(queue,), workloads=tuple(workloads))
    return fakes, snap, owners


def _serve(fakes: list[FakeGpu], conn: Connection) -> None:
    exporter = DcgmExporter(fakes)
    t0 = time.perf_counter()
    size = len(exporter.render())
    conn.send((exporter.target, size, time.perf_counter() - t0))
    conn.recv()
    exporter.close()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used; Linux /proc, else NaN."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _http_only(reader: DcgmReader, promqls: list[str]) -> None:
    """The round trips of one refresh, as the reader makes them, without decoding."""

    def get(promql: str) -> int:
        url = f"{reader.prometheus.url}/api/v1/query"
        return len(reader._session.get(url, params={"query": promql}, timeout=30).content)

    list(reader._pool.map(get, promqls))


def _timed(what: Callable[[], object], prometheus_pid: int) -> tuple[float, float, float]:
    """Wall seconds, this process' CPU seconds, Prometheus' CPU seconds."""
    cpu, prom = time.process_time(), _cpu_s(prometheus_pid)
    t0 = time.perf_counter()
    what()
    wall = time.perf_counter() - t0
    return wall, time.process_time() - cpu, _cpu_s(prometheus_pid) - prom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=1250, help="nodes of 8 GPUs")
    parser.add_argument("--per-gpu-sample", type=int, default=20)
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("the prometheus binary is not on PATH (Debian/Ubuntu: apt-get install prometheus)")

    fakes, snap, owners = build(args.hosts)
    total = len(fakes)
    print(f"fleet: {args.hosts:,} nodes, {total:,} GPUs ({sum(1 for g in fakes if g.mig):,} in "
          f"MIG with 3 instances), {len(snap.workloads):,} running pods")  # fmt: skip
    # The exporter runs in its own process, as dcgm-exporter would: serving 25 MB scrapes
    # must not share the reader's interpreter lock.
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=_serve, args=(fakes, theirs), daemon=True)
    child.start()
    target, size, rendered_s = ours.recv()
    print(f"exposition: {size / 1e6:.1f} MB per scrape, rendered in {rendered_s:.2f} s")
    settings = TelemetrySettings(idle_window_s=60, staleness_s=120)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        prom = PrometheusProcess(
            binary, [target], Path(work), "5s", "5s", recording_rules(settings), RULE_INTERVAL
        )
        pid = prom.process.pid
        try:
            reader = DcgmReader(PrometheusSettings(url=prom.url, timeout_s=30), settings)
            full = DcgmReader(
                PrometheusSettings(url=prom.url, timeout_s=30, informational_every=1), settings
            )
            raw = DcgmReader(
                PrometheusSettings(
                    url=prom.url, timeout_s=30, informational_every=1, recording_rules=False
                ),
                settings,
            )
            print("waiting for two scrapes and the recorded series …", flush=True)
            deadline = time.monotonic() + 180
            while True:
                fetched = full.fetch()
                ready = raw.refresh(snap.model_copy(update={"now": int(time.time())}), owners)
                recorded = len(fetched.recorded) == len(full.queries) - 1  # dbe: not served
                if ready.gpus_fresh == total and recorded:
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"Prometheus did not hold the fleet in 180 s; log: {prom.log}")
                time.sleep(1)
            # One more 5 s scrape, so the window averages hold two samples; meanwhile, what
            # Prometheus spends on its own (scrapes, rules) per second, to net it out below.
            before, t0 = _cpu_s(pid), time.perf_counter()
            time.sleep(RULE_INTERVAL_S)
            background = (_cpu_s(pid) - before) / (time.perf_counter() - t0)
            # The round trips each reader makes: a recorded series, else its probe and the raw.
            recorded_q = [q.record for q in full.queries]
            recorded_q += [q.promql for q in full.queries if q.name not in fetched.recorded]
            raw_q = [q.promql for q in raw.queries]
            runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in _ROWS}
            report = None
            for _ in range(args.runs):
                now_snap = snap.model_copy(update={"now": int(time.time())})
                # A report is a few MB of objects: let the collector clear the last one
                # before timing, as the 30 s refresh interval does in the webhook.
                gc.collect()
                runs["default"].append(_timed(partial(reader.refresh, now_snap, owners), pid))
                report = reader.last
                gc.collect()
                runs["full"].append(_timed(partial(full.refresh, now_snap, owners), pid))
                gc.collect()
                with paused():  # as ``refresh`` runs its fetch
                    runs["fetch full"].append(_timed(full.fetch, pid))
                runs["http full"].append(_timed(partial(_http_only, full, recorded_q), pid))
                gc.collect()
                runs["raw"].append(_timed(partial(raw.refresh, now_snap, owners), pid))
                runs["http raw"].append(_timed(partial(_http_only, raw, raw_q), pid))
            assert report is not None
            # Per-GPU baseline: one query per metric per GPU, on a sample, scaled.
            sample = fakes[:: max(1, total // args.per_gpu_sample)][: args.per_gpu_sample]
            t0 = time.perf_counter()
            for gpu in sample:
                one = replace(settings, series_selector=f'Hostname="{gpu.host}",gpu="{gpu.index}"')
                for q in queries(one):
                    reader._client.custom_query(q.promql)
            per_gpu_s = (time.perf_counter() - t0) / len(sample) * total
            for r in (reader, full, raw):
                r.close()
        finally:
            prom.stop()
            ours.send("stop")
            child.join(10)
    median = statistics.median(w for w, _, _ in runs["default"])
    print(f"report: {report.note.status}, {report.gpus_fresh:,}/{report.gpus_total:,} GPUs fresh, "
          f"{len(report.devices):,} device rows, {len(report.unknown)} unknown, "
          f"{len(report.idle.workloads)} idle workloads")  # fmt: skip
    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after (other work on it slows every row alike)")  # fmt: skip
    print(f"{'what (median of ' + str(args.runs) + ' runs)':<52} {'wall':>7} {'min':>7} {'max':>7}"
          f" {'our CPU':>8} {'Prom CPU':>8}")  # fmt: skip
    # Prometheus CPU net of its background (scrapes and rule evaluations while the row ran).
    for key, label in _ROWS.items():
        xs = runs[key]
        walls = [w for w, _, _ in xs]
        print(f"{label:<52} {statistics.median(walls):>6.3f}s {min(walls):>6.3f}s "
              f"{max(walls):>6.3f}s {statistics.median(c for _, c, _ in xs):>7.3f}s "
              f"{statistics.median(p - background * w for w, _, p in xs):>7.3f}s")  # fmt: skip
    print(f"(Prom CPU: net of its background of {background:.2f} CPU-s per s, scraping 25 MB "
          f"every 5 s and evaluating the rules every {RULE_INTERVAL})")  # fmt: skip
    print(f"{'baseline: per-GPU queries, scaled to fleet':<52} {per_gpu_s:>6.1f}s "
          f"(from {len(sample)} GPUs × {len(reader.queries)} queries)")  # fmt: skip
    verdict = "met" if median <= 1.0 else "NOT MET"
    print(f"target: refresh ≤ 1 s for 10,000 GPUs — {verdict} ({median:.3f} s)")
    print(json.dumps({"refresh_10k_gpus_s": round(median, 3)}))


RULE_INTERVAL_S = 15
RULE_INTERVAL = f"{RULE_INTERVAL_S}s"
"""As in deploy/monitoring/dcgm-recording-rules.yaml."""

_ROWS = {
    "default": "refresh, as deployed (recorded series; gauges 1 in 4)",
    "full": "refresh, every query every time (recorded series)",
    "fetch full": "  of which queries + reading answers (fetch)",
    "http full": "  of which HTTP round trips alone",
    "raw": "baseline: refresh, raw PromQL, every query (no rules)",
    "http raw": "  of which HTTP round trips alone",
}


if __name__ == "__main__":
    main()
