"""The live cluster's bookkeeping of admissions it made but has not yet seen (intents)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from webhook_support import CLUSTER_FILE, FIXTURES, fixture_cluster

from scheduler.allocator import decide
from scheduler.model import Demand, PodPlacement, Queue, Quota, Workload, WorkloadDecision
from scheduler.reasons import Outcome, Reason
from scheduler.telemetry import HealthVerdict, IdleWorkload, TelemetrySettings, assess
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.intents import PLACE_TAKEN, QUOTA_TAKEN, Refusal
from webhook.pods import ANNOTATION_PLACEMENT, ManagedPod, PodReader, parse_placement, rfc3339
from webhook.queueview import queue_view, waiting_workloads
from webhook.standalone import load_cluster_file, seed_cluster

WAITING = ManagedPod(
    namespace="gpu-team-a", name="train-0", workload="gpu-team-a/train", queue="team-a",
    demand=Demand(gpus=2), priority=0, created=1, gang_size=1, gated=True,
)  # fmt: skip


def _admit(cluster: LiveCluster, seen: bool) -> None:
    """What the controller does: decide, reserve the admission, patch the pod. The watch
    brings the patched pod after (``seen``), or never (the pod was deleted first)."""
    cluster.put_pod(WAITING)
    snapshot = cluster.snapshot()
    verdict = next(v for v in decide(snapshot).workloads if v.workload == WAITING.workload)
    assert verdict.outcome is Outcome.ADMIT
    workload = next(w for w in snapshot.workloads if w.name == WAITING.workload)
    reserved = workload.model_copy(
        update={"placement": verdict.placement, "flavor": verdict.flavor, "started": 1}
    )
    assert cluster.reserve(reserved) is None
    if seen:
        cluster.put_pod(replace(WAITING, gated=False, placement=verdict.placement[0]))


@pytest.mark.parametrize("gone", ["deleted", "missing from a relist"])
@pytest.mark.parametrize("seen", [True, False], ids=["seen admitted", "never seen admitted"])
def test_a_deleted_admitted_pod_frees_its_gpus_at_once(seen: bool, gone: str) -> None:
    cluster = fixture_cluster()  # a frozen clock: intents never expire here
    _admit(cluster, seen)
    (held,) = cluster.snapshot().workloads
    assert held.name == WAITING.workload and held.placement is not None
    if gone == "deleted":
        cluster.remove_pod(WAITING.namespace, WAITING.name)
    else:  # deleted while the watch was down
        cluster.replace_pods([])
    # Not held until the intent expires (intent_ttl_s): the pod is gone, not late.
    assert cluster.snapshot().workloads == ()


def test_an_admission_at_creation_holds_its_gpus_until_its_pod_is_stored() -> None:
    # The webhook admits a pod before the API server stores it: a list that does not show
    # it yet must not free its GPUs.
    cluster = fixture_cluster()
    arriving = Workload(
        name="gpu-team-a/serve", queue="team-a", namespace="gpu-team-a", demand=Demand(gpus=2)
    )
    assert cluster.admit_now(arriving, reserve=True).outcome is Outcome.ADMIT
    cluster.replace_pods([])
    (held,) = cluster.snapshot().workloads
    assert held.name == arriving.name and held.placement is not None


def _member(name: str, *, gated: bool, placement: str | None = None) -> ManagedPod:
    return replace(
        WAITING,
        name=name,
        workload="gpu-team-a/llm",
        demand=Demand(gpus=1),
        gang_size=3,
        gated=gated,
        in_gang=True,
        placement=parse_placement(placement) if placement else None,
    )


def test_a_running_gangs_replacements_wait_apart_and_its_members_keep_their_gpus() -> None:
    cluster = fixture_cluster()
    cluster.put_pod(_member("llm-0", gated=False, placement="gpu-node-a:0"))
    cluster.put_pod(_member("llm-1", gated=False, placement="gpu-node-a:1"))
    cluster.put_pod(_member("llm-2b", gated=True))  # llm-2 failed; its Job made llm-2b
    workloads = {w.name: w for w in cluster.snapshot().workloads}
    gang, again = workloads["gpu-team-a/llm"], workloads["gpu-team-a/llm replacements"]
    assert gang.placement is not None and [p.gpus for p in gang.placement] == [(0,), (1,)]
    assert (again.pods, again.placement) == (1, None)
    (waiting,) = waiting_workloads(cluster)
    assert (waiting.workload, waiting.reason, waiting.pods) == (again.name, "Pending", 1)


def test_admitted_replacements_join_their_gang() -> None:
    # Was: the watch could bring the released replacement before the controller noted
    # the admission (after its patch); it had joined the gang by then, so the note's check
    # for its pods ('llm replacements') found none, and the intent held the same GPUs a
    # second time until it expired. Reserved before the patch, it is retired once the
    # replacement is seen in the gang; reserved again, a stale decision is refused.
    cluster = fixture_cluster()
    cluster.put_pod(_member("llm-0", gated=False, placement="gpu-node-a:0"))
    cluster.put_pod(_member("llm-1", gated=False, placement="gpu-node-a:1"))
    cluster.put_pod(_member("llm-2b", gated=True))
    snapshot = cluster.snapshot()
    again = next(w for w in snapshot.workloads if w.name == "gpu-team-a/llm replacements")
    verdict = next(v for v in decide(snapshot).workloads if v.workload == again.name)
    assert verdict.outcome is Outcome.ADMIT
    reserved = again.model_copy(update={"placement": verdict.placement, "started": 1})
    assert cluster.reserve(reserved) is None
    (placement,) = verdict.placement
    cluster.put_pod(
        _member("llm-2b", gated=False, placement=f"{placement.node}:{placement.gpus[0]}")
    )
    (gang,) = cluster.snapshot().workloads
    assert gang.name == "gpu-team-a/llm" and gang.placement is not None
    assert len(gang.placement) == 3
    assert cluster.reserve(reserved) == Refusal(PLACE_TAKEN, "its pods no longer wait")


def test_a_gang_whose_admission_is_not_yet_seen_whole_has_no_replacements_to_place() -> None:
    # Was (found by the live-allocator property test): one member seen released before the
    # other's record made the other "replacements", decided and reserved a second place
    # while the gang's admission still held one for it; the live allocator and a rebuild
    # then disagreed on which GPU was free.
    cluster = fixture_cluster()
    cluster.put_pod(replace(_member("llm-0", gated=True), gang_size=2))
    cluster.put_pod(replace(_member("llm-1", gated=True), gang_size=2))
    (gang,) = cluster.snapshot().workloads
    placement = (parse_placement("gpu-node-a:0"), parse_placement("gpu-node-a:1"))
    admitted = gang.model_copy(update={"placement": placement, "flavor": "H100-80GB", "started": 1})
    assert cluster.reserve(admitted) is None
    cluster.put_pod(replace(_member("llm-0", gated=False, placement="gpu-node-a:0"), gang_size=2))
    assert "gpu-team-a/llm replacements" in cluster.groups()
    (held,) = cluster.snapshot().workloads
    assert held.name == "gpu-team-a/llm" and held.placement == placement
    again = Workload(
        name="gpu-team-a/llm replacements", queue="team-a", namespace="gpu-team-a",
        demand=Demand(gpus=1), placement=(parse_placement("gpu-node-a:2"),),
        flavor="H100-80GB", started=1,
    )  # fmt: skip
    assert cluster.reserve(again) == Refusal(
        PLACE_TAKEN, "its gang's admission holds its places already"
    )
    assert cluster._current_allocator().holds("gpu-team-a/llm replacements") is False


def test_a_gangs_new_generation_waits_while_the_old_one_runs() -> None:
    # A JobSet restarted: three new pods while two old ones still terminate. More than
    # the places the old leave: not decided until they are gone.
    cluster = fixture_cluster()
    cluster.put_pod(_member("llm-0", gated=False, placement="gpu-node-a:0"))
    cluster.put_pod(_member("llm-1", gated=False, placement="gpu-node-a:1"))
    for name in ("llm-0b", "llm-1b", "llm-2b"):
        cluster.put_pod(_member(name, gated=True))
    assert [w.name for w in cluster.snapshot().workloads] == ["gpu-team-a/llm"]
    (waiting,) = waiting_workloads(cluster)
    assert (waiting.reason, waiting.message) == (
        "GangRunning",
        "workload gpu-team-a/llm still runs (2 of its 3 pods), and 3 new pods wait for them "
        "to end. A pod copied in namespace gpu-team-a from one of its pods names that "
        "workload too (apportion.io/workload) and waits so: delete such a copy and create it "
        "again without the apportion.io/ labels and annotations",
    )


def test_a_gang_placed_on_record_only_in_part_is_still_waiting_whole() -> None:
    # The controller records every member's placement before removing any gate; when that
    # was cut short (an API error on llm-1), llm-0's placement is no admission.
    cluster = fixture_cluster()
    cluster.put_pod(_member("llm-0", gated=True, placement="gpu-node-a:0"))
    cluster.put_pod(_member("llm-1", gated=True))
    cluster.put_pod(_member("llm-2", gated=True))
    (gang,) = cluster.snapshot().workloads
    assert (gang.name, gang.pods, gang.placement) == ("gpu-team-a/llm", 3, None)
    cluster.put_pod(_member("llm-1", gated=True, placement="gpu-node-a:1"))
    cluster.put_pod(_member("llm-2", gated=True, placement="gpu-node-a:2"))
    (gang,) = cluster.snapshot().workloads  # the record is whole: admitted, gates or not
    assert gang.placement is not None and [p.gpus for p in gang.placement] == [(0,), (1,), (2,)]
    assert waiting_workloads(cluster) == []


def test_a_pod_without_a_creation_time_waits_for_an_unknown_time() -> None:
    # Was: 'waiting 494,000h' (since 1970) in apportion queue, for a review without
    # metadata.creationTimestamp sent to a standalone server.
    from webhook.commands import _queue_table

    cluster = fixture_cluster()
    cluster.put_pod(replace(WAITING, created=0))
    (row,) = queue_view(cluster).of(None)["queues"]["team-a"]
    assert row["waiting_s"] is None
    assert "waiting unknown" in _queue_table(queue_view(cluster).of(None))


def _bound_foreign(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The recorded bound GPU pod (train-gpu-1, 1 GPU, Apportion never decided it) on
    mig-node-c in a namespace not opted in, changed as Kubernetes would accept it."""
    pod: dict[str, Any] = json.loads((FIXTURES / "objects" / "pod-bound-gpu-1.json").read_text())
    pod["metadata"]["namespace"] = "not-opted-in"
    pod["spec"]["nodeName"] = "mig-node-c"
    change(pod)
    return pod


def _mig_init(pod: dict[str, Any]) -> None:
    init = copy.deepcopy(pod["spec"]["containers"][0])
    init["name"] = "prepare"
    init["resources"] = {part: {"nvidia.com/mig-1g.10gb": "1"} for part in ("requests", "limits")}
    pod["spec"]["initContainers"] = [init]


def _two_slices(pod: dict[str, Any]) -> None:
    resources = pod["spec"]["containers"][0]["resources"]
    for part in resources.values():
        del part["nvidia.com/gpu"]
        part["nvidia.com/mig-1g.10gb"] = "2"


@pytest.mark.parametrize(
    ("change", "whole", "slices"),
    [(_mig_init, 5, 13), (_two_slices, 6, 12)],
    ids=["mig-slice-in-init-container", "two-mig-slices"],
)
def test_a_foreign_pod_takes_every_device_it_holds_out_of_capacity(
    change: Callable[[dict[str, Any]], None], whole: int, slices: int
) -> None:
    """Kubernetes runs pods Apportion would refuse to decide (a MIG slice in an init
    container beside whole GPUs, several MIG instances): where Apportion does not manage
    them they still hold every one of those devices, none of them Apportion's to give."""
    cluster = fixture_cluster()
    observed = PodReader(cluster.catalog).observed(_bound_foreign(change))
    assert observed is not None and observed.foreign
    cluster.put_pod(observed)
    (node,) = [n for n in cluster.snapshot().nodes if n.name == "mig-node-c"]
    assert sum(1 for g in node.gpus if g.mig is None and not g.held) == whole
    assert sum(1 for g in node.gpus for m in g.mig or () if not m.held) == slices


def test_no_repartition_is_proposed_under_a_foreign_pods_mig_slices() -> None:
    # Foreign pods' slices were taken out of the layout, so the MIG GPU they run on, its
    # other slices free, looked idle: "repartition 5×1g.10gb → 3g.40gb@0 + 3g.40gb@4" was
    # proposed for it, which would have destroyed their instances.
    cluster = fixture_cluster()
    for name, demand, node in [
        ("slice-0", Demand(mig_profile="1g.10gb"), "mig-node-c"),
        ("slice-1", Demand(mig_profile="1g.10gb"), "mig-node-c"),
        *((f"whole-{n}", Demand(gpus=k), n) for n, k in _WHOLE_GPUS.items()),
    ]:
        pod = ManagedPod(
            namespace="not-opted-in", name=name, workload=f"foreign:not-opted-in/{name}",
            queue="", demand=demand, priority=0, created=0, gang_size=1, gated=False,
            node=node, foreign=True,
        )  # fmt: skip
        cluster.put_pod(pod)
    snapshot = cluster.snapshot()
    queues = tuple(
        q.model_copy(update={"quota": {**q.quota, "mig-3g.40gb": Quota(nominal=4)}})
        for q in snapshot.queues
    )
    wants = Workload(
        name="gpu-team-a/sliced", queue="team-a", namespace="gpu-team-a", pods=2,
        demand=Demand(mig_profile="3g.40gb"),
    )  # fmt: skip
    decision = decide(
        snapshot.model_copy(update={"queues": queues, "workloads": (*snapshot.workloads, wants)})
    )
    (node,) = [n for n in snapshot.nodes if n.name == "mig-node-c"]
    held = [g.index for g in node.gpus for m in g.mig or () if m.held]
    assert held == [7, 7]  # both on the highest (Apportion places from the lowest)
    assert [(p.node, p.gpu) for p in decision.repartitions] == [("mig-node-c", 6)]


_WHOLE_GPUS = {"gpu-node-a": 8, "gpu-node-b": 8, "mig-node-c": 6}
"""Every whole GPU of the capture's cluster, per node: a repartition can only be of MIG GPUs."""


_MIXED = (
    "the members of gang gpu-team-a/llm ask differently: {}. Apportion admits a gang as its "
    "pods × one ask, so it admits none of them: give every member the same GPU request, "
    "models (apportion.io/gpu-models) and queue (apportion.io/queue), or put the pods that "
    "ask differently in a gang of their own (apportion.io/gang, apportion.io/gang-size), and "
    "create them again"
)


@pytest.mark.parametrize(
    ("members", "waiting", "asks"),
    [
        (
            [
                _member("llm-0", gated=True),
                replace(_member("llm-1", gated=True), demand=Demand(mig_profile="1g.10gb")),
                _member("llm-2", gated=True),
            ],
            "gpu-team-a/llm",
            "llm-0 asks nvidia.com/gpu: 1 in queue team-a, llm-1 asks nvidia.com/mig-1g.10gb: 1 "
            "in queue team-a",
        ),
        (
            [
                _member("llm-0", gated=True),
                _member("llm-1", gated=True),
                replace(_member("llm-2", gated=True), queue="team-b"),
            ],
            "gpu-team-a/llm",
            "llm-0 asks nvidia.com/gpu: 1 in queue team-a, llm-2 asks nvidia.com/gpu: 1 in queue "
            "team-b",
        ),
        (
            [
                _member("llm-0", gated=False, placement="gpu-node-a:0"),
                _member("llm-1", gated=False, placement="gpu-node-a:1"),
                replace(_member("llm-2b", gated=True), demand=Demand(gpus=4)),
            ],
            "gpu-team-a/llm replacements",
            "llm-0 asks nvidia.com/gpu: 1 in queue team-a, llm-2b asks nvidia.com/gpu: 4 in queue "
            "team-a",
        ),
    ],
    ids=["mig-beside-whole", "another-queue", "replacement"],
)
def test_a_gang_whose_members_ask_differently_is_never_decided(
    members: list[ManagedPod], waiting: str, asks: str
) -> None:
    """Was: decided as its pods × its first member's ask and queue (a running gang's
    replacements as theirs), so admitted, members ran outside their queue's quota on
    devices reserved for another ask. Members the webhook could not compare (created
    together, or while it was down) wait, not charged, and the queue view says why."""
    cluster = fixture_cluster()
    for pod in members:
        cluster.put_pod(pod)
    assert all(w.placement is not None for w in cluster.snapshot().workloads)
    (view,) = waiting_workloads(cluster)
    assert (view.workload, view.reason, view.message) == (waiting, "GangMixed", _MIXED.format(asks))


def test_a_gang_and_a_pod_of_its_own_named_alike_are_never_decided() -> None:
    """Created together, the validating webhook could not refuse either (``gangs.clash``):
    decided as one workload, the pod was counted as a member of the gang."""
    cluster = fixture_cluster()
    for pod in (_member("llm-0", gated=True), _member("llm-1", gated=True)):
        cluster.put_pod(pod)
    cluster.put_pod(replace(_member("llm", gated=True), in_gang=False, gang_size=1))
    (view,) = waiting_workloads(cluster)
    assert (view.workload, view.reason, view.message) == (
        "gpu-team-a/llm",
        "GangMixed",
        "workload gpu-team-a/llm names both a gang (members: llm-0, llm-1) and the pod llm of "
        "its own: give the gang or the pod another name, and create them again",
    )


def test_a_standalone_clusters_running_workloads_outlast_the_intent_ttl() -> None:
    # Was: they were recorded as admissions whose pods had yet to show, and once the
    # validating webhook had recorded any pod, they expired after intent_ttl_s (120 s):
    # their GPUs looked free to the next pod.
    now = [1_764_091_500.0]
    cluster = LiveCluster(clock=lambda: now[0])
    snapshot, namespaces = load_cluster_file(CLUSTER_FILE)
    on_a = PodPlacement(node="gpu-node-a", gpus=tuple(range(8)))
    running = Workload(
        name="gpu-team-a/seeded", queue="team-a", namespace="gpu-team-a",
        demand=Demand(gpus=8), flavor="H100-80GB", started=1, placement=(on_a,),
    )  # fmt: skip
    seed_cluster(cluster, snapshot.model_copy(update={"workloads": (running,)}), namespaces)
    cluster.put_pod(WAITING)  # a pod recorded: admissions not seen from now on expire
    now[0] += 121
    held = [w.name for w in cluster.snapshot().workloads if w.placement is not None]
    assert held == [running.name]


def _free(cluster: LiveCluster) -> tuple[object, ...]:
    """What the webhook's live allocator has free: GPU shares, MIG slices, CPU, memory."""
    state = cluster._current_allocator()._compiled.state
    slices = [[s for s, (_, taken) in (m or {}).items() if not taken] for m in state.gpu_mig]
    return list(state.gpu_free_milli), slices, list(state.free_cpu), list(state.free_mem)


def test_an_admission_the_webhook_overtook_is_refused_and_decided_again() -> None:
    # Was: the controller patched the pods, then noted the admission, while the webhook
    # had admitted a pod at creation onto the same GPUs since the snapshot the decision
    # was taken on: two workloads placed there, and the rebuild that clash forced left the
    # controller's out of the books while its pods ran on them.
    cluster = fixture_cluster()
    cluster.put_pod(WAITING)
    snapshot = cluster.snapshot()
    verdict = next(v for v in decide(snapshot).workloads if v.workload == WAITING.workload)
    serve = Workload(
        name="gpu-team-a/serve", queue="team-a", namespace="gpu-team-a", demand=Demand(gpus=2)
    )
    at_creation = cluster.admit_now(serve, reserve=True)
    assert at_creation.placement == verdict.placement  # the same best fit, given first
    free, generation = _free(cluster), cluster.generation
    workload = next(w for w in snapshot.workloads if w.name == WAITING.workload)
    stale = workload.model_copy(
        update={"placement": verdict.placement, "flavor": verdict.flavor, "started": 1}
    )
    refusal = cluster.reserve(stale)
    assert refusal == Refusal(
        PLACE_TAKEN, "its place was taken since the decision, by gpu-team-a/serve"
    )
    assert _free(cluster) == free  # nothing charged
    assert cluster.generation == generation  # serve's pod wakes the controller when seen
    snapshot = cluster.snapshot()
    verdict = next(v for v in decide(snapshot).workloads if v.workload == WAITING.workload)
    assert verdict.outcome is Outcome.ADMIT
    assert not set(verdict.placement[0].gpus) & set(at_creation.placement[0].gpus)
    assert cluster.reserve(stale.model_copy(update={"placement": verdict.placement})) is None
    held = {w.name: w.placement for w in cluster.snapshot().workloads}
    assert held == {serve.name: at_creation.placement, WAITING.workload: verdict.placement}


def test_a_gang_whose_place_is_taken_in_part_reserves_none_of_it() -> None:
    cluster = fixture_cluster()
    at_creation = cluster.admit_now(
        Workload(name="gpu-team-a/serve", queue="team-a", namespace="gpu-team-a",
                 demand=Demand(gpus=1)),
        reserve=True,
    )  # fmt: skip
    (taken,) = at_creation.placement
    for name in ("llm-0", "llm-1"):
        cluster.put_pod(replace(_member(name, gated=True), gang_size=2))
    free = _free(cluster)
    elsewhere = PodPlacement(node="gpu-node-b", gpus=(0,))
    gang = Workload(
        name="gpu-team-a/llm", queue="team-a", namespace="gpu-team-a", demand=Demand(gpus=1),
        pods=2, placement=(elsewhere, taken), flavor="H100-80GB", started=1,
    )  # fmt: skip
    assert cluster.reserve(gang) == Refusal(
        PLACE_TAKEN, "its place was taken since the decision, by gpu-team-a/serve"
    )
    assert _free(cluster) == free
    assert cluster.admit_now(
        Workload(name="gpu-team-a/next", queue="team-a", namespace="gpu-team-a",
                 demand=Demand(gpus=8), node_selector={"kubernetes.io/hostname": "gpu-node-b"}),
        reserve=False,
    ).outcome is Outcome.ADMIT  # fmt: skip


def _overtaken(
    cluster: LiveCluster, waiting: ManagedPod, meanwhile: Workload
) -> tuple[Workload, WorkloadDecision]:
    """The controller's decision for ``waiting``, taken on a snapshot before the webhook
    admitted ``meanwhile`` at creation: the admission it reserves, and the one at creation."""
    cluster.put_pod(waiting)
    snapshot = cluster.snapshot()
    decision = decide(snapshot)
    cluster.set_last_decisions(decision.workloads)  # as the controller records it
    verdict = next(v for v in decision.workloads if v.workload == waiting.workload)
    assert verdict.outcome is Outcome.ADMIT
    at_creation = cluster.admit_now(meanwhile, reserve=True)
    assert at_creation.outcome is Outcome.ADMIT
    devices = {(p.node, g, p.mig_start) for p in verdict.placement for g in p.gpus}
    assert not devices & {(p.node, g, p.mig_start) for p in at_creation.placement for g in p.gpus}
    workload = next(w for w in snapshot.workloads if w.name == waiting.workload)
    decided = workload.model_copy(
        update={"placement": verdict.placement, "flavor": verdict.flavor, "started": 1}
    )
    return decided, at_creation


def _quota_overtaken(cluster: LiveCluster) -> Workload:
    """WAITING's admission (2 GPUs) decided with team-a at 0/4, then the webhook's of 3 GPUs
    on other devices (node b) at creation."""
    cluster.replace_queues([Queue(name="team-a", namespaces=("gpu-team-a",),
                                  quota={"H100-80GB": Quota(nominal=4)})])  # fmt: skip
    serve = Workload(
        name="gpu-team-a/serve", queue="team-a", namespace="gpu-team-a", demand=Demand(gpus=3),
        node_selector={"kubernetes.io/hostname": "gpu-node-b"},
    )  # fmt: skip
    decided, _ = _overtaken(cluster, WAITING, serve)
    return decided


def test_an_admission_whose_quota_the_webhook_used_since_is_refused_and_decided_again() -> None:
    # Was: held wherever its devices were free. The webhook admitted a pod at creation
    # while the decision was taken, on other GPUs, with the queue's last quota; the
    # controller's admission then took team-a to 6/4.
    cluster = fixture_cluster()
    decided = _quota_overtaken(cluster)
    free, generation = _free(cluster), cluster.generation
    assert cluster.reserve(decided) == Refusal(
        QUOTA_TAKEN,
        "its quota is no longer free: queue team-a at nominal H100-80GB quota 3/4; needs 2",
    )
    assert _free(cluster) == free  # nothing charged
    assert cluster.generation == generation  # what overtook it woke the controller already
    verdict = next(v for v in decide(cluster.snapshot()).workloads if v.workload == decided.name)
    assert (verdict.outcome, verdict.reason) == (Outcome.PENDING, Reason.QUOTA_EXHAUSTED)


def test_the_queue_view_shows_an_admission_refused_since_the_decision_until_the_next() -> None:
    # Was: the last decision's verdict, "Admitted: admitted on 1× 2 H100-80GB GPUs", for a
    # workload whose pods stay gated until the next cycle decides it again.
    cluster = fixture_cluster()
    decided = _quota_overtaken(cluster)
    refusal = cluster.reserve(decided)
    assert refusal is not None
    (row,) = queue_view(cluster).of(None)["queues"]["team-a"]
    assert (row["workload"], row["reason"], row["message"]) == (
        WAITING.workload,
        QUOTA_TAKEN,
        "not admitted as decided: its quota is no longer free: queue team-a at "
        "nominal H100-80GB quota 3/4; needs 2; it is decided again in the next cycle",
    )
    assert refusal.waiting_message == row["message"]  # what its pods say too
    # The next decision says why it waits now.
    cluster.set_last_decisions(decide(cluster.snapshot()).workloads)
    (row,) = queue_view(cluster).of(None)["queues"]["team-a"]
    assert (row["reason"], row["message"]) == (
        "QuotaExhausted",
        "queue team-a at nominal H100-80GB quota 3/4; needs 2",
    )


def test_an_admission_whose_nodes_cpu_the_webhook_used_since_is_refused() -> None:
    # Was: held, its devices being free: with a MIG pod admitted at creation on the same
    # node meanwhile, the two asked 120 of mig-node-c's 96 CPU.
    cluster = fixture_cluster()
    on_c = {"kubernetes.io/hostname": "mig-node-c"}
    waiting = replace(WAITING, cpu_milli=60_000, node_selector=on_c)
    notebook = Workload(
        name="gpu-team-a/notebook", queue="team-a", namespace="gpu-team-a",
        demand=Demand(mig_profile="1g.10gb"), cpu_milli=60_000,
    )  # fmt: skip
    decided, _ = _overtaken(cluster, waiting, notebook)
    free = _free(cluster)
    assert cluster.reserve(decided) == Refusal(
        PLACE_TAKEN,
        "its place is no longer free: node mig-node-c has 36 CPU free; its 1 pod(s) "
        "there ask 60 CPU",
    )
    assert _free(cluster) == free


def test_an_admission_the_webhook_left_room_for_is_held() -> None:
    # The same race where quota and CPU suffice for both: held, as decided.
    cluster = fixture_cluster()
    serve = Workload(
        name="gpu-team-a/serve", queue="team-a", namespace="gpu-team-a", demand=Demand(gpus=3),
        node_selector={"kubernetes.io/hostname": "gpu-node-b"}, cpu_milli=30_000,
    )  # fmt: skip
    decided, at_creation = _overtaken(cluster, replace(WAITING, cpu_milli=60_000), serve)
    assert cluster.reserve(decided) is None
    held = {w.name: w.placement for w in cluster.snapshot().workloads}
    assert held == {serve.name: at_creation.placement, decided.name: decided.placement}


def test_an_admission_into_room_the_decisions_eviction_frees_waits_for_the_victim_to_end() -> None:
    # The decision evicts v (team-b, borrowing) for team-a's reclaim, and gives the quota
    # v's eviction frees in the cohort to c (team-c, on GPUs free all along). v holds it
    # until it has ended: reserved now, c would take the cohort past what it lends.
    cluster = fixture_cluster()
    cluster.replace_queues([
        Queue(name="team-a", cohort="lab", namespaces=("gpu-team-a",),
              quota={"H100-80GB": Quota(nominal=12)}),
        Queue(name="team-b", cohort="lab", namespaces=("gpu-team-b",),
              quota={"H100-80GB": Quota(nominal=8)}),
        Queue(name="team-c", cohort="lab", namespaces=("gpu-team-b",),
              quota={"H100-80GB": Quota(nominal=0)}),
    ])  # fmt: skip

    def pod(workload: str, queue: str, gpus: int, node: str | None = None) -> ManagedPod:
        namespace, name = workload.split("/")
        return replace(
            WAITING, namespace=namespace, name=f"{name}-0", workload=workload, queue=queue,
            demand=Demand(gpus=gpus), gated=node is None, node=node,
            placement=PodPlacement(node=node, gpus=tuple(range(gpus))) if node else None,
        )  # fmt: skip

    for running in (pod("gpu-team-b/v", "team-b", 8, "gpu-node-a"),
                    pod("gpu-team-b/x", "team-b", 8, "gpu-node-b"),
                    pod("gpu-team-a/y", "team-a", 4, "mig-node-c")):  # fmt: skip
        cluster.put_pod(running)  # the cohort's 20 lendable GPUs all in use
    cluster.put_pod(pod("gpu-team-a/a", "team-a", 6))
    on_c = {"kubernetes.io/hostname": "mig-node-c"}
    cluster.put_pod(replace(pod("gpu-team-b/c", "team-c", 2), node_selector=on_c))

    def decided() -> dict[str, Workload]:
        snapshot = cluster.snapshot()
        verdicts = {v.workload: v for v in decide(snapshot).workloads}
        return {
            w.name: w.model_copy(update={"placement": v.placement, "flavor": v.flavor})
            for w in snapshot.workloads
            if (v := verdicts.get(w.name)) is not None and v.outcome is not Outcome.PENDING
        }

    admissions = decided()
    (victim,) = decide(cluster.snapshot()).evictions
    assert (victim.workload, victim.beneficiary) == ("gpu-team-b/v", "gpu-team-a/a")
    c = admissions["gpu-team-b/c"]
    assert c.placement == (PodPlacement(node="mig-node-c", gpus=(4, 5)),)  # free all along
    free, generation = _free(cluster), cluster.generation
    assert cluster.reserve(c) == Refusal(
        QUOTA_TAKEN,
        "its quota is no longer free: queue team-c at 0/0 H100-80GB; cohort lab lends 0 more; "
        "needs 2",
    )
    assert _free(cluster) == free
    # Nothing changed, so nothing wakes the controller: the refusal did, and every cycle
    # made the same decision and met the same refusal, twice a second for as long as a
    # PodDisruptionBudget kept v running. v's end wakes it.
    assert cluster.generation == generation
    cluster.remove_pod("gpu-team-b", "v-0")  # v has ended
    assert cluster.generation > generation
    assert not decide(cluster.snapshot()).evictions
    admissions = decided()
    assert cluster.reserve(admissions["gpu-team-a/a"]) is None
    assert cluster.reserve(admissions["gpu-team-b/c"]) is None


def _foreign(name: str, node: str) -> ManagedPod:
    """A bound GPU pod Apportion does not manage (its namespace is not opted in)."""
    return ManagedPod(
        namespace="not-opted-in", name=name, workload=f"foreign:not-opted-in/{name}", queue="",
        demand=Demand(gpus=1), priority=0, created=0, gang_size=1, gated=False, node=node,
        foreign=True,
    )  # fmt: skip


def test_an_admission_whose_devices_are_no_longer_free_is_left_out_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Was: silently left out of the books; and the devices its pods before the clash were
    # placed on stayed taken for the pods after it. Reservations never clash, but a
    # foreign pod bound since on its node is counted on the highest GPUs (which ones it
    # has is unknown), and those may be the ones the admission was placed on.
    cluster = fixture_cluster()
    for name in ("llm-0", "llm-1"):
        cluster.put_pod(replace(_member(name, gated=True), gang_size=2))
    placement = tuple(PodPlacement(node="gpu-node-a", gpus=(i,)) for i in (0, 7))
    gang = Workload(
        name="gpu-team-a/llm", queue="team-a", namespace="gpu-team-a", demand=Demand(gpus=1),
        pods=2, placement=placement, flavor="H100-80GB", started=1,
    )  # fmt: skip
    assert cluster.reserve(gang) is None
    cluster.put_pod(_foreign("other", "gpu-node-a"))
    # A pod bound where nobody placed it takes the lowest GPU free: llm-0's stays free.
    cluster.put_pod(replace(WAITING, name="bound-0", workload="gpu-team-a/bound",
                            demand=Demand(gpus=1), gated=False, node="gpu-node-a"))  # fmt: skip
    with caplog.at_level("WARNING", logger="apportion.cluster"):
        for _ in range(3):  # every cycle and every rebuild meets it again
            held = {w.name: w.placement for w in cluster.snapshot().workloads}
        cluster._current_allocator()
    assert held == {"gpu-team-a/bound": (PodPlacement(node="gpu-node-a", gpus=(0,)),)}
    assert [r.getMessage() for r in caplog.records] == [
        "admission of gpu-team-a/llm left out of the books: the devices it was placed on are "
        "gone from their node or held by pods Apportion does not manage; the placements on "
        "its pods and the books disagree until it ends"
    ]


def test_gpu_metrics_marking_other_workloads_idle_keep_the_webhooks_allocator() -> None:
    # Idle marks only order a preemption's victims, which the webhook's allocator never
    # makes: a refresh that changed only them dropped it, and the next review rebuilt it.
    cluster = fixture_cluster()
    quiet = assess(cluster.snapshot(with_telemetry=False), [], TelemetrySettings())
    cluster.set_telemetry(quiet)
    built = cluster._current_allocator()
    idle = IdleWorkload("gpu-team-a/train", "team-a", ("gpu-node-a/0",), util_milli=0)
    generation = cluster.generation
    cluster.set_telemetry(replace(quiet, idle=replace(quiet.idle, workloads=(idle,))))
    assert cluster.generation > generation  # the global decision may evict it first now
    assert cluster._allocator is built
    broken = HealthVerdict("gpu-node-a", 0, since=0, until=600, reason="XID 79 at t=0")
    cluster.set_telemetry(replace(quiet, unhealthy=(broken,)))
    assert cluster._allocator is None  # a GPU out of capacity: rebuilt


def test_a_running_workload_started_when_its_last_pod_did_not_when_it_was_created() -> None:
    # Was its pods' creation: a pod gated for 110 minutes, then running for 10 while it
    # loaded its model, had "run" two hours and was judged idle over a one-hour window (the
    # first victim where idle borrowers go first); and preemption's "most recently started
    # first" read it as old.
    now = 1_764_091_500
    cluster = fixture_cluster(clock=float(now))
    created = now - 120 * 60
    pod = json.loads((FIXTURES / "objects" / "pod-bound-gpu-1.json").read_text())
    pod["metadata"]["creationTimestamp"] = rfc3339(created)
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    pod["metadata"]["labels"] = {keys.LABEL_QUEUE: "team-a"}
    pod["metadata"]["annotations"] = {
        keys.ANNOTATION_WORKLOAD: f"{namespace}/{name}",
        ANNOTATION_PLACEMENT: f"{pod['spec']['nodeName']}:0",
    }
    pod["status"] = {"phase": "Running", "startTime": rfc3339(now - 10 * 60)}
    reader = PodReader(cluster.catalog)
    observed = reader.observed(pod)
    assert observed is not None
    assert (observed.created, observed.started) == (created, now - 10 * 60)
    cluster.put_pod(observed)
    (running,) = cluster.snapshot().workloads
    assert running.started == now - 10 * 60
    # Bound but not yet taken by its kubelet (or a start time nobody can read): it starts now.
    for status in ({"phase": "Pending"}, {"phase": "Running", "startTime": "yesterday"}):
        pod["status"] = status
        fresh = reader.observed(pod)
        assert fresh is not None and fresh.started is None
        cluster.put_pod(fresh)
        (running,) = cluster.snapshot().workloads
        assert running.started == now
