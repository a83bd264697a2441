"""The PromQL Apportion runs, as data, and Prometheus' HTTP API results turned into samples.

One instant query per metric per refresh, never one per GPU: each query covers the whole
fleet and keeps only the labels that identify a device row (``max by (...)`` drops
``modelName``, ``pci_bus_id``, the driver version and the rest, which halves the payload).
Metric names, units and labels are dcgm-exporter's (facts §3.1–3.2):

- utilization: ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (ratio 0–1, also per MIG instance), else
  ``DCGM_FI_DEV_GPU_UTIL`` (percent, whole GPUs only), averaged over the idle window;
- framebuffer ``DCGM_FI_DEV_FB_USED`` / ``FB_FREE`` (MiB), and the peak used over the window;
- ``DCGM_FI_DEV_XID_ERRORS`` (the last XID code), ``DCGM_FI_DEV_ECC_DBE_VOL_TOTAL``
  (counter), ``DCGM_FI_DEV_ROW_REMAP_FAILURE`` (boolean);
- ``DCGM_FI_DEV_GPU_TEMP`` (°C), ``DCGM_FI_DEV_POWER_USAGE`` (W);
- the sample time: ``timestamp()`` of each row's XID sample, for staleness.

The parsing is pure, so the simulator and planner can read an exported file of the same
JSON (``{"status": "success", "data": {"resultType": "vector", "result": [...]}}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from scheduler.telemetry.samples import DeviceKey, DeviceSample
from scheduler.telemetry.settings import SeriesLabels, TelemetrySettings

__all__ = [
    "IDENTITY",
    "MetricQuery",
    "MetricsFormatError",
    "SampleBatch",
    "parse_vector",
    "queries",
    "samples_from_results",
]


class MetricsFormatError(ValueError):
    """A Prometheus answer that is not an instant vector of the expected shape."""


@dataclass(frozen=True, slots=True)
class MetricQuery:
    name: str
    """The sample field it fills (``util_gr``, ``fb_used``, …)."""
    promql: str
    unit: str
    """What the raw value is, before it becomes an integer base unit."""


def _ratio_milli(v: float) -> int:
    return round(v * 1000)


def _percent_milli(v: float) -> int:
    return round(v * 10)


def _watts_mw(v: float) -> int:
    return round(v * 1000)


def _floor(v: float) -> int:
    return math.floor(v)


_CONVERT: dict[str, Callable[[float], int]] = {
    "util_gr": _ratio_milli,
    "util_gpu": _percent_milli,
    "fb_used": round,
    "fb_used_peak": round,
    "fb_free": round,
    "xid": round,
    "dbe": round,
    "row_remap_failure": round,
    "temperature": round,
    "power": _watts_mw,
    "sampled_at": _floor,
}


IDENTITY = "xid"
"""The query that keeps every identifying label (UUID, MIG profile, pod); the others keep
only the device labels and are joined to it. XID_ERRORS is on every row, whole GPU and MIG
instance alike (facts §3.3)."""


def queries(settings: TelemetrySettings) -> tuple[MetricQuery, ...]:
    """The instant queries of one refresh, in a fixed order."""
    full = ", ".join(settings.labels.grouping())
    device = ", ".join(settings.labels.device())
    window = f"{settings.idle_window_s}s"
    matchers = f"{{{settings.series_selector}}}" if settings.series_selector else ""

    def q(name: str, expr: str, unit: str) -> MetricQuery:
        return MetricQuery(name, f"max by ({full if name == IDENTITY else device}) ({expr})", unit)

    def m(metric: str) -> str:
        return metric + matchers

    return (
        q("util_gr", f"avg_over_time({m('DCGM_FI_PROF_GR_ENGINE_ACTIVE')}[{window}])", "ratio"),
        q("util_gpu", f"avg_over_time({m('DCGM_FI_DEV_GPU_UTIL')}[{window}])", "percent"),
        q("fb_used", m("DCGM_FI_DEV_FB_USED"), "MiB"),
        q("fb_used_peak", f"max_over_time({m('DCGM_FI_DEV_FB_USED')}[{window}])", "MiB"),
        q("fb_free", m("DCGM_FI_DEV_FB_FREE"), "MiB"),
        q(IDENTITY, m("DCGM_FI_DEV_XID_ERRORS"), "last XID code"),
        q("dbe", m("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"), "errors"),
        q("row_remap_failure", m("DCGM_FI_DEV_ROW_REMAP_FAILURE"), "boolean"),
        q("temperature", m("DCGM_FI_DEV_GPU_TEMP"), "°C"),
        q("power", m("DCGM_FI_DEV_POWER_USAGE"), "W"),
        # One metric keeps this cheap (an ``or`` of four metrics cost Prometheus ~1 s at
        # 10k GPUs).
        q("sampled_at", f"timestamp({m('DCGM_FI_DEV_XID_ERRORS')})", "seconds since the epoch"),
    )


def parse_vector(payload: object, query: str = "query") -> list[Mapping[str, object]]:
    """The result rows of an instant-vector answer: the whole API envelope or just its
    ``data.result`` list (what prometheus-api-client's ``custom_query`` returns)."""
    if isinstance(payload, Mapping):
        if payload.get("status") != "success":
            error = payload.get("error") or payload.get("status")
            raise MetricsFormatError(f"{query}: Prometheus answered {error!r}")
        data = payload.get("data")
        if not isinstance(data, Mapping) or data.get("resultType") != "vector":
            kind = data.get("resultType") if isinstance(data, Mapping) else type(data).__name__
            raise MetricsFormatError(f"{query}: expected an instant vector, got {kind!r}")
        payload = data.get("result")
    if not isinstance(payload, list):
        raise MetricsFormatError(f"{query}: result is {type(payload).__name__}, not a list")
    # Concrete types (what JSON decodes to): abc checks cost a third of a 10k-GPU refresh.
    for i, row in enumerate(payload):
        if not isinstance(row, dict) or not isinstance(row.get("metric"), dict):
            raise MetricsFormatError(f"{query}: result[{i}] has no 'metric' labels: {row!r:.80}")
        value = row.get("value")
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise MetricsFormatError(
                f'{query}: result[{i}].value: expected [timestamp, "value"], got {value!r:.80}'
            )
    return payload


@dataclass(frozen=True, slots=True)
class SampleBatch:
    samples: tuple[DeviceSample, ...]
    malformed: tuple[str, ...] = ()
    """Rows that name no device (no node label, or a ``gpu`` that is not an index)."""


_KeyTuple = tuple[str, str, str, str, str, str, str, str]


def _key(labels: Mapping[str, object], names: SeriesLabels) -> _KeyTuple:
    def get(name: str) -> str:
        value = labels.get(name, "")
        return value if isinstance(value, str) else str(value)

    return (
        get(names.node),
        get(names.gpu),
        get(names.uuid),
        get(names.gi_id),
        get(names.gi_profile),
        get(names.namespace),
        get(names.pod),
        get(names.container),
    )


def samples_from_results(results: Mapping[str, object], settings: TelemetrySettings) -> SampleBatch:
    """Merge the answers of ``queries(settings)`` (by query name) into one sample per row.

    A query missing from ``results`` (it failed, or the metric is not exported) leaves its
    field None. Raises MetricsFormatError for an answer of the wrong shape."""
    known = {q.name for q in queries(settings)}
    names = settings.labels
    for name in results:
        if name not in known:
            raise MetricsFormatError(f"{name}: not one of the queries ({', '.join(sorted(known))})")
    # The identity query first: it maps each device to its full row keys (UUID, profile,
    # pod); the other answers carry device labels only and are joined through that map. A
    # device the identity query did not report keeps a key with those labels empty.
    rows_of: dict[tuple[str, str, str], list[_KeyTuple]] = {}
    fields: dict[_KeyTuple, dict[str, int]] = {}
    node, gpu, gi_id = names.device()
    for name in sorted(results, key=lambda n: n != IDENTITY):
        convert = _CONVERT[name]
        identity = name == IDENTITY
        for row in parse_vector(results[name], name):
            labels = cast(dict[str, str], row["metric"])
            value = cast(list[object], row["value"])
            try:
                number = float(value[1])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise MetricsFormatError(f"{name}: value {value[1]!r} is not a number") from None
            if not math.isfinite(number):
                continue  # NaN/Inf: no usable sample
            # Prometheus label values are strings; 100,000s of rows: plain dict lookups.
            device = (labels.get(node, ""), labels.get(gpu, ""), labels.get(gi_id, ""))
            targets = rows_of.get(device)
            if identity:
                key = _key(labels, names)
                rows_of.setdefault(device, []).append(key)
                targets = [key]
            elif targets is None:
                targets = [_key(labels, names)]  # whatever labels this answer carries
            converted = convert(number)
            for target in targets:
                fields.setdefault(target, {})[name] = converted
    samples = []
    malformed = []
    for k, f in fields.items():
        node, gpu, uuid, gi_id, gi_profile, namespace, pod, container = k
        if not node or not gpu.isdigit() or (gi_id and not gi_id.isdigit()):
            malformed.append(
                f"{settings.labels.node}={node!r} {settings.labels.gpu}={gpu!r} "
                f"{settings.labels.gi_id}={gi_id!r}: does not name a device"
            )
            continue
        util = f.get("util_gr")
        source = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
        if util is None:
            util, source = f.get("util_gpu"), "DCGM_FI_DEV_GPU_UTIL"
        remap = f.get("row_remap_failure")
        samples.append(
            DeviceSample(
                key=DeviceKey(
                    node,
                    int(gpu),
                    uuid,
                    int(gi_id) if gi_id else None,
                    gi_profile,
                    namespace,
                    pod,
                    container,
                ),
                util_milli=util,
                util_source=source if util is not None else "",
                fb_used_mib=f.get("fb_used"),
                fb_used_peak_mib=f.get("fb_used_peak"),
                fb_free_mib=f.get("fb_free"),
                xid=f.get("xid"),
                dbe_volatile=f.get("dbe"),
                row_remap_failure=None if remap is None else remap != 0,
                temperature_c=f.get("temperature"),
                power_mw=f.get("power"),
                sampled_at=f.get("sampled_at"),
            )
        )
    return SampleBatch(tuple(samples), tuple(malformed))
