"""GPU metrics (dcgm-exporter via Prometheus) as plain data for decisions — pure, no I/O.

``promql`` holds the queries and parses Prometheus' JSON answers into ``samples``; ``join``
places each device row on a snapshot GPU and workload; ``health``, ``idleness`` and
``rightsizing`` are the rules; ``report.assess`` runs them all for one refresh and
``TelemetryReport.apply`` puts the result on a Snapshot. The webhook's reader
(``webhook/dcgm.py``) does the HTTP; the simulator can feed exported answers to the same code.
"""

from scheduler.telemetry.health import (
    HealthEvent,
    HealthState,
    HealthVerdict,
    apply_health,
    assess_health,
)
from scheduler.telemetry.idleness import IdleReport, IdleWorkload, assess_idleness, mark_idle
from scheduler.telemetry.join import Joined, JoinedRow, join_samples
from scheduler.telemetry.promql import (
    INFORMATIONAL,
    Answer,
    MetricQuery,
    MetricsFormatError,
    SampleBatch,
    error_text,
    merge_answers,
    parse_vector,
    queries,
    read_answer,
    recording_rules,
    samples_from_results,
    url_problem,
)
from scheduler.telemetry.report import TelemetryReport, assess
from scheduler.telemetry.rightsizing import ClassUsage, assess_rightsizing
from scheduler.telemetry.samples import DeviceKey, DeviceSample
from scheduler.telemetry.settings import DEFAULT_FATAL_XIDS, SeriesLabels, TelemetrySettings

__all__ = [
    "DEFAULT_FATAL_XIDS",
    "INFORMATIONAL",
    "Answer",
    "ClassUsage",
    "DeviceKey",
    "DeviceSample",
    "HealthEvent",
    "HealthState",
    "HealthVerdict",
    "IdleReport",
    "IdleWorkload",
    "Joined",
    "JoinedRow",
    "MetricQuery",
    "MetricsFormatError",
    "SampleBatch",
    "SeriesLabels",
    "TelemetryReport",
    "TelemetrySettings",
    "apply_health",
    "assess",
    "assess_health",
    "assess_idleness",
    "assess_rightsizing",
    "error_text",
    "join_samples",
    "mark_idle",
    "merge_answers",
    "parse_vector",
    "queries",
    "read_answer",
    "recording_rules",
    "samples_from_results",
    "url_problem",
]
