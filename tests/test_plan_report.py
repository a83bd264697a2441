"""``apportion plan``'s report: content of the HTML and Markdown, right-sizing from a
Prometheus export, and what headless Chromium actually draws (title, recommendation,
plots). Chromium is Debian's ``chromium``; without it the rendering test is skipped,
unless ``CI`` is set (``.ci/run`` installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image
from test_plan import CLUSTER as POOLS

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "plan"

# The two-pool cluster of test_plan.py, with two queues of its own.
CLUSTER = (
    POOLS
    + """queues:
  - {name: team-a, cohort: org, quota: {A100-80GB: {nominal: 4}, L4: {nominal: 4}}}
  - {name: team-c, cohort: org, quota: {A100-80GB: {nominal: 4}, L4: {nominal: 4}}}
"""
)

SECTIONS = (
    "SLO attainment",
    "Cost",
    "Node shapes and MIG layouts",
    "Over time",
    "Pareto front",
    "Quota advice",
    "Quota split per queue",
    "Right-sizing",
    "Inputs and assumptions",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plan")
    (tmp / "cluster.yaml").write_text(CLUSTER)
    rows = ["name,queue,submit,runtime,gpus,pods,priority,models"]
    for i in range(12):
        queue = "team-a" if i % 2 else "team-c"
        rows.append(f"j{i},{queue},{i * 300},1800,{(1, 2, 4)[i % 3]},1,{1000 * (i % 4 == 0)},")
    (tmp / "trace.csv").write_text("\n".join(rows) + "\n")
    done = subprocess.run(
        [
            sys.executable, "-m", "scheduler", "plan", str(tmp / "trace.csv"),
            "--cluster", str(tmp / "cluster.yaml"),
            "--slo", "team-a:p95_wait<=20m", "--slo", "priority>=1000:p99_wait<=5m",
            "--levels", "0.5,1,1.5", "--workers", "1", "--max-simulations", "8",
            "--growth", "1.5",
            "--metrics", str(FIXTURES / "metrics.json"),
            "--metrics-snapshot", str(FIXTURES / "running.yaml"),
            "--out", str(tmp / "out"), "--quiet",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(("Run ", "No candidate"))
    return tmp / "out"


def test_html_is_self_contained_with_every_section(report: Path) -> None:
    text = (report / "report.html").read_text()
    assert "<title>Capacity plan</title>" in text
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    # Plots are inline; nothing is fetched from anywhere.
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 5
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert 'id="recommendation"' in text


def test_markdown_has_the_same_content(report: Path) -> None:
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    assert [f"## {t}" for t in SECTIONS] == re.findall(r"^## .*$", md, re.M)
    summary = md.splitlines()[2]
    assert summary.startswith("Run ")
    assert html_escape(summary) in html
    for name in re.findall(r"\(plots/(\w+)\.png\)", md):
        assert (report / "plots" / f"{name}.png").stat().st_size > 1000


def test_recommendation_and_tables_are_consistent(report: Path) -> None:
    record = json.loads((report / "plan.json").read_text())
    v = record["verdict"]
    best = next(r for r in record["candidates"] if r["key"] == v["recommended"])
    assert all(best["evaluation"]["slo_met"])
    cheaper = [
        r
        for r in record["candidates"]
        if r["evaluation"] and r["cost_per_hour"] < best["cost_per_hour"]
    ]
    assert all(not all(r["evaluation"]["slo_met"]) for r in cheaper)
    md = (report / "report.md").read_text()
    assert f"${best['cost_per_hour']:,.0f}/h" in md.splitlines()[2]


def test_the_goal_ratio_is_explained_as_it_is_computed(report: Path) -> None:
    """The Pareto section said 'value ÷ target': for a goal of 0 s that is infinite, yet the
    table showed 2704 for a wait of 2703 s. Times get a second added to both
    (``Slo.ratio``), so a 0 s goal still ranks candidates by how long they wait."""
    md = (report / "report.md").read_text()
    assert "for waits and JCTs (value + 1 s) ÷ (target + 1 s), so a 0 s goal still ranks" in md


def test_what_happens_if_nothing_changes(report: Path) -> None:
    record = json.loads((report / "plan.json").read_text())
    assert record["today"]["label"] == "today"
    md = (report / "report.md").read_text()
    lines = [ln for ln in md.splitlines() if "today to" in ln]
    assert len(lines) == 2 and lines[0].startswith("- team-a: p95_wait goes from ")
    assert "with the planned demand" in lines[0]
    assert "grown ×1.5" in md


def test_quota_splits_are_simulated(report: Path) -> None:
    record = json.loads((report / "plan.json").read_text())
    found = record["quota_search"]
    assert found["candidate"] == record["verdict"]["recommended"]
    best = next(r for r in record["candidates"] if r["key"] == found["candidate"])
    # --max-simulations 8: two splits simulated (demand, then SLO-driven) beside today's.
    tried = [s["strategy"] for s in found["strategies"]]
    assert tried[:2] == ["scaled", "demand"] and len(tried) <= 3
    assert found["strategies"][0]["slo_values"] == best["evaluation"]["slo_values"]
    for split in found["strategies"]:
        # Every split hands out exactly the recommended cluster's capacity per flavor.
        for model, gpus in best["gpus"].items():
            assert sum(f.get(model, 0) for f in split["nominal"].values()) == gpus
    chosen = next(s for s in found["strategies"] if s["strategy"] == found["chosen"])
    md = (report / "report.md").read_text()
    assert f"Chosen: {chosen['strategy']} ({chosen['describe']})" in md
    for q, v in chosen["queues"].items():
        assert f"| {q} | " in md and f"{v['borrowed_gpu_hours']:,.0f}" in md
    # Right-sizing's "would fit" profiles are the layouts' hints, recorded for a merge.
    fits = {r["fits"].split(" on ")[0] for r in record["rightsizing"] if r["fits"]}
    assert fits and record["inputs"]["replay"]["hints"] == sorted(fits)
    # The report shows the node pools of the recommended cluster, shapes and layouts.
    for name, describe, n in best["nodes"]:
        (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {name} | {describe} |")]
        assert line.endswith(f"| {n} |")


def test_rightsizing_from_the_prometheus_export(report: Path) -> None:
    md = (report / "report.md").read_text()
    # team-c's notebooks peak at 9,000 MiB of 81,920: +10 % = 9,900 fits a 1g.10gb
    # (9,984 MiB usable), seven to an A100.
    row = "| team-c | A100-80GB | 2 | 81,920 | 9,000 | 10 % | 1g.10gb on A100-80GB |"
    assert row + " 7× as many per GPU |" in md


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + " — CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return found


def test_chromium_renders_title_recommendation_and_plots(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}", "--window-size=1280,2400",
            (report / "report.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pixels = image.imread(str(shot))[:, :, :3]
    assert pixels.shape[:2] == (2400, 1280)
    rgb = (pixels * 255).round().astype(int)

    def rows_with(color: tuple[int, int, int], tolerance: int = 6) -> np.ndarray:
        hit = (np.abs(rgb - np.array(color)) <= tolerance).all(axis=2)
        return np.flatnonzero(hit.sum(axis=1) > 0)

    # The title's teal rule and the recommendation's tinted box are drawn near the top.
    assert rows_with((0x2A, 0x9D, 0x8F)).min() < 150
    box = rows_with((0xEE, 0xF7, 0xF5), 2)
    assert len(box) > 30 and box.min() < 250
    # Dark text inside the box: the recommendation is not empty.
    inside = rgb[box.min() : box.max(), 150:1100]
    assert ((inside < 90).all(axis=2)).sum() > 500
    # The plots are drawn: matplotlib's first two line colours appear below the tables,
    # over many rows (a broken image would show nothing).
    blue = rows_with((0x1F, 0x77, 0xB4), 10)
    orange = rows_with((0xFF, 0x7F, 0x0E), 10)
    assert len(blue) > 100 and len(orange) > 50 and blue.min() > box.max()
    # Not a blank page: many distinct colours.
    assert len(np.unique(rgb.reshape(-1, 3)[::97], axis=0)) > 50


def test_merge_rerenders_a_plan_json_into_the_same_report(report: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "plan", "merge", str(report / "plan.json"),
         "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.md").read_text() == (report / "report.md").read_text()


def test_rightsizing_from_a_live_prometheus(tmp_path: Path) -> None:
    """The same table from a real Prometheus scraping the stand-in dcgm-exporter."""
    from fake_dcgm import DcgmExporter, FakeGpu
    from prometheus_process import PrometheusProcess, require_prometheus

    from sim.plan.rightsizing import query_prometheus, rightsizing_rows

    binary = require_prometheus()
    a100 = "NVIDIA A100-SXM4-80GB"
    gpus = [FakeGpu("gpu-a", i, util=0.9, fb_used=70_000, fb_free=11_000) for i in range(4)]
    gpus += [FakeGpu("gpu-b", i, a100, util=0.1, fb_used=9_000, fb_free=72_000) for i in (0, 1)]
    exporter = DcgmExporter(gpus)
    server = PrometheusProcess(binary, [exporter.target], tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = rightsizing_rows(query_prometheus(server.url), FIXTURES / "running.yaml")
            if len(rows) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        server.stop()
        exporter.close()
    team_c = next(r for r in rows if r["queue"] == "team-c")
    assert (team_c["used_peak_mib"], team_c["fits"]) == (9_000, "1g.10gb on A100-80GB")
    assert team_c["per_gpu"] == "7× as many per GPU"


def test_an_unreachable_prometheus_is_a_clear_error() -> None:
    from ports import refused_port

    with refused_port() as port:
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", "plan", "demo", "--metrics-url",
             f"http://127.0.0.1:{port}", "--metrics-snapshot", str(FIXTURES / "running.yaml")],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert "cannot query Prometheus at http://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_metrics_url_that_is_no_http_url_is_refused_up_front() -> None:
    """urllib's ValueError ('unknown url type', 'Invalid IPv6 URL') was a traceback, after
    the trace was loaded; the check is serve's --prometheus-url one, and a few more."""
    for url, problem in (
        ("notaurl", "must start with http:// or https://"),
        ("http://[::1", "an IPv6 address is written in brackets, both of them: "
         "http://[::1]:9090"),
        ("http://prometheus:90x0", "port '90x0' is not a number from 0 to 65535"),
        ("https://", "names no host"),
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", "plan", "no-such-trace.csv", "--metrics-url",
             url, "--metrics-snapshot", str(FIXTURES / "running.yaml"), "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), (url, done.stderr)
        assert done.stderr.endswith(
            f"apportion plan: error: argument --metrics-url: {url!r}: {problem}\n"
        )


@contextmanager
def _answering(body: bytes, status: int = 200) -> Iterator[str]:
    """A stand-in Prometheus answering every query with ``body``; its URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_live_answer_too_deep_is_refused_as_an_export_is() -> None:
    """The export file was read with the guarded parser, a live Prometheus's answers with
    json.loads: JSON nested 100,000 deep was a RecursionError traceback."""
    from sim.plan.rightsizing import RightsizingError, query_prometheus

    deep = b'{"status": "success", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body, problem in (
        (deep, "line 1 column 130: arrays and objects nested more than 100 deep"),
        (b"<html>proxy</html>", "line 1 column 1: not JSON (Expecting value)"),
        (b"\xff", "is not JSON (not UTF-8 text)"),
    ):
        with _answering(body) as url, pytest.raises(RightsizingError) as refused:
            query_prometheus(url)
        assert str(refused.value) == f"Prometheus at {url}: the util_gr answer {problem}"


def test_a_metric_out_of_its_range_or_an_export_of_no_query_is_refused(tmp_path: Path) -> None:
    """A GPU-utilization ratio of 250 (the metric is 0-1) was 'busy 25000 %', a
    framebuffer peak of 1e308 MiB was taken as used, and an export of none of the queries
    ({}) gave 'No metrics given' though --metrics was given."""
    from sim.plan.rightsizing import RightsizingError, rightsizing_rows

    path = tmp_path / "m.json"
    fixture = json.loads((FIXTURES / "metrics.json").read_text())

    def changed(query: str, row: int, value: str) -> dict[str, Any]:
        export = json.loads(json.dumps(fixture))
        export[query]["data"]["result"][row]["value"][1] = value
        return export

    gpu_util = {"util_gpu": {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"Hostname": "gpu-a", "gpu": "0"}, "value": [1, "150"]}]}}}  # fmt: skip
    for export, problem in (
        (changed("util_gr", 2, "250"), "util_gr: result[2].value: '250' is more than 1 "
         "(util_gr is a ratio from 0 to 1)"),
        (gpu_util, "util_gpu: result[0].value: '150' is more than 100 (util_gpu is a "
         "percentage from 0 to 100)"),
        (changed("fb_used_peak", 1, "1e308"), "fb_used_peak: 1e+308 MiB on gpu-a GPU 1 is "
         "more than its H100-80GB's 81,920 MiB (a reading in bytes, or of another GPU?)"),
        ({}, "none of Apportion's queries in it (util_gr, util_gpu, fb_used, fb_used_peak, "
         "fb_free, xid, dbe, row_remap_failure, temperature, power, sampled_at): an export "
         "maps each query name to Prometheus' answer to it"),
    ):  # fmt: skip
        path.write_text(json.dumps(export))
        with pytest.raises(RightsizingError) as refused:
            rightsizing_rows(path, FIXTURES / "running.yaml")
        assert str(refused.value) == f"{path}: {problem}"
    # The bounds themselves are readings.
    path.write_text(json.dumps(changed("util_gr", 2, "1")))
    assert rightsizing_rows(path, FIXTURES / "running.yaml")


def test_a_metrics_snapshot_without_metrics_is_refused() -> None:
    """--metrics-snapshot alone was ignored: the plan ran for minutes and wrote a report
    with no right-sizing, even when the file did not exist."""
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "plan", "demo", "--metrics-snapshot",
         "no-such-running.yaml", "--max-simulations", "1", "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "apportion plan: --metrics-snapshot needs --metrics (a file) or --metrics-url "
        "(a server): it is the running workloads their DCGM rows are joined to\n"
    )


def test_a_prometheus_error_answer_gives_prometheus_reason() -> None:
    """'answered 503 to the util_gr query' hid why: Prometheus' envelope says it."""
    from sim.plan.rightsizing import RightsizingError, query_prometheus

    body = b'{"status":"error","errorType":"unavailable","error":"too many queries"}'
    with _answering(body, status=503) as url, pytest.raises(RightsizingError) as refused:
        query_prometheus(url)
    assert str(refused.value).startswith(f"Prometheus at {url} answered HTTP 503 to the ")
    assert str(refused.value).endswith(" query: too many queries")


def test_a_metrics_export_too_deep_or_with_too_long_an_integer_is_named_where(
    tmp_path: Path,
) -> None:
    """json's RecursionError and int()'s 4,300-digit ValueError were a traceback."""
    from sim.plan.rightsizing import RightsizingError, rightsizing_rows

    export = tmp_path / "m.json"
    for text, problem in (
        ('{"fb_used_peak":\n ' + "[" * 100_000 + "]" * 100_000 + "}",
         "line 2 column 101: arrays and objects nested more than 100 deep"),
        ('{"sampled_at":\n ' + "1" * 5001 + "}",
         "line 2 column 2: an integer of 5,001 digits (at most 4,300)"),
    ):  # fmt: skip
        export.write_text(text)
        with pytest.raises(RightsizingError) as refused:
            rightsizing_rows(export, FIXTURES / "running.yaml")
        assert str(refused.value) == f"{export} {problem}"


def test_a_negative_metric_is_refused_at_its_row(tmp_path: Path) -> None:
    """fb_used_peak -5 MiB was taken as a workload using nothing, and advice built on it."""
    from sim.plan.rightsizing import RightsizingError, rightsizing_rows

    export = json.loads((FIXTURES / "metrics.json").read_text())
    export["fb_used_peak"]["data"]["result"][1]["value"][1] = "-5"
    path = tmp_path / "m.json"
    path.write_text(json.dumps(export))
    with pytest.raises(RightsizingError) as refused:
        rightsizing_rows(path, FIXTURES / "running.yaml")
    assert str(refused.value) == (
        f"{path}: fb_used_peak: result[1].value: '-5' is negative (a DCGM reading is never below 0)"
    )
    # The answers of a live Prometheus, a result list alone.
    answers = {"util_gr": [{"metric": {"Hostname": "n"}, "value": [1, "-0.5"]}]}
    with pytest.raises(RightsizingError) as refused:
        rightsizing_rows(answers, FIXTURES / "running.yaml")
    assert str(refused.value) == (
        "Prometheus' answers: util_gr: result[0].value: '-0.5' is negative (a DCGM reading is "
        "never below 0)"
    )
