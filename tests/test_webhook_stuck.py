"""Admitted pods the kube-scheduler cannot place (webhook/stuck.py and the controller's
step that acts on them), against the in-process fake kube-apiserver.

No kube-scheduler runs against the fake, so the tests write what it would: the
``PodScheduled=False/Unschedulable`` condition through the pod's status subresource (a
strategic merge on ``conditions``, as the scheduler patches it), keeping the
``lastTransitionTime`` of the ``SchedulingGated`` condition it replaces (the status stays
False, so Kubernetes keeps the time). The controller reads time from an injected clock
that the tests move forward past the grace period instead of sleeping.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest
from controller_support import SETTINGS, TEAM_A, eventually, waiting_pod
from kubefake import Fake, running_fake
from test_webhook_controller import _in_flight_at_once, api_failures

from scheduler.model import Demand, PodPlacement
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.controller import Controller
from webhook.kubeapi import KubeApi
from webhook.leader import LeaderElector
from webhook.metrics import Metrics
from webhook.pods import ANNOTATION_PLACEMENT, ManagedPod
from webhook.stuck import StuckWatch

GRACE_S = 300.0
NAMESPACE = "gpu-team-a"
AN_HOUR_AGO = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
SCHEDULER_SAYS = (
    "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's "
    "node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims "
    "found for incoming pod, 2 Preemption is not helpful for scheduling."
)


class Clock:
    """Wall time plus an offset the test moves (the controller's and cluster's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def fake() -> Iterator[Fake]:
    with running_fake() as server:
        server.put_namespace(NAMESPACE, {keys.NAMESPACE_ENABLED: "true"})
        server.put_namespace("apportion-system")
        yield server


def _controller(fake: Fake, clock: Clock, stuck_after_s: float = GRACE_S) -> Controller:
    cluster = LiveCluster(clock=clock, intent_ttl_s=30)
    return Controller(
        KubeApi(fake.api_client()),
        cluster,
        replace(SETTINGS, stuck_after_s=stuck_after_s),
        Metrics(cluster),
        queues=lambda: [TEAM_A],
    )


def _job_pod(fake: Fake, name: str, job: str, gpus: int = 1, gang: int | None = None) -> None:
    """A gated pod of a Job as the Job controller creates it and Apportion's webhook gates
    it: owner reference and tracking finalizer as in the recorded Job pods, and the
    ``SchedulingGated`` condition the API server set an hour ago at creation. Created
    before the controller starts (it replaces the bare pod ``waiting_pod`` puts)."""
    pod = copy.deepcopy(
        waiting_pod(fake, name, gpus=gpus, workload=f"{NAMESPACE}/{job}", gang=gang)
    )
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        pod["metadata"].pop(key, None)
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "blockOwnerDeletion": True,
            "controller": True,
            "kind": "Job",
            "name": job,
            "uid": "95355555-26f5-4f4e-a05a-860e149336a1",
        }
    ]
    pod["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] = job
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "lastProbeTime": None,
                "lastTransitionTime": AN_HOUR_AGO,
                "status": "False",
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
                "type": "PodScheduled",
            }
        ],
    }
    fake.delete_pod(NAMESPACE, name)
    fake.put_pod(pod)


def _pod(fake: Fake, name: str) -> dict[str, Any]:
    return fake.get("pods", name, NAMESPACE)


def _admitted(fake: Fake, *names: str) -> dict[str, str]:
    """Wait until the controller admitted these pods; their nodes by pod name."""
    eventually(lambda: all(not _pod(fake, n)["spec"].get("schedulingGates") for n in names))
    return {
        n: _pod(fake, n)["metadata"]["annotations"][ANNOTATION_PLACEMENT].split(":")[0]
        for n in names
    }


def _unschedulable(fake: Fake, name: str, since: str = AN_HOUR_AGO) -> None:
    """What the kube-scheduler writes when it finds no node for the pod."""
    core = kubernetes.client.CoreV1Api(fake.api_client())
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": SCHEDULER_SAYS,
        "lastProbeTime": None,
        "lastTransitionTime": since,
    }
    core.patch_namespaced_pod_status(name, NAMESPACE, {"status": {"conditions": [condition]}})


def _cordon(fake: Fake, node: str) -> None:
    obj = copy.deepcopy(fake.get("nodes", node))
    obj["spec"]["unschedulable"] = True
    obj["spec"]["taints"] = [
        *(obj["spec"].get("taints") or []),
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
    ]
    fake.put_node(obj)


def _reviews(controller: Controller, count: int = 3) -> None:
    """Let the controller look for stuck pods ``count`` more times."""
    start = controller.stuck_reviews
    eventually(lambda: controller.stuck_reviews >= start + count)


def _events(fake: Fake, reason: str) -> list[dict[str, Any]]:
    return [e for e in fake.events(NAMESPACE) if e["reason"] == reason]


def _replaced(controller: Controller) -> float | None:
    return controller.metrics.registry.get_sample_value(
        "apportion_stuck_replaced_total", {"queue": "team-a"}
    )


def _reported(controller: Controller) -> float | None:
    """Pods of team-a reported stuck (not replaced) at the last review."""
    return controller.metrics.registry.get_sample_value("apportion_stuck_pods", {"queue": "team-a"})


@contextlib.contextmanager
def _llm_gang_stuck(fake: Fake) -> Iterator[tuple[Controller, Clock, dict[str, str]]]:
    """A running controller, its clock, and the nodes of Job gang ``llm`` (two pods of 2
    GPUs), admitted, the scheduler having given up on llm-0 (llm-1 waits for its turn; the
    condition dates from the gate an hour ago, but the pods were admitted just now), until
    a review has seen it."""
    clock = Clock()
    _job_pod(fake, "llm-0", "llm", gpus=2, gang=2)
    _job_pod(fake, "llm-1", "llm", gpus=2, gang=2)
    controller = _controller(fake, clock)
    controller.start()
    try:
        nodes = _admitted(fake, "llm-0", "llm-1")
        _unschedulable(fake, "llm-0")
        _reviews(controller)
        yield controller, clock, nodes
    finally:
        controller.stop()


def test_a_stuck_job_gang_is_evicted_whole_after_the_grace_and_not_before(fake: Fake) -> None:
    with _llm_gang_stuck(fake) as (controller, clock, nodes):
        clock.offset = GRACE_S - 20
        _reviews(controller)
        assert fake.evictions == []
        assert _events(fake, "Replaced") == []
        # A PodDisruptionBudget refuses the mate at first: the next cycles try it again
        # (the whole gang goes, though llm-0 is gone from Apportion's view by then).
        fake.block_evictions(NAMESPACE, "llm-1")
        clock.offset = GRACE_S + 20
        eventually(lambda: any(e["name"] == "llm-1" for e in fake.evictions))
        eventually(lambda: _pod(fake, "llm-0")["metadata"].get("deletionTimestamp"))
        assert _replaced(controller) is None
        assert api_failures(controller).keys() == {("evict", "429")}
        fake.allow_evictions()
        eventually(lambda: _replaced(controller) == 1)
        allowed = [e["name"] for e in fake.evictions if e["allowed"]]
        assert sorted(allowed) == ["llm-0", "llm-1"]
        eventually(lambda: len(_events(fake, "Replaced")) == 2)  # queued after the evictions
        events = {e["involvedObject"]["name"]: e for e in _events(fake, "Replaced")}
        assert sorted(events) == ["llm-0", "llm-1"]
        for name, event in events.items():
            assert event["type"] == "Warning"
            message = event["message"]
            mate = "" if name == "llm-0" else "its gang mate llm-0 is "
            assert message.startswith(f"admitted to node {nodes[name]}, {mate}unschedulable for ")
            seconds = int(message.split("unschedulable for ")[1].split(" s:")[0])
            assert GRACE_S <= seconds <= GRACE_S + 40, message
            assert SCHEDULER_SAYS in message
        # Evicted, the pods wait for the Job controller to drop its finalizer; they will
        # never be placed, so their GPUs are free in Apportion's view at once.
        eventually(
            lambda: (
                "gpu-team-a/llm" not in {w.name for w in controller.cluster.snapshot().workloads}
            )
        )
        assert all(_pod(fake, n)["metadata"].get("deletionTimestamp") for n in nodes)
        core = kubernetes.client.CoreV1Api(fake.api_client())
        for name in nodes:
            core.patch_namespaced_pod(
                name, NAMESPACE, [{"op": "remove", "path": "/metadata/finalizers"}]
            )
        eventually(
            lambda: (
                not any(p.workload == "gpu-team-a/llm" for p in controller.cluster.managed_pods())
            )
        )
        _reviews(controller)
        assert sorted(e["name"] for e in fake.evictions if e["allowed"]) == ["llm-0", "llm-1"]
        assert _replaced(controller) == 1
        assert _reported(controller) is None  # replaced, not only reported


def _reason(fake: Fake, name: str) -> str:
    annotations = _pod(fake, name)["metadata"].get("annotations") or {}
    return str(annotations.get(keys.ANNOTATION_REASON, ""))


def _reported_notebook(fake: Fake, controller: Controller, clock: Clock) -> str:
    """The bare pod "notebook" admitted, then unschedulable past the grace until the report
    is on it; returns the node it was admitted to."""
    node = _admitted(fake, "notebook")["notebook"]
    _unschedulable(fake, "notebook")
    _reviews(controller)
    clock.offset = GRACE_S + 20
    eventually(lambda: _reason(fake, "notebook").startswith("Stuck: "))
    return node


def test_a_bare_pod_is_not_deleted_but_reported_once(fake: Fake) -> None:
    clock = Clock()
    waiting_pod(fake, "notebook", gpus=1)
    controller = _controller(fake, clock)
    controller.start()
    try:
        node = _reported_notebook(fake, controller, clock)

        def reason() -> str:
            return _reason(fake, "notebook")

        assert reason().startswith(f"Stuck: admitted to node {node}, unschedulable for ")
        assert SCHEDULER_SAYS in reason()
        assert "delete it and create it again" in reason()
        patches = len(fake.requests_to(r".*/pods/notebook", "PATCH"))
        _reviews(controller, 5)
        events = _events(fake, "Stuck")
        assert [e["involvedObject"]["name"] for e in events] == ["notebook"]
        assert events[0]["type"] == "Warning"
        assert events[0]["message"] == reason().removeprefix("Stuck: ")
        assert len(fake.requests_to(r".*/pods/notebook", "PATCH")) == patches
        assert fake.evictions == []
        assert not _pod(fake, "notebook")["metadata"].get("deletionTimestamp")
        assert _replaced(controller) is None
        assert _reported(controller) == 1
    finally:
        controller.stop()


def test_a_replica_that_loses_the_lease_no_longer_reports_stuck_pods(fake: Fake) -> None:
    # Was: only the leader reviews stuck pods, and a replica that lost the Lease kept its
    # last report on /metrics: ApportionPodsStuck fired on for pods long since gone.
    clock = Clock()
    waiting_pod(fake, "notebook", gpus=1)
    cluster = LiveCluster(clock=clock, intent_ttl_s=30)
    api = KubeApi(fake.api_client(), SETTINGS.api_timeout_s)
    metrics = Metrics(cluster)
    elector = LeaderElector(
        api, "apportion-system", "apportion-controller", "replica-1", 1.0, metrics
    )
    controller = Controller(
        api, cluster, SETTINGS, metrics, queues=lambda: [TEAM_A], elector=elector
    )
    controller.start()
    try:
        _reported_notebook(fake, controller, clock)
        eventually(lambda: _reported(controller) == 1)
        fake.fail(r".*/leases/apportion-controller", times=1000, status="drop")
        eventually(lambda: not elector.leading)
        eventually(lambda: _reported(controller) is None)
    finally:
        controller.stop()


def test_a_reported_pod_bound_later_says_so(fake: Fake) -> None:
    """The report is taken back when the kube-scheduler binds the pod after all (its node
    was uncordoned, or room was made on it): the reason no longer says it is stuck."""
    clock = Clock()
    waiting_pod(fake, "notebook", gpus=1)
    controller = _controller(fake, clock)
    controller.start()
    try:
        node = _reported_notebook(fake, controller, clock)
        eventually(lambda: _reported(controller) == 1)
        fake.bind(NAMESPACE, "notebook", node)
        eventually(
            lambda: _reason(fake, "notebook") == f"bound to node {node} after it was reported stuck"
        )
        eventually(lambda: _reported(controller) is None)
        patches = len(fake.requests_to(r".*/pods/notebook", "PATCH"))
        _reviews(controller, 3)
        assert len(fake.requests_to(r".*/pods/notebook", "PATCH")) == patches
        assert [e["involvedObject"]["name"] for e in _events(fake, "Stuck")] == ["notebook"]
    finally:
        controller.stop()


@contextlib.contextmanager
def _train_stuck_on_a_cordoned_node(fake: Fake) -> Iterator[tuple[Controller, Clock, str]]:
    """A running controller, its clock, and the node of Job pod ``train``, admitted there
    and cordoned (no word from the scheduler: the node alone says it) until a review has
    seen it stuck."""
    clock = Clock()
    _job_pod(fake, "train", "train", gpus=1)
    controller = _controller(fake, clock)
    controller.start()
    try:
        node = _admitted(fake, "train")["train"]
        _cordon(fake, node)
        eventually(lambda: controller.watched.node_problems.get(node))
        _reviews(controller)
        yield controller, clock, node
    finally:
        controller.stop()


def test_a_pod_pinned_to_a_cordoned_node_is_replaced_after_the_grace(fake: Fake) -> None:
    with _train_stuck_on_a_cordoned_node(fake) as (controller, clock, node):
        clock.offset = GRACE_S - 20
        _reviews(controller)
        assert fake.evictions == []
        clock.offset = GRACE_S + 20
        eventually(lambda: fake.evictions)
        assert [(e["name"], e["allowed"]) for e in fake.evictions] == [("train", True)]
        (event,) = eventually(lambda: _events(fake, "Replaced"))  # queued after the eviction
        assert event["message"].startswith(f"admitted to node {node}, unschedulable for ")
        assert f"{node}: node is cordoned (spec.unschedulable)" in event["message"]
        assert _replaced(controller) == 1


def test_many_stuck_workloads_are_replaced_at_once(fake: Fake) -> None:
    """Was: one eviction after another. Now up to ``api_concurrency`` stuck workloads' at
    once, each pod's Replaced Event once its eviction is answered."""
    clock = Clock()
    names = [f"train-{i}" for i in range(6)]
    for name in names:
        _job_pod(fake, name, name, gpus=1)
    controller = _controller(fake, clock)
    controller.start()
    try:
        nodes = set(_admitted(fake, *names).values())
        for node in nodes:
            _cordon(fake, node)
        eventually(lambda: all(controller.watched.node_problems.get(node) for node in nodes))
        _reviews(controller)
        fake.add_latency(rf"/api/v1/namespaces/{NAMESPACE}/.+", 0.05)
        clock.offset = GRACE_S + 20
        eventually(lambda: _replaced(controller) == len(names))
        eventually(lambda: len(_events(fake, "Replaced")) == len(names))
    finally:
        controller.stop()
    evictions = fake.requests_to(rf"/api/v1/namespaces/{NAMESPACE}/pods/[^/]+/eviction", "POST")
    assert sorted(r.path.split("/")[-2] for r in evictions) == names
    assert 1 < _in_flight_at_once(evictions, 0.05) <= SETTINGS.api_concurrency
    evicted = {r.path.split("/")[-2]: r.at for r in evictions}
    for event in fake.requests_to(rf"/api/v1/namespaces/{NAMESPACE}/events", "POST"):
        if event.body["reason"] == "Replaced":
            assert event.at >= evicted[event.body["involvedObject"]["name"]] + 0.05 - 0.005


def test_a_replacement_whose_eviction_answer_is_lost_is_told_counted_and_backed_off(
    fake: Fake,
) -> None:
    # Was: an eviction whose answer was lost counted as not made. The pod, terminating
    # from then on, was no longer stuck, so its workload was never recorded as replaced:
    # no Replaced Event said why it went, apportion_stuck_replaced_total missed it, and
    # the grace did not double, so its recreated pods, stuck again, went after one grace.
    with _train_stuck_on_a_cordoned_node(fake) as (controller, clock, node):
        fake.fail(r".*/pods/train/eviction", times=1, status="lost", method="POST")
        clock.offset = GRACE_S + 20
        eventually(lambda: _replaced(controller) == 1)
        (event,) = eventually(lambda: _events(fake, "Replaced"))
        assert event["involvedObject"]["name"] == "train"
        assert event["message"].startswith(f"admitted to node {node}, unschedulable for ")
        assert controller.replacer.watch.grace_s(f"{NAMESPACE}/train") == 2 * GRACE_S
        _reviews(controller)
        assert [(e["name"], e["allowed"]) for e in fake.evictions] == [("train", True)]
        assert len(_events(fake, "Replaced")) == 1
        assert _replaced(controller) == 1
        assert api_failures(controller) == {("evict", "unanswered"): 1}


def test_an_unanswered_eviction_found_made_by_a_404_is_counted(fake: Fake) -> None:
    # The watch may not yet show a pod leave whose unanswered eviction was made: the next
    # review evicts it again and the API server answers 404. That was one more failure,
    # and the workload was never counted as replaced.
    with _train_stuck_on_a_cordoned_node(fake) as (controller, clock, _):
        fake.fail(r".*/pods/train/eviction", times=1, status="drop", method="POST")
        fake.fail(r".*/pods/train/eviction", times=1, status=404, method="POST")
        clock.offset = GRACE_S + 20
        eventually(lambda: _replaced(controller) == 1)
        replaced = eventually(lambda: _events(fake, "Replaced"))  # queued after the eviction
        assert [e["involvedObject"]["name"] for e in replaced] == ["train"]
        assert api_failures(controller) == {("evict", "unanswered"): 1}


def test_a_gang_replacement_half_unanswered_is_finished_and_each_pod_told_once(
    fake: Fake,
) -> None:
    # One eviction never reached the API server (the pod stays: evicted again), the
    # other was made but its answer lost (the pod leaves: told, not evicted again).
    with _llm_gang_stuck(fake) as (controller, clock, _):
        fake.fail(r".*/pods/llm-0/eviction", times=1, status="drop", method="POST")
        fake.fail(r".*/pods/llm-1/eviction", times=1, status="lost", method="POST")
        clock.offset = GRACE_S + 20
        eventually(lambda: _replaced(controller) == 1)
        _reviews(controller)
        allowed = sorted(e["name"] for e in fake.evictions if e["allowed"])
        assert allowed == ["llm-0", "llm-1"]
        told = sorted(e["involvedObject"]["name"] for e in _events(fake, "Replaced"))
        assert told == ["llm-0", "llm-1"]
        assert _replaced(controller) == 1
        assert api_failures(controller) == {("evict", "unanswered"): 2}


def test_bound_running_and_unadmitted_pods_are_never_touched(fake: Fake) -> None:
    clock = Clock()
    _job_pod(fake, "runs", "runs", gpus=1)
    # A gang with one pod bound and running: the other, stuck, cannot be replaced
    # without stopping it, so it is reported instead.
    _job_pod(fake, "half-0", "half", gpus=1, gang=2)
    _job_pod(fake, "half-1", "half", gpus=1, gang=2)
    controller = _controller(fake, clock)
    controller.start()
    try:
        nodes = _admitted(fake, "runs", "half-0", "half-1")
        for name in ("runs", "half-0"):
            fake.bind(NAMESPACE, name, nodes[name])
            fake.set_pod_phase(NAMESPACE, name, "Running")
        _unschedulable(fake, "half-1")
        # Not Apportion's: ungated, no placement, unschedulable.
        foreign = waiting_pod(fake, "foreign", gpus=1)
        foreign["metadata"].pop("resourceVersion", None)
        foreign["spec"].pop("schedulingGates")
        fake.put_pod(foreign)
        _unschedulable(fake, "foreign")
        for node in set(nodes.values()):
            _cordon(fake, node)
        eventually(lambda: all(controller.watched.node_problems.get(n) for n in nodes.values()))
        _reviews(controller)
        before = {n: _pod(fake, n)["metadata"]["resourceVersion"] for n in ("runs", "half-0")}
        clock.offset = 10 * GRACE_S
        eventually(lambda: _events(fake, "Stuck"))
        _reviews(controller)
        assert fake.evictions == []
        assert _events(fake, "Replaced") == []
        # Reported: half-1, and the recorded bare pod the controller admitted at startup
        # when its node is one of those cordoned.
        reported = {e["involvedObject"]["name"] for e in _events(fake, "Stuck")}
        assert "half-1" in reported and reported <= {"half-1", "patched-gpu-1"}
        reason = _pod(fake, "half-1")["metadata"]["annotations"][keys.ANNOTATION_REASON]
        assert "pods half-0 of this gang are already on their nodes" in reason
        after = {n: _pod(fake, n)["metadata"]["resourceVersion"] for n in ("runs", "half-0")}
        assert after == before
        assert not fake.requests_to(r".*/pods/foreign", "PATCH")
    finally:
        controller.stop()


def test_zero_turns_it_off(fake: Fake) -> None:
    clock = Clock()
    _job_pod(fake, "train", "train", gpus=1)
    controller = _controller(fake, clock, stuck_after_s=0)
    controller.start()
    try:
        node = _admitted(fake, "train")["train"]
        _unschedulable(fake, "train")
        _cordon(fake, node)
        _reviews(controller)
        clock.offset = 86_400
        _reviews(controller, 5)
        assert fake.evictions == []
        assert _events(fake, "Replaced") == _events(fake, "Stuck") == []
        assert _pod(fake, "train")["metadata"]["annotations"][keys.ANNOTATION_REASON].startswith(
            "Admitted"
        )
    finally:
        controller.stop()


# --- backoff (pure: StuckWatch alone) -----------------------------------------------------------


def _job_pod_seen(name: str, uid: str, node: str | None = None) -> ManagedPod:
    """A Job's pod admitted to gpu-a as the controller observes it: unbound and judged
    Unschedulable since the epoch, or bound to ``node``."""
    raw = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "ownerReferences": [{"kind": "Job", "name": "train", "controller": True}],
        },
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": SCHEDULER_SAYS,
                    "lastTransitionTime": "1970-01-01T00:00:00Z",
                }
            ]
        },
    }
    return ManagedPod(
        namespace=NAMESPACE,
        name=name,
        workload=f"{NAMESPACE}/train",
        queue="team-a",
        demand=Demand(gpus=1),
        priority=0,
        created=0,
        gang_size=1,
        gated=False,
        node=node,
        placement=PodPlacement(node="gpu-a", gpus=(0,)),
        flavor="H100-80GB",
        raw=raw,
    )


def _stuck_after(watch: StuckWatch, pod: ManagedPod, start: float) -> float:
    """Seconds from ``start`` until ``watch`` judges ``pod``'s workload stuck (reviews
    every 10 s)."""
    now = start
    while not watch.review([pod], {"gpu-a": ""}, now):
        now += 10.0
    return now - start


def test_a_workload_stuck_again_after_its_replacement_waits_twice_as_long() -> None:
    """Each replacement doubles the grace for the next one, up to 16 times; once a pod of
    the workload is bound (it ran), the grace is back to the setting."""
    watch = StuckWatch(GRACE_S)
    workload = f"{NAMESPACE}/train"
    start, graces = 1000.0, []
    for attempt in range(6):
        pod = _job_pod_seen(f"train-{attempt}", f"uid-{attempt}")
        graces.append(_stuck_after(watch, pod, start))
        start += graces[-1]
        watch.replaced(workload, start)
    assert graces == [GRACE_S * 2**n for n in (0, 1, 2, 3, 4, 4)]
    watch.review([_job_pod_seen("train-6", "uid-6", node="gpu-a")], {"gpu-a": ""}, start)
    assert watch.grace_s(workload) == GRACE_S
    assert _stuck_after(watch, _job_pod_seen("train-7", "uid-7"), start) == GRACE_S
