"""deploy/monitoring: the alerts and the dashboard use only the metrics deploy/README.md
promises (the contract for webhook/'s /metrics), with their labels, and the alerts fire
when they should (promtool's rule unit tests on synthetic series)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from manifests import DEPLOY, one, rendered

README = DEPLOY / "README.md"
MONITORING = DEPLOY / "monitoring"
_ROW = re.compile(r"^\|\s*`((?:apportion|process)_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", re.MULTILINE)
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": (), "gauge": ()}
# Labels Prometheus gives every series of a scrape target (the ServiceMonitor's), and
# series that are not Apportion's own: the scrape's `up`, and the API server's count of
# webhook calls it failed to make (kube-apiserver's /metrics).
_TARGET = {"job", "namespace", "instance"}
_FOREIGN = {
    "up": _TARGET,
    "apiserver_admission_webhook_rejection_count": {
        "name",
        "type",
        "operation",
        "error_type",
        "rejection_code",
    },
}


def documented() -> dict[str, set[str]]:
    """Metric (with its histogram series) → labels, from the table in deploy/README.md."""
    metrics: dict[str, set[str]] = {}
    for name, kind, labels in _ROW.findall(README.read_text(encoding="utf-8")):
        names = set(re.findall(r"`(\w+)`", labels))
        series = [name + s for s in _SUFFIXES[kind]] or [name]
        for s in series:
            metrics[s] = names | ({"le"} if s.endswith("_bucket") else set())
    return metrics


def rules() -> list[dict]:
    rule = one(rendered(MONITORING), "PrometheusRule", "apportion")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def expressions() -> list[tuple[str, str]]:
    found = [(f"alert {r['alert']}", r["expr"]) for r in rules()]
    dashboard = json.loads((MONITORING / "apportion-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        found += [(f"panel {panel['title']!r}", t["expr"]) for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(metric, label) is the same check as metric{label=~".+"}
            query = re.sub(
                r"label_values\((\w+),\s*(\w+)\)", r'\1{\2=~".+"}', variable["definition"]
            )
            found.append((f"variable {variable['name']}", query))
    return found


_SELECTOR = re.compile(r"\b([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
_LABEL_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_FUNCTIONS_AND_KEYWORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "rate",
    "increase",
    "histogram_quantile",
    "absent",
    "by",
    "on",
    "and",
    "or",
    "unless",
    "without",
    "ignoring",
    "label_values",
    "count",
}


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", without_strings)
    without_groups = _GROUPING.sub("", without_labels)
    names = set(re.findall(r"\b([a-zA-Z_:][\w:]*)\b", without_groups))
    return {n for n in names if n not in _FUNCTIONS_AND_KEYWORDS and not n[0].isdigit()}


def test_the_readme_documents_the_metrics():
    metrics = documented()
    for name in (
        "apportion_admission_duration_seconds_bucket",
        "apportion_decisions_total",
        "apportion_queue_pending_workloads",
        "apportion_unhealthy_gpus",
    ):
        assert name in metrics
    assert metrics["apportion_admission_duration_seconds_count"] == {"endpoint", "outcome"}


@pytest.mark.parametrize(("where", "expr"), expressions(), ids=lambda v: v[:60])
def test_expressions_use_only_documented_metrics_and_labels(where, expr):
    metrics = {name: labels | _TARGET for name, labels in documented().items()} | _FOREIGN
    used = metric_names(expr)
    assert used, f"{where}: no metric found in {expr!r}"
    assert used <= metrics.keys(), f"{where}: undocumented {sorted(used - metrics.keys())}"
    allowed = set().union(*(metrics[m] for m in used))
    for metric, matchers in _SELECTOR.findall(expr):
        if metric in metrics:
            labels = set(_LABEL_MATCHER.findall(matchers))
            assert labels <= metrics[metric], f"{where}: {metric} has no {labels - metrics[metric]}"
    for grouping in _GROUPING.findall(expr):
        labels = {g.strip() for g in grouping.split(",") if g.strip()}
        assert labels <= allowed, f"{where}: grouping by unknown {labels - allowed}"


def test_every_documented_metric_is_on_the_dashboard_or_in_an_alert():
    used = set().union(*(metric_names(expr) for _, expr in expressions()))
    base = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    for name in documented():
        assert name in used or re.sub(r"_(bucket|count|sum)$", "", name) in base, name


def test_servicemonitor_scrapes_the_services_metrics_port():
    monitor = one(rendered(MONITORING), "ServiceMonitor", "apportion")
    service = one(rendered(DEPLOY / "overlays" / "kubernetes"), "Service", "apportion-webhook")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert endpoint["scheme"] == "http", "the metrics port is the plain-HTTP probe port"


def test_the_dashboard_configmap_holds_the_dashboard():
    configmap = one(rendered(MONITORING), "ConfigMap", "apportion-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["apportion-dashboard.json"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("pending", "share", "wait", "latency", "idle"):
        assert topic in titles, topic


# --- promtool: the rules parse, and fire on the right series ---------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return found


def _write_rules(path: Path, with_annotations: bool) -> None:
    groups = one(rendered(MONITORING), "PrometheusRule", "apportion")["spec"]["groups"]
    if not with_annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}))


def test_promtool_checks_the_rules(tmp_path):
    _write_rules(tmp_path / "rules.yaml", with_annotations=True)
    result = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Synthetic series, one scenario per alert and one where it must stay quiet. Annotations are
# left out of this copy of the rules (checked above): the scenarios test when alerts fire.
RULE_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # team-a: below nominal, waiting 33+ minutes: starving. team-b: waits as long, at nominal.
      # team-c: below nominal, waiting 5 minutes.
      - {series: 'apportion_oldest_pending_seconds{queue="team-a"}', values: '2000+60x30'}
      - series: 'apportion_oldest_pending_seconds{queue="team-a",flavor="H100-80GB"}'
        values: '2000+60x30'
      - {series: 'apportion_queue_usage_gpus{queue="team-a",flavor="H100-80GB"}', values: '4x30'}
      - {series: 'apportion_queue_nominal_gpus{queue="team-a",flavor="H100-80GB"}', values: '8x30'}
      - {series: 'apportion_oldest_pending_seconds{queue="team-b"}', values: '2000+60x30'}
      - series: 'apportion_oldest_pending_seconds{queue="team-b",flavor="A100-80GB"}'
        values: '2000+60x30'
      - {series: 'apportion_queue_usage_gpus{queue="team-b",flavor="A100-80GB"}', values: '8x30'}
      - {series: 'apportion_queue_nominal_gpus{queue="team-b",flavor="A100-80GB"}', values: '8x30'}
      - {series: 'apportion_oldest_pending_seconds{queue="team-c"}', values: '300x30'}
      - {series: 'apportion_oldest_pending_seconds{queue="team-c",flavor="L40S"}', values: '300x30'}
      - {series: 'apportion_queue_usage_gpus{queue="team-c",flavor="L40S"}', values: '0x30'}
      - {series: 'apportion_queue_nominal_gpus{queue="team-c",flavor="L40S"}', values: '4x30'}
      # team-d: over nominal on H100 (borrowing) and under on MIG, with only H100 work
      # waiting: not starving, though its GPUs and MIG instances together (10) are below
      # its quotas together (22).
      - {series: 'apportion_oldest_pending_seconds{queue="team-d"}', values: '2000+60x30'}
      - series: 'apportion_oldest_pending_seconds{queue="team-d",flavor="H100-80GB"}'
        values: '2000+60x30'
      - series: 'apportion_oldest_pending_seconds{queue="team-d",flavor="mig-3g.40gb"}'
        values: '0x30'
      - {series: 'apportion_queue_usage_gpus{queue="team-d",flavor="H100-80GB"}', values: '10x30'}
      - {series: 'apportion_queue_nominal_gpus{queue="team-d",flavor="H100-80GB"}', values: '8x30'}
      - {series: 'apportion_queue_usage_gpus{queue="team-d",flavor="mig-3g.40gb"}', values: '0x30'}
      - series: 'apportion_queue_nominal_gpus{queue="team-d",flavor="mig-3g.40gb"}'
        values: '14x30'
      # team-e: under nominal on H100 with H100 work waiting 33+ minutes, far over on MIG:
      # starving on H100, though together (22) it is above its quotas (12).
      - {series: 'apportion_oldest_pending_seconds{queue="team-e"}', values: '2000+60x30'}
      - series: 'apportion_oldest_pending_seconds{queue="team-e",flavor="H100-80GB"}'
        values: '2000+60x30'
      - series: 'apportion_oldest_pending_seconds{queue="team-e",flavor="mig-3g.40gb"}'
        values: '0x30'
      - {series: 'apportion_queue_usage_gpus{queue="team-e",flavor="H100-80GB"}', values: '2x30'}
      - {series: 'apportion_queue_nominal_gpus{queue="team-e",flavor="H100-80GB"}', values: '8x30'}
      - {series: 'apportion_queue_usage_gpus{queue="team-e",flavor="mig-3g.40gb"}', values: '20x30'}
      - series: 'apportion_queue_nominal_gpus{queue="team-e",flavor="mig-3g.40gb"}'
        values: '4x30'
      - {series: 'apportion_unhealthy_gpus{node="gpu-a"}', values: '1x30'}
      - {series: 'apportion_unhealthy_gpus{node="gpu-b"}', values: '0x30'}
      # team-a: two pods reported stuck from minute 5; team-b: none.
      - {series: 'apportion_stuck_pods{queue="team-a"}', values: '_x5 2x25'}
      - {series: 'up{job="apportion-webhook",namespace="apportion-system",instance="a:8080"}',
         values: '1x30'}
      - series: 'apportion_cluster_synced{job="apportion-webhook",namespace="apportion-system",
          instance="a:8080"}'
        values: '1x30'
      # The API server called the mutating webhook without failing.
      - series: 'apiserver_admission_webhook_rejection_count{name="mutate.pods.apportion.io",
          type="admit",operation="CREATE",error_type="no_error",rejection_code="403"}'
        values: '0+1x30'
      # Evictions refused by a PodDisruptionBudget every minute from minute 5; one conflict
      # on a patch at minute 10, retried with success.
      - {series: 'apportion_api_failures_total{action="evict",code="429"}', values: '0x5 1+1x25'}
      - {series: 'apportion_api_failures_total{action="patch",code="409"}', values: '0x10 1x20'}
      # Replica a holds 1.2 GB of its 2 GiB limit, past half; b 0.6 GB. Resident memory
      # without a known limit (c: none set, or not Linux) is no alert.
      - {series: 'process_resident_memory_bytes{job="apportion-webhook",instance="a:8080"}',
         values: '1200000000x30'}
      - {series: 'apportion_memory_limit_bytes{job="apportion-webhook",instance="a:8080"}',
         values: '2147483648x30'}
      - {series: 'process_resident_memory_bytes{job="apportion-webhook",instance="b:8080"}',
         values: '600000000x30'}
      - {series: 'apportion_memory_limit_bytes{job="apportion-webhook",instance="b:8080"}',
         values: '2147483648x30'}
      - {series: 'process_resident_memory_bytes{job="apportion-webhook",instance="c:8080"}',
         values: '3000000000x30'}
      # /mutate: 100 reviews a minute, 10 of them errors; /validate: no errors.
      - series: 'apportion_admission_duration_seconds_count{endpoint="mutate",outcome="error"}'
        values: '0+10x30'
      - series: 'apportion_admission_duration_seconds_count{endpoint="mutate",outcome="allowed"}'
        values: '0+90x30'
      - series: 'apportion_admission_duration_seconds_count{endpoint="validate",outcome="allowed"}'
        values: '0+100x30'
      # /mutate answers in 2.5 to 5 s; /validate within 10 ms.
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="mutate",le="0.01"}',
         values: '0x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="mutate",le="1"}',
         values: '0x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="mutate",le="2.5"}',
         values: '0x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="mutate",le="5"}',
         values: '0+100x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="mutate",le="+Inf"}',
         values: '0+100x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="validate",le="0.01"}',
         values: '0+100x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="validate",le="1"}',
         values: '0+100x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="validate",le="2.5"}',
         values: '0+100x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="validate",le="5"}',
         values: '0+100x30'}
      - {series: 'apportion_admission_duration_seconds_bucket{endpoint="validate",le="+Inf"}',
         values: '0+100x30'}
    alert_rule_test:
      - eval_time: 20m
        alertname: ApportionQueueStarving
        exp_alerts:
          - {exp_labels: {severity: warning, queue: team-a, flavor: H100-80GB}}
          - {exp_labels: {severity: warning, queue: team-e, flavor: H100-80GB}}
      - eval_time: 20m
        alertname: ApportionUnhealthyGpus
        exp_alerts: [{exp_labels: {severity: warning, node: gpu-a}}]
      - eval_time: 20m
        alertname: ApportionAdmissionErrors
        exp_alerts: [{exp_labels: {severity: warning, endpoint: mutate}}]
      - eval_time: 20m
        alertname: ApportionAdmissionLatencyHigh
        exp_alerts: [{exp_labels: {severity: warning, endpoint: mutate}}]
      - eval_time: 20m
        alertname: ApportionWebhookDown
        exp_alerts: []
      - eval_time: 20m
        alertname: ApportionWebhookUnreachable
        exp_alerts: []
      - eval_time: 5m
        alertname: ApportionQueueStarving
        exp_alerts: []
      - eval_time: 15m
        alertname: ApportionPodsStuck
        exp_alerts: []
      - eval_time: 25m
        alertname: ApportionPodsStuck
        exp_alerts: [{exp_labels: {severity: warning, queue: team-a}}]
      - eval_time: 10m
        alertname: ApportionReplicaMemoryHigh
        exp_alerts: []
      - eval_time: 20m
        alertname: ApportionReplicaMemoryHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: apportion-webhook, instance: "a:8080"}
      - eval_time: 15m
        alertname: ApportionApiFailures
        exp_alerts: []
      - eval_time: 25m
        alertname: ApportionApiFailures
        exp_alerts: [{exp_labels: {severity: warning, action: evict, code: "429"}}]
  - interval: 1m
    input_series:
      - {series: 'up{job="apportion-webhook",namespace="apportion-system"}', values: '0x10'}
    alert_rule_test:
      - eval_time: 3m
        alertname: ApportionWebhookDown
        exp_alerts: []
      - eval_time: 8m
        alertname: ApportionWebhookDown
        exp_alerts: [{exp_labels: {severity: critical}}]
  # Both replicas run and are scraped, but never list the cluster (RBAC missing, API server
  # unreachable): not ready, so the Service sends the API server's calls nowhere.
  - interval: 1m
    input_series:
      - {series: 'up{job="apportion-webhook",namespace="apportion-system",instance="a:8080"}',
         values: '1x10'}
      - {series: 'up{job="apportion-webhook",namespace="apportion-system",instance="b:8080"}',
         values: '1x10'}
      - series: 'apportion_cluster_synced{job="apportion-webhook",namespace="apportion-system",
          instance="a:8080"}'
        values: '0x10'
      - series: 'apportion_cluster_synced{job="apportion-webhook",namespace="apportion-system",
          instance="b:8080"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: ApportionWebhookDown
        exp_alerts: []
      - eval_time: 8m
        alertname: ApportionWebhookDown
        exp_alerts: [{exp_labels: {severity: critical}}]
  # One replica ready, the other still listing: the webhook answers.
  - interval: 1m
    input_series:
      - {series: 'up{job="apportion-webhook",namespace="apportion-system",instance="a:8080"}',
         values: '1x10'}
      - {series: 'up{job="apportion-webhook",namespace="apportion-system",instance="b:8080"}',
         values: '1x10'}
      - series: 'apportion_cluster_synced{job="apportion-webhook",namespace="apportion-system",
          instance="a:8080"}'
        values: '1x10'
      - series: 'apportion_cluster_synced{job="apportion-webhook",namespace="apportion-system",
          instance="b:8080"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 8m
        alertname: ApportionWebhookDown
        exp_alerts: []
  # Replicas ready, but the API server's calls fail (a caBundle that does not match the
  # serving certificate): two rejected pods a minute from minute 2.
  - interval: 1m
    input_series:
      - {series: 'up{job="apportion-webhook",namespace="apportion-system",instance="a:8080"}',
         values: '1x15'}
      - series: 'apportion_cluster_synced{job="apportion-webhook",namespace="apportion-system",
          instance="a:8080"}'
        values: '1x15'
      - series: 'apiserver_admission_webhook_rejection_count{name="mutate.pods.apportion.io",
          type="admit",operation="CREATE",error_type="calling_webhook_error",rejection_code="500"}'
        values: '0x2 2+2x13'
    alert_rule_test:
      - eval_time: 5m
        alertname: ApportionWebhookUnreachable
        exp_alerts: []
      - eval_time: 10m
        alertname: ApportionWebhookUnreachable
        exp_alerts: [{exp_labels: {severity: critical, name: mutate.pods.apportion.io}}]
      - eval_time: 10m
        alertname: ApportionWebhookDown
        exp_alerts: []
"""


def test_alerts_fire_on_the_right_series(tmp_path):
    _write_rules(tmp_path / "rules.yaml", with_annotations=False)
    (tmp_path / "tests.yaml").write_text(RULE_TESTS)
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "tests.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- two replicas: each exports the same view of the cluster ---------------------------------

# Gauges every replica computes from its own copy of the cluster state (webhook/metrics.py:
# the queue collector and the GPU-metrics report), so two replicas export each value twice;
# and apportion_stuck_pods, the leader's report. Counters and histograms count what one
# replica did, and add up across replicas.
ONE_REPLICA = {
    'apportion_queue_pending_workloads{queue="team-a"}': 3,
    'apportion_oldest_pending_seconds{queue="team-a"}': 2000,
    'apportion_oldest_pending_seconds{queue="team-a",flavor="H100-80GB"}': 2000,
    'apportion_oldest_pending_seconds{queue="team-a",flavor="mig-3g.40gb"}': 0,
    'apportion_queue_usage_gpus{queue="team-a",flavor="H100-80GB"}': 4,
    'apportion_queue_usage_gpus{queue="team-a",flavor="mig-3g.40gb"}': 2,
    'apportion_queue_nominal_gpus{queue="team-a",flavor="H100-80GB"}': 8,
    'apportion_queue_nominal_gpus{queue="team-a",flavor="mig-3g.40gb"}': 4,
    'apportion_queue_weighted_share{queue="team-a"}': 0.5,
    'apportion_idle_gpus{queue="team-a"}': 1,
    'apportion_unhealthy_gpus{node="gpu-a",reason="xid"}': 1,
    'apportion_unhealthy_gpus{node="gpu-a",reason="ecc"}': 1,
    'apportion_stuck_pods{queue="team-a"}': 2,
    'apportion_gpu_metrics_status{status="fresh"}': 1,
    'apportion_gpu_metrics_status{status="stale"}': 0,
    "apportion_gpu_metrics_age_seconds": 30,
    "apportion_gpu_metrics_unknown_gpus": 0,
    "apportion_gpu_metrics_unmatched_pods": 0,
}
REPLICATED = {name.partition("{")[0] for name in ONE_REPLICA}
# What each expression shows for ONE_REPLICA, in the order of the panel's targets: the same
# answer whether one replica or two are scraped.
ONE_ANSWER = {
    "panel 'Pending workloads'": [['{queue="team-a"} 3']],
    "panel 'Oldest pending wait'": [['{queue="team-a"} 2000']],
    "panel 'GPUs in use vs nominal quota'": [['{queue="team-a"} 6'], ['{queue="team-a"} 12']],
    "panel 'Weighted share'": [['{queue="team-a"} 0.5']],
    "panel 'Usage by flavor'": [
        ['{queue="team-a",flavor="H100-80GB"} 4', '{queue="team-a",flavor="mig-3g.40gb"} 2']
    ],
    "panel 'Idle allocated GPUs'": [['{queue="team-a"} 1']],
    "panel 'Unhealthy GPUs'": [["{} 2"]],
    "panel 'Unhealthy GPUs by node'": [['{node="gpu-a"} 2']],
    "panel 'GPU metrics'": [['{status="fresh"} 1'], ["{} 0"], ["{} 0"]],
    "panel 'GPU metrics age'": [["{} 30"]],
    "alert ApportionQueueStarving": [['{queue="team-a",flavor="H100-80GB"} 2000']],
    "alert ApportionUnhealthyGpus": [['{node="gpu-a"} 2']],
    "alert ApportionPodsStuck": [['{queue="team-a"} 2']],
}


def _replica(series: str, pod: str) -> str:
    labels = f'instance="{pod}:8080",pod="{pod}",job="apportion-webhook"'
    name, _, rest = series.partition("{")
    return f"{name}{{{labels}{',' + rest if rest else '}'}"


def test_expressions_count_each_value_once_with_two_replicas(tmp_path):
    replicated: dict[str, list[str]] = {}
    for where, expr in expressions():
        if not where.startswith("variable") and metric_names(expr) & REPLICATED:
            replicated.setdefault(where, []).append(expr.replace("$queue", ".+"))
    assert replicated.keys() == ONE_ANSWER.keys(), "an expression without its answer here"
    tests = []
    for where, exprs in replicated.items():
        for expr, samples in zip(exprs, ONE_ANSWER[where], strict=True):
            expected = []
            for sample in samples:
                labels, _, value = sample.rpartition(" ")
                expected.append({"labels": labels, "value": float(value)})
            tests.append({"expr": expr, "eval_time": "5m", "exp_samples": expected})
    series = [
        {"series": _replica(name, pod), "values": f"{value}x10"}
        for name, value in ONE_REPLICA.items()
        for pod in ("apportion-7d9f-a", "apportion-7d9f-b")
    ]
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    suite = {
        "rule_files": ["empty.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite))
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "tests.yaml")],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# --- the DCGM reader's recording rules ---------------------------------------------------------


def test_dcgm_recording_rules_are_the_readers_for_the_default_settings():
    """The shipped rules record exactly what the reader asks for first (and with the
    defaults' window and labels), so a refresh reads stored series."""
    from scheduler.telemetry import TelemetrySettings, queries, recording_rules

    rule = one(rendered(MONITORING), "PrometheusRule", "apportion-dcgm")
    [group] = rule["spec"]["groups"]
    shipped = [(r["record"], r["expr"]) for r in group["rules"]]
    assert shipped == list(recording_rules(TelemetrySettings()))
    assert [r for r, _ in shipped] == [q.record for q in queries(TelemetrySettings())]
    assert group["interval"] == "15s"


def test_promtool_checks_the_dcgm_recording_rules(tmp_path):
    groups = one(rendered(MONITORING), "PrometheusRule", "apportion-dcgm")["spec"]["groups"]
    (tmp_path / "dcgm.yaml").write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "dcgm.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout
