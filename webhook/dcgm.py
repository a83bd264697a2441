"""The DCGM reader: dcgm-exporter series from Prometheus, judged by ``scheduler.telemetry``.

One refresh runs ``scheduler.telemetry.queries`` — one instant query per metric for the
whole fleet, never one per GPU — on the session prometheus-api-client configures (a few at
a time, on a small thread pool). Each query asks first for the series its recording rule
keeps and runs the raw PromQL only when that is absent; each answer is read on its worker
thread as it arrives; the queries no rule reads (``INFORMATIONAL``) are asked every few
refreshes only. The merged samples go with the snapshot to ``scheduler.telemetry.assess``.
The reader keeps what must survive between refreshes: the health state (so fatal events age
out after the quiet period), the GPU UUIDs learned and the last informational answers.

prometheus-api-client is synchronous: call ``refresh`` from a worker thread, or await
``refresh_async``, which does that. A refresh never raises for Prometheus trouble: an
unreachable, slow or failing Prometheus gives a report whose note says "missing" (or
"partial" when only some queries failed) and the decision proceeds on allocation data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from scheduler.collector import paused
from scheduler.fieldpaths import did_you_mean
from scheduler.model import Snapshot
from scheduler.telemetry import (
    INFORMATIONAL,
    Answer,
    HealthState,
    MetricQuery,
    MetricsFormatError,
    SeriesLabels,
    TelemetryReport,
    TelemetrySettings,
    assess,
    error_text,
    merge_answers,
    queries,
    read_answer,
    url_problem,
)
from scheduler.textfile import read_text

__all__ = ["MAX_PROMETHEUS_S", "DcgmReader", "PrometheusSettings", "telemetry_from_env"]


MAX_PROMETHEUS_S = 86_400
"""The longest query timeout or refresh interval: a day, past any use (a socket's timeout
past about 10^11 s is an OverflowError at every query)."""


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """Where and how to reach Prometheus. ``from_env`` reads them at the entry point."""

    url: str = "http://127.0.0.1:9090"
    """Base URL of the Prometheus HTTP API (``/api/v1/query`` is appended)."""
    bearer_token_file: str | None = None
    """File holding a bearer token (e.g. a service account token); re-read every refresh,
    so rotated tokens are picked up."""
    ca_file: str | None = None
    """PEM bundle to verify Prometheus' TLS certificate; None: the system's trust store."""
    timeout_s: float = 5.0
    """Per-query timeout (connect and read)."""
    refresh_interval_s: float = 30.0
    """How often the caller should refresh (the reader itself does not schedule)."""
    retries: int = 0
    """Retries per query on connection errors and 5xx answers; the next refresh is the
    usual retry, so a slow Prometheus does not hold up a decision."""
    parallel_queries: int = 8
    """Queries in flight at once. Recorded series cost Prometheus little, so all of a
    usual refresh's seven are sent together: Prometheus answers them on all its cores while
    the reader reads the first answers (median 2.0 s against 2.9 s with 4, on a loaded
    2-core machine)."""
    informational_every: int = 4
    """Ask for the queries no rule reads (``scheduler.telemetry.INFORMATIONAL``: framebuffer
    used and free now, temperature, power) at every Nth refresh only, and carry their last
    answers in between: four of eleven queries, a third of a refresh's rows. 1: every time."""
    recording_rules: bool = True
    """Ask for each query's recording-rule series first (``deploy/monitoring``,
    ``scheduler.telemetry.recording_rules``), falling back to the raw PromQL when absent.
    False: always the raw PromQL (saves one small query each where no rules are deployed)."""

    def __post_init__(self) -> None:
        problems = []
        if (why := url_problem(self.url)) is not None:
            problems.append(f"url: {self.url!r}: {why}")
        # NaN, infinity and 1e308 passed 'positive': every query then failed ('Invalid
        # value NaN', 'timestamp out of range'), and a refresh every infinity never came.
        for name, seconds in (
            ("timeout_s", self.timeout_s),
            ("refresh_interval_s", self.refresh_interval_s),
        ):
            if not 0 < seconds <= MAX_PROMETHEUS_S:
                problems.append(f"{name}: {seconds:g} must be above 0 and at most 86400 (a day)")
        if self.retries < 0:
            problems.append(f"retries: {self.retries} is negative")
        if self.informational_every < 1:
            problems.append(f"informational_every: {self.informational_every} must be at least 1")
        if self.parallel_queries < 1:
            problems.append(f"parallel_queries: {self.parallel_queries} must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrometheusSettings:
        """From ``APPORTION_PROMETHEUS_URL``, ``…_TOKEN_FILE``, ``…_CA_FILE``,
        ``…_TIMEOUT_S``, ``…_REFRESH_S``, ``…_RETRIES``, ``…_PARALLEL_QUERIES``,
        ``…_INFORMATIONAL_EVERY``, ``…_RECORDING_RULES`` (true/false); unset ones keep
        their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        fields: tuple[tuple[str, str, Callable[[str], object]], ...] = (
            ("APPORTION_PROMETHEUS_URL", "url", str),
            ("APPORTION_PROMETHEUS_TOKEN_FILE", "bearer_token_file", str),
            ("APPORTION_PROMETHEUS_CA_FILE", "ca_file", str),
            ("APPORTION_PROMETHEUS_TIMEOUT_S", "timeout_s", float),
            ("APPORTION_PROMETHEUS_REFRESH_S", "refresh_interval_s", float),
            ("APPORTION_PROMETHEUS_RETRIES", "retries", int),
            ("APPORTION_PROMETHEUS_PARALLEL_QUERIES", "parallel_queries", int),
            ("APPORTION_PROMETHEUS_INFORMATIONAL_EVERY", "informational_every", int),
            ("APPORTION_PROMETHEUS_RECORDING_RULES", "recording_rules", _switch),
        )
        for key, name, kind in fields:
            if env.get(key):
                try:
                    values[name] = kind(env[key])
                except ValueError as error:
                    what = (
                        str(error)
                        if kind is _switch
                        else ("is not a whole number" if kind is int else "is not a number")
                    )
                    raise ValueError(f"{key}: {env[key]!r} {what}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as error:  # each problem names its field: name its variable
            variables = {name: key for key, name, _ in fields}
            said = [
                f"{variables.get(field, field)}:{why}"
                for field, _, why in (p.partition(":") for p in str(error).split("; "))
            ]
            raise ValueError("; ".join(said)) from None


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_MATCHER = (
    r"""\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*"""
)
_SELECTOR = re.compile(rf"{_MATCHER}(,{_MATCHER})*\Z")


def telemetry_from_env(environ: Mapping[str, str] | None = None) -> TelemetrySettings:
    """The GPU-metrics rules ``apportion serve`` judges with, from ``APPORTION_DCGM_FATAL_XIDS``
    (codes, comma-separated), ``…_QUIET_PERIOD_S``, ``…_IDLE_THRESHOLD_PCT`` (5 = 5 % busy),
    ``…_IDLE_WINDOW_S``, ``…_STALENESS_S``, ``…_SERIES_SELECTOR`` (PromQL matchers,
    ``job="dcgm-exporter"``) and ``…_LABELS`` (``node=node,pod=pod_name``: the label each
    of ``SeriesLabels``' fields reads); unset ones keep their defaults. A live cluster's
    snapshot only counts a node's GPUs (``TelemetrySettings.indices_name_devices``).
    Raises ValueError naming the variable and why."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {"indices_name_devices": False}
    for key, name in (
        ("APPORTION_DCGM_QUIET_PERIOD_S", "quiet_period_s"),
        ("APPORTION_DCGM_IDLE_WINDOW_S", "idle_window_s"),
        ("APPORTION_DCGM_STALENESS_S", "staleness_s"),
    ):
        if text := env.get(key):
            if not (text.isascii() and text.isdigit() and 0 < int(text) <= 10**9):
                raise ValueError(f"{key}: {text!r} is not a whole number of seconds, 1 or more")
            values[name] = int(text)
    if text := env.get("APPORTION_DCGM_FATAL_XIDS"):
        codes = [c for c in re.split(r"[,\s]+", text) if c]
        bad = [c for c in codes if not (c.isascii() and c.isdigit() and 0 < int(c) < 10**6)]
        if bad or not codes:
            why = f"{bad[0]!r} is not an XID code" if bad else "names no XID code"
            raise ValueError(f"APPORTION_DCGM_FATAL_XIDS: {text!r}: {why} (e.g. 48,79,94)")
        values["fatal_xids"] = frozenset(int(c) for c in codes)
    if text := env.get("APPORTION_DCGM_IDLE_THRESHOLD_PCT"):
        try:
            percent = float(text.removesuffix("%"))
        except ValueError:
            percent = math.nan
        if not 0.1 <= percent <= 100:
            raise ValueError(
                f"APPORTION_DCGM_IDLE_THRESHOLD_PCT: {text!r} is not a percentage of the "
                "time busy from 0.1 to 100"
            )
        values["idle_threshold_milli"] = round(percent * 10)
    if text := env.get("APPORTION_DCGM_SERIES_SELECTOR"):
        if not _SELECTOR.match(text):
            raise ValueError(
                f"APPORTION_DCGM_SERIES_SELECTOR: {text!r} is not a list of PromQL label "
                'matchers (e.g. job="dcgm-exporter",cluster=~"gpu-.*")'
            )
        values["series_selector"] = text.strip()
    if text := env.get("APPORTION_DCGM_LABELS"):
        values["labels"] = _series_labels(text)
    return TelemetrySettings(**values)


def _series_labels(text: str) -> SeriesLabels:
    """``APPORTION_DCGM_LABELS``: ``field=label`` pairs over the defaults."""
    fields = [f.name for f in dataclasses.fields(SeriesLabels)]
    given: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",") if p.strip()):
        field_name, _, label = (part.strip() for part in pair.partition("="))
        if field_name not in fields:
            raise ValueError(
                f"APPORTION_DCGM_LABELS: {field_name!r} is not one of {', '.join(fields)}"
                f"{did_you_mean(field_name, fields)}"
            )
        if not _LABEL_NAME.match(label):
            raise ValueError(
                f"APPORTION_DCGM_LABELS: {pair!r}: {label!r} is not a Prometheus label name"
            )
        given[field_name] = label
    if not given:
        raise ValueError(f"APPORTION_DCGM_LABELS: {text!r} names no label (e.g. node=node)")
    return SeriesLabels(**given)


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError("is not true or false")


@dataclass(slots=True)
class _Fetched:
    results: dict[str, Answer] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)
    """Queries answered by their recording rule's series."""
    carried: dict[str, Answer] = field(default_factory=dict)
    """Answers of earlier refreshes to informational queries not asked this time."""
    failed: dict[str, str] = field(default_factory=dict)


class DcgmReader:
    """Refreshes GPU metrics for a snapshot. One instance per process; thread-safe."""

    def __init__(
        self,
        prometheus: PrometheusSettings | None = None,
        telemetry: TelemetrySettings | None = None,
    ) -> None:
        self.prometheus = prometheus or PrometheusSettings()
        self.telemetry = telemetry or telemetry_from_env({})
        self.queries: tuple[MetricQuery, ...] = queries(self.telemetry)
        session = requests.Session()
        session.verify = self.prometheus.ca_file or True
        self._session = session
        self._client = PrometheusConnect(
            url=self.prometheus.url.rstrip("/"),
            session=session,
            timeout=self.prometheus.timeout_s,
            retry=Retry(
                total=self.prometheus.retries,
                backoff_factor=0.2,
                status_forcelist=(502, 503, 504),
                allowed_methods=None,
                # The last 5xx answer is returned, not raised: its body says why (an
                # overloaded Prometheus answers 503 "too many queries").
                raise_on_status=False,
            ),
        )
        self._pool = ThreadPoolExecutor(
            max_workers=self.prometheus.parallel_queries, thread_name_prefix="dcgm-query"
        )
        self._lock = threading.Lock()
        self._health = HealthState()
        self._uuids: dict[str, tuple[str, int]] = {}
        self._carry_lock = threading.Lock()
        self._fetches = 0
        self._carried: dict[str, Answer] = {}
        """The last answers to the informational queries."""
        self.last: TelemetryReport | None = None
        """The latest report (for /metrics and annotations)."""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _headers(self) -> dict[str, str] | None:
        path = self.prometheus.bearer_token_file
        if path is None:
            return None
        try:
            token = read_text(Path(path)).strip()
        except OSError as err:
            raise _FetchError(f"cannot read bearer token file {path}: {err.strerror}") from None
        if not token:
            raise _FetchError(f"bearer token file {path} is empty")
        return {"Authorization": f"Bearer {token}"}

    def _get(self, promql: str, headers: dict[str, str] | None) -> object:
        """One instant query's decoded answer, or a one-line error message raised."""
        where = self.prometheus.url
        try:
            # The session PrometheusConnect configured (TLS, retries) carries the query;
            # the answer is decoded with orjson: 25 MB of JSON per 10,000-GPU refresh cost
            # ~1.5 s of the interpreter's time through ``custom_query``'s stdlib decoding.
            response = self._session.get(
                f"{self._client.url}/api/v1/query",
                params={"query": promql},
                headers=headers,
                timeout=self.prometheus.timeout_s,
            )
            if response.status_code != 200:
                text = error_text(response.content)
                raise _FetchError(
                    f"Prometheus at {where} answered HTTP {response.status_code}: {text}"
                )
            try:
                return orjson.loads(response.content)
            except orjson.JSONDecodeError as err:
                raise _FetchError(f"Prometheus at {where} sent invalid JSON: {err}") from None
        except requests.exceptions.Timeout:
            raise _FetchError(
                f"Prometheus at {where} did not answer within {self.prometheus.timeout_s:g} s"
            ) from None
        except requests.exceptions.SSLError as err:
            raise _FetchError(f"TLS to Prometheus at {where} failed: {err}") from None
        except requests.exceptions.ConnectionError as err:
            # With retries used up, urllib3 reports a read timeout as a connection error.
            reason = getattr(err.args[0], "reason", None) if err.args else None
            # (NewConnectionError, a refused connection, subclasses urllib3's TimeoutError.)
            timed_out = isinstance(reason, TimeoutError | urllib3.exceptions.TimeoutError)
            if timed_out and not isinstance(reason, urllib3.exceptions.NewConnectionError):
                raise _FetchError(
                    f"Prometheus at {where} did not answer within {self.prometheus.timeout_s:g} s"
                ) from None
            raise _FetchError(f"cannot reach Prometheus at {where}") from None
        except requests.exceptions.RequestException as err:
            raise _FetchError(f"request to Prometheus at {where} failed: {err}") from None

    def _query(self, query: MetricQuery, headers: dict[str, str] | None) -> tuple[Answer, bool]:
        """One metric's answer, read on this worker thread as soon as it arrives (reading
        is most of the parsing, and it overlaps the other queries still in Prometheus).

        The query asks for its recording rule's series first and runs the raw PromQL only
        when that series is absent (rules not deployed, or rendered for other settings)."""
        try:
            if query.record and self.prometheus.recording_rules:
                recorded = read_answer(query.name, self._get(query.record, headers), self.telemetry)
                if recorded.rows:
                    return recorded, True
            answer = read_answer(query.name, self._get(query.promql, headers), self.telemetry)
            return answer, False
        except MetricsFormatError as err:
            raise _FetchError(
                f"Prometheus at {self.prometheus.url}: unexpected answer: {err}"
            ) from None

    def fetch(self) -> _Fetched:
        """Run the queries of one refresh (a few in parallel): all of them, but the
        informational ones only every ``informational_every``-th time, their last answers
        carried in between. Never raises for Prometheus trouble."""
        fetched = _Fetched()
        try:
            headers = self._headers()
        except _FetchError as err:
            fetched.failed = {q.name: str(err) for q in self.queries}
            return fetched
        with self._carry_lock:
            due = self._fetches % self.prometheus.informational_every == 0
            self._fetches += 1
            carried = {} if due else dict(self._carried)
        # An informational answer missing since its last read (it failed, or was empty) is
        # asked again.
        asked = [q for q in self.queries if q.name not in carried]
        futures = {q.name: self._pool.submit(self._query, q, headers) for q in asked}
        for name, future in futures.items():
            try:
                fetched.results[name], recorded = future.result()
                if recorded:
                    fetched.recorded.add(name)
            except _FetchError as err:
                fetched.failed[name] = str(err)
        fetched.carried = carried
        fresh = {n: a for n, a in fetched.results.items() if n in INFORMATIONAL and a.rows}
        with self._carry_lock:
            if due:
                self._carried = fresh
            else:
                self._carried.update(fresh)
        return fetched

    def refresh(
        self, snapshot: Snapshot, pod_owner: Mapping[tuple[str, str], str] | None = None
    ) -> TelemetryReport:
        """Query Prometheus and judge the answers at ``snapshot.now``. Apply the result
        with ``report.apply(snapshot)``. ``pod_owner`` maps (namespace, pod) → workload."""
        # Reading and judging 10,000s of rows makes 100,000s of small objects: pause the
        # cyclic collector meanwhile (restored as it was), as the allocator does for a decision.
        with paused():
            fetched = self.fetch()
            fetch_error = None
            if not fetched.results:
                fetch_error = next(iter(fetched.failed.values()), "no queries")
            return self._judge(snapshot, fetched, fetch_error, pod_owner)

    def _judge(
        self,
        snapshot: Snapshot,
        fetched: _Fetched,
        fetch_error: str | None,
        pod_owner: Mapping[tuple[str, str], str] | None,
    ) -> TelemetryReport:
        with self._lock:
            batch = merge_answers(
                fetched.results.values(), self.telemetry, fetched.carried.values()
            )
            report = assess(
                snapshot,
                batch,
                self.telemetry,
                self._health,
                known_uuids=self._uuids,
                pod_owner=pod_owner,
                failed_queries=fetched.failed if fetch_error is None else None,
                fetch_error=fetch_error,
            )
            self._health = report.health_state
            self._uuids = dict(report.uuids)
            self.last = report
        return report

    async def refresh_async(
        self, snapshot: Snapshot, pod_owner: Mapping[tuple[str, str], str] | None = None
    ) -> TelemetryReport:
        """``refresh`` on a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(self.refresh, snapshot, pod_owner)


class _FetchError(Exception):
    """A query that could not be answered; the message is one line for the report."""
