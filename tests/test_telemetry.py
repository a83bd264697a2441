"""``scheduler/telemetry``: PromQL answers → samples → joined rows → health, idleness,
right-sizing and the metrics note, on hand-built Prometheus JSON whose labels follow
dcgm-exporter's (facts §3.2: gpu, UUID, device, modelName, GPU_I_PROFILE, GPU_I_ID,
Hostname, namespace/pod/container). Expected values are worked out by hand.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import mig, node, queue, snapshot, workload
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.allocator import decide
from scheduler.model import Snapshot
from scheduler.reasons import Outcome
from scheduler.telemetry import (
    DeviceKey,
    DeviceSample,
    HealthState,
    MetricsFormatError,
    SeriesLabels,
    TelemetrySettings,
    assess,
    join_samples,
    merge_answers,
    parse_vector,
    queries,
    read_answer,
    recording_rules,
    samples_from_results,
)

H100 = "H100-80GB"
UUID0 = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
NOW = 100_000
SETTINGS = TelemetrySettings(quiet_period_s=300, idle_window_s=600, staleness_s=60)


def series(gpu: int, host: str = "gpu-a", **extra: str) -> dict[str, str]:
    labels = {
        "gpu": str(gpu),
        "UUID": f"GPU-{host}-{gpu}",
        "device": f"nvidia{gpu}",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": host,
    }
    labels.update(extra)
    return labels


def answer(*rows: tuple[dict[str, str], float | str]) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [NOW, str(v)]} for m, v in rows],
        },
    }


def sample(
    gpu: int,
    host: str = "gpu-a",
    *,
    at: int = NOW,
    profile: str = "",
    gi: int | None = None,
    pod: str = "",
    **values: object,
) -> DeviceSample:
    key = DeviceKey(host, gpu, f"GPU-{host}-{gpu}", gi, profile, "default" if pod else "", pod)
    return DeviceSample(key=key, sampled_at=at, **values)  # type: ignore[arg-type]


def cluster(**running: int) -> Snapshot:
    """gpu-a: 4 whole H100s and GPU 4 in MIG (3g.40gb@0, 1g.10gb@4, 1g.10gb@5); gpu-b: 2."""
    layout = {4: mig("3g.40gb@0", "1g.10gb@4", "1g.10gb@5")}
    return snapshot(
        nodes=[node("gpu-a", H100, 5, mig_layouts=layout), node("gpu-b", H100, 2)],
        queues=[
            queue("team-a", cohort="org").quota(H100, 4).quota("mig-1g.10gb", 2),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("train").gpus(2).queue("team-a").running_on("gpu-a", 0, 1).started(0),
            workload("nb-1")
            .mig("1g.10gb")
            .queue("team-a")
            .running_on("gpu-a", 4, mig_start=5)
            .started(0),
            workload("late")
            .gpus(1)
            .queue("team-b")
            .running_on("gpu-b", 0)
            .started(running.get("late_started", 0)),
        ],
        now=NOW,
    )


# --------------------------------------------------------------------- queries
def test_one_query_per_metric_grouped_by_device_labels() -> None:
    qs = queries(SETTINGS)
    assert [q.name for q in qs] == [
        "util_gr", "util_gpu", "fb_used", "fb_used_peak", "fb_free", "xid", "dbe",
        "row_remap_failure", "temperature", "power", "sampled_at",
    ]  # fmt: skip
    # The identity query keeps whose device it is; the others only which device it is.
    full = (
        "max by (Hostname, gpu, UUID, GPU_I_ID, GPU_I_PROFILE, namespace, pod, container, "
        "exported_namespace, exported_pod, exported_container)"
    )
    device = "max by (Hostname, gpu, GPU_I_ID)"
    assert [q.name for q in qs if q.promql.startswith(full)] == ["sampled_at"]
    assert all(q.promql.startswith(device) for q in qs if q.name != "sampled_at")
    assert qs[0].promql == f"{device} (avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[10m]))"
    old = TelemetrySettings(labels=SeriesLabels(pod="pod_name", namespace="pod_namespace"))
    assert "pod_namespace, pod_name, container, exported_pod_namespace, exported_pod_name" in (
        queries(old)[-1].promql
    )
    job = TelemetrySettings(series_selector='job="dcgm"')
    util = queries(job)[0].promql
    assert 'avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE{job="dcgm"}[1h])' in util
    assert queries(job)[-1].promql == (
        f'{full} (timestamp(DCGM_FI_DEV_XID_ERRORS{{job="dcgm"}}) '
        'or timestamp(DCGM_FI_PROF_GR_ENGINE_ACTIVE{job="dcgm"}) '
        'or timestamp(DCGM_FI_DEV_FB_USED{job="dcgm"}))'
    )


def test_rows_are_named_and_timed_without_an_xid_series() -> None:
    """dcgm-exporter 4.5.3–4.8.2 emits no DCGM_FI_DEV_XID_ERRORS until an XID happens. Named
    and timed by that series alone, every GPU had no sample time (a failed row remap stayed
    in capacity, idleness was off) and no pod; the sample-time query falls back to other
    series, names the rows, and a missing XID is no XID."""
    whole = series(0, namespace="default", pod="train-0", container="main")
    instance = series(4, GPU_I_PROFILE="1g.10gb", GPU_I_ID="13", namespace="default", pod="nb-1")
    batch = samples_from_results(
        {
            "sampled_at": answer((whole, NOW - 2), (instance, NOW - 2)),
            "util_gr": answer((series(0), 0.01), (series(4, GPU_I_ID="13"), 0.5)),
            "row_remap_failure": answer((series(0), 1)),
        },
        SETTINGS,
    )
    assert batch.samples == (
        DeviceSample(
            DeviceKey("gpu-a", 0, "GPU-gpu-a-0", None, "", "default", "train-0", "main"),
            util_milli=10,
            util_source="DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            row_remap_failure=True,
            sampled_at=NOW - 2,
        ),
        DeviceSample(
            DeviceKey("gpu-a", 4, "GPU-gpu-a-4", 13, "1g.10gb", "default", "nb-1"),
            util_milli=500,
            util_source="DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            sampled_at=NOW - 2,
        ),
    )


def test_settings_reject_nonsense_with_every_problem() -> None:
    with pytest.raises(ValueError) as err:
        TelemetrySettings(quiet_period_s=0, idle_threshold_milli=2000)
    assert "quiet_period_s: 0 must be at least 1 second" in str(err.value)
    assert "idle_threshold_milli: 2000 must be 1–1000" in str(err.value)


# --------------------------------------------------------------------- parsing
def test_parse_vector_accepts_envelope_and_bare_list() -> None:
    payload = answer((series(0), 4845))
    rows = parse_vector(payload)
    assert parse_vector(payload["data"]["result"]) == rows  # type: ignore[index]
    assert rows[0]["value"] == [NOW, "4845"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"status": "error", "error": "bad_data"}, "fb_used: Prometheus answered 'bad_data'"),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "fb_used: expected an instant vector, got 'matrix'",
        ),
        ([{"metric": {}, "value": 3}], "fb_used: result[0].value: expected [timestamp"),
        ([{"value": [1, "2"]}], "fb_used: result[0] has no 'metric' labels"),
        ("nope", "fb_used: result is str, not a list"),
    ],
)
def test_parse_vector_names_what_is_wrong(payload: object, message: str) -> None:
    with pytest.raises(MetricsFormatError, match=None) as err:
        parse_vector(payload, "fb_used")
    assert str(err.value).startswith(message)


def test_samples_merge_queries_per_device_row() -> None:
    mig_row = series(4, GPU_I_PROFILE="1g.10gb", GPU_I_ID="13", namespace="default", pod="nb-1")
    results = {
        "util_gr": answer((series(0), 0.995630), (mig_row, 0.02)),
        "util_gpu": answer((series(0), 12), (series(1), 40)),
        "fb_used": answer((series(0), 4845)),
        "xid": answer((mig_row, 79), (series(0), 0)),
        "power": answer((series(0), 312.5)),
        "row_remap_failure": answer((series(1), 1)),
        "sampled_at": answer((series(0), NOW - 0.4), (mig_row, "NaN")),
    }
    batch = samples_from_results(results, SETTINGS)
    got = {s.key: s for s in batch.samples}
    whole = got[DeviceKey("gpu-a", 0, "GPU-gpu-a-0")]
    # GR_ENGINE_ACTIVE (ratio) wins over GPU_UTIL (percent); both become per-mille.
    assert (whole.util_milli, whole.util_source) == (996, "DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    assert (whole.fb_used_mib, whole.xid, whole.power_mw, whole.sampled_at) == (
        4845,
        0,
        312_500,
        NOW - 1,
    )
    fallback = got[DeviceKey("gpu-a", 1, "GPU-gpu-a-1")]
    assert (fallback.util_milli, fallback.util_source) == (400, "DCGM_FI_DEV_GPU_UTIL")
    assert fallback.row_remap_failure is True
    instance = got[DeviceKey("gpu-a", 4, "GPU-gpu-a-4", 13, "1g.10gb", "default", "nb-1")]
    assert (instance.util_milli, instance.xid, instance.sampled_at) == (20, 79, None)  # NaN
    assert batch.malformed == ()


def test_the_exporters_pod_labels_win_over_the_targets() -> None:
    """Scraped with honor_labels false (the usual ServiceMonitor), the exporter's pod labels
    clash with the target's: Prometheus renames them exported_pod, … and puts the exporter's
    own pod in pod. Read as they were, every row was the exporter pod's and no workload was
    ever attributed. An unallocated GPU (the exporter's pod label empty, so dropped) keeps
    the target's."""
    target = {
        "namespace": "gpu-operator",
        "pod": "nvidia-dcgm-exporter-7xk2p",
        "container": "nvidia-dcgm-exporter",
    }
    owned = series(
        0, **target, exported_namespace="default", exported_pod="train-0", exported_container="main"
    )
    batch = samples_from_results(
        {"sampled_at": answer((owned, NOW), (series(1, **target), NOW))}, SETTINGS
    )
    assert [s.key for s in batch.samples] == [
        DeviceKey("gpu-a", 0, "GPU-gpu-a-0", None, "", "default", "train-0", "main"),
        DeviceKey("gpu-a", 1, "GPU-gpu-a-1", None, "", *target.values()),
    ]


def test_rows_naming_no_device_are_reported() -> None:
    results = {
        "xid": answer(
            ({"gpu": "0"}, 0),
            ({"Hostname": "a", "gpu": "x"}, 0),
            ({"Hostname": "a", "gpu": "²"}, 0),  # a digit to str.isdigit, not to int()
            ({"Hostname": "a", "gpu": "0", "GPU_I_ID": "²"}, 0),
        )
    }
    batch = samples_from_results(results, SETTINGS)
    assert batch.samples == ()
    assert batch.malformed == (
        "Hostname='' gpu='0' GPU_I_ID='': does not name a device",
        "Hostname='a' gpu='x' GPU_I_ID='': does not name a device",
        "Hostname='a' gpu='²' GPU_I_ID='': does not name a device",
        "Hostname='a' gpu='0' GPU_I_ID='²': does not name a device",
    )
    with pytest.raises(MetricsFormatError, match="bogus: not one of the queries"):
        samples_from_results({"bogus": answer()}, SETTINGS)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"metric": {"gpu": "0"}, "value": [1, "2"]}, {"value": [1, "2"]}],
         "fb_used: result[1] has no 'metric' labels"),
        ([{"metric": {}, "value": "12"}], "fb_used: result[0].value: expected [timestamp"),
        (["row"], "fb_used: result[0] has no 'metric' labels"),
        ([{"metric": {}, "value": [1, "many"]}], "fb_used: value 'many' is not a number"),
        ([{"metric": {}, "value": [1, None]}], "fb_used: value None is not a number"),
    ],
)  # fmt: skip
def test_reading_an_answer_names_the_bad_row(rows: list[object], message: str) -> None:
    """The fast reading path checks little itself; when it trips, the message is as
    precise as the full validation's."""
    with pytest.raises(MetricsFormatError) as err:
        read_answer("fb_used", rows, SETTINGS)
    assert str(err.value).startswith(message)


def test_a_reading_no_device_gives_leaves_out_its_row_only() -> None:
    """One GPU_UTIL spike of 4294967295 (NVIDIA/DCGM #199), averaged over the window, refused
    the whole fleet's answer: every GPU lost its utilization. The live reader leaves out that
    row and says which device it is; an export file is still refused at it."""
    results = {
        "sampled_at": answer((series(0), NOW), (series(1), NOW), (series(2), NOW)),
        "util_gpu": answer((series(0), 3), (series(1), 4294967295 / 240), (series(2), "NaN")),
        "fb_used_peak": answer((series(0), 10), (series(2), -5)),
    }
    answers = [read_answer(name, payload, SETTINGS) for name, payload in results.items()]
    batch = merge_answers(answers, SETTINGS)
    assert [(s.key.gpu, s.util_milli, s.fb_used_peak_mib) for s in batch.samples] == [
        (0, 30, 10),
        (1, None, None),
        (2, None, None),
    ]
    assert batch.malformed == (
        "util_gpu: Hostname='gpu-a' gpu='1' GPU_I_ID='': '17895697.0625' is more than 100 "
        "(util_gpu is a percentage from 0 to 100)",
        "fb_used_peak: Hostname='gpu-a' gpu='2' GPU_I_ID='': '-5' is negative (a DCGM reading "
        "is never below 0)",
    )
    with pytest.raises(MetricsFormatError) as refused:
        samples_from_results(results, SETTINGS)
    assert str(refused.value) == (
        "util_gpu: result[1].value: '17895697.0625' is more than 100 (util_gpu is a percentage "
        "from 0 to 100)"
    )


@settings(max_examples=25, deadline=None)
@given(st.permutations(["util_gr", "util_gpu", "fb_used", "xid", "power", "sampled_at"]))
def test_merging_does_not_depend_on_the_order_answers_arrive(order: list[str]) -> None:
    mig_row = series(4, GPU_I_PROFILE="1g.10gb", GPU_I_ID="13", namespace="default", pod="nb-1")
    results = {
        "util_gr": answer((series(0), 0.5), (mig_row, 0.02)),
        "util_gpu": answer((series(0), 12), (series(1), 40)),
        "fb_used": answer((series(0), 4845), (series(2), 1)),
        "xid": answer((mig_row, 79), (series(0), 0)),
        "power": answer((series(0), 312.5)),
        "sampled_at": answer((series(0), NOW - 0.4), (series(1), NOW)),
    }
    expected = samples_from_results(results, SETTINGS)
    answers = [read_answer(name, results[name], SETTINGS) for name in order]
    merged = merge_answers(answers, SETTINGS)
    assert sorted(merged.samples, key=repr) == sorted(expected.samples, key=repr)
    assert len(merged.samples) == 4  # gpu 0, MIG 13, and gpus 1 and 2 from other answers


def test_carried_answers_fill_rows_but_never_add_or_replace() -> None:
    now = [read_answer("xid", answer((series(0), 0)), SETTINGS),
           read_answer("power", answer((series(0), 300)), SETTINGS)]  # fmt: skip
    carried = [
        read_answer("power", answer((series(0), 100), (series(1), 100)), SETTINGS),
        read_answer("temperature", answer((series(0), 40), (series(2), 41)), SETTINGS),
    ]
    [only] = merge_answers(now, SETTINGS, carried).samples  # GPUs 1 and 2 are not added
    assert (only.key.gpu, only.power_mw, only.temperature_c) == (0, 300_000, 40)


def test_recording_rules_record_each_query() -> None:
    rules = dict(recording_rules(SETTINGS))
    qs = queries(SETTINGS)
    assert list(rules) == [q.record for q in qs] and len(set(rules)) == len(qs)
    assert rules["apportion:dcgm_gr_engine_active:avg_over_time_10m"] == qs[0].promql
    assert rules["apportion:dcgm_sample:timestamp"] == qs[-1].promql
    assert all(name.startswith("apportion:dcgm_") for name in rules)


def test_rules_for_other_labels_or_a_selector_are_named_apart() -> None:
    """Rule names held metric, operation and window only: a reader with other label names
    or a series_selector read the default rules' rows, whose labels it cannot read (an XID
    79 missed) or which its selector would have left out. A rule whose expression is not
    the defaults' now adds a digest of it; the defaults keep their names."""
    plain = [q.record for q in queries(SETTINGS)]
    assert plain == [
        "apportion:dcgm_gr_engine_active:avg_over_time_10m",
        "apportion:dcgm_gpu_util:avg_over_time_10m",
        "apportion:dcgm_fb_used:max", "apportion:dcgm_fb_used:max_over_time_10m",
        "apportion:dcgm_fb_free:max", "apportion:dcgm_xid_errors:max",
        "apportion:dcgm_ecc_dbe_vol_total:max", "apportion:dcgm_row_remap_failure:max",
        "apportion:dcgm_gpu_temp:max", "apportion:dcgm_power_usage:max",
        "apportion:dcgm_sample:timestamp",
    ]  # fmt: skip
    # Only the identity query names the UUID label: only its rule is another.
    uuid = replace(SETTINGS, labels=SeriesLabels(uuid="gpu_uuid"))
    renamed = [*plain[:-1], "apportion:dcgm_sample:timestamp_cb82b65b"]
    assert [q.record for q in queries(uuid)] == renamed
    for other in (
        replace(SETTINGS, labels=SeriesLabels(node="node", pod="pod_name")),
        replace(SETTINGS, series_selector='job="dcgm-exporter"'),
    ):
        records = [q.record for q in queries(other)]
        assert [r.rsplit("_", 1)[0] for r in records] == plain
        assert set(records).isdisjoint(plain) and len(set(records)) == len(plain)


# --------------------------------------------------------------------- join
def test_join_maps_whole_gpus_mig_slices_and_pods() -> None:
    snap = cluster()
    rows = [
        sample(0),  # train, by placement (no pod labels)
        sample(4, profile="3g.40gb", gi=1),  # the only 3g slice: start 0, free
        sample(4, profile="1g.10gb", gi=13, pod="nb-1"),  # two 1g slices: the pod decides
        sample(4, profile="1g.10gb", gi=14),  # two 1g slices, no pod: start unknown
        sample(4, profile="7g.80gb", gi=0),  # not in the layout: the GPU's, no slice
        sample(9),  # no GPU 9: unknown
        sample(0, "gpu-z"),  # no node gpu-z: unknown
        sample(1, pod="stranger"),  # pod of no workload
    ]
    joined = join_samples(snap, rows)
    placed = [(r.node, r.gpu, r.mig_start, r.workload) for r in joined.rows]
    assert placed == [
        ("gpu-a", 0, None, "train"),
        ("gpu-a", 4, 0, None),
        ("gpu-a", 4, 5, "nb-1"),
        ("gpu-a", 4, None, None),
        ("gpu-a", 4, None, None),
        ("gpu-a", 1, None, None),
    ]
    assert len(joined.unknown) == 3
    assert joined.unknown[0].endswith(
        "no 7g.80gb slice (layout: 3g.40gb@0, 1g.10gb@4, 1g.10gb@5); joined to the GPU"
    )
    assert joined.unmatched_pods == ["gpu-a GPU 1 pod default/stranger: no running workload"]


def test_a_mig_row_its_gpus_layout_lacks_still_counts_for_the_gpu_and_its_pod() -> None:
    """Was dropped: the snapshot's layout (the live one is inferred from the node's MIG
    resources) need not have the exporter's profile on that GPU, and an XID 79 reported
    on the instance's row never took the GPU out; its pod's workload lost the device."""
    rows = [sample(4, profile="7g.80gb", gi=0, pod="nb-1", xid=79)]
    report = assess(cluster(), rows, SETTINGS)
    assert [(v.node, v.gpu, v.reason.split(" at ")[0]) for v in report.unhealthy] == [
        ("gpu-a", 4, "XID 79 on MIG 7g.80gb (GI 0)")
    ]
    assert [(r.gpu, r.mig_start, r.workload) for r in report.devices] == [(4, None, "nb-1")]


def test_join_falls_back_to_learned_uuids_and_pod_owner_map() -> None:
    snap = cluster()
    first = join_samples(snap, [sample(2)])
    assert first.uuids == {"GPU-gpu-a-2": ("gpu-a", 2)}
    # The exporter now reports its pod name as Hostname: the UUID still finds the GPU.
    moved = DeviceSample(DeviceKey("dcgm-exporter-cmhft", 2, "GPU-gpu-a-2", pod="p-0",
                                   namespace="default"), sampled_at=NOW)  # fmt: skip
    again = join_samples(snap, [moved], first.uuids, {("default", "p-0"): "train"})
    assert [(r.node, r.gpu, r.workload) for r in again.rows] == [("gpu-a", 2, "train")]


# --------------------------------------------------------------------- health
def _health(snap: Snapshot, rows: list[DeviceSample], state: HealthState | None = None):  # type: ignore[no-untyped-def]
    return assess(snap, rows, SETTINGS, state)


def test_fatal_xid_takes_gpu_out_until_the_quiet_period_passes() -> None:
    snap = cluster()
    first = _health(snap, [sample(2, xid=79, at=NOW - 10), sample(3, xid=13, at=NOW - 10)])
    [verdict] = first.unhealthy
    assert (verdict.node, verdict.gpu, verdict.since, verdict.until) == (
        "gpu-a",
        2,
        NOW - 10,
        NOW + 290,
    )
    assert verdict.reason.startswith("XID 79 at t=")
    applied = first.apply(snap)
    gpu = applied.nodes[0].gpus[2]
    assert (gpu.healthy, gpu.health_reason) == (False, verdict.reason)
    # The gauge stays at 79 (the last XID): no new event; back once 300 s have passed.
    later = snap.model_copy(update={"now": NOW + 289})
    still = _health(later, [sample(2, xid=79, at=NOW + 280)], first.health_state)
    assert [v.gpu for v in still.unhealthy] == [2]
    back = snap.model_copy(update={"now": NOW + 290})
    recovered = _health(back, [sample(2, xid=79, at=NOW + 285)], still.health_state)
    assert recovered.unhealthy == ()
    assert recovered.apply(back).nodes[0].gpus[2].healthy
    # A new fatal XID (the gauge changed) starts a new quiet period.
    again = snap.model_copy(update={"now": NOW + 400})
    changed = _health(again, [sample(2, xid=48, at=NOW + 395)], recovered.health_state)
    assert [(v.gpu, v.since) for v in changed.unhealthy] == [(2, NOW + 395)]
    assert changed.unhealthy[0].reason.startswith("XID 48")


def test_the_drivers_gpu_reset_required_takes_a_gpu_out_by_default() -> None:
    """XID 154: the driver's recovery action became "GPU Reset Required" (after a GSP
    timeout, 119, say, which the gauge showed for less than a refresh). Not in the default
    list, a GPU that cannot run anything until reset stayed in capacity."""
    report = _health(cluster(), [sample(2, xid=154, at=NOW - 10)])
    assert [(v.gpu, v.reason.split(" at ")[0]) for v in report.unhealthy] == [(2, "XID 154")]


@pytest.mark.parametrize("xid_query", ["answered", "failed"])
def test_an_xid_series_gone_and_back_is_a_new_event_unless_its_query_failed(
    xid_query: str,
) -> None:
    """Was remembered for good: DCGM 4.5's exporter writes no XID series until an XID, and
    none again after the GPU's reset, so the same code after a reset was the old one and
    the broken GPU stayed in. A failed XID query says nothing of any series: forgetting
    then would take every GPU still showing an old fatal code out again."""
    snap = cluster()
    first = _health(snap, [sample(2, xid=79)])
    failed = {"xid": "timeout"} if xid_query == "failed" else {}
    reset = assess(snap.model_copy(update={"now": NOW + 700}), [sample(2, at=NOW + 700)],
                   SETTINGS, first.health_state, failed_queries=failed)  # fmt: skip
    assert reset.unhealthy == ()
    again = _health(snap.model_copy(update={"now": NOW + 760}), [sample(2, xid=79, at=NOW + 760)],
                    reset.health_state)  # fmt: skip
    expected = [(2, NOW + 760)] if xid_query == "answered" else []
    assert [(v.gpu, v.since) for v in again.unhealthy] == expected


def test_xid_on_a_mig_instance_takes_its_gpu_out() -> None:
    report = _health(cluster(), [sample(4, profile="1g.10gb", gi=13, pod="nb-1", xid=94)])
    assert [(v.gpu, v.reason.split(" at ")[0]) for v in report.unhealthy] == [
        (4, "XID 94 on MIG 1g.10gb (GI 13)")
    ]


def test_dbe_increase_and_row_remap_failure_are_fatal_stale_samples_are_not() -> None:
    snap = cluster()
    first = _health(
        snap,
        [
            sample(0, dbe_volatile=0),
            sample(1, row_remap_failure=True),
            sample(2, xid=79, at=NOW - 61),  # stale: older than the 60 s limit
            sample(0, "gpu-b", dbe_volatile=2),
        ],
    )
    assert [(v.node, v.gpu, v.reason.split(" at ")[0]) for v in first.unhealthy] == [
        ("gpu-a", 1, "row remapping failed"),
        ("gpu-b", 0, "double-bit ECC errors (2 since the driver loaded)"),
    ]
    later = snap.model_copy(update={"now": NOW + 400})
    steady = _health(later, [sample(0, "gpu-b", dbe_volatile=2, at=NOW + 399)], first.health_state)
    assert steady.unhealthy == ()  # the count did not rise again


def test_unhealthy_gpus_are_never_offered() -> None:
    snap = snapshot(
        nodes=[node("gpu-a", H100, 2)],
        queues=[queue("team-a").quota(H100, 2)],
        workloads=[workload("w").gpus(2).queue("team-a")],
        now=NOW,
    )
    report = _health(snap, [sample(0, xid=79), sample(1, xid=0)])
    decision = decide(report.apply(snap), use_ilp=False)
    assert decision.by_workload()["w"].outcome is Outcome.PENDING
    assert decide(snap, use_ilp=False).by_workload()["w"].outcome is Outcome.ADMIT
    assert decision.metrics == report.note


LIVE = replace(SETTINGS, indices_name_devices=False)


def test_on_a_live_cluster_metrics_take_out_only_gpus_beyond_those_already_out() -> None:
    """Was: the device plugin withholds a GPU with XID 79 (the node's snapshot marks its
    last index out, not knowing which) and DCGM names it by its NVML index, 3: one broken
    GPU took two out of capacity, for good while its row-remap failure was reported."""
    snap = snapshot(nodes=[node("gpu-a", H100, 8, unhealthy=[7])], now=NOW)

    def out(rows: list[DeviceSample], settings: TelemetrySettings) -> list[int]:
        (gpu_a,) = assess(snap, rows, settings).apply(snap).nodes
        return [g.index for g in gpu_a.gpus if not g.healthy]

    one, two = [sample(3, xid=79)], [sample(3, xid=79), sample(5, row_remap_failure=True)]
    assert (out(one, LIVE), out(two, LIVE)) == ([7], [3, 7])
    assert (out(one, SETTINGS), out(two, SETTINGS)) == ([3, 7], [3, 5, 7])  # indices NVML's


def test_on_a_live_cluster_a_rows_gpu_is_found_by_its_kind_and_rank() -> None:
    """Was by NVML index: with NVML GPU 0 in MIG and the node's snapshot numbering its whole
    GPUs first (0-6, the MIG GPU 7), an XID on whole GPU 7 took out the MIG GPU and one on
    GPU 0's instance a whole GPU (or was dropped: that GPU has no MIG layout)."""
    sevens = mig(*(f"1g.10gb@{i}" for i in range(7)))
    snap = snapshot(nodes=[node("gpu-a", H100, 8, mig_layouts={7: sevens})], now=NOW)
    rows = [sample(0), sample(0, profile="1g.10gb", gi=7, xid=79)]
    rows += [sample(g, xid=79 if g == 7 else 0) for g in range(1, 8)]
    report = assess(snap, rows, LIVE)
    assert [(v.gpu, v.reason.split(" at ")[0]) for v in report.unhealthy] == [
        (6, "XID 79"),
        (7, "XID 79 on MIG 1g.10gb (GI 7)"),
    ]
    assert report.unknown == ()
    by_index = assess(snap, rows, SETTINGS)
    assert [v.gpu for v in by_index.unhealthy] == [0, 7]  # a snapshot file's indices are NVML's


def test_on_a_live_cluster_a_row_without_pod_labels_is_a_workloads_only_on_a_node_it_fills() -> (
    None
):
    """Was joined by Apportion's placement, whose indices are not the devices the kubelet
    gave: an idle GPU's row made a busy workload idle (the first victim where idle borrowers
    go first). On a node the workload holds whole, every device is its own."""
    snap = snapshot(
        nodes=[node("gpu-a", H100, 2), node("gpu-b", H100, 2)],
        queues=[queue("team-a").quota(H100, 3)],
        workloads=[
            workload("half").gpus(1).queue("team-a").running_on("gpu-a", 0).started(0),
            workload("whole").gpus(2).queue("team-a").running_on("gpu-b", 0, 1).started(0),
        ],
        now=NOW,
    )
    rows = [sample(0), sample(1), sample(0, "gpu-b"), sample(1, "gpu-b")]
    live = [(r.node, r.gpu, r.workload) for r in assess(snap, rows, LIVE).devices]
    assert live == [("gpu-a", 0, None), ("gpu-a", 1, None), ("gpu-b", 0, "whole"),
                    ("gpu-b", 1, "whole")]  # fmt: skip
    named = [r.workload for r in assess(snap, rows, SETTINGS).devices]
    assert named == ["half", None, "whole", "whole"]


# --------------------------------------------------------------------- idleness
def test_idle_workloads_per_queue_and_marked_on_the_snapshot() -> None:
    snap = cluster(late_started=NOW - 100)  # 'late' has run 100 s of the 600 s window
    rows = [
        sample(0, util_milli=10),
        sample(1, util_milli=49),  # train: both GPUs under 50 ‰ → idle
        sample(4, profile="1g.10gb", gi=13, pod="nb-1", util_milli=700),  # busy
        sample(0, "gpu-b", util_milli=0),  # idle, but not for a whole window yet
    ]
    report = assess(snap, rows, SETTINGS)
    assert [(w.workload, w.queue, w.devices, w.util_milli) for w in report.idle.workloads] == [
        ("train", "team-a", ("gpu-a/0", "gpu-a/1"), 49)
    ]
    assert report.idle.per_queue == {"team-a": 2}
    marked = report.apply(snap)
    assert {w.name for w in marked.workloads if w.idle} == {"train"}


def test_a_device_without_metrics_makes_a_workload_unknown_not_idle() -> None:
    report = assess(cluster(), [sample(0, util_milli=0)], SETTINGS)  # GPU 1 of train silent
    assert report.idle.workloads == ()
    assert "train" in report.idle.unknown
    stale = assess(cluster(), [sample(0, util_milli=0), sample(1, util_milli=0, at=NOW - 61)],
                   SETTINGS)  # fmt: skip
    assert stale.idle.workloads == ()


def test_a_workload_on_two_slices_of_one_profile_on_one_gpu_can_be_idle() -> None:
    """Each of its two 1g.10gb slices on GPU 4 reports under its pod's labels; neither row
    can tell which slice it is (the workload holds both). Both named "gpu-a/4 mig 1g.10gb@?",
    they counted as one device of the two expected, and the workload was "unknown"."""
    base = cluster()
    pair = workload("nb-2").mig("1g.10gb").pods(2).queue("team-a").started(0)
    pair = pair.running_on("gpu-a", 4, mig_start=4).running_on("gpu-a", 4, mig_start=5)
    snap = base.model_copy(update={"workloads": (pair.build(),)})
    rows = [
        sample(4, profile="1g.10gb", gi=13, pod="nb-2-0", util_milli=10),
        sample(4, profile="1g.10gb", gi=14, pod="nb-2-1", util_milli=20),
    ]
    report = assess(
        snap,
        rows,
        SETTINGS,
        pod_owner={("default", "nb-2-0"): "nb-2", ("default", "nb-2-1"): "nb-2"},
    )
    assert report.idle.unknown == ()
    assert [(w.workload, w.devices, w.util_milli) for w in report.idle.workloads] == [
        ("nb-2", ("gpu-a/4 mig 1g.10gb GI 13", "gpu-a/4 mig 1g.10gb GI 14"), 20)
    ]
    assert report.idle.per_queue == {"team-a": 2}


# --------------------------------------------------------------------- right-sizing
def test_rightsizing_names_the_cheapest_mig_slice_that_holds_the_peak() -> None:
    rows = [
        sample(0, util_milli=300, fb_used_peak_mib=7_000),
        sample(1, util_milli=100, fb_used_peak_mib=8_000),
        sample(4, profile="1g.10gb", gi=13, pod="nb-1", util_milli=500, fb_used_mib=9_000),
    ]
    usage = {(c.queue, c.flavor): c for c in assess(cluster(), rows, SETTINGS).rightsizing}
    train = usage[("team-a", H100)]
    # Peak 8,000 MiB + 10 % = 8,800 fits a 1g.10gb (9.75 GiB = 9,984 MiB usable) on H100,
    # but GPU 0 keeps 30 % of an H100 busy (0.95 A100 + 10 % = 1.05): a 2g (2/7 of 3.17 =
    # 0.91) would not hold it, a 3g.40gb (1.36) does.
    assert (train.workloads, train.devices, train.requested_mib, train.used_peak_mib) == (
        1,
        2,
        80 * 1024,
        8_000,
    )
    assert (train.used_mean_mib, train.util_mean_milli, train.fits) == (
        7_500,
        200,
        "3g.40gb on H100-80GB",
    )
    assert train.message.endswith(
        "; 3g.40gb on H100-80GB would hold the peak + 10 % and its compute at its busy time + 10 %"
    )
    nb = usage[("team-a", "mig-1g.10gb")]
    # 9,000 + 10 % = 9,900 still fits 1g.10gb, which is what it has: nothing smaller.
    assert (nb.requested_mib, nb.used_peak_mib, nb.fits) == (9_984, 9_000, None)


def test_rightsizing_never_suggests_a_slice_dearer_than_the_gpu_it_replaces() -> None:
    """A T4 ($0.35/h) using 3 GB was told '1g.10gb on H100-80GB would hold the peak': a
    seventh of an H100 costs $0.70/h, twice the T4, and the planner's shapes took that
    layout as a hint. Where the cheap A100-80GB's slice is there ($0.26/h), it is named."""
    snap = snapshot(
        nodes=[node("t4-a", "T4", 1), node("gpu-a", H100, 1)],
        queues=[queue("team-a").quota("T4", 1)],
        workloads=[workload("small").gpus(1).queue("team-a").running_on("t4-a", 0).started(0)],
        now=NOW,
    )
    rows = [sample(0, "t4-a", util_milli=100, fb_used_peak_mib=3_000)]
    [usage] = assess(snap, rows, SETTINGS).rightsizing
    assert (usage.flavor, usage.requested_mib, usage.fits) == ("T4", 16 * 1024, None)
    assert "would hold" not in usage.message
    a100 = snap.model_copy(update={"nodes": (*snap.nodes, node("a100-a", "A100-80GB", 1))})
    [cheaper] = assess(a100, rows, SETTINGS).rightsizing
    assert cheaper.fits == "1g.10gb on A100-80GB"


def test_rightsizing_leaves_out_the_memory_of_a_gpu_other_tenants_share() -> None:
    """DCGM's framebuffer figure on a time-sliced GPU is the whole GPU's, all tenants
    together (one copy per sharing container, facts §3.2). Two L40S tenants of 500 milli
    using 12 GB each were each told 'peak 24,000 MiB of 24,576 MiB offered'; a lone tenant's
    figure is its own and stays."""
    snap = snapshot(
        nodes=[node("l40s-a", "L40S", 2, shared=True), node("a100-a", "A100-80GB", 1)],
        queues=[queue("team-a").quota("L40S", 2), queue("team-b").quota("L40S", 1)],
        workloads=[
            workload("a").milli(500, "L40S").queue("team-a").running_on("l40s-a", 0, milli=500)
            .started(0),
            workload("b").milli(500, "L40S").queue("team-b").running_on("l40s-a", 0, milli=500)
            .started(0),
            workload("c").milli(500, "L40S").queue("team-a").running_on("l40s-a", 1, milli=500)
            .started(0),
        ],
        now=NOW,
    )  # fmt: skip
    rows = [
        sample(0, "l40s-a", pod="a", util_milli=500, fb_used_peak_mib=24_000),
        sample(0, "l40s-a", pod="b", util_milli=500, fb_used_peak_mib=24_000),
        sample(1, "l40s-a", pod="c", util_milli=50, fb_used_peak_mib=9_000),
    ]
    usage = {c.queue: c for c in assess(snap, rows, SETTINGS).rightsizing}
    assert list(usage) == ["team-a"]  # team-b's only device is shared: nothing of its own
    team_a = usage["team-a"]
    assert (team_a.workloads, team_a.devices, team_a.requested_mib, team_a.used_peak_mib) == (
        1,
        1,
        24 * 1024,
        9_000,
    )
    assert team_a.fits == "1g.10gb on A100-80GB"


def test_rightsizing_never_names_a_slice_that_cannot_hold_the_compute_used() -> None:
    """Was: memory alone chose the slice. An H100 busy 88 % of the time using 8 GB was told
    '1g.10gb on A100-80GB would hold the peak': a seventh of an A100 (0.14 of an A100's
    compute) for a workload keeping 2.8 A100s' worth busy. No slice on the cluster holds
    that: the report names none, and says what memory alone would have named."""
    snap = snapshot(
        nodes=[node("gpu-a", H100, 1), node("a100-a", "A100-80GB", 1)],
        queues=[queue("team-a").quota(H100, 1)],
        workloads=[workload("busy").gpus(1).queue("team-a").running_on("gpu-a", 0).started(0)],
        now=NOW,
    )
    rows = [sample(0, util_milli=880, fb_used_peak_mib=8_000)]
    [usage] = assess(snap, rows, SETTINGS).rightsizing
    assert usage.fits is None
    assert usage.message.endswith(
        "88.0 % busy; 1g.10gb on A100-80GB would hold its memory but not its compute"
    )
    idle = [sample(0, util_milli=30, fb_used_peak_mib=8_000)]
    [usage] = assess(snap, idle, SETTINGS).rightsizing
    assert usage.fits == "1g.10gb on A100-80GB"  # 3 % of an H100: 0.10 A100 + 10 % fits 1/7


def test_rightsizing_without_busy_time_holds_memory_and_says_so() -> None:
    """Devices whose busy time DCGM does not report (neither GR_ENGINE_ACTIVE nor
    GPU_UTIL exported): the suggestion holds their memory only, and says so."""
    rows = [sample(0, fb_used_peak_mib=7_000), sample(1, fb_used_peak_mib=8_000)]
    [usage] = assess(cluster(), rows, SETTINGS).rightsizing
    assert (usage.util_mean_milli, usage.fits) == (None, "1g.10gb on H100-80GB")
    assert usage.message.endswith(
        "; 1g.10gb on H100-80GB would hold the peak + 10 % (memory only: busy time not reported)"
    )


def test_rightsizing_holds_the_busy_time_its_devices_report_when_one_does_not() -> None:
    """Was: one device without busy time dropped the others' from the class: two devices
    90 % busy were 'memory only' and got a 1g.10gb slice, under a message saying both."""
    busy = [sample(0, util_milli=900, fb_used_peak_mib=6_000), sample(1, fb_used_peak_mib=6_000)]
    [usage] = assess(cluster(), busy, SETTINGS).rightsizing
    assert usage.fits is None
    assert usage.message.endswith(
        "90.0 % busy; 1g.10gb on H100-80GB would hold its memory but not its compute"
    )
    quiet = [sample(0, util_milli=20, fb_used_peak_mib=6_000), sample(1, fb_used_peak_mib=6_000)]
    [usage] = assess(cluster(), quiet, SETTINGS).rightsizing
    assert usage.fits == "1g.10gb on H100-80GB"
    assert usage.message.endswith(
        "would hold the peak + 10 % and its compute at its busy time + 10 % (reported by 1 of "
        "2 devices)"
    )


# --------------------------------------------------------------------- the note
def test_metrics_note_says_how_fresh_and_what_fell_back() -> None:
    snap = cluster()
    every = [sample(g) for g in range(5)] + [sample(g, "gpu-b") for g in range(2)]
    fresh = assess(snap, every, SETTINGS)
    assert (fresh.note.status, fresh.note.age_s, fresh.gpus_fresh) == ("fresh", 0, 7)
    some = assess(snap, every[:5], SETTINGS)
    assert some.note.status == "partial"
    assert "5/7 GPUs" in some.note.message and "2 GPUs decided on allocation data alone" in (
        some.note.message
    )
    failed = assess(snap, every, SETTINGS, failed_queries={"power": "refused", "dbe": "timeout"})
    assert failed.note.status == "partial"
    assert failed.note.message.endswith("; queries failed: dbe, power (dbe: timeout)")
    old = assess(snap, [sample(0, at=NOW - 90)], SETTINGS)
    assert (old.note.status, old.note.age_s) == ("stale", 90)
    down = assess(snap, [], SETTINGS, fetch_error="connection refused")
    assert down.note.status == "missing"
    assert down.note.message == (
        "no GPU metrics (connection refused); decided on allocation data alone"
    )
    # Prometheus down does not bring an unhealthy GPU back before its quiet period ends.
    out = assess(snap, [sample(2, xid=79)], SETTINGS)
    still = assess(snap, [], SETTINGS, out.health_state, fetch_error="timed out")
    assert [v.gpu for v in still.unhealthy] == [2]


def test_device_answers_join_the_identity_rows() -> None:
    """Answers grouped by device only take the UUID, profile and pod of the identity row;
    a device the identity query missed keeps empty identity labels."""
    identity = [
        {"metric": {"Hostname": "n", "gpu": "0", "UUID": "GPU-a", "pod": "p", "namespace": "ns"},
         "value": [1.0, "0"]},
        {"metric": {"Hostname": "n", "gpu": "1", "GPU_I_ID": "7", "GPU_I_PROFILE": "1g.10gb",
                    "UUID": "GPU-b"}, "value": [1.0, "79"]},
    ]  # fmt: skip
    used = [
        {"metric": {"Hostname": "n", "gpu": "0"}, "value": [1.0, "512"]},
        {"metric": {"Hostname": "n", "gpu": "1", "GPU_I_ID": "7"}, "value": [1.0, "256"]},
        {"metric": {"Hostname": "n", "gpu": "2"}, "value": [1.0, "128"]},
    ]
    batch = samples_from_results(
        {"fb_used": used, "sampled_at": identity, "xid": identity}, SETTINGS
    )
    got = {(s.key.gpu, s.key.uuid, s.key.gi_profile, s.key.pod): (s.fb_used_mib, s.xid)
           for s in batch.samples}  # fmt: skip
    assert got == {
        (0, "GPU-a", "", "p"): (512, 0),
        (1, "GPU-b", "1g.10gb", ""): (256, 79),
        (2, "", "", ""): (128, None),
    }
