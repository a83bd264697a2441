"""``webhook/preempting.py`` on its own: evictions answered as a script says (made, refused
by a PodDisruptionBudget, gone, or no answer), over the pods a cycle sees, and what is
told (Events) and counted (``apportion_preemptions_total``)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from kubernetes.client import ApiException
from urllib3.exceptions import ProtocolError

from scheduler.model import Demand, Eviction
from scheduler.reasons import Reason
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.metrics import Metrics
from webhook.pods import EvictionMark, ManagedPod, parse_eviction_mark
from webhook.preempting import LOST_EVICTION_S, NOMINATION_S, Preemptor, told, under_way
from webhook.workers import Workers

LOW = "gpu-team-a/low"
VICTIM = Eviction(
    workload=LOW,
    queue="team-a",
    beneficiary="gpu-team-a/urgent",
    reason=Reason.PREEMPTED_PRIORITY,
    message="preempted by gpu-team-a/urgent (priority 1000 > 0) in queue team-a",
)
TOLD = (
    "PreemptedByHigherPriority: preempted by gpu-team-a/urgent (priority 1000 > 0) in queue team-a"
)
"""What VICTIM's pods are told: the machine reason, the core's message with its numbers,
naming whom they make room for."""


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
        self.events: list[tuple[str, str, str, str]] = []
        """(pod, reason, message, type) of each Event."""
        self.marks: list[Any] = []
        self.preemptor = Preemptor(
            api,  # type: ignore[arg-type]
            cluster,
            self.metrics,
            before_acting=lambda: None,
            patch=lambda *_: True,
            event=self._event,
        )

    def _event(self, raw: dict[str, Any], reason: str, message: str, kind: str) -> None:
        self.told.append(raw["metadata"]["name"])
        self.events.append((raw["metadata"]["name"], reason, message, kind))

    def cycle(self, *pods: ManagedPod, evict: bool = True, eviction: Eviction = VICTIM) -> None:
        with Workers(1, threading.Event(), leading=lambda: True) as workers:
            evictions = [eviction] if evict else []
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


# ---- a victim of several pods is marked before its first eviction (evicted-for) -----------


class Ordered(ScriptedApi):
    """A scripted API that also logs each eviction, in one log with the marks."""

    def __init__(self, log: list[tuple[str, str]], **answers: list[str | int]) -> None:
        super().__init__(**answers)
        self.log = log

    def evict_pod(self, namespace: str, name: str) -> None:
        self.log.append(("evict", name))
        super().evict_pod(namespace, name)


def _marking(log: list[tuple[str, str]], refuse: frozenset[str] = frozenset()) -> Run:
    """A run whose pod patches are logged (the mark's value) and refused for ``refuse``."""
    run = Run(Ordered(log, low_0=["made"] * 3, low_1=["made"] * 3))

    def patch(pod: ManagedPod, operations: list[dict[str, Any]], doing: str) -> bool:
        log.append(("mark", pod.name))
        run.marks.extend(op["value"] for op in operations)
        return pod.name not in refuse

    run.preemptor.patch = patch
    return run


def _mark_value(value: Any) -> EvictionMark | None:
    text = value.get(keys.ANNOTATION_EVICTED_FOR) if isinstance(value, dict) else value
    return parse_eviction_mark(text)


def test_every_pod_of_a_gang_victim_is_marked_before_its_first_eviction() -> None:
    log: list[tuple[str, str]] = []
    run = _marking(log)
    run.cycle(_pod("low-0"), _pod("low-1"))
    assert log == [("mark", "low-0"), ("mark", "low-1"), ("evict", "low-0"), ("evict", "low-1")]
    until = int(run.now) + NOMINATION_S
    expected = EvictionMark("gpu-team-a/urgent", Reason.PREEMPTED_PRIORITY, until)
    assert [_mark_value(v) for v in run.marks] == [expected, expected]
    assert (run.told, run.counted) == (["low-0", "low-1"], 1)


def test_a_mark_the_api_refused_evicts_none_of_its_victim_this_cycle() -> None:
    log: list[tuple[str, str]] = []
    run = _marking(log, refuse=frozenset({"low-1"}))
    run.cycle(_pod("low-0"), _pod("low-1"))
    assert log == [("mark", "low-0"), ("mark", "low-1")]
    assert (run.told, run.counted) == ([], 0)


def test_a_one_pod_victim_and_pods_already_marked_or_leaving_are_not_marked() -> None:
    log: list[tuple[str, str]] = []
    run = _marking(log)
    run.cycle(_pod("low-0"))  # one pod: it cannot be left half evicted
    marked = replace(
        _pod("low-1"),
        evicted_for=EvictionMark("gpu-team-a/urgent", Reason.PREEMPTED_PRIORITY, 2_000_000),
    )
    run.cycle(_pod("low-0", leaving=True), marked)
    assert log == [("evict", "low-0"), ("evict", "low-1")]


def test_a_mark_half_run_out_is_made_again_while_its_eviction_goes_on() -> None:
    """Was made once: a PodDisruptionBudget holding a pod back past NOMINATION_S let the
    mark run out, and the decision could pick another victim in its place."""
    log: list[tuple[str, str]] = []
    run = _marking(log)
    late = int(run.now) + NOMINATION_S // 2 - 1
    run.cycle(*(
        replace(_pod(name), evicted_for=EvictionMark(
            "gpu-team-a/urgent", Reason.PREEMPTED_PRIORITY, late + 2 * (name == "low-1")))
        for name in ("low-0", "low-1")
    ))  # fmt: skip
    assert log == [("mark", "low-0"), ("evict", "low-0"), ("evict", "low-1")]
    renewed = EvictionMark(
        "gpu-team-a/urgent", Reason.PREEMPTED_PRIORITY, int(run.now) + NOMINATION_S
    )
    assert [_mark_value(v) for v in run.marks] == [renewed]


def test_each_pod_of_a_victim_is_told_why_and_for_whom_also_by_a_later_cycle() -> None:
    """Was: a victim's Event said the core's message and "(for <beneficiary>)" after it,
    without the reason; a gang victim's pod evicted in a later cycle (a disruption budget
    held it back, or the replica that started died) was told only "evicted with the rest
    of its workload, whose eviction started in an earlier cycle". Each pod is told the
    decision's reason and message (``preempting.told``), which the marks record on the
    pods' reason for whichever cycle evicts the rest."""
    run = Run(ScriptedApi(low_0=["made"], low_1=[429, "made"]))
    written: dict[str, dict[str, str]] = {}

    def patch(pod: ManagedPod, operations: list[dict[str, Any]], doing: str) -> bool:
        (operation,) = operations  # the pod has no annotations: added as a whole map
        written[pod.name] = operation["value"]
        return True

    run.preemptor.patch = patch
    run.cycle(_pod("low-0"), _pod("low-1"))
    assert {name: value[keys.ANNOTATION_REASON] for name, value in written.items()} == {
        "low-0": TOLD,
        "low-1": TOLD,
    }
    assert run.events == [("low-0", "Preempted", TOLD, "Warning")]
    # The next cycle, maybe another replica's: low-0 gone, low-1 marked, urgent waiting.
    low_1 = _pod("low-1")
    assert low_1.raw is not None
    low_1.raw["metadata"]["annotations"] = written["low-1"]
    marked = replace(low_1, evicted_for=_mark_value(written["low-1"]))
    pods = {LOW: [marked], "gpu-team-a/urgent": [_waiting("urgent-0", "gpu-team-a/urgent")]}
    (eviction,) = under_way(pods, run.now)
    assert eviction == VICTIM
    run.cycle(marked, eviction=eviction)
    assert run.events[1:] == [("low-1", "Preempted", TOLD, "Warning")]
    assert told(eviction) == TOLD


def _waiting(name: str, workload: str) -> ManagedPod:
    return replace(_pod(name, workload), gated=True, node=None)


def test_a_running_workload_marked_until_later_for_a_waiting_one_is_a_victim_under_way() -> None:
    now = 1_000_000.0
    mark = EvictionMark("gpu-team-a/urgent", Reason.PREEMPTED_RECLAIM, int(now) + 10)
    marked = replace(_pod("low-1"), evicted_for=mark)
    urgent = [_waiting("urgent-0", "gpu-team-a/urgent")]
    (eviction,) = under_way({LOW: [marked], "gpu-team-a/urgent": urgent}, now)
    assert (eviction.workload, eviction.beneficiary, eviction.reason) == (
        LOW,
        "gpu-team-a/urgent",
        Reason.PREEMPTED_RECLAIM,
    )
    expired = replace(marked, evicted_for=replace(mark, until=int(now)))
    assert under_way({LOW: [expired], "gpu-team-a/urgent": urgent}, now) == []
    assert under_way({LOW: [marked]}, now) == []  # its beneficiary is gone
    admitted = [replace(urgent[0], gated=False)]
    assert under_way({LOW: [marked], "gpu-team-a/urgent": admitted}, now) == []
    waiting_again = replace(marked, gated=True)  # not running: moot
    assert under_way({LOW: [waiting_again], "gpu-team-a/urgent": urgent}, now) == []


def test_only_a_mark_apportion_writes_is_read() -> None:
    mark = EvictionMark("gpu-team-a/urgent replacements", Reason.PREEMPTED_PRIORITY, 1_800_000)
    assert parse_eviction_mark(mark.text()) == mark
    for text in (
        "",
        "2027-01-01T00:00:00Z PreemptedByHigherPriority",
        "2027-01-01T00:00:00Z Admitted gpu-team-a/urgent",
        "2027-01-01 PreemptedByHigherPriority gpu-team-a/urgent",
        "2027-01-01T00:00:00+00:00 PreemptedByHigherPriority gpu-team-a/urgent",
        "2027-13-01T00:00:00Z PreemptedByHigherPriority gpu-team-a/urgent",
        "2027-01-01T00:00:00Z PreemptedByHigherPriority urgent",
        "2027-01-01T00:00:00Z PreemptedByHigherPriority gpu-team-a/urgent ",
    ):
        assert parse_eviction_mark(text) is None, text
