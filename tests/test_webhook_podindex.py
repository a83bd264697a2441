"""The live cache's pods by workload (``webhook.podindex``): kept per workload as pods come
and go, it must say what grouping every pod from scratch says, and the live cluster must not
rebuild its allocator for what waiting pods do (a rebuild walks every pod)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_support import fixture_cluster

from scheduler.incremental import IncrementalAllocator
from scheduler.model import Demand, Node, PodPlacement, Queue, Quota, Snapshot, Taint, Workload
from scheduler.quota import UNLIMITED
from scheduler.reasons import Outcome
from webhook.cluster import LiveCluster
from webhook.hostpods import HostPod
from webhook.intents import PLACE_TAKEN, Refusal
from webhook.nodeshapes import NodeShapes
from webhook.observed import PodGroup, groups_of, replaced_gang, replacements_of
from webhook.podindex import PodIndex
from webhook.pods import ManagedPod

NAMESPACE = "gpu-team-a"

pods = st.builds(
    ManagedPod,
    namespace=st.just(NAMESPACE),
    name=st.sampled_from([f"p{i}" for i in range(6)]),
    workload=st.sampled_from([f"{NAMESPACE}/a", f"{NAMESPACE}/b"]),
    queue=st.sampled_from(["team-a", "team-b"]),
    demand=st.sampled_from([Demand(gpus=1), Demand(gpus=2)]),
    priority=st.sampled_from([0, 5, 10]),
    created=st.integers(1, 3),
    gang_size=st.integers(1, 3),
    gated=st.booleans(),
    placement=st.sampled_from(
        [None, *(PodPlacement(node="gpu-node-a", gpus=(i,)) for i in (0, 1))]
    ),
    foreign=st.booleans(),
    other_gates=st.sampled_from([(), ("example.com/quota",)]),
)
events = st.lists(st.one_of(pods, st.sampled_from([f"p{i}" for i in range(6)])), max_size=30)


def workload_groups(pods: list[ManagedPod]) -> dict[str, PodGroup]:
    """Every pod grouped from scratch: the index's oracle."""
    grouped: dict[str, list[ManagedPod]] = {}
    for pod in pods:
        if not pod.foreign:
            grouped.setdefault(pod.workload, []).append(pod)
    return {name: g for w, members in grouped.items() for name, g in groups_of(w, members).items()}


def _shape(groups: dict[str, PodGroup]) -> dict[str, tuple[object, ...]]:
    """Groups compared as sets of pods (the order of a group's pods means nothing)."""
    return {
        name: (sorted(p.name for p in g.pods), g.admitted, g.places, g.mixed)
        for name, g in groups.items()
    }


def _highest_waiting(all_pods: list[ManagedPod]) -> dict[str, int]:
    """What waits in each queue, from scratch: gated groups, not mixed, no other gate."""
    highest: dict[str, int] = {}
    for group in workload_groups(all_pods).values():
        for pod in () if group.admitted or group.mixed else group.pods:
            if not pod.other_gates:
                highest[pod.queue] = max(highest.get(pod.queue, pod.priority), pod.priority)
    return highest


@settings(max_examples=300, deadline=None)
@given(events)
def test_the_index_says_what_grouping_every_pod_from_scratch_says(
    steps: list[ManagedPod | str],
) -> None:
    index = PodIndex()
    for step in steps:
        if isinstance(step, str):
            index.pop((NAMESPACE, step))
        else:
            index.put(step)
        everyone = list(index.pods.values())
        assert _shape(index.all_groups()) == _shape(workload_groups(everyone))
        assert sorted(p.name for p in index.foreign()) == sorted(
            p.name for p in everyone if p.foreign
        )
        expected = _highest_waiting(everyone)
        for queue in ("team-a", "team-b"):
            assert index.highest_waiting(queue) == expected.get(queue)
        for workload in (f"{NAMESPACE}/a", f"{NAMESPACE}/b"):
            members = sorted(p.name for p in index.members(workload))
            assert members == sorted(p.name for p in everyone if p.workload == workload)
            for name in index.groups(workload):
                assert index.group(name) == index.groups(workload)[name]


WAITING = ManagedPod(
    namespace=NAMESPACE, name="big-0", workload=f"{NAMESPACE}/big", queue="team-a",
    demand=Demand(gpus=8), priority=0, created=1, gang_size=1, gated=True,
)  # fmt: skip


def _eight(name: str) -> Workload:
    return Workload(name=name, queue="team-a", namespace=NAMESPACE, demand=Demand(gpus=8))


def test_waiting_pods_coming_and_going_keep_the_webhooks_allocator() -> None:
    cluster = fixture_cluster()
    cluster.admit_now(_eight(f"{NAMESPACE}/probe"), reserve=False)  # builds it
    built = cluster._allocator
    assert built is not None
    cluster.put_pod(WAITING)
    cluster.put_pod(replace(WAITING, priority=5))
    cluster.remove_pod(NAMESPACE, WAITING.name)
    assert cluster._allocator is built
    # A pod that holds devices is another matter.
    running = replace(WAITING, gated=False, node="gpu-node-a")
    cluster.put_pod(running)
    assert cluster._allocator is None


def test_the_controllers_admission_holds_its_devices_for_the_webhooks_next_answer() -> None:
    cluster = fixture_cluster()
    cluster.admit_now(_eight(f"{NAMESPACE}/probe"), reserve=False)
    built = cluster._allocator
    cluster.put_pod(WAITING)
    on_a = PodPlacement(node="gpu-node-a", gpus=tuple(range(8)))
    assert (
        cluster.reserve(_eight(WAITING.workload).model_copy(update={"placement": (on_a,)})) is None
    )
    assert cluster._allocator is built  # held there, not rebuilt
    # gpu-node-b is the only other node with 8 whole H100 free: one more fits, not two.
    first = cluster.admit_now(_eight(f"{NAMESPACE}/one"), reserve=True)
    assert first.outcome is Outcome.ADMIT
    assert [p.node for p in first.placement] == ["gpu-node-b"]
    second = cluster.admit_now(_eight(f"{NAMESPACE}/two"), reserve=True)
    assert second.outcome is not Outcome.ADMIT


def test_an_admitted_pod_bound_where_it_was_placed_keeps_the_webhooks_allocator() -> None:
    # Was: the kube-scheduler's binding (spec.nodeName set) of a pod admitted at creation
    # or by the controller changed what the cache compared (its node), not what the
    # allocator holds, and rebuilt it at the next answer: once for every pod that starts.
    cluster = fixture_cluster()
    serve = cluster.admit_now(_eight(f"{NAMESPACE}/serve"), reserve=True)
    (on_a,) = serve.placement
    released = replace(
        WAITING, name="serve-0", workload=f"{NAMESPACE}/serve", gated=False, placement=on_a
    )
    cluster.put_pod(released)  # the pod as created, released where it was placed
    built = cluster._allocator
    cluster.put_pod(replace(released, node=on_a.node))
    assert cluster._allocator is built
    # A gang's member released from its recorded placement holds what it held gated.
    on_b = [PodPlacement(node="gpu-node-b", gpus=(i,)) for i in (0, 1)]
    gang = [
        replace(WAITING, name=f"llm-{i}", workload=f"{NAMESPACE}/llm", demand=Demand(gpus=1),
                gang_size=2, placement=on_b[i])
        for i in (0, 1)
    ]  # fmt: skip
    for member in gang:
        cluster.put_pod(member)
    cluster._current_allocator()
    built = cluster._allocator
    for member in gang:
        cluster.put_pod(replace(member, gated=False))
        cluster.put_pod(replace(member, gated=False, node="gpu-node-b"))
    assert cluster._allocator is built
    # Bound elsewhere than its placement: not what the allocator holds.
    cluster.put_pod(replace(released, node="gpu-node-b"))
    assert cluster._allocator is None


def test_a_reservation_that_clashes_with_an_admission_at_creation_changes_nothing() -> None:
    # The global decision was taken on a view older than an admission at creation: the
    # same devices, twice. Was: noted after the controller's patches, it threw the
    # allocator away, and the rebuild kept one of the two silently. Now refused, whole,
    # before any patch: the allocator stays as it was.
    cluster = fixture_cluster()
    at_creation = cluster.admit_now(_eight(f"{NAMESPACE}/serve"), reserve=True)
    assert at_creation.outcome is Outcome.ADMIT
    cluster.put_pod(WAITING)
    built, free = cluster._allocator, _free_gpus(cluster)
    clash = _eight(WAITING.workload).model_copy(update={"placement": at_creation.placement})
    assert cluster.reserve(clash) == Refusal(
        PLACE_TAKEN, f"its place was taken since the decision, by {NAMESPACE}/serve"
    )
    assert cluster._allocator is built and _free_gpus(cluster) == free
    held = [w for w in cluster.snapshot().workloads if w.placement is not None]
    assert [w.name for w in held] == [f"{NAMESPACE}/serve"]


@pytest.mark.parametrize("gang", [False, True], ids=["one-pod workloads", "a gang"])
def test_a_pod_that_ends_gives_its_devices_back_without_a_rebuild(gang: bool) -> None:
    # A gang's member ending rebuilt the allocator (0.2 s at 20,000 pods, under the lock):
    # a gang of 64 finishing one pod at a time between answers cost 64 rebuilds.
    cluster = fixture_cluster()
    for node in ("gpu-node-a", "gpu-node-b"):
        name = f"{node[-1]}-0"
        cluster.put_pod(
            replace(WAITING, name=name, workload=f"{NAMESPACE}/{'gang' if gang else name}",
                    gang_size=2 if gang else 1, gated=False,
                    placement=PodPlacement(node=node, gpus=tuple(range(8))))
        )  # fmt: skip
    assert (
        cluster.admit_now(_eight(f"{NAMESPACE}/probe"), reserve=False).outcome is not Outcome.ADMIT
    )
    built = cluster._allocator
    cluster.remove_pod(NAMESPACE, "a-0")
    assert cluster._allocator is built
    again = cluster.admit_now(_eight(f"{NAMESPACE}/again"), reserve=True)
    assert [p.node for p in again.placement] == ["gpu-node-a"]
    # What is left runs on (node b taken, its quota charged), as a rebuild would say.
    rebuilt = IncrementalAllocator(cluster._snapshot(running_only=True))
    assert built is not None and _holds(built, exact=True) == _holds(rebuilt, exact=True)
    cluster.remove_pod(NAMESPACE, "b-0")
    assert cluster._allocator is built


def test_foreign_pods_coming_and_going_keep_the_webhooks_allocator() -> None:
    # Each one bound or deleted dropped the allocator: a rebuild at the next answer, 0.08 s
    # at 20,000 pods, for GPU pods of namespaces Apportion does not manage.
    cluster = fixture_cluster()
    apportions = replace(WAITING, name="a-0", workload=f"{NAMESPACE}/a", gated=False,
                         placement=PodPlacement(node="gpu-node-a", gpus=(0, 1)))  # fmt: skip
    cluster.put_pod(apportions)
    built = cluster._current_allocator()
    foreign = [
        _foreign("f-1", Demand(gpus=2), "gpu-node-a"),  # GPUs 6 and 7: a's are 0 and 1
        _foreign("f-0", Demand(gpus=1), "gpu-node-a"),  # before f-1 by name: 7, and f-1 5, 6
        _foreign("f-2", Demand(mig_profile="1g.10gb"), "mig-node-c"),
    ]
    for pod in [*foreign, replace(foreign[0], node="gpu-node-b")]:  # f-1 bound again on b
        generation = cluster.generation
        cluster.put_pod(pod)
        assert cluster.generation > generation
        assert cluster._allocator is built
        rebuilt = IncrementalAllocator(cluster._snapshot(running_only=True))
        assert _holds(built, exact=True) == _holds(rebuilt, exact=True)
    for name in ("f-0", "f-2", "f-1"):
        cluster.remove_pod("other", name)
        assert cluster._allocator is built
        rebuilt = IncrementalAllocator(cluster._snapshot(running_only=True))
        assert _holds(built, exact=True) == _holds(rebuilt, exact=True)
    # One on GPUs Apportion's pod is recorded on: rebuilt (a build says who keeps them).
    cluster.put_pod(replace(foreign[0], demand=Demand(gpus=7)))
    assert cluster._allocator is None


def _foreign(name: str, demand: Demand, node: str) -> ManagedPod:
    """A bound GPU pod of a namespace Apportion does not manage, as ``PodReader`` reads it."""
    return ManagedPod(
        namespace="other", name=name, workload=f"foreign:other/{name}", queue="",
        demand=demand, priority=0, created=0, gang_size=1, gated=False, node=node,
        foreign=True, cpu_milli=2000, memory_mib=4096,
    )  # fmt: skip


def test_a_node_relabelled_or_resized_keeps_the_webhooks_allocator() -> None:
    # Any change to any node dropped it: a rebuild under the lock at the next answer, 78 ms
    # median at 1,250 nodes and 20,000 pods, for any label (GPU feature discovery's, a MIG
    # or driver state's) that no pod may even select on.
    cluster = fixture_cluster()
    built = cluster._current_allocator()
    rack = {"example.com/rack": "r2"}
    on_rack = Workload(name=f"{NAMESPACE}/on-rack", queue="team-a", namespace=NAMESPACE,
                       demand=Demand(gpus=1), node_selector=rack, cpu_milli=4000)  # fmt: skip
    assert cluster.admit_now(on_rack, reserve=False).outcome is not Outcome.ADMIT
    node = cluster.nodes["gpu-node-b"]
    relabelled = node.model_copy(update={"labels": {**node.labels, **rack}})
    for changed in (relabelled, relabelled.model_copy(update={"cpu_milli": 2000})):
        generation = cluster.generation
        cluster.put_node(changed)
        assert cluster._allocator is built and cluster.generation > generation
        rebuilt = IncrementalAllocator(cluster._snapshot(running_only=True))
        assert _holds(built, exact=True) == _holds(rebuilt, exact=True)
        assert _nodes_as_compiled(built) == _nodes_as_compiled(rebuilt)
        decision = cluster.admit_now(on_rack, reserve=False)
        assert decision == rebuilt.decide(on_rack)
    # Placed on the rack's one node while it had the CPU, then not (resized to 2 CPU).
    assert decision.outcome is not Outcome.ADMIT
    assert cluster.node_shapes()["H100-80GB"] == {(96000, 1081344), (2000, 1081344)}
    # What a waiting pod is pinned to and a memory need may ask follows the labels too: the
    # offers kept the node as it was (a selector on the rack matched none of them), the
    # products its old product label.
    resized = cluster.nodes["gpu-node-b"]
    on_rack = on_rack.model_copy(update={"cpu_milli": 0})
    assert {o.node.name for o in cluster.offers().nodes if o.may_host(on_rack)} == {"gpu-node-b"}
    assert "NVIDIA-H100-80GB-HBM3-SHARED" not in cluster.products()["H100-80GB"]
    shared = {**resized.labels, "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-SHARED"}
    cluster.put_node(resized.model_copy(update={"labels": shared}))
    assert cluster._allocator is built
    assert "NVIDIA-H100-80GB-HBM3-SHARED" in cluster.products()["H100-80GB"]
    unracked = {k: v for k, v in shared.items() if k != "example.com/rack"}
    cluster.put_node(resized.model_copy(update={"labels": unracked}))
    assert not [o for o in cluster.offers().nodes if o.may_host(on_rack)]
    # Its taints or GPUs are another matter (a cordon, a MIG reconfiguration): built anew,
    # on the node watch's thread rather than at the next review.
    taint = Taint(key="example.com/maintenance")
    cluster.put_node(relabelled.model_copy(update={"taints": (taint,)}))
    assert cluster._allocator not in (None, built)
    rebuilt = IncrementalAllocator(cluster._snapshot(running_only=True))
    assert _holds(cluster._allocator, exact=True) == _holds(rebuilt, exact=True)
    assert _nodes_as_compiled(cluster._allocator) == _nodes_as_compiled(rebuilt)


def test_a_node_change_builds_the_allocator_outside_the_lock_kept_if_nothing_changed_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cordon or a taint dropped the allocator, and the next review rebuilt it under the
    lock, on the event loop. Built by the node watch instead, outside the lock, it must not
    be kept when a pod changed while it was built."""
    cluster = fixture_cluster()
    cluster._current_allocator()
    build = cluster._build
    during: list[ManagedPod] = []

    def watched(view: Any, running_only: bool = False) -> Any:
        free: list[bool] = []

        def try_lock() -> None:  # another thread: the event loop's
            free.append(cluster._lock.acquire(blocking=False))
            if free[0]:
                cluster._lock.release()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        assert free == [True], "built under the lock"
        for pod in during:
            cluster.put_pod(pod)  # the pod watch, meanwhile
        return build(view, running_only)

    monkeypatch.setattr(cluster, "_build", watched)
    node = cluster.nodes["gpu-node-a"]
    cordoned = tuple(g.model_copy(update={"healthy": False}) for g in node.gpus)
    cluster.put_node(node.model_copy(update={"gpus": cordoned}))
    assert cluster._allocator is not None
    during.append(replace(WAITING, gated=False, node="gpu-node-b"))  # it holds 8 GPUs there
    cluster.put_node(node)
    assert cluster._allocator is None


def test_the_controllers_snapshot_is_built_outside_the_lock_the_webhook_answers_under() -> None:
    # It held the lock for all of its build: 0.2 s at 20,000 pods, every cycle, while
    # every admission review waited.
    cluster = fixture_cluster()
    free: list[bool] = []
    build = cluster._build

    def watched(view: Any, running_only: bool = False) -> Any:
        def try_lock() -> None:
            if cluster._lock.acquire(blocking=False):
                cluster._lock.release()
                free.append(True)
            else:
                free.append(False)

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        return build(view, running_only)

    cluster._build = watched  # type: ignore[method-assign]
    cluster.put_pod(WAITING)
    assert [w.name for w in cluster.snapshot().workloads] == [WAITING.workload]
    assert free == [True]


def test_a_relist_works_out_its_pod_groups_before_it_takes_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every workload is new after a relist: the first snapshot's view worked all their
    # groups out under the lock, 0.1-0.25 s at 20,000 pods while admission reviews waited.
    cluster = fixture_cluster()
    free: list[bool] = []

    def watched(workload: str, members: list[ManagedPod]) -> dict[str, PodGroup]:
        def try_lock() -> None:
            free.append(cluster._lock.acquire(blocking=False))
            if free[-1]:
                cluster._lock.release()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        return groups_of(workload, members)

    monkeypatch.setattr("webhook.podindex.groups_of", watched)
    gang = [_gang_member("llm-0"), _gang_member("llm-1")]
    cluster.replace_pods([WAITING, *gang])
    assert sorted(w.name for w in cluster.snapshot().workloads) == [
        WAITING.workload,
        f"{NAMESPACE}/llm",
    ]
    assert free == [True, True]  # one grouping per workload, neither under the lock


def _free_gpus(cluster: LiveCluster) -> int:
    """Whole GPUs the webhook's live allocator has free (what its next answer sees)."""
    return sum(m == 1000 for m in cluster._current_allocator()._compiled.state.gpu_free_milli)


def _rebuilt_free_gpus(cluster: LiveCluster) -> int:
    """Whole GPUs free in an allocator built from scratch now."""
    allocator = IncrementalAllocator(cluster._snapshot(running_only=True))
    return sum(m == 1000 for m in allocator._compiled.state.gpu_free_milli)


def _gang_member(name: str, **update: Any) -> ManagedPod:
    member = replace(WAITING, name=name, workload=f"{NAMESPACE}/llm", demand=Demand(gpus=1))
    return replace(member, gang_size=2, **update)


@pytest.mark.parametrize("gone", ["llm-1b", "llm-0"])
def test_admitted_replacements_whose_pods_go_before_they_are_seen_give_their_gpus_back(
    gone: str,
) -> None:
    # Was: the replacements' admission (held by the live allocator since noted)
    # ended with the removal (its pod deleted, or the gang's last running member gone),
    # yet the removal kept the allocator: their GPU held, and charged, until a rebuild.
    cluster = fixture_cluster()
    on_a0 = PodPlacement(node="gpu-node-a", gpus=(0,))
    cluster.put_pod(_gang_member("llm-0", gated=False, node="gpu-node-a", placement=on_a0))
    cluster.put_pod(_gang_member("llm-1b", gated=True))  # llm-1 failed; its Job made llm-1b
    free = _free_gpus(cluster)
    again = Workload(
        name=f"{NAMESPACE}/llm replacements", queue="team-a", namespace=NAMESPACE,
        demand=Demand(gpus=1), flavor="H100-80GB", started=1,
        placement=(PodPlacement(node="gpu-node-a", gpus=(1,)),),
    )  # fmt: skip
    assert cluster.reserve(again) is None
    assert _free_gpus(cluster) == free - 1
    cluster.remove_pod(NAMESPACE, gone)
    assert _free_gpus(cluster) == _rebuilt_free_gpus(cluster)


def test_admitted_replacements_seen_in_their_gang_give_their_gpus_back_with_it() -> None:
    # Was: held apart under their own name, the replacements' GPU stayed held when their
    # pod, seen joined to its gang, ended: the live allocator gave back the gang's own, and
    # until a rebuild the webhook refused what fitted (and, reserved, quota it counted twice).
    cluster = fixture_cluster()
    on_a0, on_a1 = (PodPlacement(node="gpu-node-a", gpus=(i,)) for i in (0, 1))
    cluster.put_pod(_gang_member("llm-0", gated=False, node="gpu-node-a", placement=on_a0))
    cluster.put_pod(_gang_member("llm-1b", gated=True))  # llm-1 failed; its Job made llm-1b
    free = _free_gpus(cluster)
    again = Workload(
        name=f"{NAMESPACE}/llm replacements", queue="team-a", namespace=NAMESPACE,
        demand=Demand(gpus=1), flavor="H100-80GB", started=1, placement=(on_a1,),
    )  # fmt: skip
    assert cluster.reserve(again) is None
    cluster.put_pod(_gang_member("llm-1b", gated=True, placement=on_a1))  # recorded
    cluster.put_pod(_gang_member("llm-1b", gated=False, node="gpu-node-a", placement=on_a1))
    assert _free_gpus(cluster) == _rebuilt_free_gpus(cluster) == free - 1
    cluster.remove_pod(NAMESPACE, "llm-1b")
    assert _free_gpus(cluster) == _rebuilt_free_gpus(cluster) == free


# -- the live allocator against one built from scratch ---------------------------------------
#
# Every pod event, admission and relist either keeps the webhook's allocator (charging or
# giving back what changed) or drops it for a rebuild. Kept, it must hold what a rebuild
# (``_snapshot(running_only=True)``) would: the same devices taken, CPU and memory, quota.
# The sequences follow what the cluster does: a placement once held stays; pods of an
# admission standing are where it placed them; the controller reserves an admission (also
# on devices held since: refused, charging nothing) for a workload with no admission
# standing; the webhook admits at creation a one-pod workload whose pod is not there yet; in
# standalone mode one-pod workloads' pods leave. Where two claims fall on one device (a pod
# put where an admission at creation placed another), what a rebuild holds hangs on their
# order: an allocator that saw that is not compared. About 20 s; it found the replacements'
# GPUs never given back.
#
# Quotas are tight here (team-a's 2 H100 and 1 MIG slice, with a borrowing limit or a
# cohort that lends 1 more) and pods may ask 40 of a node's 96 CPU and 400 of its 1056 GiB:
# an admission, at creation or the controller's, never takes a queue, a cohort or a node
# further past its limits than the pods observed took it (they may be past: quota lowered
# while they run), on what a rebuild holds where the comparison trusts it. It found the
# reservations checking devices only, and a gang's replacements held twice.

_WHOLE, _PAIR, _MIG = Demand(gpus=1), Demand(gpus=2), Demand(mig_profile="1g.10gb")
_SLICE = "mig-1g.10gb"
_SHAPES = {  # per demand: where it may be placed, the flavor charged
    _WHOLE: ([PodPlacement(node="gpu-node-a", gpus=(i,)) for i in range(3)], "H100-80GB"),
    _PAIR: ([PodPlacement(node="gpu-node-a", gpus=(i, i + 1)) for i in (0, 2)], "H100-80GB"),
    _MIG: ([PodPlacement(node="mig-node-c", gpus=(6,), mig_start=s) for s in (0, 1)], _SLICE),
}  # fmt: skip
_PODS = {"a-0": "a", "a-1": "a", "b-0": "b", "f-0": None}
"""Gang a (two pods of one GPU), b (one pod of any shape), a foreign pod."""
_STATES = ("waiting", "waiting", "recorded", "released", "running", "bound")
_KINDS = ("put", "put", "put", "remove", "reserve", "reserve", "admit", "host", "leave", "relist",
          "node")  # fmt: skip
_NODES = fixture_cluster().nodes
"""The nodes as loaded, to change and to go back to."""
_RACKS = ({"example.com/rack": "r1"}, {"example.com/rack": "r2"})
_RACK_PROBES = [
    Workload(
        name=f"{NAMESPACE}/probe",
        queue="team-a",
        namespace=NAMESPACE,
        demand=_WHOLE,
        node_selector=rack,
    )
    for rack in _RACKS
]
_QUOTAS = {
    "alone": [Queue(name="team-a", namespaces=(NAMESPACE,),
                    quota={"H100-80GB": Quota(nominal=2), _SLICE: Quota(nominal=1)})],
    "borrowing limit": [
        Queue(name="team-a", cohort="lab", namespaces=(NAMESPACE,),
              quota={"H100-80GB": Quota(nominal=2, borrowing_limit=1),
                     _SLICE: Quota(nominal=1, borrowing_limit=0)}),
        Queue(name="team-b", cohort="lab", quota={"H100-80GB": Quota(nominal=10)}),
    ],
    "cohort lends 1": [
        Queue(name="team-a", cohort="lab", namespaces=(NAMESPACE,),
              quota={"H100-80GB": Quota(nominal=2), _SLICE: Quota(nominal=1)}),
        Queue(name="team-b", cohort="lab",
              quota={"H100-80GB": Quota(nominal=10, lending_limit=1),
                     _SLICE: Quota(nominal=4, lending_limit=1)}),
    ],
}  # fmt: skip
_ASKS = [(0, 0), (40_000, 409_600)]
"""CPU milli and memory MiB every pod of team-a asks: none, or 40 CPU and 400 GiB."""


def _demand_of(placement: PodPlacement) -> Demand:
    return _MIG if placement.mig_start is not None else _PAIR if len(placement.gpus) > 1 else _WHOLE


def _a_pod(draw: st.DrawFn, cluster: LiveCluster, name: str, ask: tuple[int, int]) -> ManagedPod:
    gang = _PODS[name]
    demand = _WHOLE if gang != "b" else draw(st.sampled_from(list(_SHAPES)))
    placement = draw(st.sampled_from(_SHAPES[demand][0]))
    if gang is None:  # what PodReader.observed makes of a GPU pod Apportion did not decide
        return ManagedPod(
            namespace=NAMESPACE, name=name, workload=f"foreign:{NAMESPACE}/{name}", queue="",
            demand=demand, priority=0, created=0, gang_size=1, gated=False,
            node=placement.node, foreign=True,
        )  # fmt: skip
    workload = f"{NAMESPACE}/{gang}"
    before = cluster.pods.get((NAMESPACE, name))
    if before is not None and (
        not before.gated or any(g.admitted and before in g.pods for g in cluster.groups().values())
    ):
        # What it holds stays; its gate may go, it is bound, its priority changes.
        node = before.node or (before.placement.node if before.placement else None)
        return replace(before, gated=False, node=node, priority=draw(st.sampled_from([0, 5])))
    standing = [
        p
        for n in (workload, replacements_of(workload))
        if (intent := cluster._intents.get(n)) is not None
        for p in intent.workload.placement or ()
        if p not in {q.placement for q in cluster.pods.values()}
    ]
    if standing:
        placement = draw(st.sampled_from(standing))
        demand = _demand_of(placement)
    state = draw(st.sampled_from(_STATES))
    return ManagedPod(
        namespace=NAMESPACE, name=name, workload=workload, queue="team-a", demand=demand,
        priority=draw(st.sampled_from([0, 5])), created=1, gang_size=2 if gang == "a" else 1,
        gated=state in ("waiting", "recorded"),
        node=placement.node if state in ("running", "bound") else None,
        placement=placement if state in ("recorded", "released", "running") else None,
        cpu_milli=ask[0], memory_mib=ask[1],
    )  # fmt: skip


def _an_admission(
    draw: st.DrawFn, cluster: LiveCluster, name: str, ask: tuple[int, int]
) -> Workload:
    """The controller's admission of ``name``: where it recorded its pods, the rest free."""
    gang = replaced_gang(name)
    pods = [p for p in cluster.members(gang or name) if p.gated or gang is None]
    recorded = [p.placement for p in pods if p.placement is not None]
    count = 2 if name.endswith("/a") else 1
    demand = _demand_of(recorded[0]) if recorded else _WHOLE
    if not recorded and not (gang or name).endswith("/a"):
        demand = draw(st.sampled_from(list(_SHAPES)))
    places, flavor = _SHAPES[demand]
    taken = {p.placement for p in cluster.pods.values()}
    free = draw(st.permutations([p for p in places if p not in taken]))
    placement = [*recorded, *free, *places][:count]
    return Workload(
        name=name, queue="team-a", namespace=NAMESPACE, demand=demand, pods=count,
        placement=tuple(placement), flavor=flavor, started=1, cpu_milli=ask[0],
        memory_mib=ask[1],
    )  # fmt: skip


def _a_step(draw: st.DrawFn, cluster: LiveCluster, kind: str, ask: tuple[int, int]) -> str:
    name = draw(st.sampled_from(["a-0", "a-1", *_PODS]))  # the gang's twice as often
    if kind == "put":
        pod = _a_pod(draw, cluster, name, ask)
        cluster.put_pod(pod)
        return f"put {pod}"
    if kind == "remove":
        cluster.remove_pod(NAMESPACE, name)
    elif kind == "reserve":
        # A group the controller saw (waiting, or admitted since), or one whose pods went
        # meanwhile; refused where it no longer stands.
        workload = draw(st.sampled_from([*sorted(cluster.groups()), f"{NAMESPACE}/d"]))
        if workload not in cluster._intents:
            admitted = _an_admission(draw, cluster, workload, ask)
            refusal = cluster.reserve(admitted)
            return f"reserve {admitted}: {refusal or 'held'}"
    elif kind == "admit":
        workload = f"{NAMESPACE}/" + draw(st.sampled_from(["b", "d"]))
        if not cluster.members(workload):
            arrival = Workload(name=workload, queue="team-a", namespace=NAMESPACE,
                               demand=draw(st.sampled_from(list(_SHAPES))),
                               cpu_milli=ask[0], memory_mib=ask[1])  # fmt: skip
            reserve = draw(st.booleans())
            cluster.admit_now(arrival, reserve=reserve)
            return f"admit {arrival} reserve={reserve}"
    elif kind == "host":
        # Two of the larger hold more than the node's 96 CPU: what is free stays at 0.
        node = draw(st.sampled_from(["gpu-node-a", "mig-node-c"]))
        cpu = draw(st.sampled_from([1000, 60_000]))
        host = HostPod(NAMESPACE, name, node, cpu, draw(st.sampled_from([1024, 700_000])))
        cluster.put_host_pod(host)
        return f"host {host}"
    elif kind == "leave":  # standalone; d-0 a pod of d never seen
        name = draw(st.sampled_from(["b-0", "d-0"]))
        grace = draw(st.sampled_from([0, 30]))
        workload = f"{NAMESPACE}/{name[0]}"
        cluster.pod_leaving(NAMESPACE, name, uid="", workload=workload, grace_s=grace)
    elif kind == "node":
        changed = _a_node_change(draw, cluster)
        cluster.put_node(changed)
        return f"node {changed}"
    else:
        cluster.replace_pods(list(cluster.pods.values()))
    return f"{kind} {name}"


def _a_node_change(draw: st.DrawFn, cluster: LiveCluster) -> Node:
    """A node as the watch brings it changed: its labels (one a pod may select on, one GFD
    rewrites), its taints, cordoned (every GPU out of service), its allocatable CPU and
    memory, or back as loaded."""
    name = draw(st.sampled_from(["gpu-node-a", "mig-node-c"]))
    node = cluster.nodes[name]
    change = draw(st.sampled_from(["rack", "gfd", "taint", "cordon", "resize", "back"]))
    if change == "rack":
        labels = {k: v for k, v in node.labels.items() if k != "example.com/rack"}
        return node.model_copy(update={"labels": {**labels, **draw(st.sampled_from(_RACKS))}})
    if change == "gfd":
        stamp = str(draw(st.integers(1, 3)))
        return node.model_copy(
            update={"labels": {**node.labels, "nvidia.com/gfd.timestamp": stamp}}
        )
    if change == "taint":
        taints = () if node.taints else (Taint(key="example.com/maintenance"),)
        return node.model_copy(update={"taints": taints})
    if change == "cordon":
        gpus = tuple(g.model_copy(update={"healthy": False, "health_reason": "node is cordoned"})
                     for g in node.gpus)  # fmt: skip
        return node.model_copy(update={"gpus": gpus})
    if change == "resize":
        cpu, memory = draw(st.sampled_from([(96_000, 1_081_344), (50_000, 600_000)]))
        return node.model_copy(update={"cpu_milli": cpu, "memory_mib": memory})
    return _NODES[name]


def _unambiguous(cluster: LiveCluster, snapshot: Snapshot) -> bool:
    """No two claims on one device: every admission standing is in the snapshot, and every
    admitted group where its pods say."""
    held = {w.name: w for w in snapshot.workloads}
    for intent in cluster._intents.values():
        if intent.workload.placement is not None and intent.workload.name not in held:
            return False
    for name, group in cluster.groups().items():
        workload = held.get(name)
        if group.admitted and name not in cluster._intents and workload is not None:
            recorded = Counter(p.placement for p in group.pods if p.placement is not None)
            if recorded - Counter(workload.placement):
                return False
    return True


def _holds(allocator: IncrementalAllocator, exact: bool) -> tuple[object, ...]:
    """Devices taken (which ones, or with ``exact`` False how many per node), CPU and
    memory free, quota used."""
    state, book = allocator._compiled.state, allocator._compiled.book
    used = [[s for s, (_, taken) in (m or {}).items() if taken] for m in state.gpu_mig]
    devices: object = (state.gpu_free_milli, used)
    if not exact:  # a pod bound where nobody placed it takes any free GPU of its node
        per_node = [[0, 0] for _ in state.node_names]
        for g, n in enumerate(state.gpu_node):
            per_node[n][0] += state.gpu_free_milli[g]
            per_node[n][1] += len(used[g])
        devices = per_node
    usage = {q: {f: u for f, u in a.usage.items() if u} for q, a in book.accounts.items()}
    return devices, state.free_cpu, state.free_mem, usage


def _nodes_as_compiled(allocator: IncrementalAllocator) -> tuple[object, ...]:
    """Per node: its labels, the (model, taints) of its pools, its allocatable CPU and
    memory, its GPUs' health; and the nodes a pod selecting each rack may use."""
    state = allocator._compiled.state
    pools = [
        sorted((pool.model, pool.taints) for pool in state.pools if n in pool.node_size)
        for n in range(len(state.node_names))
    ]
    racks = [
        sorted(state.node_names[n] for n in state.node_filter(_RACK_PROBES[i]) or ())
        for i in range(len(_RACKS))
    ]
    nodes = zip(state.node_names, state.node_labels, pools, state.node_cpu, state.node_mem,
                strict=True)  # fmt: skip
    return sorted(nodes), state.gpu_healthy, racks


def _excess(snapshot: Snapshot) -> Counter[tuple[str, ...]]:
    """How far what is held (as a rebuild holds it) is past each limit: per queue and flavor
    its nominal quota plus borrowing limit, per cohort and flavor what its members lend, per
    node its allocatable CPU and memory (limits not passed left out)."""
    compiled = IncrementalAllocator(snapshot)._compiled
    book, state = compiled.book, compiled.state
    over: Counter[tuple[str, ...]] = Counter()
    for name, account in book.accounts.items():
        for flavor, used in account.usage.items():
            limit = account.nominal.get(flavor, 0) + account.borrow_limit.get(flavor, UNLIMITED)
            over["queue", name, flavor] = max(0, used - limit)
        for flavor, drawn in account.drawn.items():
            over["cohort", book.cohort(name), flavor] = max(0, drawn - account.lends.get(flavor, 0))
    for n, node in enumerate(state.node_names):
        over["cpu", node] = max(0, -state.free_cpu[n])
        over["memory", node] = max(0, -state.free_mem[n])
    return +over


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_the_live_allocator_holds_what_one_built_from_scratch_would(data: st.DataObject) -> None:
    now = [1_764_091_500.0]
    cluster = fixture_cluster(lambda: now[0], intent_ttl_s=120.0)
    cluster.replace_queues(data.draw(st.sampled_from(list(_QUOTAS.values()))))
    ask = data.draw(st.sampled_from(_ASKS))
    cluster._current_allocator()
    steps: list[str] = []
    ambiguous: IncrementalAllocator | None = None
    for _ in range(data.draw(st.integers(0, 40))):
        if data.draw(st.integers(0, 9)) == 0:
            now[0] += 50  # admissions expire three such ticks on, leaving pods after one
            steps.append("tick")
        kind = data.draw(st.sampled_from(_KINDS))
        before = None
        if kind in ("reserve", "admit"):
            with cluster._lock:
                cluster._expire_intents()  # the step's first move, and none of the admission's
            snapshot = cluster._snapshot(running_only=True)
            if cluster._allocator is not ambiguous and _unambiguous(cluster, snapshot):
                before = _excess(snapshot)
        steps.append(_a_step(data.draw, cluster, kind, ask))
        nodes = list(cluster.nodes.values())
        assert cluster.node_shapes() == NodeShapes().hosts(nodes), "\n".join(steps)
        assert cluster.largest_nodes() == NodeShapes().largest(nodes), "\n".join(steps)
        if before is not None:
            after = _excess(cluster._snapshot(running_only=True))
            assert after - before == Counter(), "\n".join(steps)
        if data.draw(st.booleans()):
            cluster._current_allocator()  # a review: built now, or only later
        live = cluster._allocator
        if live is None:
            continue
        snapshot = cluster._snapshot(running_only=True)
        if not _unambiguous(cluster, snapshot):
            ambiguous = live
        if live is not ambiguous:
            bound = [p for p in cluster.pods.values() if not p.gated and not p.foreign]
            exact = all(p.placement is not None for p in bound)
            fresh = IncrementalAllocator(snapshot)
            assert _holds(live, exact) == _holds(fresh, exact), "\n".join(steps)
            assert _nodes_as_compiled(live) == _nodes_as_compiled(fresh), "\n".join(steps)
