"""webhook/hostpods.py: pods that ask no GPU hold CPU and memory on their GPU node.

The CPU-only pods are the recorded bound GPU pod (fixtures/objects/pod-bound-gpu-1.json, as
kube-apiserver v1.36 served it) without its ``nvidia.com/gpu`` resources — a pod shape the
API server really sends, varied as a user would write a data loader or an agent.
"""

from __future__ import annotations

import jsonpatch
from webhook_support import (
    admission,
    answer,
    cpu_only_pod,
    fixture_cluster,
    free_host,
    patch_of,
    review,
    vary,
)

from scheduler.incremental import IncrementalAllocator
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.hostpods import HostPod, HostPods, host_pod_of
from webhook.pods import ANNOTATION_PLACEMENT, PodReader

GPU_1 = "create-pod-gpu-1.mutate-create"
NODE_CPU, NODE_MIB = 96_000, 1_081_344  # every node of the capture's cluster


def _host(cluster: LiveCluster) -> dict[str, tuple[int, int]]:
    """Per node: CPU milli and memory MiB not held by pods outside the workloads."""
    return {n.name: free_host(n) for n in cluster.snapshot().nodes}


# -- reading a pod ----------------------------------------------------------------------------


def test_a_bound_cpu_only_pod_holds_its_requests() -> None:
    pod = cpu_only_pod("loader", cpu="1500m", memory="3Gi")
    assert PodReader(fixture_cluster().catalog).observed(pod) is None  # not a GPU pod
    assert host_pod_of(pod) == HostPod("gpu-team-a", "loader", "gpu-node-a", 1500, 3072)


def test_unbound_terminal_and_request_free_pods_hold_nothing() -> None:
    assert host_pod_of(cpu_only_pod("pending", node=None)) is None
    assert host_pod_of(cpu_only_pod("done", phase="Succeeded")) is None
    assert host_pod_of(cpu_only_pod("crashed", phase="Failed")) is None
    best_effort = cpu_only_pod("best-effort")
    best_effort["spec"]["containers"][0]["resources"] = {}
    assert host_pod_of(best_effort) is None


def test_unreadable_requests_count_as_nothing_without_crashing() -> None:
    pod = cpu_only_pod("odd", cpu="lots")
    assert host_pod_of(pod) == HostPod("gpu-team-a", "odd", "gpu-node-a", 0, 8192)
    pod["spec"]["containers"] = 5  # not a list: asks nothing, raises nothing
    assert host_pod_of(pod) is None
    assert host_pod_of({"spec": "nonsense"}) is None


# -- the per-node sums --------------------------------------------------------------------------


def test_sums_follow_puts_moves_and_removals() -> None:
    pods = HostPods()
    a = HostPod("ns", "a", "n1", 1000, 100)
    assert pods.put(a) == {"n1": (1000, 100)}
    assert pods.put(a) == {}  # the same pod again (a status update): nothing changed
    assert pods.put(HostPod("ns", "b", "n1", 500, 50)) == {"n1": (500, 50)}
    assert pods.held("n1") == (1500, 150)
    recreated = pods.put(HostPod("ns", "a", "n2", 1000, 100))  # recreated elsewhere
    assert recreated == {"n1": (-1000, -100), "n2": (1000, 100)}
    assert (pods.held("n1"), pods.held("n2")) == ((500, 50), (1000, 100))
    assert pods.put(HostPod("ns", "b", "n1", 500, 80)) == {"n1": (0, 30)}  # resized
    assert pods.remove(("ns", "b")) == {"n1": (-500, -80)}
    assert pods.held("n1") == (0, 0)
    assert pods.replace([HostPod("ns", "c", "n2", 1000, 100)]) == {}  # n2's sum is the same
    assert pods.replace([]) == {"n2": (-1000, -100)}
    assert len(pods) == 0


# -- the live cluster ---------------------------------------------------------------------------


def test_a_cpu_only_pod_on_a_gpu_node_leaves_its_allocatable_until_deleted() -> None:
    cluster = fixture_cluster()
    host = host_pod_of(cpu_only_pod("loader", cpu="30", memory="100Gi"))
    assert host is not None
    generation = cluster.generation
    cluster.put_host_pod(host)
    assert cluster.generation > generation  # waiting work must be decided again
    assert _host(cluster)["gpu-node-a"] == (NODE_CPU - 30_000, NODE_MIB - 100 * 1024)
    assert _host(cluster)["gpu-node-b"] == (NODE_CPU, NODE_MIB)
    generation = cluster.generation
    cluster.put_host_pod(host)  # a status update of the same pod
    assert cluster.generation == generation
    cluster.remove_pod("gpu-team-a", "loader")
    assert _host(cluster)["gpu-node-a"] == (NODE_CPU, NODE_MIB)
    assert cluster.generation > generation


def test_cpu_only_pods_coming_and_going_keep_the_webhooks_allocator() -> None:
    # Each one landing on or leaving a GPU node dropped the allocator, so the next answer
    # rebuilt it: a walk over every pod, 0.2 s at 20,000, under the lock reviews wait for.
    cluster = fixture_cluster()
    built = cluster._current_allocator()
    names = []
    for cpu in ("30", "60", "5"):  # together more than the node's 96 CPU
        host = host_pod_of(cpu_only_pod(f"loader-{cpu}", cpu=cpu, memory="400Gi"))
        assert host is not None
        generation = cluster.generation
        cluster.put_host_pod(host)
        names.append(host.name)
        assert cluster.generation > generation  # waiting work must be decided again
        assert cluster._allocator is built
        assert _free(built) == _free(IncrementalAllocator(cluster._snapshot(running_only=True)))
    for name in names:
        cluster.remove_pod("gpu-team-a", name)
        assert cluster._allocator is built
        assert _free(built) == _free(IncrementalAllocator(cluster._snapshot(running_only=True)))
    assert _free(built) == _free(IncrementalAllocator(fixture_cluster()._snapshot()))


def _free(allocator: IncrementalAllocator) -> tuple[list[int], list[int]]:
    """Per node: CPU milli and memory MiB the allocator has free."""
    state = allocator._compiled.state
    return state.free_cpu, state.free_mem


def test_a_pod_on_a_node_apportion_does_not_track_holds_nothing_until_it_is_tracked() -> None:
    cluster = fixture_cluster()
    nodes = {n.name: n for n in cluster.snapshot().nodes}
    cluster.remove_node("gpu-node-b")  # its pod event comes first, as at startup
    generation = cluster.generation
    host = host_pod_of(cpu_only_pod("agent", node="gpu-node-b", cpu="10", memory="1Gi"))
    assert host is not None
    cluster.put_host_pod(host)
    assert cluster.generation == generation  # no rebuild for a node Apportion ignores
    assert "gpu-node-b" not in _host(cluster)
    assert _host(cluster)["gpu-node-a"] == (NODE_CPU, NODE_MIB)
    cluster.put_node(nodes["gpu-node-b"])  # the node's GPUs are reported later
    assert _host(cluster)["gpu-node-b"] == (NODE_CPU - 10_000, NODE_MIB - 1024)


def test_a_relist_replaces_the_cpu_only_pods() -> None:
    cluster = fixture_cluster()
    before = host_pod_of(cpu_only_pod("gone", cpu="20"))
    after = host_pod_of(cpu_only_pod("new", node="mig-node-c", cpu="5", memory="1Gi"))
    assert before is not None and after is not None
    cluster.put_host_pod(before)
    cluster.replace_pods([], [after])
    host = _host(cluster)
    assert host["gpu-node-a"] == (NODE_CPU, NODE_MIB)
    assert host["mig-node-c"] == (NODE_CPU - 5000, NODE_MIB - 1024)


# -- what the webhook then decides ----------------------------------------------------------------


def _admitted_node(cluster: LiveCluster, name: str) -> str | None:
    body = vary(review(GPU_1), name=name)
    response = answer(admission(cluster).mutate, body)
    pod = jsonpatch.apply_patch(body["request"]["object"], patch_of(response))
    annotations = pod["metadata"]["annotations"]
    if annotations[keys.ANNOTATION_DECISION] != "admitted":
        return None
    node: str = annotations[ANNOTATION_PLACEMENT].split(":")[0]
    return node


def test_a_gpu_pod_goes_where_cpu_only_pods_left_room_or_waits_saying_so() -> None:
    """The captured GPU pod asks 1 CPU and 4 GiB; a node whose CPU-only pods hold 95.5 of its
    96 CPU has 8 free GPUs but cannot host it."""
    first = _admitted_node(fixture_cluster(), "probe")
    assert first is not None
    cluster = fixture_cluster()
    full = host_pod_of(cpu_only_pod("loader", node=first, cpu="95500m", memory="1Gi"))
    assert full is not None
    cluster.put_host_pod(full)
    second = _admitted_node(cluster, "moved")
    assert second is not None and second != first
    cluster = fixture_cluster()
    for node in ("gpu-node-a", "gpu-node-b", "mig-node-c"):
        held = host_pod_of(cpu_only_pod(f"agent-{node}", node=node, cpu="95500m", memory="1Gi"))
        assert held is not None
        cluster.put_host_pod(held)
    body = vary(review(GPU_1), name="waits")
    response = answer(admission(cluster).mutate, body)
    pod = jsonpatch.apply_patch(body["request"]["object"], patch_of(response))
    assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "pending"
    assert pod["metadata"]["annotations"][keys.ANNOTATION_REASON] == (
        "InsufficientCapacity: needs 1× 1 H100-80GB GPU with 1 CPU and 4 GiB memory per pod; "
        "the free GPUs would take 22 such pod(s), but the CPU and memory left on their nodes "
        "host only 0"
    )
    cluster.remove_pod("gpu-team-a", "agent-gpu-node-b")
    assert _admitted_node(cluster, "after") == "gpu-node-b"
