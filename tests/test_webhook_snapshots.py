"""The live cluster's snapshot (``webhook.snapshots.build``). What a build makes of a group
of pods is kept with the group (``observed.workload_of``) and made again only when what it
depends on beside the pods moved (the clock past a nomination, the devices left to pods
placed on no record): every build must equal, byte for byte, one from the same groups made
afresh, with nothing kept, as pods, nodes, queues, admissions and the clock move."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_support import fixture_cluster

from scheduler.model import Demand, PodPlacement, Queue, Quota, Snapshot, Workload
from webhook.cluster import LiveCluster
from webhook.kubeobjects import FreeDevices
from webhook.pods import ManagedPod
from webhook.snapshots import Clash, View, build

NOW = 1_764_091_500
_NAMES = [f"p{i}" for i in range(7)]
_ON_A = [PodPlacement(node="gpu-node-a", gpus=g) for g in ((0,), (1,), (2, 3))]
_ON_C = [PodPlacement(node="mig-node-c", gpus=(6,), mig_start=s) for s in (0, 1)]
_NODES = {n.name: n for n in fixture_cluster().nodes.values()}

pods = st.builds(
    ManagedPod,
    namespace=st.just("gpu-team-a"),
    name=st.sampled_from(_NAMES),
    workload=st.sampled_from(["gpu-team-a/a", "gpu-team-a/b", "gpu-team-a/c"]),
    queue=st.sampled_from(["team-a", "team-a", "team-b", "gone"]),
    demand=st.sampled_from([Demand(gpus=1), Demand(gpus=2), Demand(mig_profile="1g.10gb")]),
    priority=st.sampled_from([0, 5, 5, 2000]),  # team-b takes 1000 at most
    created=st.integers(1, 3),
    gang_size=st.sampled_from([1, 1, 1, 2, 3]),
    gated=st.booleans(),
    node=st.sampled_from([None, "gpu-node-a", "gpu-node-a", "mig-node-c", "gpu-node-x"]),
    placement=st.sampled_from([None, None, *_ON_A, *_ON_C]),
    foreign=st.integers(0, 5).map(lambda n: n == 0),
    cpu_milli=st.sampled_from([0, 4000]),
    memory_mib=st.sampled_from([0, 8192]),
    nominated_until=st.sampled_from([0, NOW + 30, NOW + 30, NOW + 120]),
    node_selector=st.sampled_from([{}, {"zone": "a"}]),
    other_gates=st.sampled_from([(), (), ("example.com/quota",)]),
)
_QUEUES = [
    [Queue(name="team-a", quota={"H100-80GB": Quota(nominal=8)})],
    [
        Queue(name="team-a", namespaces=("gpu-team-a",), quota={"H100-80GB": Quota(nominal=8)}),
        Queue(name="team-b", max_priority=1000, quota={"H100-80GB": Quota(nominal=8)}),
    ],
]
steps = st.one_of(
    pods.map(lambda pod: ("put", pod)),
    pods.map(lambda pod: ("put", pod)),
    st.sampled_from(_NAMES).map(lambda name: ("remove", name)),
    st.just(("tick", 50)),
    st.sampled_from([("node", "gpu-node-a"), ("node", "mig-node-c")]),
    st.sampled_from(_QUEUES).map(lambda queues: ("queues", queues)),
    st.sampled_from(_ON_A).map(lambda placement: ("admission", placement)),
)


def _step(cluster: LiveCluster, now: list[float], step: tuple[str, Any]) -> None:
    kind, what = step
    if kind == "put":
        cluster.put_pod(what)
    elif kind == "remove":
        cluster.remove_pod("gpu-team-a", what)
    elif kind == "tick":
        now[0] += 50  # past a nomination; admissions expire after three such ticks
    elif kind == "node":  # a node gone, or back: the devices its pods are given move
        if what in cluster.nodes:
            cluster.remove_node(what)
        else:
            cluster.put_node(_NODES[what])
    elif kind == "queues":
        cluster.replace_queues(what)
    else:  # the controller's admission, held until its pod is seen
        demand = Demand(gpus=len(what.gpus))
        workload = Workload(
            name=f"gpu-team-a/d{what.gpus[0]}", queue="team-a", namespace="gpu-team-a",
            demand=demand, placement=(what,), flavor="H100-80GB", started=1,
        )  # fmt: skip
        cluster.reserve(workload)


def _afresh(view: View) -> View:
    """The same view with its groups made again and its nodes' free devices worked out
    again: nothing of an earlier build kept."""
    groups = {name: replace(g) for name, g in view.groups.items()}
    return replace(view, groups=groups, free=FreeDevices())


def _as_built(built: tuple[Snapshot, list[Clash]]) -> tuple[str, object, list[Clash]]:
    snapshot, clashes = built
    kept = [sorted(w.model_fields_set) for w in snapshot.workloads]
    return snapshot.model_dump_json(), kept, clashes


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(steps, max_size=40))
def test_a_build_equals_one_from_groups_made_afresh(events: list[tuple[str, Any]]) -> None:
    now = [float(NOW)]
    cluster = fixture_cluster(lambda: now[0])
    for event in events:
        _step(cluster, now, event)
        with cluster._lock:
            cluster._expire_intents()
            view = cluster._view(with_telemetry=True)
        for running_only in (False, True):  # the controller's, the webhook allocator's
            # Each build its own dict of the groups (a build changes it), the live groups
            # themselves in one: what earlier builds kept with them is used.
            live, again = replace(view, groups=dict(view.groups)), _afresh(view)
            assert _as_built(build(live, cluster._base, running_only)) == _as_built(
                build(again, cluster._base, running_only)
            ), events


def _pod(name: str, **update: Any) -> ManagedPod:
    pod = ManagedPod(
        namespace="gpu-team-a", name=name, workload=f"gpu-team-a/{name}", queue="team-a",
        demand=Demand(gpus=1), priority=0, created=1, gang_size=1, gated=True,
    )  # fmt: skip
    return replace(pod, **update)


def _built(cluster: LiveCluster, name: str) -> Workload:
    return next(w for w in cluster.snapshot().workloads if w.name == f"gpu-team-a/{name}")


def test_a_nomination_ends_with_the_clock_in_the_next_build() -> None:
    now = [float(NOW)]
    cluster = fixture_cluster(lambda: now[0])
    cluster.put_pod(_pod("train", nominated_until=NOW + 30))
    assert _built(cluster, "train").nominated
    now[0] += 50
    assert not _built(cluster, "train").nominated


def test_a_pod_placed_on_no_record_is_given_the_devices_left_at_each_build() -> None:
    cluster = fixture_cluster()
    on_a = PodPlacement(node="gpu-node-a", gpus=(0,))
    cluster.put_pod(_pod("b", gated=False, node="gpu-node-a"))
    assert _built(cluster, "b").placement == (on_a,)
    cluster.put_pod(_pod("a", gated=False, node="gpu-node-a", placement=on_a))  # built first
    assert _built(cluster, "b").placement == (PodPlacement(node="gpu-node-a", gpus=(1,)),)
    cluster.remove_pod("gpu-team-a", "a")
    assert _built(cluster, "b").placement == (on_a,)


def test_devices_a_foreign_pod_comes_to_hold_are_not_given_by_the_next_build() -> None:
    cluster = fixture_cluster()
    cluster.put_pod(_pod("b", gated=False, node="gpu-node-a"))
    assert _built(cluster, "b").placement == (PodPlacement(node="gpu-node-a", gpus=(0,)),)
    foreign = _pod("f", namespace="elsewhere", workload="foreign:elsewhere/f", queue="")
    cluster.put_pod(
        replace(foreign, demand=Demand(gpus=8), gated=False, node="gpu-node-a", foreign=True)
    )
    built = cluster.snapshot().workloads
    assert [w.name for w in built] == [], "no device of gpu-node-a is left for b"


def test_a_queue_leaves_out_only_the_waiting_workloads_it_does_not_take() -> None:
    cluster = fixture_cluster()
    quota = {"H100-80GB": Quota(nominal=8)}
    taking = Queue(name="team-a", namespaces=("gpu-team-a",), max_priority=1000, quota=quota)
    cluster.replace_queues([taking])
    cluster.put_pod(_pod("high", priority=2000))  # above the queue's maximum
    cluster.put_pod(_pod("low", priority=5))
    cluster.put_pod(_pod("low-too", priority=5))
    cluster.put_pod(_pod("other", namespace="gpu-team-b", workload="gpu-team-b/other", priority=5))
    built = [w.name for w in cluster.snapshot().workloads]
    assert built == ["gpu-team-a/low", "gpu-team-a/low-too"]
