"""Right-sizing from a Prometheus export (or a live Prometheus): per queue and flavor,
GPU memory offered against memory used, and the MIG slice that would hold it.

The export is one JSON object mapping each of Apportion's query names
(``scheduler.telemetry.queries``: ``fb_used_peak``, ``util_gr``, ``sampled_at``, …) to
Prometheus' instant-query answer; the snapshot names the running workloads and their
placements, so samples can be joined to queues. ``query_prometheus`` runs the same
queries against a live server (plain HTTP GETs of ``/api/v1/query``). The rules are the core's
(``scheduler.telemetry.assess_rightsizing``); this module only reads files.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.loading import SnapshotError, load_snapshot_text
from scheduler.model import Snapshot
from scheduler.telemetry import (
    JoinedRow,
    MetricsFormatError,
    TelemetrySettings,
    assess_rightsizing,
    error_text,
    join_samples,
    queries,
    samples_from_results,
    url_problem,
)
from scheduler.textfile import read_text
from sim.jsontext import JsonProblem, parse
from sim.rows import location

__all__ = ["RightsizingError", "query_prometheus", "rightsizing_rows"]


class RightsizingError(ValueError):
    """The metrics export or its snapshot cannot be read (message names file and problem)."""


def query_prometheus(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Run Apportion's DCGM queries against a live Prometheus: the same object an export
    file holds (one instant-query answer per query name)."""
    problem = url_problem(url)
    if problem is not None:  # urllib's ValueError was a traceback
        raise RightsizingError(f"--metrics-url {url!r}: {problem}")
    out: dict[str, Any] = {}
    base = url.rstrip("/")
    for q in queries(TelemetrySettings()):
        address = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': q.promql})}"
        try:
            with urllib.request.urlopen(address, timeout=timeout_s) as answer:
                body = answer.read()
        except urllib.error.HTTPError as error:
            raise RightsizingError(
                f"Prometheus at {url} answered HTTP {error.code} to the {q.name} query: "
                f"{error_text(error.read())}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RightsizingError(f"cannot query Prometheus at {url}: {reason}") from None
        except ValueError as error:  # http.client's InvalidURL, past url_problem's checks
            raise RightsizingError(f"cannot query Prometheus at {url}: {error}") from None
        # As an export file is read (``parse``): JSON nested 100,000 deep was a
        # RecursionError traceback here, refused there.
        try:
            text = body.decode("utf-8")
            out[q.name] = parse(text)
        except UnicodeDecodeError:
            raise RightsizingError(
                f"Prometheus at {url}: the {q.name} answer is not JSON (not UTF-8 text)"
            ) from None
        except JsonProblem as error:
            line, column = location(text, error.offset)
            raise RightsizingError(
                f"Prometheus at {url}: the {q.name} answer line {line} column {column}: "
                f"{error.said}"
            ) from None
    return out


def _check_memory(source: str, snapshot: Snapshot, rows: list[JoinedRow], catalog: Catalog) -> None:
    """Refuse a framebuffer reading past its GPU's memory (1e308 MiB was 'used' as is).
    Refused, not clamped: such a reading is in another unit or of another device, and
    clamped to the GPU it would read as a workload that needs all of it."""
    models = {(n.name, g.index): g.model for n in snapshot.nodes for g in n.gpus}
    for row in rows:
        model = catalog.get(models.get((row.node, row.gpu), ""))
        if model is None:
            continue
        for name, used in (("fb_used_peak", row.sample.fb_used_peak_mib),
                           ("fb_used", row.sample.fb_used_mib)):  # fmt: skip
            if used is not None and used > model.memory_mib:
                raise RightsizingError(
                    f"{source}: {name}: {used:g} MiB on {row.node} GPU {row.gpu} is more than "
                    f"its {model.name}'s {model.memory_mib:,} MiB (a reading in bytes, or of "
                    "another GPU?)"
                )


def rightsizing_rows(metrics: Path | dict[str, Any], snapshot_path: Path) -> list[dict[str, Any]]:
    """Rows of the report's right-sizing table from an export file (or the answers
    ``query_prometheus`` fetched) and the snapshot of the running workloads."""
    try:
        export = read_text(metrics) if isinstance(metrics, Path) else ""
        payload = parse(export) if isinstance(metrics, Path) else metrics
        text = read_text(snapshot_path)
    except OSError as error:
        raise RightsizingError(f"cannot read {error.filename}: {error.strerror}") from None
    except JsonProblem as error:
        line, column = location(export, error.offset)
        raise RightsizingError(f"{metrics} line {line} column {column}: {error.said}") from None
    source = str(metrics) if isinstance(metrics, Path) else "Prometheus' answers"
    if not isinstance(payload, dict):
        raise RightsizingError(f"{source}: expected an object of query name → answer")
    try:
        snapshot = load_snapshot_text(text, source=str(snapshot_path))
    except SnapshotError as error:
        raise RightsizingError(str(error)) from None
    settings = TelemetrySettings()
    names = [q.name for q in queries(settings)]
    if not any(name in payload for name in names):  # else "No metrics given" in the report
        raise RightsizingError(
            f"{source}: none of Apportion's queries in it ({', '.join(names)}): an export maps "
            "each query name to Prometheus' answer to it"
        )
    try:
        batch = samples_from_results(payload, settings)
    except MetricsFormatError as error:
        raise RightsizingError(f"{source}: {error}") from None
    if snapshot.now == 0:
        stamps = [s.sampled_at for s in batch.samples if s.sampled_at is not None]
        snapshot = snapshot.model_copy(update={"now": max(stamps, default=0)})
    joined = join_samples(snapshot, batch.samples)
    catalog = snapshot.catalog()
    _check_memory(source, snapshot, joined.rows, catalog)
    rows = []
    for c in assess_rightsizing(snapshot, joined.rows, settings):
        per_gpu = ""
        if c.fits is not None:
            profile_name, _, model_name = c.fits.partition(" on ")
            model = catalog[model_name]
            profile = model.mig_profile(profile_name)
            if profile is not None and model.mig_compute_slices:
                slots = model.mig_compute_slices // profile.compute_slices
                per_gpu = f"{slots}× as many per GPU"
        rows.append(
            {
                "queue": c.queue,
                "flavor": c.flavor,
                "workloads": c.workloads,
                "requested_mib": c.requested_mib,
                "used_peak_mib": c.used_peak_mib,
                "busy": "—" if c.util_mean_milli is None else f"{c.util_mean_milli / 10:.0f} %",
                "fits": c.fits,
                "per_gpu": per_gpu,
                "message": c.message,
            }
        )
    return rows
