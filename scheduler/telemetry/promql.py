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
- the sample time: ``timestamp()`` of each row's XID sample, else its GR_ENGINE_ACTIVE or
  FB_USED sample, for staleness; this query also names each row (``IDENTITY``).

The parsing is pure, so the simulator and planner can read an exported file of the same
JSON (``{"status": "success", "data": {"resultType": "vector", "result": [...]}}``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from scheduler.telemetry.samples import DeviceKey, DeviceSample
from scheduler.telemetry.settings import SeriesLabels, TelemetrySettings

__all__ = [
    "IDENTITY",
    "INFORMATIONAL",
    "Answer",
    "MetricQuery",
    "MetricsFormatError",
    "SampleBatch",
    "error_text",
    "merge_answers",
    "parse_vector",
    "queries",
    "read_answer",
    "recording_rules",
    "samples_from_results",
    "url_problem",
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
    record: str = ""
    """The series a recording rule (``recording_rules``) keeps with the same answer; the
    reader asks for it first and runs ``promql`` when it is absent."""


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


INFORMATIONAL = frozenset({"fb_used", "fb_free", "temperature", "power"})
"""Queries no rule reads: they only describe each device in the report (right-sizing uses
the window's peak, ``fb_used_peak``). The reader may ask for them every few refreshes only
(``PrometheusSettings.informational_every``) and carry the last answers in between."""

IDENTITY = "sampled_at"
"""The query that keeps every identifying label (UUID, MIG profile, pod); the others keep
only the device labels and are joined to it. It is the sample-time query, whose series are on
every row whatever the exporter emits (``_SAMPLE_TIME_METRICS``); XID_ERRORS alone, the
identity once, is missing on every row of some exporters until an XID happens."""

_SAMPLE_TIME_METRICS = (
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
)
"""Whose sample time says how fresh a row is, the first a row has (``or``): XID_ERRORS is on
every row, whole GPU and MIG instance (facts §3.3), where the exporter emits it, but
dcgm-exporter 4.5.3–4.8.2 emits none until an XID happens (NVIDIA/dcgm-exporter #646, #700:
DCGM 4.5 answers N/A for 'no XID yet'); GR_ENGINE_ACTIVE is on every row with profiling
metrics on, FB_USED on every row of those newer exporters. A device without XID_ERRORS has
had no XID. (One ``timestamp()`` over a ``__name__`` regex would be cheaper, but Prometheus
refuses it: the series differ only in their name once it is dropped.)"""


def queries(settings: TelemetrySettings) -> tuple[MetricQuery, ...]:
    """The instant queries of one refresh, in a fixed order.

    A recording rule's name says all its expression bakes in. The windowed ones name their
    window; a query whose expression is not the one of dcgm-exporter's label names and no
    ``series_selector`` adds a digest of it (``apportion:dcgm_xid_errors:max_1a2b3c4d``).
    With one name for all, a reader with other label names read the default rules' rows,
    whose labels it cannot read (an XID 79 missed), or rows its selector would have left
    out. The defaults' names stay as deployed."""
    built = _queries(settings)
    usual = _queries(replace(settings, labels=SeriesLabels(), series_selector=""))
    return tuple(
        q if q.promql == default.promql else replace(q, record=f"{q.record}_{_digest(q.promql)}")
        for q, default in zip(built, usual, strict=True)
    )


def _digest(promql: str) -> str:
    """Eight hex digits of the expression's SHA-256: the same in every process and release."""
    return hashlib.sha256(promql.encode()).hexdigest()[:8]


def _queries(settings: TelemetrySettings) -> tuple[MetricQuery, ...]:
    names = settings.labels
    full = ", ".join((*names.grouping(), *(_EXPORTED + n for n in _owner(names))))
    device = ", ".join(settings.labels.device())
    window = _duration(settings.idle_window_s)
    matchers = f"{{{settings.series_selector}}}" if settings.series_selector else ""

    def q(name: str, metric: str, unit: str, function: str = "") -> MetricQuery:
        # The recording rule's name: level:metric:operation (Prometheus' convention), e.g.
        # apportion:dcgm_gr_engine_active:avg_over_time_1h; "max" is the max by device.
        short = metric.removeprefix("DCGM_FI_").removeprefix("DEV_").removeprefix("PROF_")
        selector = metric + matchers
        if function:
            expr, operation = f"{function}({selector}[{window}])", f"{function}_{window}"
        else:
            expr, operation = selector, "max"
        record = f"apportion:dcgm_{short.lower()}:{operation}"
        return MetricQuery(name, f"max by ({device}) ({expr})", unit, record)

    # An ``or`` of three metrics: the first one a row has (they are scraped together).
    sample_time = " or ".join(f"timestamp({m}{matchers})" for m in _SAMPLE_TIME_METRICS)

    return (
        q("util_gr", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "ratio", "avg_over_time"),
        q("util_gpu", "DCGM_FI_DEV_GPU_UTIL", "percent", "avg_over_time"),
        q("fb_used", "DCGM_FI_DEV_FB_USED", "MiB"),
        q("fb_used_peak", "DCGM_FI_DEV_FB_USED", "MiB", "max_over_time"),
        q("fb_free", "DCGM_FI_DEV_FB_FREE", "MiB"),
        q("xid", "DCGM_FI_DEV_XID_ERRORS", "last XID code"),
        q("dbe", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "errors"),
        q("row_remap_failure", "DCGM_FI_DEV_ROW_REMAP_FAILURE", "boolean"),
        q("temperature", "DCGM_FI_DEV_GPU_TEMP", "°C"),
        q("power", "DCGM_FI_DEV_POWER_USAGE", "W"),
        MetricQuery(
            IDENTITY,
            f"max by ({full}) ({sample_time})",
            "seconds since the epoch",
            "apportion:dcgm_sample:timestamp",
        ),
    )


def recording_rules(settings: TelemetrySettings) -> tuple[tuple[str, str], ...]:
    """(record, expr) of the recording rules that precompute every query of a refresh.

    What a refresh costs Prometheus is the ``max by`` (and, for the windowed queries, the
    window) over every GPU, not the lookup: at 10,000 GPUs a recorded series is read ~5×
    faster, and the windowed ones gain more the longer the window. The window, the label
    names and the series selector are part of the rules, and of their names (``queries``),
    so they must be rendered for the settings the reader runs with (a reader never reads
    rules rendered for other settings: it runs the raw PromQL):
    ``deploy/monitoring/dcgm-recording-rules.yaml`` holds them for the defaults."""
    return tuple((q.record, q.promql) for q in queries(settings))


def _duration(seconds: int) -> str:
    """A Prometheus duration for a whole number of seconds: 3600 → 1h, 90 → 90s."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_vector(payload: object, query: str = "query") -> list[Mapping[str, object]]:
    """The result rows of an instant-vector answer: the whole API envelope or just its
    ``data.result`` list (what prometheus-api-client's ``custom_query`` returns)."""
    payload = _result_list(payload, query)
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


def _result_list(payload: object, query: str) -> list[Any]:
    """The ``data.result`` list of an envelope (or the list itself), rows not yet checked."""
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
    return payload


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Prometheus base URL (``/api/v1/query`` is appended), or None.
    Every driver that takes one checks it with this, before the first query."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    host = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    if not host or host.startswith(":"):
        return "names no host"
    if host.startswith("[") != ("]" in host):  # urllib: 'Invalid IPv6 URL', a traceback
        return "an IPv6 address is written in brackets, both of them: http://[::1]:9090"
    tail = host.rsplit("]", 1)[1] if host.startswith("[") else host
    port = tail.partition(":")[2]
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65_535):
        return f"port {port!r} is not a number from 0 to 65535"
    return None


def error_text(body: bytes) -> str:
    """What an HTTP error answer says, on one line: the API envelope's ``error`` (Prometheus'
    reason: 'query timed out', 'too many queries'), else the start of the body."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):  # not JSON (a proxy's page), or not an object
        error = None
    text = error if isinstance(error, str) else body.decode("utf-8", "replace")
    return " ".join(text.split())[:200]


@dataclass(frozen=True, slots=True)
class SampleBatch:
    samples: tuple[DeviceSample, ...]
    malformed: tuple[str, ...] = ()
    """Rows that name no device (no node label, or a ``gpu`` that is not an index)."""


_KeyTuple = tuple[str, str, str, str, str, str, str, str]
_Device = str
"""One device: its node, gpu and GPU-instance ID label values joined by NULs (a string, not
a tuple: its hash is kept, so each of a refresh's ~100,000 lookups by it costs half)."""


_EXPORTED = "exported_"
"""What Prometheus prefixes a scraped label with when the target has a label of that name
(``honor_labels: false``, the usual ServiceMonitor): the exporter's ``pod``, ``namespace``
and ``container`` become ``exported_pod``, …, and ``pod`` is the exporter's own pod. Read
as they were, no workload was ever attributed. The identity query keeps them, and where a
row has one, it is the exporter's label and wins (Prometheus drops empty labels, so an
unallocated GPU's row keeps the exporter pod's own labels: a pod with no workload)."""


def _owner(names: SeriesLabels) -> tuple[str, str, str]:
    """The labels a Kubernetes target has too: whose device it is."""
    return (names.namespace, names.pod, names.container)


def _key(labels: Mapping[str, Any], names: SeriesLabels) -> _KeyTuple:
    get = labels.get
    namespace, pod, container = _owner(names)
    key = (
        get(names.node, ""),
        get(names.gpu, ""),
        get(names.uuid, ""),
        get(names.gi_id, ""),
        get(names.gi_profile, ""),
        get(_EXPORTED + namespace) or get(namespace, ""),
        get(_EXPORTED + pod) or get(pod, ""),
        get(_EXPORTED + container) or get(container, ""),
    )
    for value in key:
        if type(value) is not str:  # label values are strings; a hand-made file may differ
            return tuple(v if isinstance(v, str) else str(v) for v in key)  # type: ignore[return-value]
    return key


@dataclass(frozen=True, slots=True)
class Answer:
    """One query's answer read into per-device values (``read_answer``), ready to merge.

    Reading is the bulk of the parsing work and needs only its own answer, so the reader
    does it on the query's worker thread as soon as the answer arrives."""

    name: str
    values: dict[_Device, int]
    """Device (node, gpu, GPU-instance ID labels) → value in base units; NaN/Inf rows left out."""
    rows: list[Any]
    """The raw rows, for the labels of devices the identity query did not report."""
    keys: dict[_Device, list[_KeyTuple]] | None = None
    """Identity answer only: every full row key of a device (several when time-sliced)."""
    out_of_range: tuple[int, ...] = ()
    """Rows (indices into ``rows``) whose reading no device gives, below 0 or past its
    ``_MOST``: left out of ``values``. One such row (GPU_UTIL's 4294967295 spike, NVIDIA/DCGM
    #199, averaged into 17,895,697 %) refused the whole fleet's answer; now the merge reports
    it (``SampleBatch.malformed``) and an export file is refused at it
    (``samples_from_results``)."""


_PAIR = (list, tuple)


_MOST: dict[str, tuple[float, str]] = {
    "util_gr": (1.0, "a ratio from 0 to 1"),
    "util_gpu": (100.0, "a percentage from 0 to 100"),
}
"""Readings with an upper bound by their unit: a ratio of 250 was 'busy 25000 %'."""


def _out_of_range(name: str, value: str | float) -> str:
    """Why a reading ``_read`` left out cannot be: ``'-5' is negative (…)``."""
    if float(value) < 0:
        return f"{value!r} is negative (a DCGM reading is never below 0)"
    most, unit = _MOST[name]
    return f"{value!r} is more than {most:g} ({name} is {unit})"


def _device_text(names: SeriesLabels, node: object, gpu: object, gi_id: object) -> str:
    return f"{names.node}={node!r} {names.gpu}={gpu!r} {names.gi_id}={gi_id!r}"


def read_answer(name: str, payload: object, settings: TelemetrySettings) -> Answer:
    """One answer of ``queries(settings)`` (the envelope or its result list), read into
    per-device values. Raises MetricsFormatError for an answer of the wrong shape."""
    if name not in _CONVERT:
        known = ", ".join(sorted(_CONVERT))
        raise MetricsFormatError(f"{name}: not one of the queries ({known})")
    rows = _result_list(payload, name)
    try:
        return _read(name, rows, settings.labels)
    except (LookupError, TypeError, AttributeError):
        parse_vector(rows, name)  # says which row has the wrong shape
        raise MetricsFormatError(f"{name}: unexpected answer") from None


def _read(name: str, rows: list[Any], names: SeriesLabels) -> Answer:
    # The hot loop of a refresh (100,000s of rows): plain dict lookups on concrete types;
    # anything of the wrong shape raises, and read_answer then finds and names the row; a
    # reading no device gives is left out and noted (Answer.out_of_range).
    convert = _CONVERT[name]
    node, gpu, gi_id = names.device()
    identity = name == IDENTITY
    values: dict[_Device, int] = {}
    keys: dict[_Device, list[_KeyTuple]] = {}
    seen: set[_KeyTuple] = set()
    out_of_range: list[Any] = []
    isfinite = math.isfinite
    most = _MOST.get(name, (math.inf, ""))[0]
    for row in rows:
        labels = row["metric"]
        value = row["value"]
        if type(labels) is not dict or type(value) not in _PAIR or len(value) != 2:
            raise TypeError
        try:
            number = float(value[1])
        except (TypeError, ValueError):
            raise MetricsFormatError(f"{name}: value {value[1]!r} is not a number") from None
        if not isfinite(number):
            continue  # NaN/Inf: no usable sample
        if number < 0 or number > most:
            # A broken export or recording rule: -5 MiB peak read as a workload using
            # nothing, and advice built on it; a utilization ratio of 250.
            out_of_range.append(row)
            continue
        device = f"{labels.get(node, '')}\0{labels.get(gpu, '')}\0{labels.get(gi_id, '')}"
        converted = convert(number)
        if identity:
            # A device's rows (time-sliced copies) are as fresh as the newest of them.
            if converted > values.get(device, -1):
                values[device] = converted
            key = _key(labels, names)
            if key not in seen:
                seen.add(key)
                keys.setdefault(device, []).append(key)
        else:
            values[device] = converted
    bad: tuple[int, ...] = ()
    if out_of_range:  # rare: where they are, for the message
        ids = {id(row) for row in out_of_range}
        bad = tuple(i for i, row in enumerate(rows) if id(row) in ids)
    return Answer(name, values, rows, keys if identity else None, bad)


def _is_index(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9


def merge_answers(
    answers: Iterable[Answer], settings: TelemetrySettings, carried: Iterable[Answer] = ()
) -> SampleBatch:
    """One sample per device row from the answers of one refresh (``read_answer``).

    The identity answer (the sample times) names each device's rows (UUID, profile, pod);
    the other answers carry device labels only and are joined to those rows. A device the
    identity answer did not report gets one row with the labels of the first answer that
    did. A device without an XID row gets ``xid`` None, no event: some exporters emit the
    series only once an XID happened. ``carried``
    answers come from an earlier refresh (``INFORMATIONAL`` queries not asked every time):
    they fill the fields of rows this refresh names, never add rows, and never replace an
    answer of this refresh."""
    names = settings.labels
    node_label, gpu_label, gi_label = names.device()
    by_name = {a.name: a for a in answers}
    current = list(by_name.values())
    identity = by_name.get(IDENTITY)
    others = [a for a in by_name.values() if a.name != IDENTITY]
    for old in carried:
        by_name.setdefault(old.name, old)
    rows: list[tuple[_KeyTuple, _Device]] = []
    if identity is not None and identity.keys is not None:
        rows = [(k, device) for device, ks in identity.keys.items() for k in ks]
    seen = set(identity.values) if identity is not None else set()
    for answer in others:
        extra = answer.values.keys() - seen
        if not extra:
            continue
        for row in answer.rows:  # rare: devices the identity query missed
            labels = row["metric"]
            device = (
                f"{labels.get(node_label, '')}\0{labels.get(gpu_label, '')}"
                f"\0{labels.get(gi_label, '')}"
            )
            if device in extra and device not in seen:
                seen.add(device)
                rows.append((_key(labels, names), device))

    def column(field: str) -> dict[_Device, int]:
        found = by_name.get(field)
        return found.values if found is not None else {}

    util_gr, util_gpu = column("util_gr"), column("util_gpu")
    fb_used, fb_peak, fb_free = column("fb_used"), column("fb_used_peak"), column("fb_free")
    xid, dbe, remap = column("xid"), column("dbe"), column("row_remap_failure")
    temp, power, sampled = column("temperature"), column("power"), column(IDENTITY)
    samples = []
    malformed = []
    for answer in current:  # carried answers' were reported when they were read
        for i in answer.out_of_range:
            labels, value = answer.rows[i]["metric"], answer.rows[i]["value"][1]
            where = _device_text(names, *(labels.get(n, "") for n in names.device()))
            malformed.append(f"{answer.name}: {where}: {_out_of_range(answer.name, value)}")
    for k, device in rows:
        node, gpu, uuid, gi_id, gi_profile, namespace, pod, container = k
        # ASCII digits: str.isdigit also takes '²', which int() refuses.
        if not (node and _is_index(gpu)) or (gi_id and not _is_index(gi_id)):
            malformed.append(f"{_device_text(names, node, gpu, gi_id)}: does not name a device")
            continue
        util = util_gr.get(device)
        source = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
        if util is None:
            util, source = util_gpu.get(device), "DCGM_FI_DEV_GPU_UTIL"
        failed = remap.get(device)
        samples.append(
            DeviceSample(
                DeviceKey(
                    node,
                    int(gpu),
                    uuid,
                    int(gi_id) if gi_id else None,
                    gi_profile,
                    namespace,
                    pod,
                    container,
                ),
                util,
                source if util is not None else "",
                fb_used.get(device),
                fb_peak.get(device),
                fb_free.get(device),
                xid.get(device),
                dbe.get(device),
                None if failed is None else failed != 0,
                temp.get(device),
                power.get(device),
                sampled.get(device),
            )
        )
    return SampleBatch(tuple(samples), tuple(malformed))


def samples_from_results(results: Mapping[str, object], settings: TelemetrySettings) -> SampleBatch:
    """Merge the answers of ``queries(settings)`` (by query name) into one sample per row:
    how an export file is read (the planner's right-sizing).

    A query missing from ``results`` (it failed, or the metric is not exported) leaves its
    field None. Raises MetricsFormatError for an answer of the wrong shape, and at the first
    reading no device gives, naming its row: unlike the live reader, which leaves such a
    row out and goes on (the next refresh comes regardless), a file is read once, for advice
    that outlives it, and can be fixed and read again."""
    answers = []
    for name, payload in results.items():
        answer = read_answer(name, payload, settings)
        for i in answer.out_of_range[:1]:
            value = answer.rows[i]["value"][1]
            raise MetricsFormatError(f"{name}: result[{i}].value: {_out_of_range(name, value)}")
        answers.append(answer)
    return merge_answers(answers, settings)
