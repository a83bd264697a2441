"""``webhook/preempting.py`` on its own: evictions answered as a script says (made, refused
by a PodDisruptionBudget, gone, or no answer), over the pods a cycle sees, and what is
told (Events) and counted (``apportion_preemptions_total``)."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes.client import ApiException
from urllib3.exceptions import ProtocolError

from scheduler.model import Demand, Eviction
from scheduler.reasons import Reason
from webhook.cluster import LiveCluster
from webhook.metrics import Metrics
from webhook.pods import ManagedPod
from webhook.preempting import LOST_EVICTION_S, Preemptor
from webhook.workers import Workers

LOW = "gpu-team-a/low"
VICTIM = Eviction(
    workload=LOW,
    queue="team-a",
    beneficiary="gpu-team-a/urgent",
    reason=Reason.PREEMPTED_PRIORITY,
    message="evicted for a higher priority",
)


class ScriptedApi:
    """Answers each pod's evictions in turn: "made", an HTTP status, or "lost" (no answer,
    carried out or not)."""

    def __init__(self, **answers: list[str | int]) -> None:
        self.answers = {name.replace("_", "-"): list(script) for name, script in answers.items()}

    def evict_pod(self, namespace: str, name: str) -> None:
        answer = self.answers[name].pop(0)
        if answer == "lost":
            raise ProtocolError("Connection aborted.")
        if isinstance(answer, int):
            raise ApiException(status=answer, reason="scripted")


def _pod(name: str, workload: str = LOW, leaving: bool = False) -> ManagedPod:
    metadata: dict[str, Any] = {"name": name, "namespace": "gpu-team-a", "uid": f"uid-{name}"}
    if leaving:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return ManagedPod(
        namespace="gpu-team-a",
        name=name,
        workload=workload,
        queue="team-a",
        demand=Demand(gpus=1),
        priority=0,
        created=0,
        gang_size=2,
        gated=False,
        node="gpu-node-a",
        raw={"metadata": metadata},
    )


class Run:
    """A Preemptor over a scripted API and a clock the test moves."""

    def __init__(self, api: ScriptedApi) -> None:
        self.now = 1_000_000.0
        cluster = LiveCluster(clock=lambda: self.now)
        self.metrics = Metrics(cluster)
        self.told: list[str] = []
        self.preemptor = Preemptor(
            api,  # type: ignore[arg-type]
            cluster,
            self.metrics,
            before_acting=lambda: None,
            patch=lambda *_: True,
            event=lambda raw, reason, *_: self.told.append(raw["metadata"]["name"]),
        )

    def cycle(self, *pods: ManagedPod, evict: bool = True) -> None:
        with Workers(1, threading.Event(), leading=lambda: True) as workers:
            evictions = [VICTIM] if evict else []
            self.preemptor.carry_out(workers, evictions, {LOW: list(pods)} if pods else {})

    @property
    def counted(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "apportion_preemptions_total", {"queue": "team-a"}
        )
        return value or 0


def test_a_gang_pod_gone_beside_one_a_disruption_budget_holds_is_told_and_counted_once() -> None:
    # Was: low-1's eviction got no answer (made) beside low-0's 429. Seen still running,
    # low-1 was evicted again: 404, a failure, and forgotten untold; once low-1 was gone
    # nothing recalled that the victim was counted, and low-0's eviction counted it again.
    run = Run(ScriptedApi(low_0=[429, 429, "made"], low_1=["lost", 404]))
    run.cycle(_pod("low-0"), _pod("low-1"))
    assert (run.told, run.counted) == ([], 0)  # not seen made yet
    run.cycle(_pod("low-0"), _pod("low-1"))  # the watch has not shown low-1 leave
    assert (run.told, run.counted) == (["low-1"], 1)
    run.cycle(_pod("low-0"))
    run.cycle(_pod("low-0", leaving=True))
    assert (run.told, run.counted) == (["low-1", "low-0"], 1)
    failures = run.metrics.registry.get_sample_value
    assert failures("apportion_api_failures_total", {"action": "evict", "code": "404"}) is None


def test_an_eviction_without_an_answer_counts_once_its_victim_is_seen_leaving() -> None:
    run = Run(ScriptedApi(low_0=["lost"], low_1=["made"]))
    run.cycle(_pod("low-0"), _pod("low-1"))
    assert (run.told, run.counted) == (["low-1"], 1)
    run.cycle(_pod("low-0", leaving=True), _pod("low-1", leaving=True))
    run.cycle(_pod("low-0", leaving=True), evict=False)
    assert (run.told, run.counted) == (["low-1", "low-0"], 1)


def test_an_eviction_without_an_answer_not_seen_made_in_time_is_never_counted() -> None:
    run = Run(ScriptedApi(low_0=["lost"], low_1=["lost"]))
    run.cycle(_pod("low-0"), _pod("low-1"))
    run.now += LOST_EVICTION_S / 2
    run.cycle(_pod("low-0"), _pod("low-1"), evict=False)  # decided otherwise
    run.now += LOST_EVICTION_S
    run.cycle(_pod("low-0"), _pod("low-1"), evict=False)
    run.cycle(evict=False)  # both ended on their own
    assert (run.told, run.counted) == ([], 0)
