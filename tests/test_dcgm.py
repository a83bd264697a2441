"""``webhook/dcgm.py`` against a REAL Prometheus scraping a dcgm-exporter stand-in.

One Prometheus (1 s scrapes) and one exporter serve the whole module; each test builds its
own reader, so health memory does not leak between tests. Windows, quiet periods and
staleness limits are a few seconds so the module runs in well under a minute. Skipped when
the ``prometheus`` binary is missing, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import mig, node, queue, snapshot, workload
from fake_dcgm import DcgmExporter, FakeGpu, FakeMig, exposition
from ports import refused_port
from prometheus_process import PrometheusProcess, require_prometheus

from scheduler.model import Snapshot
from scheduler.telemetry import (
    INFORMATIONAL,
    SeriesLabels,
    TelemetryReport,
    TelemetrySettings,
    recording_rules,
)
from webhook.dcgm import DcgmReader, PrometheusSettings, telemetry_from_env

H100 = "H100-80GB"
SETTINGS = TelemetrySettings(
    quiet_period_s=3, idle_window_s=3, staleness_s=3, idle_threshold_milli=50
)
OWNERS = {("ml", "train-0"): "train", ("ml", "nb-1"): "nb-1", ("ml", "infer"): "infer"}
"""Pod → workload, as the controller knows it (the pods live in namespace ml)."""


def gpus() -> list[FakeGpu]:
    busy = {"util": 0.6, "fb_used": 20_000, "fb_free": 61_000}
    return [
        FakeGpu("gpu-a", 0, pod="train-0", namespace="ml", container="main", **busy),
        FakeGpu("gpu-a", 1, pod="train-0", namespace="ml", container="main", **busy),
        FakeGpu("gpu-a", 2),
        FakeGpu("gpu-a", 3),
        FakeGpu(
            "gpu-a",
            4,
            mig=[
                FakeMig("3g.40gb", 1),
                FakeMig("1g.10gb", 13, util=0.5, fb_used=3_000, pod="nb-1", namespace="ml"),
                FakeMig("1g.10gb", 14),
            ],
        ),
        FakeGpu("gpu-b", 0, pod="infer", namespace="ml", **busy),
        FakeGpu("gpu-b", 1),
        FakeGpu("gpu-a", 7),  # not in the snapshot
        FakeGpu("gpu-z", 0),  # a node the snapshot does not have
    ]


def cluster(now: int | None = None, started_ago: int = 100) -> Snapshot:
    now = int(time.time()) if now is None else now
    started = now - started_ago
    return snapshot(
        nodes=[
            node("gpu-a", H100, 5, mig_layouts={4: mig("3g.40gb@0", "1g.10gb@4", "1g.10gb@5")}),
            node("gpu-b", H100, 2),
        ],
        queues=[
            queue("team-a", cohort="org").quota(H100, 4).quota("mig-1g.10gb", 2),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("train").gpus(2).queue("team-a").running_on("gpu-a", 0, 1).started(started),
            workload("nb-1").mig("1g.10gb").queue("team-a").running_on("gpu-a", 4, mig_start=5)
            .started(started),
            workload("infer").gpus(1).queue("team-b").running_on("gpu-b", 0).started(started),
        ],
        now=now,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exporter() -> Iterator[DcgmExporter]:
    binary = require_prometheus()  # skip (or fail in CI) before starting anything
    del binary
    served = DcgmExporter(gpus())
    yield served
    served.close()


@pytest.fixture(scope="module")
def prometheus(
    exporter: DcgmExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProcess]:
    # With the recording rules the reader asks for first (evaluated every second); tests
    # that need the raw PromQL use a reader with other settings or with the rules off.
    server = PrometheusProcess(
        require_prometheus(),
        [exporter.target],
        tmp_path_factory.mktemp("prometheus"),
        recording_rules=recording_rules(SETTINGS),
    )
    exporter.upstream = server.url
    yield server
    server.stop()


@pytest.fixture
def reader(prometheus: PrometheusProcess) -> Iterator[DcgmReader]:
    r = DcgmReader(PrometheusSettings(url=prometheus.url, timeout_s=5), SETTINGS)
    yield r
    r.close()


@pytest.fixture(autouse=True)
def fresh_values(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts from the initial values; an edit never outlives its test."""
    yield
    if "exporter" in request.fixturenames:
        served: DcgmExporter = request.getfixturevalue("exporter")
        served.thaw()
        served.change(lambda g: g.__setitem__(slice(None), gpus()))


def until(
    reader: DcgmReader,
    done: Callable[[TelemetryReport], bool],
    timeout_s: float = 15.0,
    snap: Callable[[], Snapshot] = cluster,
) -> TelemetryReport:
    """Refresh until ``done(report)``; fail with the last report's note after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = reader.refresh(snap(), OWNERS)
        if done(report):
            return report
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met in {timeout_s:g} s; last note: {report.note}")
        time.sleep(0.3)


def test_fleet_is_mapped_whole_gpus_mig_instances_and_pods(reader: DcgmReader) -> None:
    # While the recording rules start (the module's Prometheus has just begun evaluating
    # them), one refresh can mix answers from different moments, and a MIG row missing
    # from the identity answer is counted unknown for that refresh: wait past it. The
    # informational gauges (framebuffer now, temperature, power) are asked every 4th
    # refresh and carried in between, so an answer from before the first full scrape can
    # lack a row for up to three refreshes: wait for the whole GPU's too (seen in CI).
    def settled(r: TelemetryReport) -> bool:
        whole_gpu = [d.sample for d in r.devices if (d.node, d.gpu) == ("gpu-a", 0)]
        return (
            r.gpus_fresh == 7
            and r.note.status == "fresh"
            and len(r.unknown) == 2
            and bool(whole_gpu)
            and whole_gpu[0].fb_used_mib is not None
        )

    report = until(reader, settled)
    assert report.gpus_total == 7 and report.note.age_s is not None and report.note.age_s <= 3
    # gpu-a GPU 7 and node gpu-z are not in the snapshot: ignored and counted.
    assert sorted(u.split(":")[0] for u in report.unknown) == ["gpu-a GPU 7", "gpu-z GPU 0"]
    placed = {
        (r.node, r.gpu, r.sample.key.gi_profile, r.mig_start, r.workload) for r in report.devices
    }
    assert ("gpu-a", 0, "", None, "train") in placed  # pod train-0 → train via OWNERS
    assert ("gpu-a", 4, "3g.40gb", 0, None) in placed  # the only 3g slice, free
    assert ("gpu-a", 4, "1g.10gb", 5, "nb-1") in placed  # two 1g slices: the pod's placement
    assert ("gpu-a", 4, "1g.10gb", None, None) in placed  # the other, free: start unknown
    assert ("gpu-b", 0, "", None, "infer") in placed
    [whole] = [r.sample for r in report.devices if (r.node, r.gpu) == ("gpu-a", 0)]
    assert (whole.util_milli, whole.fb_used_mib, whole.temperature_c, whole.power_mw) == (
        600,
        20_000,
        34,
        71_500,
    )
    usage = {(c.queue, c.flavor): c for c in report.rightsizing}
    assert usage[("team-a", "mig-1g.10gb")].used_peak_mib == 3_000
    # 20,000 MiB + 10 % needs a 3g.40gb (a 2g holds 19.6 GiB), but 60 % of an H100 busy
    # (1.9 A100s) is more than a 3g's 3/7 (1.36): no slice is named.
    train = usage[("team-a", H100)]
    assert train.fits is None
    assert train.message.endswith("3g.40gb on H100-80GB would hold its memory but not its compute")


def test_recorded_series_answer_as_the_raw_promql_does(prometheus: PrometheusProcess) -> None:
    """With the rules deployed every query but DBE (the stand-in does not export it) is
    answered by its recorded series, and the samples are those the raw PromQL gives."""
    ruled = DcgmReader(PrometheusSettings(url=prometheus.url, timeout_s=5), SETTINGS)
    raw = DcgmReader(
        PrometheusSettings(url=prometheus.url, timeout_s=5, recording_rules=False), SETTINGS
    )
    everything = {q.name for q in ruled.queries} - {"dbe"}
    deadline = time.monotonic() + 15
    while ruled.fetch().recorded != everything:
        assert time.monotonic() < deadline, f"recorded: {sorted(ruled.fetch().recorded)}"
        time.sleep(0.3)
    assert raw.fetch().recorded == set()

    def rows(report: TelemetryReport) -> set[object]:
        # The recorded sample time is the one the rule saw: up to its interval older.
        return {dataclasses.replace(r.sample, sampled_at=None) for r in report.devices}

    with_rules = until(ruled, lambda r: r.note.status == "fresh")
    without = until(raw, lambda r: r.note.status == "fresh")
    ruled.close()
    raw.close()
    assert len(with_rules.devices) == 10 and rows(with_rules) == rows(without)


def test_rules_for_another_window_fall_back_to_the_raw_promql(
    prometheus: PrometheusProcess,
) -> None:
    """The module's rules average over 3 s; a reader with a 4 s window finds no recorded
    series for its windowed queries and runs their PromQL, the rest stay recorded."""
    other = dataclasses.replace(SETTINGS, idle_window_s=4)
    reader = DcgmReader(PrometheusSettings(url=prometheus.url, timeout_s=5), other)
    windowed = {"util_gr", "util_gpu", "fb_used_peak"}
    report = until(reader, lambda r: r.note.status == "fresh")
    fetched = reader.fetch()
    reader.close()
    assert fetched.recorded.isdisjoint(windowed) and fetched.recorded
    assert windowed <= fetched.results.keys()
    [whole] = [r.sample for r in report.devices if (r.node, r.gpu) == ("gpu-a", 0)]
    assert (whole.util_milli, whole.fb_used_peak_mib) == (600, 20_000)


def test_a_reader_with_a_series_selector_never_reads_the_default_rules(
    prometheus: PrometheusProcess,
) -> None:
    """The module's rules are the defaults' (no selector). Named by metric, operation and
    window alone, they answered a reader whose selector they ignore; rules for other
    settings are named apart, so this reader runs its own PromQL for every query."""
    usual = DcgmReader(PrometheusSettings(url=prometheus.url, timeout_s=5), SETTINGS)
    deadline = time.monotonic() + 15
    while "xid" not in usual.fetch().recorded:  # the default rules have been evaluated
        assert time.monotonic() < deadline, "no recorded series"
        time.sleep(0.3)
    usual.close()
    other = dataclasses.replace(SETTINGS, series_selector='job="dcgm"')
    reader = DcgmReader(PrometheusSettings(url=prometheus.url, timeout_s=5), other)
    report = until(reader, lambda r: r.note.status == "fresh")
    fetched = reader.fetch()
    reader.close()
    assert (fetched.recorded, report.gpus_fresh) == (set(), 7)


def test_informational_gauges_are_read_every_nth_refresh(prometheus: PrometheusProcess) -> None:
    """Temperature, power and framebuffer now feed no rule: asked at every 3rd refresh
    here, their last answers fill the rows in between; everything else is asked each time."""
    every = DcgmReader(
        PrometheusSettings(url=prometheus.url, timeout_s=5, informational_every=3), SETTINGS
    )
    until(every, lambda r: r.note.status == "fresh")  # wherever the count now stands,
    while set(every.fetch().results) < {q.name for q in every.queries}:  # find a full one
        pass
    light = [every.fetch() for _ in range(2)]
    due = every.fetch()
    assert all(set(f.results).isdisjoint(INFORMATIONAL) for f in light)
    assert all(f.carried.keys() == INFORMATIONAL for f in light)
    assert due.results.keys() >= INFORMATIONAL and due.carried == {}
    report = every.refresh(cluster(), OWNERS)  # a light one again: carried values
    every.close()
    [whole] = [r.sample for r in report.devices if (r.node, r.gpu) == ("gpu-a", 0)]
    assert (whole.temperature_c, whole.power_mw, whole.fb_free_mib) == (34, 71_500, 61_000)
    assert report.failed_queries == {} and report.note.status == "fresh"


def test_fatal_xid_excludes_the_gpu_then_it_recovers(
    reader: DcgmReader, exporter: DcgmExporter
) -> None:
    until(reader, lambda r: r.note.status == "fresh")

    def xid(code: int) -> Callable[[list[FakeGpu]], None]:
        return lambda fleet: setattr(fleet[2], "xid", code)

    exporter.change(xid(79))
    out = until(reader, lambda r: bool(r.unhealthy))
    [verdict] = out.unhealthy
    assert (verdict.node, verdict.gpu) == ("gpu-a", 2)
    assert verdict.reason.startswith("XID 79 at t=")
    applied = out.apply(cluster())
    assert applied.nodes[0].gpus[2].healthy is False
    assert applied.nodes[0].gpus[2].health_reason == verdict.reason
    # The gauge keeps showing 79 (the last XID): after the 3 s quiet period it is back.
    back = until(reader, lambda r: not r.unhealthy)
    assert time.time() >= verdict.until
    assert back.apply(cluster()).nodes[0].gpus[2].healthy
    # A new event (0, then 79 again) takes it out again.
    exporter.change(xid(0))
    until(reader, lambda r: any(d.gpu == 2 and d.sample.xid == 0 for d in r.devices))
    exporter.change(xid(79))
    again = until(reader, lambda r: bool(r.unhealthy))
    assert again.unhealthy[0].since > verdict.since


def test_without_xid_series_rows_are_still_named_timed_and_judged(
    reader: DcgmReader, exporter: DcgmExporter
) -> None:
    """dcgm-exporter 4.5.3–4.8.2 emits no DCGM_FI_DEV_XID_ERRORS until an XID happens
    (NVIDIA/dcgm-exporter #646, #700). Named and timed by that series alone, no row had a
    sample time or a pod: a failed row remap stayed in capacity, idleness was off and the
    note said 'no GPU metrics'."""
    until(reader, lambda r: r.note.status == "fresh")

    def no_xid_and_a_failed_remap(fleet: list[FakeGpu]) -> None:
        for gpu in fleet:
            gpu.xid = None
            for instance in gpu.mig:
                instance.xid = None
        fleet[2].row_remap_failure = 1

    exporter.change(no_xid_and_a_failed_remap)
    report = until(
        reader, lambda r: bool(r.unhealthy) and all(d.sample.xid is None for d in r.devices)
    )
    assert [(v.node, v.gpu) for v in report.unhealthy] == [("gpu-a", 2)]
    assert report.unhealthy[0].reason.startswith("row remapping failed at t=")
    assert (report.note.status, report.gpus_fresh) == ("fresh", 7)
    placed = {(r.node, r.gpu, r.sample.key.gi_profile, r.workload) for r in report.devices}
    assert {("gpu-a", 0, "", "train"), ("gpu-a", 4, "1g.10gb", "nb-1"),
            ("gpu-b", 0, "", "infer")} <= placed  # fmt: skip


def test_idle_workloads_are_found_over_the_window(
    reader: DcgmReader, exporter: DcgmExporter
) -> None:
    until(reader, lambda r: r.note.status == "fresh")
    assert reader.refresh(cluster(), OWNERS).idle.workloads == ()

    def quiet(fleet: list[FakeGpu]) -> None:
        fleet[0].util = fleet[1].util = 0.01  # train: 1 % busy
        fleet[4].mig[1].util = 0.0  # nb-1

    exporter.change(quiet)
    report = until(reader, lambda r: r.idle.names() == {"train", "nb-1"})
    assert report.idle.per_queue == {"team-a": 3}
    [train] = [w for w in report.idle.workloads if w.workload == "train"]
    assert train.devices == ("gpu-a/0", "gpu-a/1") and train.util_milli == 10
    # Started 1 s ago: not idle over a 3 s window, whatever the metrics say.
    recent = reader.refresh(cluster(started_ago=1), OWNERS)
    assert recent.idle.workloads == ()
    marked = report.apply(cluster())
    assert {w.name for w in marked.workloads if w.idle} == {"train", "nb-1"}


def test_missing_series_make_the_note_partial(reader: DcgmReader, exporter: DcgmExporter) -> None:
    until(reader, lambda r: r.note.status == "fresh")
    exporter.change(lambda fleet: fleet.pop(6))  # gpu-b GPU 1 stops reporting
    report = until(reader, lambda r: r.note.status == "partial")
    assert report.gpus_fresh == 6
    assert "6/7 GPUs" in report.note.message
    assert "1 GPUs decided on allocation data alone" in report.note.message


def test_a_negative_reading_is_left_out_and_said_where(
    reader: DcgmReader, exporter: DcgmExporter
) -> None:
    # A broken export: a GPU drawing -5 W. Read as it was, a peak of -5 MiB was a workload
    # using nothing; then the whole query failed, every GPU's reading with it. Now that row
    # is left out, and the report says which device and why.
    until(reader, lambda r: r.note.status == "fresh")
    exporter.change(lambda fleet: setattr(fleet[0], "power", -5.0))
    report = until(reader, lambda r: bool(r.malformed))
    assert report.malformed == (
        "power: Hostname='gpu-a' gpu='0' GPU_I_ID='': '-5' is negative (a DCGM reading is "
        "never below 0)",
    )
    assert (report.note.status, report.failed_queries, report.gpus_fresh) == ("fresh", {}, 7)
    power = {(r.node, r.gpu): r.sample.power_mw for r in report.devices if not r.sample.key.is_mig}
    assert power == {("gpu-a", 0): None, ("gpu-a", 1): 71_500, ("gpu-a", 2): 71_500,
                     ("gpu-a", 3): 71_500, ("gpu-a", 4): 71_500, ("gpu-b", 0): 71_500,
                     ("gpu-b", 1): 71_500}  # fmt: skip


def test_frozen_exporter_gives_stale_metrics(reader: DcgmReader, exporter: DcgmExporter) -> None:
    until(reader, lambda r: r.note.status == "fresh")
    exporter.freeze()  # samples keep their old timestamp, as from a hung exporter
    report = until(reader, lambda r: r.note.status == "stale")
    assert report.note.age_s is not None and report.note.age_s > SETTINGS.staleness_s
    assert "decided on allocation data alone" in report.note.message
    assert report.idle.workloads == () and report.unhealthy == ()
    assert report.apply(cluster()).metrics == report.note


def test_prometheus_down_decides_on_allocation_data() -> None:
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        down = DcgmReader(PrometheusSettings(url=url, timeout_s=1), SETTINGS)
        started = time.monotonic()
        report = down.refresh(cluster())
        down.close()
    assert time.monotonic() - started < 3
    assert report.note.status == "missing"
    assert report.note.message == (
        f"no GPU metrics (cannot reach Prometheus at {url}); decided on allocation data alone"
    )
    assert report.apply(cluster()).nodes == cluster().nodes


def test_slow_prometheus_times_out(prometheus: PrometheusProcess, exporter: DcgmExporter) -> None:
    exporter.slow_s = 3.0
    slow = DcgmReader(PrometheusSettings(url=f"{exporter.url}/slow", timeout_s=0.5), SETTINGS)
    started = time.monotonic()
    report = slow.refresh(cluster())
    slow.close()
    # 11 queries, 8 at a time, each cut at 0.5 s: about 1 s, not 11 × 3 s.
    assert time.monotonic() - started < 2.5
    assert report.note.status == "missing"
    assert "did not answer within 0.5 s" in report.note.message


def test_an_overloaded_prometheus_says_why_and_a_retry_gets_through(
    prometheus: PrometheusProcess, exporter: DcgmExporter
) -> None:
    """A 503 was reported as urllib3's 'Max retries exceeded with url: /api/v1/query?query=…
    (Caused by ResponseError('too many 503 error responses'))': Prometheus' own reason was
    lost, retries or not."""
    url = f"{exporter.url}/busy"
    exporter.busy = 1_000
    plain = DcgmReader(PrometheusSettings(url=url, recording_rules=False), SETTINGS)
    report = plain.refresh(cluster())
    plain.close()
    assert report.note.status == "missing"
    assert report.note.message == (
        f"no GPU metrics (Prometheus at {url} answered HTTP 503: too many queries); "
        "decided on allocation data alone"
    )
    exporter.busy = 0
    patient = DcgmReader(
        PrometheusSettings(url=url, recording_rules=False, retries=1),
        SETTINGS,
    )
    until(patient, lambda r: r.note.status == "fresh")
    exporter.busy = 1  # the first query is refused once; its retry gets through
    report = patient.refresh(cluster())
    patient.close()
    assert (report.note.status, report.failed_queries, exporter.busy) == ("fresh", {}, 0)


def test_bearer_token_from_file(
    prometheus: PrometheusProcess, exporter: DcgmExporter, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    url = f"{exporter.url}/auth"
    good = DcgmReader(PrometheusSettings(url=url, bearer_token_file=str(token)), SETTINGS)
    assert until(good, lambda r: r.note.status == "fresh").gpus_fresh == 7
    token.write_text("wrong")  # re-read at every refresh
    refused = good.refresh(cluster())
    good.close()
    assert refused.note.status == "missing"
    assert "answered HTTP 401" in refused.note.message
    missing = DcgmReader(
        PrometheusSettings(url=url, bearer_token_file=str(tmp_path / "nope")), SETTINGS
    )
    report = missing.refresh(cluster())
    missing.close()
    assert f"cannot read bearer token file {tmp_path / 'nope'}" in report.note.message


def test_settings_from_env_and_their_errors() -> None:
    settings = PrometheusSettings.from_env(
        {"APPORTION_PROMETHEUS_URL": "https://prom:9091", "APPORTION_PROMETHEUS_TIMEOUT_S": "2"}
    )
    assert (settings.url, settings.timeout_s, settings.refresh_interval_s) == (
        "https://prom:9091",
        2.0,
        30.0,
    )
    with pytest.raises(ValueError, match="APPORTION_PROMETHEUS_TIMEOUT_S: 'soon' is not a number"):
        PrometheusSettings.from_env({"APPORTION_PROMETHEUS_TIMEOUT_S": "soon"})
    tuned = PrometheusSettings.from_env(
        {
            "APPORTION_PROMETHEUS_RETRIES": "2",
            "APPORTION_PROMETHEUS_PARALLEL_QUERIES": "4",
            "APPORTION_PROMETHEUS_INFORMATIONAL_EVERY": "1",
            "APPORTION_PROMETHEUS_RECORDING_RULES": "false",
        }
    )
    assert (
        tuned.retries,
        tuned.parallel_queries,
        tuned.informational_every,
        tuned.recording_rules,
    ) == (2, 4, 1, False)
    with pytest.raises(ValueError, match=r"PARALLEL_QUERIES: '2\.5' is not a whole number"):
        PrometheusSettings.from_env({"APPORTION_PROMETHEUS_PARALLEL_QUERIES": "2.5"})
    with pytest.raises(ValueError, match="RECORDING_RULES: 'maybe' is not true or false"):
        PrometheusSettings.from_env({"APPORTION_PROMETHEUS_RECORDING_RULES": "maybe"})
    # Named by its variable (was the field's name, informational_every, which no
    # Deployment sets).
    with pytest.raises(ValueError, match=r"^APPORTION_PROMETHEUS_INFORMATIONAL_EVERY: 0 must be"):
        PrometheusSettings.from_env({"APPORTION_PROMETHEUS_INFORMATIONAL_EVERY": "0"})
    # Were taken: every query then failed (NaN, 'timestamp out of range'), and a refresh
    # every infinity never came.
    for key, value, shown in (
        ("TIMEOUT_S", "nan", "nan"),
        ("TIMEOUT_S", "1e308", "1e+308"),
        ("REFRESH_S", "inf", "inf"),
    ):
        with pytest.raises(ValueError) as caught:
            PrometheusSettings.from_env({f"APPORTION_PROMETHEUS_{key}": value})
        assert str(caught.value) == (
            f"APPORTION_PROMETHEUS_{key}: {shown} must be above 0 and at most 86400 (a day)"
        )
    with pytest.raises(ValueError, match="url: 'prom:9090': must start with http"):
        PrometheusSettings(url="prom:9090")
    # The planner's rule (scheduler.telemetry.url_problem): urllib's 'Invalid IPv6 URL'
    # was a traceback at the first refresh.
    with pytest.raises(ValueError, match=r"url: 'http://\[::1:9090': an IPv6 address is"):
        PrometheusSettings(url="http://[::1:9090")


def _label_names(line: str) -> list[str]:
    inside = line[line.index("{") + 1 : line.rindex("}")]
    return [part.split("=", 1)[0] for part in inside.split('",') if part]


def test_stand_in_writes_series_like_dcgm_exporter() -> None:
    """Label order and per-MIG metrics as in the real exporter's lines (facts §3.3)."""
    real = (Path(__file__).parent / "fixtures/dcgm/exposition.txt").read_text().splitlines()
    order = [
        "gpu", "UUID", "pci_bus_id", "device", "modelName", "GPU_I_PROFILE", "GPU_I_ID",
        "Hostname", "DCGM_FI_DRIVER_VERSION", "container", "namespace", "pod",
    ]  # fmt: skip
    served = [line for line in exposition(gpus()).splitlines() if "{" in line]
    for line in real + served:
        names = _label_names(line)
        assert names == sorted(names, key=order.index), line
    mig_metrics = {line.split("{")[0] for line in real + served if "GPU_I_ID=" in line}
    assert mig_metrics <= {
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
    }
    assert any(line.startswith("DCGM_FI_PROF_GR_ENGINE_ACTIVE{") and 'GPU_I_ID="13"' in line
               for line in served)  # fmt: skip


def test_the_webhook_decides_with_gpu_metrics(reader: DcgmReader, exporter: DcgmExporter) -> None:
    """A GPU with a fatal XID leaves the capacity the webhook admits onto, and /metrics
    says so; without metrics the same pod would be admitted."""
    from prometheus_client import generate_latest
    from webhook_support import answer, patch_of, review, vary

    from scheduler.model import Queue, Quota
    from webhook.admission import Admission
    from webhook.cluster import LiveCluster
    from webhook.metrics import Metrics
    from webhook.settings import AdmissionSettings
    from webhook.standalone import seed_cluster

    live = LiveCluster(clock=time.time)
    seed_cluster(live, cluster(), {"ml": {"apportion.io/enabled": "true"}})
    # Quota is not the limit here: capacity is (gpu-a has GPUs 2 and 3 free, gpu-b 1).
    live.replace_queues(
        [
            Queue(name=q, cohort="org", quota={"H100-80GB": Quota(nominal=8)})
            for q in ("team-a", "team-b")
        ]
    )
    webhook = Admission(live, AdmissionSettings(), standalone=True)
    body = vary(
        review("create-pod-gpu-1.mutate-create"),
        namespace="ml",
        resources={"nvidia.com/gpu": "2"},
    )

    def decision(name: str) -> str:
        patch = patch_of(answer(webhook.mutate, vary(body, name=name)))
        added = {op["path"]: op["value"] for op in patch}
        annotations: dict[str, str] = added["/metadata/annotations"]
        return annotations["apportion.io/decision"] + " " + annotations["apportion.io/reason"]

    assert decision("probe").startswith("admitted")  # GPUs 2 and 3 of gpu-a
    assert live.forget("ml/probe")  # undo the probe's admission
    exporter.change(lambda fleet: setattr(fleet[2], "xid", 79))
    report = until(
        reader, lambda r: bool(r.unhealthy), snap=lambda: live.snapshot(with_telemetry=False)
    )
    live.set_telemetry(report)
    assert decision("after-xid").startswith("pending InsufficientCapacity")
    text = generate_latest(Metrics(live).registry).decode()
    assert 'apportion_gpu_metrics_status{status="fresh"} 1.0' in text
    assert 'apportion_unhealthy_gpus{node="gpu-a",reason="XID 79 at t=' in text


def test_gpu_metrics_rules_from_env_and_their_errors() -> None:
    """Was: ``apportion serve`` always judged with the defaults, so a site could neither
    choose its fatal XIDs nor name its relabelled node or pod labels, as the README said."""
    tuned = telemetry_from_env(
        {
            "APPORTION_DCGM_FATAL_XIDS": "48, 79,119",
            "APPORTION_DCGM_QUIET_PERIOD_S": "900",
            "APPORTION_DCGM_IDLE_THRESHOLD_PCT": "2.5%",
            "APPORTION_DCGM_IDLE_WINDOW_S": "1800",
            "APPORTION_DCGM_STALENESS_S": "90",
            "APPORTION_DCGM_SERIES_SELECTOR": "job=\"dcgm-exporter\", cluster=~'gpu-.*'",
            "APPORTION_DCGM_LABELS": "node=node, pod=pod_name",
        }
    )
    assert tuned == TelemetrySettings(
        fatal_xids=frozenset({48, 79, 119}),
        quiet_period_s=900,
        idle_threshold_milli=25,
        idle_window_s=1800,
        staleness_s=90,
        series_selector="job=\"dcgm-exporter\", cluster=~'gpu-.*'",
        labels=SeriesLabels(node="node", pod="pod_name"),
        indices_name_devices=False,
    )
    assert telemetry_from_env({}) == TelemetrySettings(indices_name_devices=False)
    for env, message in [
        ({"APPORTION_DCGM_FATAL_XIDS": "79,x"}, "'79,x': 'x' is not an XID code (e.g. 48,79,94)"),
        ({"APPORTION_DCGM_FATAL_XIDS": ", ,"}, "', ,': names no XID code"),
        ({"APPORTION_DCGM_QUIET_PERIOD_S": "10m"}, "'10m' is not a whole number of seconds"),
        ({"APPORTION_DCGM_IDLE_THRESHOLD_PCT": "0"}, "'0' is not a percentage of the time"),
        ({"APPORTION_DCGM_IDLE_THRESHOLD_PCT": "nan"}, "'nan' is not a percentage of the time"),
        ({"APPORTION_DCGM_SERIES_SELECTOR": 'job="a"} or up{'}, "is not a list of PromQL label"),
        ({"APPORTION_DCGM_LABELS": "pod=pod-name"}, "'pod=pod-name': 'pod-name' is not a Prom"),
        ({"APPORTION_DCGM_LABELS": ","}, "',' names no label (e.g. node=node)"),
    ]:
        with pytest.raises(ValueError) as error:
            telemetry_from_env(env)
        assert str(error.value).startswith(next(iter(env))) and message in str(error.value)
