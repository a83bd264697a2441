"""The controller against the in-process fake kube-apiserver (tests/kubefake), which serves
the objects recorded from a real API server and enforces its gated-pod rules."""

from __future__ import annotations

import copy
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from controller_support import SETTINGS, TEAM_A, eventually, gates_of, waiting_pod
from kubefake import Fake, running_fake
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from webhook_support import answer, cpu_only_pod, free_host, mutated, review, vary

from scheduler.allocator import decide
from scheduler.model import Decision, PreemptionPolicy, Queue, Quota, Snapshot
from scheduler.reasons import Outcome
from webhook import keys
from webhook.admission import Admission
from webhook.cluster import LiveCluster
from webhook.controller import OWN_CONNECTIONS, Controller
from webhook.informer import Informer
from webhook.kubeapi import UNANSWERED, KubeApi
from webhook.leader import LeaderElector, NotLeading
from webhook.metrics import Metrics
from webhook.patches import admit_gated, remove_gate, same_pod, set_metadata
from webhook.pods import ANNOTATION_PLACEMENT, controller_owner, kept, parse_placement, raw_identity
from webhook.queueview import queue_view, waiting_workloads
from webhook.settings import AdmissionSettings
from webhook.strays import StrayGates
from webhook.stuck import unschedulable
from webhook.workers import Workers

PATCHED = ("gpu-team-a", "patched-gpu-1")
"""The recorded pod carrying Apportion's gate that its webhook never decided."""


@contextmanager
def synced(controller: Controller) -> Iterator[Controller]:
    """The controller started and its informers listed; stopped on the way out."""
    controller.start()
    try:
        eventually(controller.synced)
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def fake() -> Iterator[Fake]:
    with running_fake() as server:
        server.put_namespace("gpu-team-a", {keys.NAMESPACE_ENABLED: "true"})
        server.put_namespace("apportion-system")
        yield server


def _controller_for(fake: Fake, queue: Queue) -> Controller:
    """A controller (not leading by election) whose only queue is ``queue``."""
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    api = KubeApi(fake.api_client())
    return Controller(api, cluster, SETTINGS, Metrics(cluster), queues=lambda: [queue])


def _controller(
    fake: Fake,
    identity: str = "replica-1",
    lead: bool = False,
    evict: bool = True,
    intent_ttl_s: float = 30,
) -> Controller:
    cluster = LiveCluster(clock=time.time, intent_ttl_s=intent_ttl_s)
    api = KubeApi(fake.api_client(), SETTINGS.api_timeout_s)
    metrics = Metrics(cluster)
    elector = (
        LeaderElector(api, "apportion-system", "apportion-controller", identity, 1.0, metrics)
        if lead
        else None
    )
    return Controller(
        api,
        cluster,
        replace(SETTINGS, evict=evict),
        metrics,
        queues=lambda: [TEAM_A],
        elector=elector,
    )


def _pod(fake: Fake, name: str) -> dict[str, Any]:
    return fake.get("pods", name, "gpu-team-a")


def _released(fake: Fake, *names: str) -> bool:
    return not any(gates_of(_pod(fake, name)) for name in names)


def _placement(fake: Fake, name: str) -> str:
    placement: str = _pod(fake, name)["metadata"]["annotations"][ANNOTATION_PLACEMENT]
    return placement


def api_failures(controller: Controller) -> dict[tuple[str, str], float]:
    """``apportion_api_failures_total`` by (action, code)."""
    return {
        (sample.labels["action"], sample.labels["code"]): sample.value
        for metric in controller.metrics.registry.collect()
        if metric.name == "apportion_api_failures"
        for sample in metric.samples
        if sample.name == "apportion_api_failures_total"
    }


def strays_settled(controller: Controller) -> dict[str, float]:
    """``apportion_strays_settled_total`` by outcome, those counted only."""
    return {
        sample.labels["outcome"]: sample.value
        for metric in controller.metrics.registry.collect()
        if metric.name == "apportion_strays_settled"
        for sample in metric.samples
        if sample.name == "apportion_strays_settled_total" and sample.value
    }


def test_the_recorded_cluster_syncs_and_foreign_pods_are_not_capacity(fake: Fake) -> None:
    controller = _controller(fake)
    with synced(controller):
        snapshot = controller.cluster.snapshot()
        free = {
            n.name: sum(1 for g in n.gpus if g.mig is None and not g.held) for n in snapshot.nodes
        }
        # Recorded bound pods not decided by Apportion: train-gpu-1 (1), gated-gpu-2 (2) and
        # gang-train-1 (1) on gpu-node-a; train-gpu-8 (8) on gpu-node-b; gang-train-0 (1) on
        # mig-node-c (6 whole GPUs + 2 in MIG).
        assert free == {"gpu-node-a": 4, "gpu-node-b": 0, "mig-node-c": 5}
        # Each recorded pod asks 1 CPU and 4 GiB of nodes with 96 CPU and 1056 GiB.
        host = {n.name: free_host(n) for n in snapshot.nodes}
        assert host == {
            "gpu-node-a": (93_000, (1056 - 12) * 1024),
            "gpu-node-b": (95_000, (1056 - 4) * 1024),
            "mig-node-c": (95_000, (1056 - 4) * 1024),
        }
        # patched-gpu-1 carries Apportion's gate (an early capture): it is ours to release.
        eventually(lambda: not gates_of(_pod(fake, "patched-gpu-1")))
        pod = _pod(fake, "patched-gpu-1")
        placement = pod["metadata"]["annotations"][ANNOTATION_PLACEMENT]
        node = placement.split(":")[0]
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert {"key": keys.NODE_HOSTNAME, "operator": "In", "values": [node]} in terms[0][
            "matchExpressions"
        ]
        events = eventually(
            lambda: [e for e in fake.events("gpu-team-a") if e["reason"] == "Admitted"]
        )
        assert [e["involvedObject"]["name"] for e in events] == ["patched-gpu-1"]
        assert events[0]["source"] == {"component": "apportion"}


def test_a_waiting_pod_goes_only_where_its_selector_affinity_and_tolerations_let_it(
    fake: Fake,
) -> None:
    # Was: the controller decided waiting pods without their node constraints, so a pod
    # selecting mig-node-c was pinned to gpu-node-a (best fit) and could never schedule,
    # and no waiting pod ever went to a tainted node, whatever it tolerated.
    node = copy.deepcopy(fake.get("nodes", "gpu-node-a"))
    node["spec"]["taints"] = [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]
    fake.put_node(node)
    pinned = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": keys.NODE_HOSTNAME, "operator": "In", "values": ["gpu-node-a"]}
    ]}]}  # fmt: skip
    tolerate = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    controller = _controller(fake)
    with synced(controller):
        waiting_pod(fake, "on-c", spec={"nodeSelector": {keys.NODE_HOSTNAME: "mig-node-c"}})
        waiting_pod(
            fake,
            "tolerant",
            spec={
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": pinned}
                },
                "tolerations": tolerate,
            },
        )
        waiting_pod(
            fake,
            "intolerant",
            spec={
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": pinned}
                }
            },
        )
        eventually(lambda: _released(fake, "on-c", "tolerant"))
        assert _placement(fake, "on-c").startswith("mig-node-c:")
        assert _placement(fake, "tolerant").startswith("gpu-node-a:")
        verdict = eventually(
            lambda: controller.cluster.last_decisions().get("gpu-team-a/intolerant")
        )
        assert verdict.reason.value == "NoMatchingNodes", verdict
        assert gates_of(_pod(fake, "intolerant"))


def test_a_pod_another_controller_holds_back_is_decided_once_its_gate_is_gone(
    fake: Fake,
) -> None:
    controller = _controller(fake)
    with synced(controller):
        held = [{"name": "example.com/hold"}, {"name": keys.GATE}]
        waiting_pod(fake, "held", spec={"schedulingGates": held})
        view = eventually(
            lambda: {w.workload: w for w in waiting_workloads(controller.cluster)}.get(
                "gpu-team-a/held"
            )
        )
        assert view.reason == "OtherGates"
        assert "example.com/hold" in view.message
        time.sleep(1.0)  # several cycles: not admitted while held
        pod = _pod(fake, "held")
        assert gates_of(pod) == held
        assert ANNOTATION_PLACEMENT not in pod["metadata"]["annotations"]
        # The other controller lets it go: Apportion decides and releases it.
        pod["spec"]["schedulingGates"] = [{"name": keys.GATE}]
        fake.put_pod(pod)
        eventually(lambda: _released(fake, "held"))


def test_a_gang_is_admitted_all_together_once_complete(fake: Fake) -> None:
    controller = _controller(fake)
    with synced(controller):
        waiting_pod(fake, "llm-0", gpus=2, workload="gpu-team-a/llm", gang=2)
        time.sleep(1.0)  # several cycles: an incomplete gang is never admitted
        assert gates_of(_pod(fake, "llm-0"))
        view = {w.workload: w for w in waiting_workloads(controller.cluster)}
        assert view["gpu-team-a/llm"].reason == "GangIncomplete"
        waiting_pod(fake, "llm-1", gpus=2, workload="gpu-team-a/llm", gang=2)
        eventually(lambda: _released(fake, "llm-0", "llm-1"))
        assert _placement(fake, "llm-0") != _placement(fake, "llm-1")


def test_a_gang_whose_members_ask_differently_stays_gated_and_says_why(fake: Fake) -> None:
    """Was: a JobSet's leader asking 1 GPU and its worker 2, created together (the webhook
    compares a member only with those already known), were admitted as 2 × 1 GPU: the
    worker ran on a GPU more than its queue was charged, on a placement of one. The
    controller never decides such a gang; its pods keep the gate and say why."""
    controller = _controller(fake)
    with synced(controller):
        waiting_pod(fake, "llm-leader", gpus=1, workload="gpu-team-a/llm", gang=2)
        waiting_pod(fake, "llm-worker", gpus=2, workload="gpu-team-a/llm", gang=2)

        def reason(name: str) -> str:
            return str(_pod(fake, name)["metadata"]["annotations"].get(keys.ANNOTATION_REASON))

        members = ("llm-leader", "llm-worker")
        eventually(lambda: all(reason(n).startswith("GangMixed: ") for n in members))
        assert reason("llm-worker") == (
            "GangMixed: the members of gang gpu-team-a/llm ask differently: llm-leader asks "
            "nvidia.com/gpu: 1 in queue team-a, llm-worker asks nvidia.com/gpu: 2 in queue "
            "team-a. Apportion admits a gang as its pods × one ask, so it admits none of them: "
            "give every member the same GPU request, models (apportion.io/gpu-models) and queue "
            "(apportion.io/queue), or put the pods that ask differently in a gang of their own "
            "(apportion.io/gang, apportion.io/gang-size), and create them again"
        )
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        for name in members:
            assert gates_of(_pod(fake, name)) == [{"name": keys.GATE}]
            assert ANNOTATION_PLACEMENT not in _pod(fake, name)["metadata"]["annotations"]
        assert "gpu-team-a/llm" not in {w.name for w in controller.cluster.snapshot().workloads}
        view = queue_view(controller.cluster).of(None)["queues"]["team-a"]
        assert [(r["workload"], r["reason"]) for r in view] == [("gpu-team-a/llm", "GangMixed")]


def test_a_gang_admission_cut_short_by_api_errors_is_carried_out_whole(fake: Fake) -> None:
    # A removed gate cannot be put back: a gang whose second member's patch fails must not
    # be left with its first member released and its second gated for good.
    controller = _controller(fake)
    with synced(controller):
        fake.fail(r".*/pods/llm-1", times=2, status=500, method="PATCH")
        waiting_pod(fake, "llm-0", gpus=2, workload="gpu-team-a/llm", gang=2)
        waiting_pod(fake, "llm-1", gpus=2, workload="gpu-team-a/llm", gang=2)
        eventually(lambda: len(fake.requests_to(r".*/pods/llm-1", "PATCH")) >= 2)
        assert gates_of(_pod(fake, "llm-0"))  # recorded, but not released alone
        eventually(lambda: _released(fake, "llm-0", "llm-1"))
        assert len(fake.requests_to(r".*/pods/llm-1", "PATCH")) >= 3  # two failed
        assert _placement(fake, "llm-0") != _placement(fake, "llm-1")


def test_a_restart_completes_a_gang_admission_recorded_but_not_yet_released(
    fake: Fake,
) -> None:
    # The controller recorded both members' placements, released llm-0 and stopped. The
    # next one holds both placements and releases llm-1 where recorded.
    free = _free_gpus(fake, "gpu-node-a")
    recorded = {"llm-0": f"gpu-node-a:{free[0]}", "llm-1": f"gpu-node-a:{free[1]}"}
    for name, placement in recorded.items():
        pod = waiting_pod(fake, name, gpus=1, workload="gpu-team-a/llm", gang=2)
        pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] = "admitted"
        pod["metadata"]["annotations"][ANNOTATION_PLACEMENT] = placement
        if name == "llm-0":
            pod["spec"]["schedulingGates"] = []
        fake.put_pod(pod)
    controller = _controller(fake, "replica-2")
    with synced(controller):
        held = {w.name: w for w in controller.cluster.snapshot().workloads}["gpu-team-a/llm"]
        assert held.placement is not None and len(held.placement) == 2
        eventually(lambda: not gates_of(_pod(fake, "llm-1")))
        llm_1 = _pod(fake, "llm-1")
        assert llm_1["metadata"]["annotations"][ANNOTATION_PLACEMENT] == recorded["llm-1"]
        terms = llm_1["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        pinned = {"key": keys.NODE_HOSTNAME, "operator": "In", "values": ["gpu-node-a"]}
        assert pinned in terms[0]["matchExpressions"]


def test_a_gang_recorded_in_part_whose_unrecorded_member_went_is_not_released(
    fake: Fake,
) -> None:
    """Was: a controller recorded llm-0's placement and died before llm-1's, and llm-1 was
    then deleted (by its user, or its Job replacing it). Every pod left had a placement,
    so the record read as whole and the next controller released llm-0 alone: a gang of
    two running as one. A record is whole only with a pod for each of the gang's places;
    and llm-0, waiting, says so, not that it was admitted."""
    free = _free_gpus(fake, "gpu-node-a")
    pod = waiting_pod(fake, "llm-0", gpus=1, workload="gpu-team-a/llm", gang=2)
    pod["metadata"]["annotations"] |= {
        keys.ANNOTATION_DECISION: "admitted",
        keys.ANNOTATION_REASON: "Admitted: admitted on 2× 1 H100-80GB GPUs",
        ANNOTATION_PLACEMENT: f"gpu-node-a:{free[0]}",
    }
    fake.put_pod(pod)
    controller = _controller(fake, "replica-2")
    with synced(controller):
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert gates_of(_pod(fake, "llm-0"))
        view = {w.workload: w for w in waiting_workloads(controller.cluster)}
        assert view["gpu-team-a/llm"].reason == "GangIncomplete"
        annotations = _pod(fake, "llm-0")["metadata"]["annotations"]
        assert ANNOTATION_PLACEMENT not in annotations
        assert (annotations[keys.ANNOTATION_DECISION], annotations[keys.ANNOTATION_REASON]) == (
            "pending",
            "GangIncomplete: 1 of 2 pods exist; the gang waits for all",
        )
        waiting_pod(fake, "llm-1", gpus=1, workload="gpu-team-a/llm", gang=2)
        eventually(lambda: _released(fake, "llm-0", "llm-1"))
        assert _placement(fake, "llm-0") != _placement(fake, "llm-1")


def _devices(fake: Fake, *names: str) -> dict[tuple[str, int], list[str]]:
    """Which of ``names`` are placed on each GPU (node, index), by their annotations."""
    placed: dict[tuple[str, int], list[str]] = {}
    for name in names:
        placement = parse_placement(_placement(fake, name))
        assert placement is not None
        for gpu in placement.gpus:
            placed.setdefault((placement.node, gpu), []).append(name)
    return placed


def test_a_decision_the_webhook_overtook_is_not_carried_out_but_decided_again(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the decision was taken on a snapshot, and while it was made the webhook
    admitted a pod at creation onto the GPUs it chose; the controller patched its workload
    onto them all the same: two pods placed on the same GPUs, and the controller's left
    out of the books. It reserves first; refused, its pods stay gated and say why, and
    the next cycle admits it where there is room."""
    controller = _controller(fake)
    overtaken: list[Any] = []

    def overtaking(snapshot: Snapshot, **options: Any) -> Decision:
        decision = decide(snapshot, **options)
        late = next((v for v in decision.workloads if v.workload == "gpu-team-a/late"), None)
        if late is not None and late.outcome is Outcome.ADMIT and not overtaken:
            # Meanwhile a pod asking as much is created: the webhook admits it at once.
            body = vary(
                review("create-pod-gpu-1.mutate-create"),
                name="early",
                resources={"nvidia.com/gpu": "3"},
            )
            webhook = Admission(controller.cluster, AdmissionSettings())
            fake.put_pod(mutated(body, answer(webhook.mutate, body))["request"]["object"])
            overtaken.append(late.placement)
        return decision

    monkeypatch.setattr("webhook.controller.decide", overtaking)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        waiting_pod(fake, "late", gpus=3)
        eventually(lambda: _released(fake, "late"))
        (decided,) = overtaken
        assert decided == (parse_placement(_placement(fake, "early")),)  # its GPUs went first
        assert decided != (parse_placement(_placement(fake, "late")),)
        shared = _devices(fake, "early", "late", "patched-gpu-1")
        assert all(len(pods) == 1 for pods in shared.values()), shared
        held = {w.name: w.placement for w in controller.cluster.snapshot().workloads}
        for name in ("early", "late"):
            assert held[f"gpu-team-a/{name}"] == (parse_placement(_placement(fake, name)),)
    told = [
        json.dumps(r.body)
        for r in fake.requests_to(r".*/pods/late", "PATCH")
        if "PlaceTaken" in json.dumps(r.body)
    ]
    assert len(told) == 1
    assert (
        "PlaceTaken: not admitted as decided: its place was taken since the decision, by "
        "gpu-team-a/early; it is decided again in the next cycle"
    ) in told[0]


def _overtaking(
    fake: Fake, controller: Controller, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> list[Any]:
    """While the controller decides, the webhook admits ``body``'s pod at creation, once: the
    first time a decision admits gpu-team-a/late. Returns that decision's placement of it."""
    decided: list[Any] = []

    def overtaking(snapshot: Snapshot, **options: Any) -> Decision:
        decision = decide(snapshot, **options)
        late = next((v for v in decision.workloads if v.workload == "gpu-team-a/late"), None)
        if late is not None and late.outcome is Outcome.ADMIT and not decided:
            webhook = Admission(controller.cluster, AdmissionSettings())
            pod = mutated(body, answer(webhook.mutate, body))["request"]["object"]
            assert not gates_of(pod)  # admitted at creation
            fake.put_pod(pod)
            decided.append(late.placement)
        return decision

    monkeypatch.setattr("webhook.controller.decide", overtaking)
    return decided


def _told(fake: Fake, name: str, reason: str) -> list[str]:
    """The reasons written on pod ``name`` that start with ``reason``."""
    written = []
    for request in fake.requests_to(rf".*/pods/{name}", "PATCH"):
        for op in request.body if isinstance(request.body, list) else ():
            value = op.get("value")
            texts = value.values() if isinstance(value, dict) else [value]
            written += [t for t in texts if isinstance(t, str) and t.startswith(f"{reason}: ")]
    return written


def _held_gpus(controller: Controller, queue: str) -> int:
    """Whole GPUs the queue's admitted and running workloads hold, as the cache sees it."""
    return sum(
        len(p.gpus)
        for w in controller.cluster.snapshot().workloads
        if w.queue == queue and w.placement is not None
        for p in w.placement
        if p.mig_start is None
    )


def test_an_admission_whose_quota_the_webhook_used_meanwhile_waits_and_is_decided_again(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the reservation checked devices only. While the decision was taken, the
    webhook admitted a pod at creation on other GPUs with the queue's last quota, and the
    controller admitted its own all the same: team-a at 5 of its 4 GPUs. Refused now, its
    pod stays gated and says why (``QuotaTaken``); it is admitted once quota frees up."""
    queue = TEAM_A.model_copy(update={"quota": {"H100-80GB": Quota(nominal=4)}})
    controller = _controller_for(fake, queue)
    body = vary(review("create-pod-gpu-1.mutate-create"), name="early",
                resources={"nvidia.com/gpu": "2"})  # fmt: skip
    body["request"]["object"]["spec"]["nodeSelector"] = {keys.NODE_HOSTNAME: "gpu-node-a"}
    overtaken = _overtaking(fake, controller, monkeypatch, body)
    on_c = {"nodeSelector": {keys.NODE_HOSTNAME: "mig-node-c"}}
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))  # 1 of team-a's 4
        waiting_pod(fake, "late", gpus=2, spec=on_c)
        eventually(lambda: _told(fake, "late", "QuotaExhausted"))
        assert overtaken and gates_of(_pod(fake, "late"))
        assert _told(fake, "late", "QuotaTaken") == [
            "QuotaTaken: not admitted as decided: its quota is no longer free: "
            "queue team-a at nominal H100-80GB quota 3/4; needs 2; it is decided again in "
            "the next cycle"
        ]
        assert _held_gpus(controller, "team-a") == 3
        fake.delete_pod("gpu-team-a", "early")
        eventually(lambda: _released(fake, "late"))
        assert _held_gpus(controller, "team-a") == 3


def test_a_queue_objects_status_counts_an_admission_refused_when_reserved_as_waiting(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the status was written before the cycle's reservations, so the admission the
    quota test above sees refused counted as admitted (``kubectl get queues``: 2 admitted,
    0 pending) while its pod stayed gated, until the next cycle."""
    from scheduler.crds import queue_object

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    fake.put(queue_object(TEAM_A.model_copy(update={"quota": {"H100-80GB": Quota(nominal=4)}})))
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))
    body = vary(review("create-pod-gpu-1.mutate-create"), name="early",
                resources={"nvidia.com/gpu": "2"})  # fmt: skip
    body["request"]["object"]["spec"]["nodeSelector"] = {keys.NODE_HOSTNAME: "gpu-node-a"}
    _overtaking(fake, controller, monkeypatch, body)
    on_c = {"nodeSelector": {keys.NODE_HOSTNAME: "mig-node-c"}}
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        waiting_pod(fake, "late", gpus=2, spec=on_c)
        eventually(lambda: _told(fake, "late", "QuotaTaken"))

        def written() -> list[tuple[int, int]]:
            return [
                (s["admitted_workloads"], s["pending_workloads"])
                for r in fake.requests_to(r".*/queues/team-a/status", "PATCH")
                for s in [r.body[0]["value"]]
            ]

        # Written once the cycle's reservations are made: patched-gpu-1 admitted, late
        # refused and waiting; late never counted as admitted (early never went).
        eventually(lambda: (1, 1) in written())
        assert (2, 0) not in written()


def test_an_admission_whose_nodes_cpu_the_webhook_used_meanwhile_is_not_carried_out(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race on a node's CPU: a MIG pod admitted at creation on mig-node-c while
    the decision placed a GPU pod there, each asking 60 of its 96 CPU."""
    controller = _controller(fake)
    body = vary(review("create-pod-mig-1g-10gb.mutate-create"), name="early",
                resources={"nvidia.com/mig-1g.10gb": "1", "cpu": "60"})  # fmt: skip
    _overtaking(fake, controller, monkeypatch, body)
    on_c = {"nodeSelector": {keys.NODE_HOSTNAME: "mig-node-c"}}
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        waiting_pod(fake, "late", gpus=1, spec=on_c, requests={"cpu": "60"})
        eventually(lambda: _told(fake, "late", "InsufficientCapacity"))
        assert gates_of(_pod(fake, "late"))
        assert _told(fake, "late", "PlaceTaken") == [
            "PlaceTaken: not admitted as decided: its place is no longer free: "
            "node mig-node-c has 35 CPU free; its 1 pod(s) there ask 60 CPU; it is decided "
            "again in the next cycle"
        ]
        fake.delete_pod("gpu-team-a", "early")
        eventually(lambda: _released(fake, "late"))


def test_a_queue_reclaiming_its_lent_quota_is_admitted_once_its_victims_end() -> None:
    """The reservation counts no room the decision's evictions free: the workload they make
    room for waits, gated, until its victims have ended, and is reserved then, within its
    quota and its cohort's. Here team-b borrowed team-a's nominal quota (of the 8 whole GPUs
    the recorded cluster's foreign pods leave) and team-a takes it back."""
    team_a = Queue(name="team-a", cohort="lab", namespaces=("gpu-team-a",),
                   quota={"H100-80GB": Quota(nominal=5)})  # fmt: skip
    team_b = Queue(name="team-b", cohort="lab", namespaces=("gpu-team-b",),
                   quota={"H100-80GB": Quota(nominal=3)})  # fmt: skip
    with running_fake(kubelet=False) as fake:
        for namespace in ("gpu-team-a", "gpu-team-b"):
            fake.put_namespace(namespace, {keys.NAMESPACE_ENABLED: "true"})
        cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
        controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS,
                                Metrics(cluster), queues=lambda: [team_a, team_b])  # fmt: skip
        with synced(controller):
            eventually(lambda: _released(fake, "patched-gpu-1"))  # team-a at 1
            for name, gpus in (("b-1", 4), ("b-2", 3)):  # team-b at 7: 4 beyond its 3
                waiting_pod(fake, name, gpus=gpus, queue="team-b")
                eventually(lambda name=name: not gates_of(fake.get("pods", name, "gpu-team-b")))
                placed = fake.get("pods", name, "gpu-team-b")["metadata"]["annotations"]
                fake.bind("gpu-team-b", name, placed[ANNOTATION_PLACEMENT].split(":")[0])
            assert _held_gpus(controller, "team-b") == 7
            waiting_pod(fake, "urgent", gpus=4)  # team-a at 5: its nominal quota
            eventually(lambda: fake.evictions)
            assert [e["name"] for e in fake.evictions] == ["b-1"]  # the node with room for 4
            told = eventually(
                lambda: [
                    e["message"] for e in fake.events("gpu-team-b") if e["reason"] == "Preempted"
                ]
            )
            assert told == [
                "PreemptedToReclaimQuota: queue team-b borrows H100-80GB; queue team-a reclaims "
                "its nominal quota (1/5 used) for gpu-team-a/urgent"
            ]
            cycles = controller.cycles
            eventually(lambda: controller.cycles >= cycles + 2)
            assert gates_of(_pod(fake, "urgent"))  # its victim still terminates
            fake.finish_termination("gpu-team-b", "b-1")
            eventually(lambda: _released(fake, "urgent"))
            assert (_held_gpus(controller, "team-a"), _held_gpus(controller, "team-b")) == (5, 3)
            assert not _told(fake, "urgent", "QuotaTaken")
            assert not _told(fake, "urgent", "PlaceTaken")


@pytest.mark.parametrize(
    ("failure", "patches"), [(500, 2), ("lost", 1)], ids=["refused", "answer-lost"]
)
def test_an_admission_whose_patch_failed_holds_its_gpus_only_if_it_may_be_made(
    fake: Fake, failure: int | str, patches: int
) -> None:
    """A refused patch recorded nothing: the reservation made for it is given back, and
    the next cycle admits it (held, it would look admitted until the reservation expired,
    intent_ttl_s: 30 s here). One whose answer was lost may have been made: it holds its
    GPUs until the watch shows the pod, admitted where its annotation says, once."""
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        fake.fail(r".*/pods/solo", times=1, status=failure, method="PATCH")
        waiting_pod(fake, "solo", gpus=3)
        eventually(lambda: _released(fake, "solo"))
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        held = {w.name: w.placement for w in controller.cluster.snapshot().workloads}
        assert held["gpu-team-a/solo"] == (parse_placement(_placement(fake, "solo")),)
        assert len(fake.requests_to(r".*/pods/solo", "PATCH")) == patches


def test_a_running_gang_member_replaced_by_its_owner_is_admitted_alone(fake: Fake) -> None:
    # An Indexed Job recreates a failed member: the gang runs on, its running member keeps
    # its GPUs, and the new member is admitted into the place left, without the gang
    # waiting again.
    controller = _controller(fake)
    with synced(controller):
        for name in ("llm-0", "llm-1"):
            waiting_pod(fake, name, gpus=2, workload="gpu-team-a/llm", gang=2)
        eventually(lambda: _released(fake, "llm-0", "llm-1"))
        running = _placement(fake, "llm-0")
        fake.delete_pod("gpu-team-a", "llm-1")
        waiting_pod(fake, "llm-1-again", gpus=2, workload="gpu-team-a/llm", gang=2)
        eventually(lambda: _released(fake, "llm-1-again"))
        assert _placement(fake, "llm-0") == running
        again = _placement(fake, "llm-1-again")
        assert again != running

        def one_gang_again() -> bool:
            workloads = {w.name: w for w in controller.cluster.snapshot().workloads}
            gang = workloads.get("gpu-team-a/llm")
            return (
                "gpu-team-a/llm replacements" not in workloads
                and gang is not None
                and len(gang.placement or ()) == 2
            )

        eventually(one_gang_again)


def test_a_copy_of_a_running_pod_is_told_once_why_it_waits_and_what_to_do(fake: Fake) -> None:
    """Was: a pod copied in its namespace from a running one carries its workload
    annotation and is filed under it: it waited for the original to end (GangRunning in
    the queue view) with no Event, and kept the reason copied from the original. It says
    why on its reason, and one Event says so and what to do, also after a restart."""
    first = _controller(fake)
    with synced(first):
        waiting_pod(fake, "train", gpus=1)
        eventually(lambda: _released(fake, "train"))
        waiting_pod(fake, "train-copy", gpus=1, workload="gpu-team-a/train")
        events = eventually(lambda: _events_of(fake, "train-copy"))
        reviews = first.stuck_reviews  # one per decision cycle
        eventually(lambda: first.stuck_reviews >= reviews + 3)
    message = (
        "workload gpu-team-a/train still runs (1 pod), and 1 new pod waits for it to end. "
        "A pod copied in namespace gpu-team-a from one of its pods names that workload too "
        f"({keys.ANNOTATION_WORKLOAD}) and waits so: delete such a copy and create it again "
        "without the apportion.io/ labels and annotations"
    )
    assert events == [("Normal", "GangRunning", message)]
    annotations = _pod(fake, "train-copy")["metadata"]["annotations"]
    assert annotations[keys.ANNOTATION_REASON] == f"GangRunning: {message}"
    second = _controller(fake)
    with synced(second):
        reviews = second.stuck_reviews
        eventually(lambda: second.stuck_reviews >= reviews + 3)
        assert _events_of(fake, "train-copy") == events
        assert gates_of(_pod(fake, "train-copy"))
        fake.delete_pod("gpu-team-a", "train")
        eventually(lambda: _released(fake, "train-copy"))


def _free_gpus(fake: Fake, node: str) -> list[int]:
    """Whole GPUs of ``node`` nothing holds once a controller has admitted the recorded
    gated pod (patched-gpu-1)."""
    controller = _controller(fake)
    with synced(controller):
        # Adopted first (never decided by the webhook), then admitted.
        eventually(lambda: getattr(controller.cluster.pods.get(PATCHED), "placement", None))
        snapshot = controller.cluster.snapshot()
    held = {
        g for w in snapshot.workloads for p in w.placement or () if p.node == node for g in p.gpus
    }
    (gpus,) = [n.gpus for n in snapshot.nodes if n.name == node]
    return [g.index for g in gpus if g.index not in held and g.mig is None]


def _fill_with_low_priority(fake: Fake) -> None:
    """Low-priority work on every free GPU, admitted and bound: 4 GPUs on gpu-node-a, 5 on
    mig-node-c. At priority 1, above the recording's waiting 1-GPU pod (priority 0), which
    by age would go first and leave no node room for the 5."""
    waiting_pod(fake, "low-a", gpus=4, priority=1)
    waiting_pod(fake, "low-c", gpus=5, priority=1)
    for name in ("low-a", "low-c"):
        eventually(lambda name=name: not gates_of(_pod(fake, name)))
        pod = _pod(fake, name)
        fake.bind(
            "gpu-team-a", name, pod["metadata"]["annotations"][ANNOTATION_PLACEMENT].split(":")[0]
        )


def test_preemption_evicts_with_a_reason_event_then_admits(fake: Fake) -> None:
    controller = _controller(fake)
    with synced(controller):
        _fill_with_low_priority(fake)
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: fake.evictions)
        eventually(lambda: [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"])
        evicted = {e["name"] for e in fake.evictions if e["allowed"]}
        assert evicted == {"low-a"}
        preempted = [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"]
        assert [(e["type"], e["message"]) for e in preempted] == [
            (
                "Warning",
                "PreemptedByHigherPriority: preempted by gpu-team-a/urgent (priority 1000 > 1) "
                "in queue team-a",
            )
        ]
        eventually(lambda: not gates_of(_pod(fake, "urgent")))


@contextmanager
def _filled_without_kubelet() -> Iterator[tuple[Fake, Controller]]:
    """A synced controller on a cluster its low-priority pods fill, where no kubelet runs:
    an evicted pod stays terminating, as in its grace period."""
    with running_fake(kubelet=False) as fake:
        fake.put_namespace("gpu-team-a", {keys.NAMESPACE_ENABLED: "true"})
        controller = _controller(fake)
        with synced(controller):
            _fill_with_low_priority(fake)
            yield fake, controller


def test_a_victim_is_evicted_told_and_counted_once_while_it_terminates() -> None:
    # A kubelet gives an evicted pod its grace period (30 s by default); every decision
    # meanwhile still sees it running and names it as the victim again.
    with _filled_without_kubelet() as (fake, controller):
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: fake.evictions)
        cycles = controller.cycles
        eventually(lambda: controller.cycles >= cycles + 3)
        assert [e["name"] for e in fake.evictions] == ["low-a"]
        preempted = [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"]
        assert len(preempted) == 1
        counted = controller.metrics.registry.get_sample_value(
            "apportion_preemptions_total", {"queue": "team-a"}
        )
        assert counted == 1
        assert gates_of(_pod(fake, "urgent"))  # its room is not free yet
        assert _pod(fake, "urgent")["metadata"]["annotations"][keys.ANNOTATION_REASON] == (
            "AdmittedByPriorityPreemption: waits for the workloads it preempts to end, "
            "then admitted on 1× 4 H100-80GB GPUs after evicting 1 workload(s) (4 GPU-eq): "
            "gpu-team-a/low-a"
        )
        fake.finish_termination("gpu-team-a", "low-a")
        eventually(lambda: _released(fake, "urgent"))


def test_a_waiting_pods_numbers_alone_are_rewritten_at_most_once_a_minute(fake: Fake) -> None:
    # Was: every cycle rewrote the reason of every waiting pod whose numbers had moved
    # (queue usage, room left): on benchmarks/ (b) most of them, a patch each, every cycle,
    # and admissions waited behind those patches.
    queue = TEAM_A.model_copy(update={"quota": {"H100-80GB": Quota(nominal=6)}})
    ahead = [0.0]
    cluster = LiveCluster(clock=lambda: time.time() + ahead[0], intent_ttl_s=30)
    controller = Controller(
        KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster), queues=lambda: [queue]
    )

    def reason() -> str:
        return str(_pod(fake, "big")["metadata"]["annotations"].get(keys.ANNOTATION_REASON, ""))

    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        waiting_pod(fake, "big", gpus=6)
        first = eventually(lambda: reason().startswith("QuotaExhausted") and reason())
        waiting_pod(fake, "one", gpus=1)
        eventually(lambda: _released(fake, "one"))
        cycles = controller.cycles
        eventually(lambda: controller.cycles >= cycles + 3)
        assert reason() == first  # the same reason, its numbers a minute old at most
        assert cluster.last_decisions()["gpu-team-a/big"].message not in first
        ahead[0] = 61.0
        eventually(lambda: reason() != first)
        now = cluster.last_decisions()["gpu-team-a/big"].message
        assert reason() == f"QuotaExhausted: {now}"


def test_a_nomination_the_api_refused_is_made_again_while_the_victims_terminate() -> None:
    # Was: the beneficiary was nominated only in the cycle its victims' eviction started;
    # a refused patch was never made again, and once the victims had ended another
    # queue's head ranking alike could take the room (and urgent preempt again).
    with _filled_without_kubelet() as (fake, controller):
        refused = fake.fail(r".*/pods/urgent", times=1000, status=500, method="PATCH")
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: fake.evictions)
        cycles = controller.cycles
        eventually(lambda: controller.cycles >= cycles + 2)
        annotations = lambda: _pod(fake, "urgent")["metadata"].get("annotations", {})  # noqa: E731
        assert keys.ANNOTATION_NOMINATED not in annotations()
        refused.times = 0
        eventually(lambda: keys.ANNOTATION_NOMINATED in annotations())
        assert [e["name"] for e in fake.evictions] == ["low-a"]  # evicted once
        fake.finish_termination("gpu-team-a", "low-a")
        eventually(lambda: _released(fake, "urgent"))


def test_the_room_a_preemption_frees_goes_to_the_workload_it_was_made_for() -> None:
    # Once low-a has ended, urgent (team-a) and c0 (team-0, within its nominal quota and
    # waiting for capacity) rank alike and team-0 sorts first: c0 took the room and urgent
    # evicted low-c as well, and would again for each newcomer ranking ahead. The
    # nomination is on urgent's pod: a controller started meanwhile keeps it.
    team_0 = Queue(name="team-0", namespaces=("gpu-team-0",), quota={"H100-80GB": Quota(nominal=4)})

    def controller_of(fake: Fake) -> Controller:
        cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
        api = KubeApi(fake.api_client())
        queues = [TEAM_A, team_0]
        return Controller(api, cluster, SETTINGS, Metrics(cluster), queues=lambda: queues)

    with running_fake(kubelet=False) as fake:
        for namespace in ("gpu-team-a", "gpu-team-0"):
            fake.put_namespace(namespace, {keys.NAMESPACE_ENABLED: "true"})
        first = controller_of(fake)
        with synced(first):
            _fill_with_low_priority(fake)
            waiting_pod(fake, "urgent", gpus=4, priority=1000)
            # Nominated after its victim's eviction (and Event) in the same cycle.
            eventually(
                lambda: keys.ANNOTATION_NOMINATED in _pod(fake, "urgent")["metadata"]["annotations"]
            )
        waiting_pod(fake, "c0", gpus=4, queue="team-0")
        second = controller_of(fake)
        with synced(second):
            eventually(lambda: second.cycles >= 2)
            fake.finish_termination("gpu-team-a", "low-a")
            eventually(lambda: _released(fake, "urgent"))
            cycles = second.cycles
            eventually(lambda: second.cycles >= cycles + 3)
            assert [e["name"] for e in fake.evictions] == ["low-a"]
            assert gates_of(fake.get("pods", "c0", "gpu-team-0"))


def test_shadow_mode_never_evicts(fake: Fake) -> None:
    controller = _controller(fake, evict=False)
    with synced(controller):
        _fill_with_low_priority(fake)
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: controller.cycles >= 3)
        time.sleep(1.0)
        assert fake.evictions == []
        assert gates_of(_pod(fake, "urgent"))
        reason = _pod(fake, "urgent")["metadata"]["annotations"][keys.ANNOTATION_REASON]
        assert reason.startswith(
            "AdmittedByPriorityPreemption: waits: in shadow mode nothing is evicted; it would "
            "be admitted on 1× 4 H100-80GB GPUs after evicting 1 workload(s)"
        )


def test_a_restart_rebuilds_from_the_cluster_and_admits_nothing_twice(fake: Fake) -> None:
    first = _controller(fake)
    first.start()
    eventually(first.synced)
    waiting_pod(fake, "once", gpus=3)
    eventually(lambda: not gates_of(_pod(fake, "once")))
    first.stop()
    before = _pod(fake, "once")
    patches = len(fake.requests_to(r".*/pods/once", "PATCH"))
    second = _controller(fake, "replica-2")
    with synced(second):
        time.sleep(1.0)
        running = {w.name: w for w in second.cluster.snapshot().workloads}
        placement = before["metadata"]["annotations"][ANNOTATION_PLACEMENT]
        assert running["gpu-team-a/once"].placement is not None
        assert running["gpu-team-a/once"].placement[0].node == placement.split(":")[0]
        assert len(fake.requests_to(r".*/pods/once", "PATCH")) == patches


def test_watch_expiry_relists_and_errors_back_off(fake: Fake) -> None:
    controller = _controller(fake)
    fake.fail(r"/api/v1/pods", times=2, status=500)
    with synced(controller):
        pods = next(i for i in controller.informers if i.resource.kind == "Pod")
        assert pods.errors >= 2
        # Quiet cluster (the recorded gated pod admitted and seen), then compaction: other
        # kinds move the global resourceVersion past the pod watch's, so its next
        # reconnect gets 410 Gone and the informer relists.
        eventually(lambda: not gates_of(_pod(fake, "patched-gpu-1")))
        eventually(lambda: controller.cluster.pods[("gpu-team-a", "patched-gpu-1")].gated is False)
        lists = pods.relists
        fake.put_namespace("elsewhere")
        fake.expire_history()
        eventually(lambda: pods.relists > lists, timeout=20)
        waiting_pod(fake, "after-expiry", gpus=1)
        eventually(lambda: not gates_of(_pod(fake, "after-expiry")))


def test_only_the_lease_holder_acts(fake: Fake) -> None:
    leader = _controller(fake, "replica-1", lead=True)
    follower = _controller(fake, "replica-2", lead=True)
    leader.start()
    eventually(lambda: leader.elector is not None and leader.elector.leading)
    with synced(follower):
        time.sleep(0.5)
        assert follower.elector is not None and not follower.elector.leading
        lease = fake.get(
            "leases", "apportion-controller", "apportion-system", group="coordination.k8s.io"
        )
        assert lease["spec"]["holderIdentity"] == "replica-1"
        leader.stop()
        # The lease expires (1 s) and the follower takes over, then admits.
        eventually(lambda: follower.elector is not None and follower.elector.leading, 10)
        waiting_pod(fake, "failover", gpus=1)
        eventually(lambda: not gates_of(_pod(fake, "failover")))
        lease = fake.get(
            "leases", "apportion-controller", "apportion-system", group="coordination.k8s.io"
        )
        assert lease["spec"]["holderIdentity"] == "replica-2"
        assert lease["spec"]["leaseTransitions"] == 1


def test_recorded_objects_are_what_the_fake_serves() -> None:
    """Guard: the fake's node list is the recording (the controller tests rely on it)."""
    with running_fake() as server:
        api = KubeApi(server.api_client())
        listing = api.list_all(api.nodes())
        from kubefake import RECORDINGS

        recorded = json.loads((RECORDINGS / "nodelist.json").read_text())
        assert list(listing.items) == recorded["items"]


def _recorded_pods() -> list[dict[str, Any]]:
    """Every recorded pod, and one of them with node affinity, unschedulable, owned and
    being deleted: the parts of a pod the controller reads."""
    from kubefake import RECORDINGS

    pods = json.loads((RECORDINGS / "podlist-gpu-team-a.json").read_text())["items"]
    varied = copy.deepcopy(pods[0])
    varied["metadata"]["deletionTimestamp"] = "2026-11-25T17:30:00Z"
    varied["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(varied["spec"]),
        keys.ANNOTATION_REASON: "waiting",
    }
    varied["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "j", "controller": True}]
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    varied["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [zone]}]
            }
        }
    }
    varied["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available",
            "lastTransitionTime": "2026-11-25T17:29:00Z",
        }
    ]
    return [*pods, varied]


@pytest.mark.parametrize("pod", _recorded_pods(), ids=lambda p: p["metadata"]["name"])
def test_what_is_kept_of_a_pod_reads_as_the_whole_pod(pod: dict[str, Any]) -> None:
    """A GPU pod's containers, volumes and managed fields are not kept (most of its
    memory); whatever the controller works out from what is kept is what it works out from
    the whole pod."""
    part = kept(pod)
    assert "managedFields" in pod["metadata"]
    assert "managedFields" not in part["metadata"] and "containers" not in part["spec"]
    assert not any(k.startswith("kubectl") for k in part["metadata"].get("annotations", ()))
    expressions = [{"key": keys.NODE_HOSTNAME, "operator": "In", "values": ["gpu-node-a"]}]
    values = {keys.ANNOTATION_REASON: "waiting", keys.ANNOTATION_TOLD: "uid"}
    for reading in (
        raw_identity,
        lambda p: admit_gated(p, expressions),
        lambda p: set_metadata(p, "annotations", values),
        lambda p: same_pod(p, unchanged=True),
        lambda p: remove_gate(p),
        unschedulable,
        lambda p: controller_owner(p["metadata"].get("ownerReferences")),
        lambda p: p["metadata"].get("deletionTimestamp"),
    ):
        assert reading(part) == reading(pod)


def _lists(fake: Fake, path: str) -> list[dict[str, str]]:
    """The queries of the list requests (not watches) made to ``path``."""
    return [r.query for r in fake.requests_to(path, "GET") if "watch" not in r.query]


def test_lists_are_read_page_by_page() -> None:
    """Each page is asked for as the one before has been read, and together they are the
    list one answer gives."""
    with running_fake() as server:
        whole = KubeApi(server.api_client(), list_page_size=0)
        assert _lists(server, "/api/v1/pods") == []
        expected = list(whole.list_all(whole.pods()).items)
        assert _lists(server, "/api/v1/pods") == [{}]
        paged = KubeApi(server.api_client(), list_page_size=4)
        listing = paged.list_all(paged.pods())
        assert listing.resource_version == "314"
        assert len(_lists(server, "/api/v1/pods")) == 2  # the first page only, so far
        assert list(listing.items) == expected
        first, second = _lists(server, "/api/v1/pods")[1:]
        assert first == {"limit": "4"}
        assert second["limit"] == "4" and second["continue"]


def test_the_garbage_collector_is_paused_while_a_list_is_read(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading a large list makes millions of objects; the collector's passes over them
    freed nothing and took half the CPU. It is back on once the list is read, and the log
    says how large a list was read."""
    seen: list[bool] = []
    stop = threading.Event()

    def replace(items: Iterator[dict[str, Any]]) -> None:
        seen.append(gc.isenabled())
        assert list(items)
        stop.set()  # no watch after the list

    api = KubeApi(fake.api_client(), list_page_size=1)
    with caplog.at_level(logging.INFO, logger="apportion.controller"):
        Informer(api, api.nodes(), replace, lambda kind, obj: None, SETTINGS, stop).run()
    assert seen == [False]
    assert gc.isenabled()
    nodes = len(fake.store.list(fake.rtype("nodes"), None, lambda _: True)[0])
    assert f"Node list read: {nodes} objects in " in caplog.text


def test_a_list_that_fails_part_way_changes_nothing(fake: Fake) -> None:
    controller = _controller(fake)
    api = KubeApi(fake.api_client())
    pods = list(api.list_all(api.pods()).items)
    controller.watched.replace_pods(iter(pods))
    before = dict(controller.cluster.pods)
    assert ("gpu-team-a", "train-gpu-1") in before

    def expired_after_one_page() -> Iterator[dict[str, Any]]:
        yield from pods[:2]
        raise ApiException(status=410, reason="Expired")

    with pytest.raises(ApiException):
        controller.watched.replace_pods(expired_after_one_page())
    assert controller.cluster.pods == before


def test_a_list_that_outlives_its_version_is_listed_again(fake: Fake) -> None:
    """A list's pages read the version its first page read until etcd compacts it away:
    the next page is then 410 Expired, and the informer lists again from the start."""

    class CompactedBetweenPages(KubeApi):
        compacted = False

        def _list_page(self, resource: Any, after: str | None) -> dict[str, Any]:
            if resource.kind == "Pod" and after is not None and not self.compacted:
                self.compacted = True
                fake.put_namespace("elsewhere")
                fake.expire_history()
            return super()._list_page(resource, after)

    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    api = CompactedBetweenPages(fake.api_client(), SETTINGS.api_timeout_s, list_page_size=4)
    controller = Controller(api, cluster, SETTINGS, Metrics(cluster), queues=lambda: [TEAM_A])
    with synced(controller):
        pods = next(i for i in controller.informers if i.resource.kind == "Pod")
        assert api.compacted
        assert (pods.relists, pods.errors) == (1, 0)
        first_pages = [q for q in _lists(fake, "/api/v1/pods") if "continue" not in q]
        assert len(first_pages) == 2
        listed = {("gpu-team-a", name) for name in ("train-gpu-1", "train-gpu-8")}
        assert listed <= set(cluster.pods)  # on the second page


def test_queues_come_from_queue_objects_and_report_status(fake: Fake) -> None:
    from scheduler.crds import queue_object

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    for queue in (TEAM_A.model_copy(update={"name": "crd-team"}),):
        fake.put(queue_object(queue.model_copy(update={"namespaces": ("gpu-team-a",)})))
    fake.put(
        {
            "apiVersion": "apportion.io/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": "broken"},
            "spec": {"weight": -1},
        }
    )
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))
    # The first status write is refused (counted), the next cycle writes it.
    fake.fail(r".*/queues/crd-team/status", times=1, status=500, method="PATCH")
    with synced(controller):
        assert sorted(cluster.queues) == ["crd-team"]  # the broken one is reported, left out
        pod = waiting_pod(fake, "via-crd", gpus=2)
        pod["metadata"]["labels"][keys.LABEL_QUEUE] = "crd-team"
        fake.put_pod(pod)
        eventually(lambda: not gates_of(_pod(fake, "via-crd")))

        def status() -> dict[str, Any]:
            queue = fake.get("queues", "crd-team", group="apportion.io", version="v1alpha1")
            got: dict[str, Any] = queue.get("status") or {}
            return got

        eventually(lambda: status().get("usage"))
        # via-crd's 2 GPUs; patched-gpu-1 names queue team-a, which does not exist here:
        # never decided by the webhook, it is not taken into it, and is told so.
        assert status()["usage"] == {"H100-80GB": 2}
        assert PATCHED not in cluster.pods
        refused = eventually(lambda: _events_of(fake, "patched-gpu-1"))
        assert [(kind, reason) for kind, reason, _ in refused] == [("Warning", "Refused")]
        assert "queue 'team-a' does not exist (queues: crd-team)" in refused[0][2]
        assert status()["admitted_workloads"] == 1
        assert api_failures(controller) == {("status", "500"): 1}


def test_a_cluster_without_the_queue_crd_still_syncs(fake: Fake) -> None:
    cluster = LiveCluster(clock=time.time)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))
    with synced(controller):
        assert cluster.queues == {}


def test_cpu_only_pods_on_gpu_nodes_hold_their_cpu_until_they_go(fake: Fake) -> None:
    # Listed at startup: one holding all but 0.5 CPU of gpu-node-a; one not bound yet, one
    # finished and one on a node without GPUs, which hold nothing Apportion tracks.
    for pod in (
        cpu_only_pod("loader-a", "gpu-node-a", "92500m", "1Gi"),
        cpu_only_pod("loader-pending", None, "90", "1Gi"),
        cpu_only_pod("loader-done", "mig-node-c", "90", "1Gi", phase="Succeeded"),
        cpu_only_pod("agent-elsewhere", "cpu-node-z", "90", "1Gi"),
    ):
        fake.put_pod(pod)
    controller = _controller(fake)
    cluster = controller.cluster
    pods = next(i for i in controller.informers if i.resource.kind == "Pod")

    def free(node: str) -> tuple[int, int]:
        return next(free_host(n) for n in cluster.snapshot().nodes if n.name == node)

    with synced(controller):
        gib = 1024
        assert free("gpu-node-a") == (500, (1056 - 12 - 1) * gib)
        # Watched: one on mig-node-c leaves it 0.5 CPU too; no GPU node can host the
        # recorded gated pod's 1 CPU, so it waits, saying why.
        fake.put_pod(cpu_only_pod("loader-c", "mig-node-c", "94500m", "1Gi"))
        eventually(lambda: free("mig-node-c") == (500, (1056 - 4 - 1) * gib))

        def reason() -> str:
            annotations = _pod(fake, "patched-gpu-1")["metadata"].get("annotations") or {}
            return str(annotations.get(keys.ANNOTATION_REASON, ""))

        eventually(lambda: reason().startswith("InsufficientCapacity:"))
        assert "the CPU and memory left on their nodes host only 0" in reason()
        assert gates_of(_pod(fake, "patched-gpu-1"))
        # A relist (watch history compacted) keeps what the CPU-only pods hold.
        lists = pods.relists
        fake.put_namespace("elsewhere")
        fake.expire_history()
        eventually(lambda: pods.relists > lists, timeout=20)
        assert free("mig-node-c") == (500, (1056 - 4 - 1) * gib)
        # Deleted: its CPU comes back and the waiting pod is admitted there.
        fake.delete_pod("gpu-team-a", "loader-c")
        eventually(lambda: not gates_of(_pod(fake, "patched-gpu-1")))
        placement = _pod(fake, "patched-gpu-1")["metadata"]["annotations"][ANNOTATION_PLACEMENT]
        assert placement.startswith("mig-node-c:")
        # Finished: a terminal pod holds nothing.
        fake.set_pod_phase("gpu-team-a", "loader-a", "Succeeded")
        eventually(lambda: free("gpu-node-a") == (93_000, (1056 - 12) * gib))


def test_a_queue_s_usage_falls_back_to_nothing_when_its_workloads_end(fake: Fake) -> None:
    # Was: the status was merge-patched, and a merge patch keeps every map key it does not
    # name, so a flavor the queue no longer used kept its last count: kubectl get queues
    # showed 2 H100 in use by a queue whose workloads had all ended.
    from scheduler.crds import queue_object

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    fake.put(queue_object(TEAM_A.model_copy(update={"name": "crd-team"})))
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))

    def status() -> dict[str, Any]:
        queue = fake.get("queues", "crd-team", group="apportion.io", version="v1alpha1")
        got: dict[str, Any] = queue.get("status") or {}
        return got

    with synced(controller):
        pod = waiting_pod(fake, "ends", gpus=2)
        pod["metadata"]["labels"][keys.LABEL_QUEUE] = "crd-team"
        fake.put_pod(pod)
        eventually(lambda: status().get("usage") == {"H100-80GB": 2})
        fake.set_pod_phase("gpu-team-a", "ends", "Succeeded")
        eventually(lambda: status().get("admitted_workloads") == 0)
        assert status()["usage"] == {}


def test_a_queue_deleted_and_created_again_gets_its_status(fake: Fake) -> None:
    # Was: the controller skipped a status equal to the last one it had written, so a
    # Queue deleted and applied again (or one another leader wrote meanwhile) showed no
    # status at all until its usage happened to change.
    from scheduler.crds import queue_object

    queues = fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    queue = queue_object(TEAM_A.model_copy(update={"name": "crd-team"}))
    fake.put(queue)
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))

    def status() -> dict[str, Any]:
        got = fake.get("queues", "crd-team", group="apportion.io", version="v1alpha1")
        return dict(got.get("status") or {})

    with synced(controller):
        pod = waiting_pod(fake, "runs", gpus=2)
        pod["metadata"]["labels"][keys.LABEL_QUEUE] = "crd-team"
        fake.put_pod(pod)
        eventually(lambda: status().get("usage") == {"H100-80GB": 2})
        fake.store.remove(queues, None, "crd-team")
        eventually(lambda: "crd-team" not in cluster.queues)
        fake.put(queue)
        eventually(lambda: status().get("usage") == {"H100-80GB": 2})


def test_a_queue_created_while_statuses_are_written_ends_nothing(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: the reconcile thread iterated the Queue objects the watch thread adds to, so a
    # Queue created meanwhile ended the status step ('dictionary changed size during
    # iteration') and no Queue's status was written that cycle.
    from scheduler.crds import queue_object
    from webhook import queuestatus

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    fake.put(queue_object(TEAM_A.model_copy(update={"name": "crd-team"})))
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))
    real = queuestatus.QueueStatus
    created = iter(range(1_000_000))

    def status_as_a_queue_arrives(**fields: Any) -> Any:
        arriving = TEAM_A.model_copy(update={"name": f"new-team-{next(created)}"})
        controller.watched.queue_event("ADDED", queue_object(arriving))  # as the watch may
        return real(**fields)

    def status() -> dict[str, Any]:
        got = fake.get("queues", "crd-team", group="apportion.io", version="v1alpha1")
        return dict(got.get("status") or {})

    with synced(controller):
        monkeypatch.setattr(queuestatus, "QueueStatus", status_as_a_queue_arrives)
        pod = waiting_pod(fake, "runs", gpus=2)
        pod["metadata"]["labels"][keys.LABEL_QUEUE] = "crd-team"
        fake.put_pod(pod)
        eventually(lambda: status().get("usage") == {"H100-80GB": 2})


def test_a_queue_closed_to_a_namespace_while_its_pods_wait_releases_none_of_them(
    fake: Fake,
) -> None:
    # Was: the namespaces a queue is open to were checked only when a pod was created, so
    # a platform team that closed team-a's queue to gpu-team-a still saw the pods waiting
    # there released onto the queue's quota.
    from scheduler.crds import queue_object

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    open_queue = TEAM_A.model_copy(update={"name": "crd-team"})
    fake.put(queue_object(open_queue))
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))
    with synced(controller):
        fake.put(queue_object(open_queue.model_copy(update={"namespaces": ("gpu-team-b",)})))
        eventually(lambda: cluster.queues["crd-team"].namespaces == ("gpu-team-b",))
        pod = waiting_pod(fake, "shut-out", gpus=1)
        pod["metadata"]["labels"][keys.LABEL_QUEUE] = "crd-team"
        fake.put_pod(pod)
        eventually(lambda: ("gpu-team-a", "shut-out") in cluster.pods)
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert gates_of(_pod(fake, "shut-out"))
        view = {w.workload: w for w in waiting_workloads(cluster)}["gpu-team-a/shut-out"]
        assert (view.reason, view.message) == (
            "QueueClosed",
            "queue 'crd-team' is not open to namespace 'gpu-team-a' (open to: gpu-team-b)",
        )
        fake.put(queue_object(open_queue))
        eventually(lambda: _released(fake, "shut-out"))


def test_running_pods_keep_their_quota_while_their_node_reports_no_allocatable_gpus(
    fake: Fake,
) -> None:
    # Was: a node's GPUs were its allocatable ones, and the kubelet reports none while the
    # device plugin restarts (or one fewer when a GPU falls off the bus): the pods running
    # there no longer fitted its ledger and dropped out of their queue's usage, so the
    # controller released the queue's waiting pods past its quota.
    small = TEAM_A.model_copy(update={"quota": {"H100-80GB": Quota(nominal=5)}})
    controller = _controller_for(fake, small)
    with synced(controller):
        waiting_pod(fake, "runs", gpus=4)
        eventually(lambda: _released(fake, "runs", "patched-gpu-1"))
        node = _placement(fake, "runs").split(":")[0]
        fake.bind("gpu-team-a", "runs", node)
        waiting_pod(fake, "over-quota", gpus=2)
        eventually(lambda: "gpu-team-a/over-quota" in controller.cluster.last_decisions())
        before = controller.cluster.nodes[node]
        restarting = copy.deepcopy(fake.get("nodes", node))
        restarting["status"]["allocatable"]["nvidia.com/gpu"] = "0"
        fake.put_node(restarting)
        eventually(lambda: controller.cluster.nodes[node] != before)
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert gates_of(_pod(fake, "over-quota"))
        usage = {w.name: w.placement for w in controller.cluster.snapshot().workloads}
        assert usage["gpu-team-a/runs"] is not None


def test_a_leader_that_cannot_reach_the_api_server_steps_down_and_comes_back(fake: Fake) -> None:
    # Was: the client raises urllib3's errors, not OSError, when the API server is
    # unreachable; the lease round let one through, and it ended the reconcile thread:
    # the replica kept serving, still "leading", and never released a pod again.
    controller = _controller(fake, lead=True)
    with synced(controller):
        eventually(lambda: controller.elector is not None and controller.elector.leading)
        fake.fail(r".*/leases/apportion-controller", times=8, status="drop")
        eventually(lambda: controller.elector is not None and not controller.elector.leading)
        eventually(lambda: controller.elector is not None and controller.elector.leading)
        waiting_pod(fake, "after-outage", gpus=1)
        eventually(lambda: _released(fake, "after-outage"))


def test_failed_api_calls_are_counted_by_action_and_code(fake: Fake) -> None:
    # Was: only logged, so nothing a platform team could alert on said that the controller
    # could not act (RBAC missing after an upgrade, an API server that does not answer).
    controller = _controller(fake, lead=True)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        assert api_failures(controller) == {}
        fake.fail(r".*/pods/forbidden", times=1000, status=403, method="PATCH")
        fake.fail(r"/api/v1/namespaces/gpu-team-a/events", times=1, status="drop", method="POST")
        waiting_pod(fake, "forbidden", gpus=1, priority=100)
        waiting_pod(fake, "allowed", gpus=1)
        eventually(lambda: _released(fake, "allowed"))
        fake.fail(r".*/leases/apportion-controller", times=1, status=503)
        eventually(lambda: api_failures(controller).get(("lease", "503")) == 1)
        failures = api_failures(controller)
        assert failures.keys() == {("patch", "403"), ("event", "unanswered"), ("lease", "503")}
        assert failures[("event", "unanswered")] == 1
        assert failures[("patch", "403")] >= 1  # tried again each cycle, refused each time
        # What the controller sees: a watch that fails (the next one, within the watch
        # timeout), then the list it falls back on. It was only a log line and a counter
        # on the informer object.
        fake.fail(r"/api/v1/nodes", times=1, status=500, method="GET")
        eventually(lambda: api_failures(controller).get(("watch", "500")) == 1, timeout=10)
        fake.fail(r"/api/v1/nodes", times=1000, status=403, method="GET")
        eventually(lambda: (api_failures(controller).get(("list", "403")) or 0) >= 1, timeout=10)


def test_a_preemption_whose_event_is_lost_is_still_counted_and_nominated(fake: Fake) -> None:
    # Was: events are best effort, but a connection lost while posting one raised out of
    # the cycle between the eviction and its bookkeeping: the preemption was never
    # counted, and its beneficiary never nominated (the victim, terminating from then on,
    # is not evicted again), so another queue's head could take the room it made.
    controller = _controller(fake)
    with synced(controller):
        _fill_with_low_priority(fake)
        told = {"low-a", "low-c"}
        eventually(lambda: told <= {e["involvedObject"]["name"] for e in fake.events()})
        fake.fail(r"/api/v1/namespaces/gpu-team-a/events", times=1, status="drop", method="POST")
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: fake.evictions)
        annotations = lambda: _pod(fake, "urgent")["metadata"]["annotations"]  # noqa: E731
        eventually(lambda: keys.ANNOTATION_NOMINATED in annotations())
        counted = controller.metrics.registry.get_sample_value(
            "apportion_preemptions_total", {"queue": "team-a"}
        )
        assert counted == 1


def test_a_watch_whose_connection_went_silent_is_given_up(fake: Fake) -> None:
    # Was: a watch had no client-side timeout, so one whose network path died without a
    # word (a load balancer's idle cut, a partition) was waited on for ever: the pods the
    # controller saw froze, and nothing created since was ever released.
    controller = _controller(fake)
    with synced(controller):
        fake.fail(r"/api/v1/pods", times=1, status="stall", method="GET")
        eventually(lambda: fake.failures[-1].times == 0)  # the next watch went silent
        waiting_pod(fake, "after-silence", gpus=1)
        eventually(lambda: _released(fake, "after-silence"), timeout=30)


def test_the_queue_view_shows_the_mig_repartition_that_would_admit_a_waiting_pod(
    fake: Fake,
) -> None:
    # Was: the global decision proposed MIG repartitions and the controller dropped them;
    # a pod asking for a profile no GPU is partitioned into waited with nothing to act on.
    queue = TEAM_A.model_copy(update={"quota": {**TEAM_A.quota, "mig-3g.40gb": Quota(nominal=2)}})
    controller = _controller_for(fake, queue)
    cluster = controller.cluster
    with synced(controller):
        pod = waiting_pod(fake, "wants-3g")
        resources = pod["spec"]["containers"][0]["resources"]
        for part in ("limits", "requests"):
            del resources[part]["nvidia.com/gpu"]
            resources[part]["nvidia.com/mig-3g.40gb"] = "1"
        fake.put_pod(pod)
        (plan,) = eventually(lambda: queue_view(cluster).of(None)["repartitions"])
    assert plan["admits"] == ["gpu-team-a/wants-3g"]
    assert "3g.40gb" in plan["message"] and plan["message"].startswith("node ")
    rows = queue_view(cluster).of("team-a")["queues"]["team-a"]
    (row,) = [r for r in rows if r["workload"] == "gpu-team-a/wants-3g"]
    assert (row["reason"], row["message"]) == (
        "NeverFits",
        "no H100-80GB GPU has a 3g.40gb slice in its MIG layout",
    )
    assert queue_view(cluster).of("team-b")["repartitions"] == []


def test_a_pod_whose_patch_gets_no_answer_keeps_no_other_waiting(fake: Fake) -> None:
    # Was: only the API server's refusals were caught; a connection reset or a read timeout
    # on one pod's patch ended the whole cycle, so every pod after it in the decision
    # waited too, for as long as that pod's patches kept failing.
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        fake.fail(r".*/pods/first", times=1000, status="drop", method="PATCH")
        waiting_pod(fake, "first", gpus=1, priority=100)
        eventually(lambda: fake.requests_to(r".*/pods/first", "PATCH"))
        waiting_pod(fake, "second", gpus=1)
        eventually(lambda: _released(fake, "second"))
        assert gates_of(_pod(fake, "first"))


def test_a_preemption_whose_eviction_answer_is_lost_is_nominated_and_counted_once() -> None:
    # Was: an eviction's lost answer raised out of the cycle; in the next one the victim
    # was already terminating, so the preemption was never counted, no Event told the
    # victim why, and its beneficiary was never nominated: another queue's head could
    # take the room it made.
    with _filled_without_kubelet() as (fake, controller):
        fake.fail(r".*/pods/low-a/eviction", times=1, status="lost", method="POST")
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        annotations = lambda: _pod(fake, "urgent")["metadata"]["annotations"]  # noqa: E731
        eventually(lambda: keys.ANNOTATION_NOMINATED in annotations())
        cycles = controller.cycles
        eventually(lambda: controller.cycles >= cycles + 3)
        assert [e["name"] for e in fake.evictions] == ["low-a"]
        preempted = [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"]
        assert [e["involvedObject"]["name"] for e in preempted] == ["low-a"]
        counted = controller.metrics.registry.get_sample_value(
            "apportion_preemptions_total", {"queue": "team-a"}
        )
        assert counted == 1
        fake.finish_termination("gpu-team-a", "low-a")
        eventually(lambda: _released(fake, "urgent"))


def _with_team_0(fake: Fake) -> Controller:
    """A controller of team-a and team-0, a second queue whose head (c0, 4 GPUs) ranks
    alike with team-a's and takes any room left unclaimed."""
    team_0 = Queue(name="team-0", namespaces=("gpu-team-0",), quota={"H100-80GB": Quota(nominal=4)})
    fake.put_namespace("gpu-team-0", {keys.NAMESPACE_ENABLED: "true"})
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    api = KubeApi(fake.api_client(), SETTINGS.api_timeout_s)
    return Controller(api, cluster, SETTINGS, Metrics(cluster), queues=lambda: [TEAM_A, team_0])


def test_a_victim_whose_eviction_answer_is_lost_and_that_ends_at_once_still_frees_its_room(
    fake: Fake,
) -> None:
    # Was: an eviction that got no answer was told, counted and nominated for in the
    # cycle that saw its victim leaving; a victim that ended before that cycle (a process
    # that exits at SIGTERM: gone while the call timed out) was never: no Event, no count,
    # and its beneficiary not nominated, so another queue's head ranking alike (c0) took
    # the room, and urgent evicted low-c as well. An eviction that got no answer counts as
    # made: counted and its beneficiary nominated at once, its victim told once seen gone.
    controller = _with_team_0(fake)
    with synced(controller):
        _fill_with_low_priority(fake)
        waiting_pod(fake, "c0", gpus=4, queue="team-0")
        fake.fail(r".*/pods/low-a/eviction", times=1, status="lost", method="POST")
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: _released(fake, "urgent"))
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert [e["name"] for e in fake.evictions] == ["low-a"]
        assert gates_of(fake.get("pods", "c0", "gpu-team-0"))
        preempted = [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"]
        assert [e["involvedObject"]["name"] for e in preempted] == ["low-a"]
        counted = controller.metrics.registry.get_sample_value(
            "apportion_preemptions_total", {"queue": "team-a"}
        )
        assert counted == 1


def test_a_nomination_the_watch_has_not_shown_yet_keeps_the_room_for_its_workload(
    fake: Fake,
) -> None:
    """What made the test above fail under load: low-a, gone as soon as evicted, is seen
    gone before urgent's nomination, patched once the eviction's answer was lost; a cycle
    between the two, on a watch lagging the debounce, gave low-a's room to c0 (team-0's
    head, ranking alike) and urgent evicted low-c as well. A nomination counts from when
    this replica made it. Here the watch shows urgent's nomination only once three cycles
    have run without it."""
    controller = _with_team_0(fake)
    (pods,) = [i for i in controller.informers if i.resource.kind == "Pod"]
    apply, shown = pods._apply, threading.Event()

    def lagging(kind: str, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        if metadata["name"] == "urgent" and keys.ANNOTATION_NOMINATED in metadata["annotations"]:
            shown.wait(30)  # and every event after it
        apply(kind, pod)

    pods._apply = lagging
    try:
        with synced(controller):
            _fill_with_low_priority(fake)
            waiting_pod(fake, "c0", gpus=4, queue="team-0")
            fake.fail(r".*/pods/low-a/eviction", times=1, status="lost", method="POST")
            waiting_pod(fake, "urgent", gpus=4, priority=1000)
            eventually(lambda: fake.evictions)
            eventually(lambda: ("gpu-team-a", "low-a") not in controller.cluster.pods)
            cycles = controller.cycles
            eventually(lambda: controller.cycles >= cycles + 3)
            assert _released(fake, "urgent")
            assert gates_of(fake.get("pods", "c0", "gpu-team-0"))
            shown.set()
            reviews = controller.stuck_reviews  # one per decision cycle
            eventually(lambda: controller.stuck_reviews >= reviews + 3)
            assert [e["name"] for e in fake.evictions] == ["low-a"]
            assert gates_of(fake.get("pods", "c0", "gpu-team-0"))
    finally:
        shown.set()


def test_a_call_that_never_gets_an_answer_is_given_up(fake: Fake) -> None:
    # Was: only watches had a client-side timeout. A patch (or eviction, Event, Lease call)
    # whose network path died without a word was waited on for ever: the reconcile thread
    # hung on it, and no pod was released again until the process restarted. The
    # unanswered patch may have been made: its GPU stays reserved until the watch shows
    # it was, or (it was not) the reservation expires and the next cycle admits it again.
    controller = _controller(fake, intent_ttl_s=3)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        fake.fail(r".*/pods/unheard", times=1, status="stall", method="PATCH")
        waiting_pod(fake, "unheard", gpus=1)
        eventually(lambda: fake.failures[-1].times == 0)
        waiting_pod(fake, "after-silence", gpus=1)
        eventually(lambda: _released(fake, "after-silence", "unheard"), timeout=30)


def test_a_list_that_never_gets_an_answer_is_given_up(fake: Fake) -> None:
    # Was: a list had no client-side timeout either: an informer whose first list went
    # silent never synced, and the replica never became ready.
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    api = KubeApi(fake.api_client(), SETTINGS.api_timeout_s, list_timeout_s=1.0)
    controller = Controller(api, cluster, SETTINGS, Metrics(cluster), queues=lambda: [TEAM_A])
    fake.fail(r"/api/v1/namespaces", times=1, status="stall", method="GET")
    with synced(controller):  # urllib3 asked again after the timeout
        assert fake.failures[-1].times == 0


def test_a_leader_acts_only_while_no_other_replica_can_have_taken_its_lease(fake: Fake) -> None:
    # Was: the Lease was renewed by the reconcile thread between cycles, and a cycle acted
    # from its start to its end. A cycle longer than the Lease (slow answers from the API
    # server, a call that hung) went on patching pods after another replica could have
    # taken the Lease over: two controllers acting at once.
    controller = _controller(fake, lead=True)
    delay = SETTINGS.api_timeout_s * 0.6
    fake.fail(r".*/pods/(slow|late)-.*", times=1000, status="slow", delay_s=delay, method="PATCH")
    slow = [f"slow-{i}" for i in range(6)]
    late = [f"late-{i}" for i in range(6)]
    with synced(controller):
        eventually(lambda: controller.elector is not None and controller.elector.leading)
        for name in slow:
            waiting_pod(fake, name)
        eventually(lambda: _released(fake, *slow), timeout=30)  # renewed all along
        for name in late:
            waiting_pod(fake, name)
        eventually(lambda: fake.requests_to(r".*/pods/late-.*", "PATCH"))
        cut = time.time()  # from now on the Lease cannot be renewed
        fake.fail(r".*/leases/apportion-controller", times=1000, status="stall")
        time.sleep(3 * SETTINGS.lease_duration_s)
        assert controller.elector is not None and not controller.elector.leading
    # It stopped mid-cycle: every patch, the late pods' too, was sent and answered within
    # a Lease it had renewed before the cut.
    renewals = [
        (
            datetime.fromisoformat(r.body["spec"]["renewTime"]),
            r.body["spec"]["leaseDurationSeconds"],
        )
        for r in fake.requests_to(r".*/leases.*")
        if r.method in ("POST", "PUT") and r.at < cut
    ]
    for patch in fake.requests_to(r".*/pods/(slow|late)-.*", "PATCH"):
        sent = datetime.fromtimestamp(patch.at, UTC)
        done = sent + timedelta(seconds=delay)
        assert any(r <= sent and done < r + timedelta(seconds=d) for r, d in renewals), patch


def test_a_relist_drops_namespaces_and_jobs_deleted_while_the_watch_was_down(fake: Fake) -> None:
    # Was: a relist of Namespaces or Jobs only added: one deleted while its watch was down
    # stayed in the cache for good (a namespace still opted in, a Job still sizing its
    # JobSet's gang), and a Job that left its JobSet still counted in that gang.
    def job(name: str, jobset: str | None) -> dict[str, Any]:
        labels = {keys.JOBSET_NAME: jobset} if jobset else {}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": "gpu-team-a", "labels": labels},
            "spec": {"parallelism": 2},
        }

    fake.put_namespace("gpu-team-z", {keys.NAMESPACE_ENABLED: "true"})
    fake.put(job("gone", "llm"))
    fake.put(job("left", "llm"))
    controller = _controller(fake)
    cluster = controller.cluster
    with synced(controller):
        assert "gpu-team-z" in cluster.namespaces
        assert cluster.jobs.jobsets == {
            ("gpu-team-a", "gone"): "llm",
            ("gpu-team-a", "left"): "llm",
        }
        informers = [i for i in controller.informers if i.resource.kind in ("Namespace", "Job")]
        lists = [i.relists for i in informers]
        for path in (r"/api/v1/namespaces", r"/apis/batch/v1/jobs"):
            fake.fail(path, times=1, status="stall", method="GET")  # the next watch
        eventually(lambda: all(f.times == 0 for f in fake.failures[-2:]))
        fake.store.remove(fake.rtype("namespaces"), None, "gpu-team-z")
        fake.store.remove(fake.rtype("jobs", "batch"), "gpu-team-a", "gone")
        fake.put(job("left", None))
        fake.expire_history()  # down long enough: the watch resumes with 410 Gone, a relist
        eventually(lambda: all(i.relists > n for i, n in zip(informers, lists, strict=True)), 30)
        assert "gpu-team-z" not in cluster.namespaces
        assert "gpu-team-a" in cluster.namespaces
        assert cluster.jobs.parallelism == {("gpu-team-a", "left"): 2}
        assert cluster.jobs.jobsets == {}


def test_running_mig_pods_keep_their_quota_while_their_node_offers_no_instances(
    fake: Fake,
) -> None:
    # Whole GPUs only in capacity were kept (unhealthy) since the controller review; MIG
    # instances were still read from allocatable alone. While the device plugin restarts
    # (allocatable nvidia.com/mig-*: 0), a running MIG pod's slice vanished from the node,
    # the pod dropped out of its queue's usage, and the queue's quota looked free again.
    small = TEAM_A.model_copy(update={"quota": {"mig-1g.10gb": Quota(nominal=2)}})
    controller = _controller_for(fake, small)
    with synced(controller):
        pod = waiting_pod(fake, "slice")
        resources = pod["spec"]["containers"][0]["resources"]
        for part in ("limits", "requests"):
            del resources[part]["nvidia.com/gpu"]
            resources[part]["nvidia.com/mig-1g.10gb"] = "1"
        fake.put_pod(pod)
        eventually(lambda: _released(fake, "slice"))
        assert _placement(fake, "slice").startswith("mig-node-c:")
        fake.bind("gpu-team-a", "slice", "mig-node-c")
        before = controller.cluster.nodes["mig-node-c"]
        restarting = copy.deepcopy(fake.get("nodes", "mig-node-c"))
        restarting["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = "0"
        fake.put_node(restarting)
        eventually(lambda: controller.cluster.nodes["mig-node-c"] != before)
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 2)
        gpus = controller.cluster.nodes["mig-node-c"].gpus
        assert [g.healthy for g in gpus if g.mig is not None] == [False, False]
        usage = {w.name: w.placement for w in controller.cluster.snapshot().workloads}
        assert usage["gpu-team-a/slice"] is not None


def test_a_replica_whose_clock_runs_ahead_does_not_take_a_live_lease(fake: Fake) -> None:
    # Was: a follower judged expiry by the holder's renewTime against its own wall clock;
    # one running an hour ahead saw every Lease as expired and took it over while the
    # leader still acted. Expiry is now timed from when the follower saw the record change.
    from datetime import UTC, datetime, timedelta

    api = KubeApi(fake.api_client(), timeout_s=0.5)
    metrics = Metrics(LiveCluster(clock=time.time))
    leader = LeaderElector(
        api, "apportion-system", "apportion-controller", "replica-1", 2.0, metrics
    )
    ahead = LeaderElector(
        api,
        "apportion-system",
        "apportion-controller",
        "replica-2",
        2.0,
        metrics,
        now=lambda: datetime.now(UTC) + timedelta(hours=1),
    )
    assert leader.try_acquire_or_renew()
    for _ in range(6):  # 3 s: longer than the Lease, which the leader keeps renewing
        assert not ahead.try_acquire_or_renew()
        assert leader.try_acquire_or_renew()
        time.sleep(0.5)
    # Once the leader stops renewing, the follower takes over a Lease's duration later.
    deadline = time.monotonic() + 5
    while not ahead.try_acquire_or_renew():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not leader.try_acquire_or_renew()


# -- Apportion's gate on pods Apportion does not manage -------------------------------------


def _gated_copy(
    fake: Fake, name: str, namespace: str = "gpu-team-a", gpus: bool = True
) -> dict[str, Any]:
    """The recorded pod that carries Apportion's gate (patched-gpu-1: queue label, no
    recorded decision) under another name or namespace, or without its GPU."""
    pod = copy.deepcopy(fake.get("pods", "patched-gpu-1", "gpu-team-a"))
    metadata = pod["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        metadata.pop(key, None)
    metadata["name"], metadata["namespace"] = name, namespace
    if not gpus:
        for part in pod["spec"]["containers"][0]["resources"].values():
            part.pop("nvidia.com/gpu")
    return pod


def _daemonset_owned(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "gpu-burn", "uid": "d",
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    return pod


def _decided_elsewhere(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` carrying what Apportion records on a waiting pod of gpu-team-a, as a manifest
    copied from one does (was: taken for decided, so it waited for ever with no Event)."""
    pod["metadata"].setdefault("annotations", {}).update(
        {keys.ANNOTATION_WORKLOAD: "gpu-team-a/train", keys.ANNOTATION_DECISION: "pending"}
    )
    return pod


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        (
            lambda fake: _gated_copy(fake, "loader", gpus=False),
            "it asks for no GPU",
        ),
        (
            lambda fake: _gated_copy(fake, "stray", namespace="elsewhere"),
            "its namespace elsewhere is not opted in (apportion.io/enabled=true)",
        ),
        (
            lambda fake: _daemonset_owned(_gated_copy(fake, "burn-in")),
            "a DaemonSet's pod: its DaemonSet chooses its node",
        ),
        (
            lambda fake: _decided_elsewhere(_gated_copy(fake, "copied", namespace="elsewhere")),
            "its namespace elsewhere is not opted in (apportion.io/enabled=true)",
        ),
    ],
    ids=["no-gpu", "namespace-not-opted-in", "daemonset", "copied-decision"],
)
def test_apportions_gate_is_removed_from_a_pod_it_does_not_manage(
    fake: Fake, shape: Callable[[Fake], dict[str, Any]], why: str
) -> None:
    """A pod created with Apportion's gate (a manifest copied from a waiting pod) that
    Apportion does not manage would wait for ever: nothing else removes that gate. The
    controller removes it, and only it: another controller's gate stays."""
    fake.put_namespace("elsewhere")
    pod = shape(fake)
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    pod["spec"]["schedulingGates"] = [{"name": "example.com/hold"}, {"name": keys.GATE}]
    fake.put_pod(pod)
    controller = _controller(fake)
    with synced(controller):
        eventually(
            lambda: gates_of(fake.get("pods", name, namespace)) == [{"name": "example.com/hold"}]
        )
        events = eventually(
            lambda: [e for e in fake.events(namespace) if e["reason"] == "NotManaged"]
        )
        assert [(e["involvedObject"]["name"], e["message"]) for e in events] == [
            (
                name,
                f"Apportion does not manage this pod ({why}); its scheduling gate "
                f"{keys.GATE} is removed",
            )
        ]
        assert (namespace, name) not in controller.cluster.pods
        # The recorded patched-gpu-1 is adopted into team-a.
        eventually(lambda: strays_settled(controller) == {"released": 1, "adopted": 1})


def test_pods_apportion_holds_keep_its_gate(fake: Fake) -> None:
    """Only pods Apportion does not manage lose its gate: a GPU pod it decided and holds
    keeps it, also once its namespace opts out (it waits in its queue, not released by a
    label change), and so does one in a namespace the controller has not seen yet."""
    fake.put_pod(_gated_copy(fake, "unseen", namespace="gpu-team-new"))
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: not gates_of(_pod(fake, "patched-gpu-1")))  # admitted by the queue
        waiting_pod(fake, "too-big", gpus=6)  # foreign pods leave no node 6 free

        def reason() -> str:
            return str(_pod(fake, "too-big")["metadata"]["annotations"].get(keys.ANNOTATION_REASON))

        eventually(lambda: reason().startswith("InsufficientCapacity"))
        fake.put_namespace("gpu-team-a")  # opted out
        eventually(lambda: not controller.cluster.policy("gpu-team-a").enabled)
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert gates_of(_pod(fake, "too-big")) == [{"name": keys.GATE}]
        assert gates_of(fake.get("pods", "unseen", "gpu-team-new")) == [{"name": keys.GATE}]
        assert not [e for e in fake.events() if e["reason"] == "NotManaged"]


# -- gated pods of opted-in namespaces Apportion never decided --------------------------------


def _events_of(fake: Fake, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events on pod ``name`` of gpu-team-a."""
    return [
        (e["type"], e["reason"], e["message"])
        for e in fake.events("gpu-team-a")
        if e["involvedObject"]["name"] == name
    ]


def _undecided(fake: Fake, name: str, queue: str | None = None) -> dict[str, Any]:
    """The recorded gated pod under ``name`` as a manifest copied from it, created past the
    webhook: Apportion's gate, no recorded decision, the queue label ``queue`` or none."""
    pod = _gated_copy(fake, name)
    labels = pod["metadata"]["labels"]
    labels.pop(keys.LABEL_QUEUE)
    if queue is not None:
        labels[keys.LABEL_QUEUE] = queue
    return pod


def test_a_gated_pod_its_webhook_never_decided_joins_its_queue(fake: Fake) -> None:
    """Was: a GPU pod of an opted-in namespace carrying Apportion's gate that its webhook
    never decided (created before the namespace opted in, or past the webhook) was
    Apportion's to decide, yet the controller took only those with a queue label, each
    alone: one relying on its namespace's default queue, or a gang's member, waited for
    ever with no Event. The controller records on it what the webhook would have, then
    decides it in fair-share order like any waiting pod."""
    fake.put_namespace(
        "gpu-team-a", {keys.NAMESPACE_ENABLED: "true", keys.NAMESPACE_DEFAULT_QUEUE: "team-a"}
    )
    fake.put_pod(_undecided(fake, "copied"))
    for member in ("pair-0", "pair-1"):
        pod = _undecided(fake, member, queue="team-a")
        pod["metadata"]["labels"][keys.LABEL_GANG] = "pair"
        pod["metadata"]["annotations"][keys.ANNOTATION_GANG_SIZE] = "2"
        fake.put_pod(pod)
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: _released(fake, "copied", "pair-0", "pair-1"))
        copied = _pod(fake, "copied")["metadata"]
        assert copied["labels"][keys.LABEL_QUEUE] == "team-a"
        assert copied["annotations"][keys.ANNOTATION_WORKLOAD] == "gpu-team-a/copied"
        assert {
            _pod(fake, m)["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD]
            for m in ("pair-0", "pair-1")
        } == {"gpu-team-a/pair"}
        events = eventually(
            lambda: len(_events_of(fake, "copied")) == 2 and _events_of(fake, "copied")
        )
        assert events[0] == (
            "Normal",
            "Adopted",
            f"Apportion's webhook never decided this pod, which carries its gate "
            f"{keys.GATE}: it waits in its queue as workload gpu-team-a/copied, decided in "
            "fair-share order",
        )
        assert events[1][1] == "Admitted"


def test_a_pod_copied_with_another_namespace_s_decision_is_adopted_as_its_own(
    fake: Fake,
) -> None:
    """Was: a waiting pod's manifest copied to another namespace kept the original's
    workload annotation, and was filed under that workload of the other namespace: held or
    admitted with it, never adopted. It is a pod Apportion never decided, adopted into its
    own namespace's workload."""
    fake.put_namespace("gpu-team-c", {keys.NAMESPACE_ENABLED: "true"})
    fake.put_pod(_decided_elsewhere(_gated_copy(fake, "copied", namespace="gpu-team-c")))
    shared = TEAM_A.model_copy(update={"namespaces": ("gpu-team-a", "gpu-team-c")})
    controller = _controller_for(fake, shared)
    with synced(controller):
        eventually(lambda: not gates_of(fake.get("pods", "copied", "gpu-team-c")))
        copied = fake.get("pods", "copied", "gpu-team-c")["metadata"]["annotations"]
        assert copied[keys.ANNOTATION_WORKLOAD] == "gpu-team-c/copied"
        events = eventually(lambda: fake.events("gpu-team-c"))
        assert (events[0]["involvedObject"]["name"], events[0]["reason"]) == ("copied", "Adopted")


def _stray_gates(
    fake: Fake,
    cluster: LiveCluster,
    lost: int = 0,
    *,
    before_acting: Callable[[], None] = lambda: None,
    event: Callable[[dict[str, Any], str, str, str], None] = lambda *_: None,
) -> StrayGates:
    """The controller's stray handling over ``cluster``'s view (no watch updates it),
    patching ``fake``; the first ``lost`` patches are made but get no answer."""
    api = KubeApi(fake.api_client())
    answers: list[bool | None] = [None] * lost

    def patch(namespace: str, name: str, ops: list[dict[str, Any]], doing: str) -> bool | None:
        try:
            api.patch_pod(namespace, name, ops)
        except ApiException:
            return False
        except UNANSWERED:
            return None
        return answers.pop() if answers else True

    return StrayGates(
        cluster,
        Metrics(cluster),
        adopt=Admission(cluster, AdmissionSettings()).adopt,
        patch=patch,
        event=event,
        before_acting=before_acting,
    )


def _settle(gates: StrayGates) -> None:
    """One settling pass, its calls one at a time, in the order of the strays."""
    with Workers(1, threading.Event(), leading=lambda: True) as workers:
        gates.settle(workers)


def test_an_adoption_whose_answer_was_lost_is_not_made_again() -> None:
    """Was: an adoption patch that was made but whose answer was lost (a dropped
    connection) was made again at the next cycle while the watch had not yet shown the pod
    adopted: the GPU tolerations were appended a second time (a pod always carries some:
    the API server adds the not-ready and unreachable ones), and the node affinity ANDed
    again. An adoption holds only on the pod as it was seen (its resourceVersion)."""
    with running_fake() as fake:
        labels = {keys.NAMESPACE_ENABLED: "true", keys.NAMESPACE_DEFAULT_QUEUE: "team-a"}
        fake.put_namespace("gpu-team-a", labels)
        fake.put_pod(_undecided(fake, "copied"))
        seen = _pod(fake, "copied")
        assert seen["spec"]["tolerations"]  # the API server's own
        cluster = LiveCluster(clock=time.time)
        cluster.put_namespace("gpu-team-a", labels)
        cluster.replace_queues([TEAM_A])
        cluster.put_stray("gpu-team-a", "copied", seen)  # the watch shows nothing new
        told: list[str] = []
        gates = _stray_gates(  # the first patch made, its answer lost
            fake, cluster, lost=1, event=lambda raw, reason, *_: told.append(reason)
        )
        _settle(gates)
        adopted = _pod(fake, "copied")
        assert adopted["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD] == "gpu-team-a/copied"
        _settle(gates)
        assert _pod(fake, "copied")["spec"] == adopted["spec"]
        assert told == []  # not yet seen made
        gates.seen(adopted)  # the watch catches up
        cluster.put_stray("gpu-team-a", "copied", None)
        _settle(gates)
        _settle(gates)
        assert told == ["Adopted"]


def test_a_gated_pod_its_webhook_would_refuse_keeps_the_gate_and_is_told_why_once(
    fake: Fake,
) -> None:
    """A pod the validating webhook would refuse (here: its queue does not exist) is not
    released: it would run outside every quota. It keeps the gate, and one Warning Event
    says why and what to do; once the reason is gone (the queue created) it is adopted."""
    from scheduler.crds import queue_object

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    fake.put_pod(_undecided(fake, "orphan", queue="crd-team"))
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))
    with synced(controller):
        eventually(lambda: _events_of(fake, "orphan"))
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert _events_of(fake, "orphan") == [
            (
                "Warning",
                "Refused",
                "Apportion's webhook never decided this pod, which carries its gate "
                f"{keys.GATE}, and would refuse it: queue 'crd-team' does not exist (queues: "
                "none). It keeps that gate, so that it never runs outside Apportion's quotas: "
                "it joins its queue once that is fixed, or delete it and create it again",
            )
        ]
        assert gates_of(_pod(fake, "orphan")) == [{"name": keys.GATE}]
        # The recorded patched-gpu-1 too: its queue team-a does not exist here.
        assert strays_settled(controller) == {"refused": 2}
        fake.put(queue_object(TEAM_A.model_copy(update={"name": "crd-team"})))
        eventually(lambda: _released(fake, "orphan"))
        assert [reason for _, reason, _ in _events_of(fake, "orphan")] == [
            "Refused",
            "Adopted",
            "Admitted",
        ]
        # patched-gpu-1 told again: its reason now names the queue created.
        assert strays_settled(controller) == {"refused": 3, "adopted": 1}


def test_a_settling_pass_that_loses_the_lease_tells_no_more_refused_pods() -> None:
    """Was: a settling pass checked the Lease only before a patch, so once it was lost the
    pass went on telling the pods it refuses why (their Event follows no patch), while the
    next leader told them too. The pass stops at the first Event it would send without the
    Lease; a pod not told then is told once this replica leads again."""
    with running_fake() as fake:
        labels = {keys.NAMESPACE_ENABLED: "true"}
        fake.put_namespace("gpu-team-a", labels)
        cluster = LiveCluster(clock=time.time)
        cluster.put_namespace("gpu-team-a", labels)
        cluster.replace_queues([TEAM_A])
        for name in ("orphan-1", "orphan-2"):  # queue crd-team does not exist: refused
            pod = fake.put_pod(_undecided(fake, name, queue="crd-team"))
            cluster.put_stray("gpu-team-a", name, pod)
        held = [True, False]  # lost after the first pod is told, then held again

        def before_acting() -> None:
            if not (held.pop(0) if held else True):
                raise NotLeading

        told: list[str] = []
        gates = _stray_gates(
            fake,
            cluster,
            before_acting=before_acting,
            event=lambda raw, reason, *_: told.append(f"{raw['metadata']['name']} {reason}"),
        )
        with pytest.raises(NotLeading):
            _settle(gates)
        assert told == ["orphan-1 Refused"]
        _settle(gates)
        assert told == ["orphan-1 Refused", "orphan-2 Refused"]


@pytest.mark.parametrize(
    ("mode", "namespace_labels", "why"),
    [
        (
            "enforce",
            {keys.NAMESPACE_MODE: "shadow"},
            "its namespace gpu-team-a is in shadow mode: Apportion only records what it would do",
        ),
        ("shadow", {}, "Apportion runs in shadow mode: it only records what it would do"),
    ],
    ids=["shadow-namespace", "global-shadow"],
)
def test_in_shadow_mode_a_gated_pod_its_webhook_never_decided_is_released_not_adopted(
    fake: Fake, mode: str, namespace_labels: dict[str, str], why: str
) -> None:
    """Was: in shadow mode, where pods "run as if Apportion were not there" and the webhook
    gates nothing, the controller adopted such a pod (decision keys, tolerations, held in
    its queue), and one its webhook would refuse (here: no queue) kept the gate for ever.
    In shadow mode Apportion holds no pod: its gate, and only it, is removed."""
    fake.put_namespace("gpu-team-a", {keys.NAMESPACE_ENABLED: "true", **namespace_labels})
    fake.put_pod(_undecided(fake, "copied"))  # no queue: the webhook would refuse it
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(
        KubeApi(fake.api_client()),
        cluster,
        replace(SETTINGS, evict=mode != "shadow"),
        Metrics(cluster),
        admission=AdmissionSettings(mode="shadow" if mode == "shadow" else "enforce"),
        queues=lambda: [TEAM_A],
    )
    with synced(controller):
        eventually(lambda: _released(fake, "copied"))
        assert keys.ANNOTATION_WORKLOAD not in _pod(fake, "copied")["metadata"]["annotations"]
        assert eventually(lambda: _events_of(fake, "copied")) == [
            (
                "Normal",
                "NotManaged",
                f"Apportion does not manage this pod ({why}); its scheduling gate {keys.GATE} "
                "is removed",
            )
        ]


def test_a_release_holds_only_on_the_pod_as_it_was_seen() -> None:
    """Was: the patch removing Apportion's gate from a pod it does not manage tested only
    that gate: made on a view of a pod since deleted and created again under its name (the
    watch not yet showing either, nor its namespace opting in), it released the new pod,
    which Apportion decided must wait in its queue, to run outside it. A release now tests
    the pod's uid, as an adoption does."""
    with running_fake() as fake:
        fake.put_namespace("elsewhere")
        seen = fake.put_pod(_gated_copy(fake, "copied", namespace="elsewhere"))
        fake.delete_pod("elsewhere", "copied")
        again = _gated_copy(fake, "copied", namespace="elsewhere")
        again["metadata"]["annotations"] = {keys.ANNOTATION_WORKLOAD: "elsewhere/copied"}
        fake.put_pod(again)  # decided by the webhook once the namespace opted in
        cluster = LiveCluster(clock=time.time)
        cluster.put_namespace("elsewhere", {})  # the watch has not shown the opt-in yet
        cluster.put_stray("elsewhere", "copied", seen)  # nor the pod deleted
        _settle(_stray_gates(fake, cluster))
        assert gates_of(fake.get("pods", "copied", "elsewhere")) == [{"name": keys.GATE}]


def test_a_release_or_adoption_whose_answer_was_lost_is_counted_and_told_once_seen_made(
    fake: Fake,
) -> None:
    """Was: a release or an adoption whose answer was lost (made, the connection closed
    before its answer) was neither counted nor told: the next pass no longer saw the pod
    as a stray, so nothing ever did. Once the watch shows it made, it is, once."""
    fake.put_namespace("elsewhere")
    fake.put_pod(_gated_copy(fake, "stray", namespace="elsewhere"))
    fake.fail(r".*/pods/stray", times=1, status="lost", method="PATCH")
    fake.fail(r".*/pods/patched-gpu-1", times=1, status="lost", method="PATCH")
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: strays_settled(controller) == {"released": 1, "adopted": 1})
        eventually(lambda: _released(fake, "patched-gpu-1"))
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert strays_settled(controller) == {"released": 1, "adopted": 1}
        assert gates_of(fake.get("pods", "stray", "elsewhere")) == []
        assert [e["reason"] for e in fake.events("elsewhere")] == ["NotManaged"]
        assert [reason for _, reason, _ in _events_of(fake, "patched-gpu-1")] == [
            "Adopted",
            "Admitted",
        ]
        assert api_failures(controller) == {("patch", "unanswered"): 2}


def test_a_release_whose_answer_was_lost_counts_only_once_made() -> None:
    """A release that got no answer and was not made is asked again while the pod shows
    as a stray, and counted once made; one of a pod deleted before the watch showed it
    made is never counted nor told."""
    with running_fake() as fake:
        fake.put_namespace("elsewhere")
        cluster = LiveCluster(clock=time.time)
        cluster.put_namespace("elsewhere", {})
        for name in ("kept", "deleted"):
            cluster.put_stray("elsewhere", name, fake.put_pod(_gated_copy(fake, name, "elsewhere")))
        fake.fail(r".*/pods/(kept|deleted)", times=2, status="drop", method="PATCH")
        told: list[str] = []
        gates = _stray_gates(
            fake,
            cluster,
            event=lambda raw, reason, *_: told.append(f"{raw['metadata']['name']} {reason}"),
        )
        _settle(gates)  # neither made, no answer
        assert told == []
        gone = fake.get("pods", "deleted", "elsewhere")
        fake.delete_pod("elsewhere", "deleted")
        gates.seen(gone, gone=True)
        cluster.put_stray("elsewhere", "deleted", None)
        _settle(gates)  # kept asked again, and made
        _settle(gates)
        assert told == ["kept NotManaged"]
        assert gates_of(fake.get("pods", "kept", "elsewhere")) == []
        released = {"outcome": "released"}
        registry = gates.metrics.registry
        assert registry.get_sample_value("apportion_strays_settled_total", released) == 1


@pytest.mark.parametrize("first_copy", ["kept", "deleted"])
def test_a_copy_of_a_pod_told_why_it_waits_is_told_too(fake: Fake, first_copy: str) -> None:
    """Was: a pod copied from one that waits with GangRunning carries its reason, which
    recorded that the pod was told: the copy never got the Event (its text the same, or
    only its numbers moved). A reason counts as told only on the pod it was told to
    (``keys.ANNOTATION_TOLD``: its uid)."""
    controller = _controller(fake)
    with synced(controller):
        waiting_pod(fake, "train", gpus=1)
        eventually(lambda: _released(fake, "train"))
        waiting_pod(fake, "first-copy", gpus=1, workload="gpu-team-a/train")
        (told,) = eventually(lambda: _events_of(fake, "first-copy"))
        copied = copy.deepcopy(_pod(fake, "first-copy"))
        for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
            copied["metadata"].pop(key, None)
        copied["metadata"]["name"] = "second-copy"
        if first_copy == "deleted":  # the second copy's reason then reads as the first's
            fake.delete_pod("gpu-team-a", "first-copy")
        fake.put_pod(copied)
        (event,) = eventually(lambda: _events_of(fake, "second-copy"))
        assert event[1] == "GangRunning"
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert _events_of(fake, "second-copy") == [event]
        assert _events_of(fake, "first-copy") == [told]
        metadata = _pod(fake, "second-copy")["metadata"]
        assert metadata["annotations"][keys.ANNOTATION_TOLD] == metadata["uid"]


def test_a_copy_of_a_running_pod_whose_queue_is_gone_or_closed_says_so_first(fake: Fake) -> None:
    """Was: a running workload's new pods were told GangRunning (reason and Event) even
    where the queue view shows their queue gone (QueueUnknown) or closed to them
    (QueueClosed) first, the problem to fix before anything runs. Their pods say what the
    view shows; GangRunning comes once the queue takes them."""
    from scheduler.crds import queue_object

    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    queue = TEAM_A.model_copy(update={"name": "crd-team", "max_priority": 100})
    fake.put(queue_object(queue))
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    controller = Controller(KubeApi(fake.api_client()), cluster, SETTINGS, Metrics(cluster))

    def reason(name: str) -> str:
        return str(_pod(fake, name)["metadata"]["annotations"].get(keys.ANNOTATION_REASON))

    def waiting(name: str, priority: int = 0) -> None:
        pod = waiting_pod(fake, name, gpus=1, priority=priority, workload="gpu-team-a/train")
        pod["metadata"]["labels"][keys.LABEL_QUEUE] = "crd-team"
        fake.put_pod(pod)

    with synced(controller):
        waiting("train")
        eventually(lambda: _released(fake, "train"))
        waiting("urgent-copy", priority=1000)
        eventually(lambda: reason("urgent-copy").startswith("QueueClosed: "))
        assert reason("urgent-copy") == (
            "QueueClosed: priority 1000 is above the maximum 100 of queue 'crd-team'; use a "
            "lower priority class"
        )
        fake.delete_pod("gpu-team-a", "urgent-copy")
        fake.delete(fake.rtype("queues", "apportion.io", "v1alpha1"), None, "crd-team")
        eventually(lambda: "crd-team" not in cluster.queues)
        waiting("copy")
        eventually(lambda: reason("copy").startswith("QueueUnknown: "))
        assert reason("copy") == (
            "QueueUnknown: queue 'crd-team' does not exist; create it or relabel"
        )
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert _events_of(fake, "copy") == _events_of(fake, "urgent-copy") == []
        fake.put(queue_object(queue))
        (told,) = eventually(lambda: _events_of(fake, "copy"))
        assert told[1] == "GangRunning"
        assert reason("copy") == f"GangRunning: {told[2]}"


def _preemptions(controller: Controller) -> float:
    """``apportion_preemptions_total`` of team-a (0 before any)."""
    registry = controller.metrics.registry
    return registry.get_sample_value("apportion_preemptions_total", {"queue": "team-a"}) or 0


def test_an_eviction_whose_answer_was_lost_and_that_was_not_made_is_never_counted(
    fake: Fake,
) -> None:
    """Was: an eviction that got no answer counted as made at once. One never made, and
    never made again (here its beneficiary deleted: the next decisions evict nothing),
    stayed counted, and its victim was told it was preempted once it ended on its own.
    It counts once its victim is seen leaving or gone; one seen running past
    preempting.LOST_EVICTION_S was not made."""
    ahead = [0.0]
    cluster = LiveCluster(clock=lambda: time.time() + ahead[0], intent_ttl_s=30)
    api = KubeApi(fake.api_client(), SETTINGS.api_timeout_s)
    controller = Controller(api, cluster, SETTINGS, Metrics(cluster), queues=lambda: [TEAM_A])
    with synced(controller):
        _fill_with_low_priority(fake)
        fake.fail(r".*/pods/low-a/eviction", times=1000, status="drop", method="POST")
        waiting_pod(fake, "urgent", gpus=4, priority=1000)
        eventually(lambda: fake.requests_to(r".*/pods/low-a/eviction", "POST"))
        fake.delete_pod("gpu-team-a", "urgent")
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert _preemptions(controller) == 0
        ahead[0] = 120.0
        reviews = controller.stuck_reviews
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        fake.delete_pod("gpu-team-a", "low-a")  # it ends on its own
        reviews = controller.stuck_reviews
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert fake.evictions == []
        assert [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"] == []
        assert _preemptions(controller) == 0


def test_a_gang_victim_a_disruption_budget_lets_go_one_pod_at_a_time_is_counted_once(
    fake: Fake,
) -> None:
    """Was: a gang victim whose first pod a PodDisruptionBudget held back (429) while the
    other was evicted, and gone by the next cycle, was counted again when the first was
    evicted: nothing was left to say its eviction had started. Each pod is told once, the
    victim counted once."""
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))
        for member in ("low-g-0", "low-g-1"):
            waiting_pod(fake, member, gpus=3, workload="gpu-team-a/low-g", gang=2)
        eventually(lambda: _released(fake, "low-g-0", "low-g-1"))
        for member in ("low-g-0", "low-g-1"):
            fake.bind("gpu-team-a", member, _placement(fake, member).split(":")[0])
        fake.block_evictions("gpu-team-a", "low-g-0")
        for member in ("urgent-0", "urgent-1"):  # the room of both low-g pods
            waiting_pod(fake, member, gpus=3, priority=1000, workload="gpu-team-a/urgent", gang=2)
        eventually(lambda: [e for e in fake.evictions if e["allowed"]])
        eventually(lambda: ("gpu-team-a", "low-g-1") not in controller.cluster.pods)
        eventually(lambda: len(fake.evictions) >= 3)  # low-g-0 refused again, low-g-1 gone
        fake.allow_evictions()
        eventually(lambda: _released(fake, "urgent-0", "urgent-1"))
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert sorted(e["name"] for e in fake.evictions if e["allowed"]) == ["low-g-0", "low-g-1"]
        preempted = [e for e in fake.events("gpu-team-a") if e["reason"] == "Preempted"]
        assert sorted(e["involvedObject"]["name"] for e in preempted) == ["low-g-0", "low-g-1"]
        assert _preemptions(controller) == 1


def test_a_gang_member_recreated_while_the_gang_is_evicted_waits_for_it_to_end(
    fake: Fake,
) -> None:
    """Was: low-g (2 pods × 2 GPUs) is evicted for urgent; a disruption budget holds
    low-g-0 back while low-g-1 ends, and low-g's Job recreates low-g-1 as low-g-1b. That
    member was decided alone as low-g's replacement, in the room the decision counted free
    for low-g's end, and admitted (the queue at 5 of 7); then, part of low-g again, it was
    marked and evicted with the rest of it. It waits, saying for whom its gang is preempted,
    and is decided with the gang once low-g has ended."""
    queue = TEAM_A.model_copy(update={"quota": {"H100-80GB": Quota(nominal=7)}})
    controller = _controller_for(fake, queue)
    with synced(controller):
        eventually(lambda: _released(fake, "patched-gpu-1"))  # team-a at 1
        for member in ("low-g-0", "low-g-1"):
            waiting_pod(fake, member, gpus=2, workload="gpu-team-a/low-g", gang=2)
        eventually(lambda: _released(fake, "low-g-0", "low-g-1"))  # at 5
        for member in ("low-g-0", "low-g-1"):
            fake.bind("gpu-team-a", member, _placement(fake, member).split(":")[0])
        fake.block_evictions("gpu-team-a", "low-g-0")
        for member in ("urgent-0", "urgent-1"):  # 4 more: past the quota of 7
            waiting_pod(fake, member, gpus=2, priority=1000, workload="gpu-team-a/urgent", gang=2)
        eventually(lambda: ("gpu-team-a", "low-g-1") not in controller.cluster.pods)
        waiting_pod(fake, "low-g-1b", gpus=2, workload="gpu-team-a/low-g", gang=2)
        expected = (
            "PreemptedByHigherPriority: gang gpu-team-a/low-g is being preempted for "
            "gpu-team-a/urgent: preempted by gpu-team-a/urgent (priority 1000 > 0) in queue "
            "team-a. Its new pods wait until its running pods have ended, then are decided "
            "with the gang"
        )

        def reason() -> object:
            return _pod(fake, "low-g-1b")["metadata"]["annotations"].get(keys.ANNOTATION_REASON)

        eventually(lambda: reason() == expected)
        reviews = controller.stuck_reviews  # one per decision cycle
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert gates_of(_pod(fake, "low-g-1b"))
        view = queue_view(controller.cluster).of(None)["queues"]["team-a"]
        assert {r["workload"]: (r["reason"], r["message"]) for r in view}[
            "gpu-team-a/low-g replacements"
        ] == tuple(expected.split(": ", 1))
        fake.allow_evictions()
        eventually(lambda: _released(fake, "urgent-0", "urgent-1"))
        reviews = controller.stuck_reviews
        eventually(lambda: controller.stuck_reviews >= reviews + 3)
        assert gates_of(_pod(fake, "low-g-1b"))
        assert {e["name"] for e in fake.evictions} == {"low-g-0", "low-g-1"}
        view = {w.workload: w for w in waiting_workloads(controller.cluster)}
        assert view["gpu-team-a/low-g"].reason == "GangIncomplete"


# ---- a cycle's calls, many workloads' at once (webhook/workers.py) -------------------------

CALLS = r"/api/v1/namespaces/gpu-team-a/.+"
"""The calls a cycle's workers make: pod patches and Events."""


def _team(gpus: int) -> Queue:
    return Queue(
        name="team-a", namespaces=("gpu-team-a",), quota={"H100-80GB": Quota(nominal=gpus)}
    )


@contextmanager
def _watching(fake: Fake, concurrency: int, queue: Queue) -> Iterator[Controller]:
    """A controller whose informers have listed the cluster, and no reconcile loop: the
    test runs each cycle itself (``reconcile_once``). Its client keeps a connection per
    thread that may call at once, as ``apportion serve``'s does."""
    settings = replace(SETTINGS, api_concurrency=concurrency)
    configuration = fake.configuration()
    configuration.connection_pool_maxsize = concurrency + OWN_CONNECTIONS
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    api = KubeApi(ApiClient(configuration), settings.api_timeout_s)
    controller = Controller(api, cluster, settings, Metrics(cluster))
    cluster.replace_queues([queue])
    threads = [threading.Thread(target=i.run, daemon=True) for i in controller.informers]
    for thread in threads:
        thread.start()
    try:
        eventually(controller.synced)
        yield controller
    finally:
        controller.stop()
        for thread in threads:
            thread.join(5)


def _spare_nodes(fake: Fake, count: int) -> None:
    """``count`` more nodes of 8 free H100s, as gpu-node-a is."""
    for i in range(count):
        node = copy.deepcopy(fake.get("nodes", "gpu-node-a"))
        node["metadata"] = {
            "name": f"spare-{i}",
            "labels": {**node["metadata"]["labels"], keys.NODE_HOSTNAME: f"spare-{i}"},
        }
        fake.put_node(node)


def _ungates(body: Any) -> bool:
    return any(op["path"].startswith("/spec/schedulingGates") for op in body)


def test_controller_connections_beside_its_workers_are_counted(fake: Fake) -> None:
    controller = _controller(fake)
    # A watch per informer, the Lease's renewals and the reconcile thread's own calls.
    assert len(controller.informers) + 2 == OWN_CONNECTIONS


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_cycle_admits_many_workloads_at_once_each_one_s_calls_in_their_order(
    fake: Fake, concurrency: int
) -> None:
    """Was: one call after another, 5–20 ms each against a real API server, so a cycle
    admitting 1,000 workloads spent 10–40 s in calls. Now up to ``api_concurrency``
    workloads' calls overlap (1: one at a time), each workload's in their order: a gang's
    placements all recorded before any gate is removed, each Event after what it tells."""
    _spare_nodes(fake, 4)
    solo = [f"w-{i:02}" for i in range(20)]
    gang = [f"gang-{i}" for i in range(3)]
    for name in solo:
        waiting_pod(fake, name)
    for name in gang:
        waiting_pod(fake, name, workload="gpu-team-a/gang", gang=3)
    latency = fake.add_latency(CALLS, 0.05)
    with _watching(fake, concurrency, _team(40)) as controller:
        controller.reconcile_once()
        assert _released(fake, *solo, *gang)
        if concurrency == 1:
            assert latency.peak == 1
        else:
            assert 1 < latency.peak <= concurrency
        log = fake.requests_to(CALLS)
        sent = {
            (r.method, r.body["involvedObject"]["name"] if r.method == "POST" else r.path): i
            for i, r in enumerate(log)
        }
        of_gang = [r for r in log if r.method == "PATCH" and r.path.split("/")[-1] in gang]
        assert [_ungates(r.body) for r in of_gang] == [False] * 3 + [True] * 3
        for name in solo + gang:  # every Event made before the cycle ended
            assert (
                sent[("PATCH", f"/api/v1/namespaces/gpu-team-a/pods/{name}")] < sent[("POST", name)]
            )
        assert [reason for _, reason, _ in _events_of(fake, "gang-0")] == ["Admitted"]


def test_a_worker_that_may_no_longer_lead_stops_the_cycle(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``NotLeading`` in one worker ends its workload there; the workloads not started
    are not, those started end, and the cycle stops as one call at a time would have:
    no reason written, no reservation held for what was not patched."""
    _spare_nodes(fake, 2)
    solo = [f"w-{i:02}" for i in range(12)]
    for name in solo:
        waiting_pod(fake, name, priority=10)
    waiting_pod(fake, "beyond-quota", gpus=4)  # the room left in its queue is 2 GPUs
    fake.add_latency(CALLS, 0.05)
    asked = 0
    lock = threading.Lock()

    def lease_lost_at_the_third_call() -> None:
        nonlocal asked
        with lock:
            asked += 1
            if asked == 3:
                raise NotLeading

    with _watching(fake, 2, _team(14)) as controller:
        monkeypatch.setattr(controller, "_before_acting", lease_lost_at_the_third_call)
        with pytest.raises(NotLeading):
            controller.reconcile_once()
        patched = {r.path.split("/")[-1] for r in fake.requests_to(CALLS, "PATCH")}
        # Two before the third call; at most one more, started by the other worker
        # before the first learnt it no longer leads.
        assert 2 <= len(patched) <= 3 and patched <= set(solo)
        held = {
            w.name.split("/")[-1]
            for w in controller.cluster.snapshot().workloads
            if w.placement is not None and w.name.startswith("gpu-team-a/w-")
        }
        assert held == patched
        controller.reconcile_once()  # leading again: the rest, then the reason
        assert _released(fake, *solo)
        reason = _pod(fake, "beyond-quota")["metadata"]["annotations"][keys.ANNOTATION_REASON]
        assert reason.startswith("QuotaExhausted: ")


@pytest.mark.parametrize("failure", ["refused", "raised"])
def test_a_workload_whose_calls_fail_keeps_no_other_waiting(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """An API error (counted, logged) or any other error (logged with its traceback, as a
    failed step is) ends its own workload's calls only."""
    _spare_nodes(fake, 2)
    solo = [f"w-{i:02}" for i in range(12)]
    for name in solo:
        waiting_pod(fake, name)
    fake.add_latency(CALLS, 0.02)
    with _watching(fake, 4, _team(16)) as controller:
        if failure == "refused":
            fake.fail(r".*/pods/w-03", times=1000, status=500, method="PATCH")
        else:
            patch_pod = controller.api.patch_pod

            def broken(namespace: str, name: str, patch: list[dict[str, Any]]) -> Any:
                if name == "w-03":
                    raise RuntimeError("a bug")
                return patch_pod(namespace, name, patch)

            monkeypatch.setattr(controller.api, "patch_pod", broken)
        controller.reconcile_once()
        assert _released(fake, *(n for n in solo if n != "w-03"))
        assert gates_of(_pod(fake, "w-03"))
        if failure == "refused":
            assert api_failures(controller) == {("patch", "500"): 1}
        else:
            (logged,) = [r for r in caplog.records if r.levelname == "ERROR"]
            assert logged.getMessage() == (
                "admitting gpu-team-a/w-03 failed; retrying on the next change or tick"
            )
            assert logged.exc_info is not None and "a bug" in str(logged.exc_info[1])


def _in_flight_at_once(requests: list[Any], latency_s: float) -> int:
    """The most of ``requests`` in flight at once (each answered ``latency_s`` after it
    arrived), as seen at each one's arrival."""
    return max(sum(1 for q in requests if q.at <= r.at < q.at + latency_s) for r in requests)


def _bound(fake: Fake, controller: Controller, names: list[str]) -> None:
    """Bind the admitted pods ``names`` where they were placed, as the kube-scheduler
    does, and wait until the controller sees them running."""
    for name in names:
        fake.bind("gpu-team-a", name, _placement(fake, name).split(":")[0])
    eventually(
        lambda: all(
            getattr(controller.cluster.pods.get(("gpu-team-a", n)), "node", None) for n in names
        )
    )


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_cycle_evicts_many_victims_at_once_and_nominates_once_every_one_is_answered(
    fake: Fake, concurrency: int
) -> None:
    """Was: every eviction, then every nomination, one call after another. Now up to
    ``api_concurrency`` victims are evicted at once, each victim's pods one after another;
    each Preempted Event follows its eviction's answer; no beneficiary is nominated before
    every eviction of the cycle is answered, nor its reason written before its nomination."""
    _spare_nodes(fake, 2)
    queue = _team(16).model_copy(
        update={"preemption": PreemptionPolicy(within_queue="LowerPriority")}
    )
    solo = [f"low-{i:02}" for i in range(12)]
    pair = ["pair-0", "pair-1"]
    for name in solo:
        waiting_pod(fake, name)
    for name in pair:
        waiting_pod(fake, name, gpus=2, workload="gpu-team-a/pair", gang=2)
    with _watching(fake, concurrency, queue) as controller:
        controller.reconcile_once()
        _bound(fake, controller, solo + pair)
        urgent = [f"urgent-{i}" for i in range(4)]
        for name in urgent:  # all 16 GPUs of the queue's quota between them
            waiting_pod(fake, name, gpus=4, priority=1000)
        eventually(lambda: all(("gpu-team-a", n) in controller.cluster.pods for n in urgent))
        fake.add_latency(CALLS, 0.05)
        decision = controller.reconcile_once()
        assert decision is not None and len(decision.evictions) == len(solo) + 1
        evicted = {r.path.split("/")[-2]: r for r in fake.requests_to(CALLS + "/eviction", "POST")}
        assert sorted(evicted) == sorted(solo + pair)
        answered = {name: r.at + 0.05 for name, r in evicted.items()}
        at_once = _in_flight_at_once(list(evicted.values()), 0.05)
        if concurrency == 1:
            assert at_once == 1
        else:
            assert 1 < at_once <= concurrency
        assert evicted["pair-1"].at >= answered["pair-0"] - 0.005  # one after the other
        told = {
            r.body["involvedObject"]["name"]: r
            for r in fake.requests_to(CALLS, "POST")
            if r.body.get("reason") == "Preempted"
        }
        assert sorted(told) == sorted(solo + pair)
        assert all(told[name].at >= answered[name] - 0.005 for name in told)
        patches = fake.requests_to(r"/api/v1/namespaces/gpu-team-a/pods/urgent-\d", "PATCH")
        nominations = [r for r in patches if "nominated-until" in json.dumps(r.body)]
        assert sorted(r.path.split("/")[-1] for r in nominations) == urgent
        assert min(r.at for r in nominations) >= max(answered.values()) - 0.005
        for name in urgent:
            kinds = [
                "nominated-until" in json.dumps(r.body) for r in patches if r.path.endswith(name)
            ]
            assert kinds == [True, False]  # nominated, then its reason


def test_gated_pods_apportion_never_decided_are_settled_many_at_once(fake: Fake) -> None:
    """Was: one pod after another. Now up to ``api_concurrency`` pods' patches at once,
    each pod's Event once its patch is answered, all before the cycle's decision."""
    fake.put_namespace("elsewhere")  # not opted in: their gates are removed
    names = [f"copied-{i}" for i in range(8)]
    for name in names:
        fake.put_pod(_gated_copy(fake, name, namespace="elsewhere"))
    calls = r"/api/v1/namespaces/elsewhere/.+"
    fake.add_latency(calls, 0.05)
    controller = _controller(fake)
    with synced(controller):
        eventually(lambda: len(fake.events("elsewhere")) == len(names))
    patches = {r.path.split("/")[-1]: r for r in fake.requests_to(calls, "PATCH")}
    assert sorted(patches) == names
    assert 1 < _in_flight_at_once(list(patches.values()), 0.05) <= SETTINGS.api_concurrency
    for r in fake.requests_to(calls, "POST"):
        assert r.body["reason"] == "NotManaged"
        assert r.at >= patches[r.body["involvedObject"]["name"]].at + 0.05 - 0.005


def test_events_queued_before_the_lease_is_lost_are_dropped(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: an Event queued behind the cycle's calls (``Workers.later``) was sent even once
    the Lease was lost meanwhile: a replica that may no longer lead wrote to the cluster
    while another could lead. Such Events are dropped now, counted and logged once."""
    _spare_nodes(fake, 1)
    solo = [f"w-{i}" for i in range(5)]
    for name in solo:
        waiting_pod(fake, name)
    fake.add_latency(CALLS, 0.05)
    clock = [0.0]
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    api = KubeApi(fake.api_client(), SETTINGS.api_timeout_s)
    metrics = Metrics(cluster)
    lease = ("apportion-system", "apportion-controller", "replica-1", 15.0)
    elector = LeaderElector(api, *lease, metrics, clock=lambda: clock[0])
    assert elector.try_acquire_or_renew()  # no thread renews it: the test moves its clock
    settings = replace(SETTINGS, api_concurrency=1)  # the Events queued behind every admission
    controller = Controller(api, cluster, settings, metrics, elector=elector)
    cluster.replace_queues([_team(8)])
    threads = [threading.Thread(target=i.run, daemon=True) for i in controller.informers]
    for thread in threads:
        thread.start()
    patch_pod = api.patch_pod
    lost_at: list[float] = []

    def then_the_lease_runs_out(namespace: str, name: str, patch: list[dict[str, Any]]) -> Any:
        answer = patch_pod(namespace, name, patch)
        if name == solo[-1]:
            clock[0] += 60  # past the deadline: another replica may have the Lease now
            lost_at.append(time.time())
        return answer

    monkeypatch.setattr(api, "patch_pod", then_the_lease_runs_out)
    try:
        eventually(controller.synced)
        controller.reconcile_once()
    finally:
        controller.stop()
        for thread in threads:
            thread.join(5)
    assert _released(fake, *solo)  # every admission made while it led
    posted = fake.requests_to(r"/api/v1/namespaces/gpu-team-a/events", "POST")
    assert [r.body["involvedObject"]["name"] for r in posted if r.at >= lost_at[0]] == []
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [
        "5 Event(s) dropped, queued before this replica lost the Lease: only the leader "
        "writes to the cluster"
    ]


def test_an_adoption_seen_made_is_counted_but_not_told_once_the_lease_is_lost() -> None:
    """Was: an adoption whose answer was lost, seen made by the watch, was told at once as
    the cycle began (``StrayGates.tell_made``), whether or not this replica still led."""
    with running_fake() as fake:
        labels = {keys.NAMESPACE_ENABLED: "true", keys.NAMESPACE_DEFAULT_QUEUE: "team-a"}
        fake.put_namespace("gpu-team-a", labels)
        fake.put_pod(_undecided(fake, "copied"))
        cluster = LiveCluster(clock=time.time)
        cluster.put_namespace("gpu-team-a", labels)
        cluster.replace_queues([TEAM_A])
        cluster.put_stray("gpu-team-a", "copied", _pod(fake, "copied"))
        leading, told = [True], []

        def before_acting() -> None:
            if not leading[0]:
                raise NotLeading

        gates = _stray_gates(  # the adoption made, its answer lost
            fake,
            cluster,
            lost=1,
            before_acting=before_acting,
            event=lambda raw, reason, *_: told.append(reason),
        )
        _settle(gates)
        gates.seen(_pod(fake, "copied"))  # the watch shows it adopted
        cluster.put_stray("gpu-team-a", "copied", None)
        leading[0] = False
        with pytest.raises(NotLeading):
            gates.tell_made()
        assert told == []
        adopted = {"outcome": "adopted"}
        registry = gates.metrics.registry
        assert registry.get_sample_value("apportion_strays_settled_total", adopted) == 1
