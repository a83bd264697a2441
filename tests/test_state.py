"""The compiled state: best fit that keeps whole nodes free, exact fit counts, exact undo."""

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.catalog import default_catalog
from scheduler.demand import Kind, Option
from scheduler.model import (
    Demand,
    Gpu,
    MigSlice,
    Node,
    PodPlacement,
    Snapshot,
    Taint,
    Toleration,
    Workload,
)
from scheduler.state import ClusterState

CATALOG = default_catalog()


def whole(k: int, model: str = "H100-80GB") -> Option:
    return Option(model, Kind.WHOLE, (model,), k)


def node(name: str, gpus: int, model: str = "H100-80GB", **kw: object) -> Node:
    return Node(name=name, gpus=tuple(Gpu(index=i, model=model, **kw) for i in range(gpus)))


def state_of(*nodes: Node) -> ClusterState:
    return ClusterState(Snapshot(nodes=nodes), CATALOG)


def anyone() -> Workload:
    return Workload(name="w", queue="q", demand=Demand(gpus=1))


def snapshot_free(state: ClusterState) -> tuple[object, ...]:
    return (
        list(state.gpu_free_milli),
        # Buckets as sets: undo may leave empty buckets and re-inserts nodes at the end.
        [{k: sorted(v) for k, v in p.buckets.items() if v} for p in state.pools],
        [list(p.fractions) for p in state.pools],
        [{k: list(v) for k, v in p.mig_free.items()} for p in state.pools],
        list(state.free_cpu),
    )


def test_used_node_before_breaking_a_whole_one_then_smallest_remainder():
    state = state_of(node("a", 8), node("b", 8), node("c", 4))
    pools = state.eligible_pools(anyone(), whole(2))
    first = state.place(whole(2), 1, 0, 0, pools)
    # Every node is entirely free: the smallest block that fits (c, 4 GPUs) is broken.
    assert first is not None and state.placement_of(first)[0].node == "c"
    second = state.place(whole(2), 1, 0, 0, pools)
    assert state.placement_of(second)[0].node == "c"  # c is used: fill it before a or b
    third = state.place(whole(4), 1, 0, 0, pools)
    assert state.placement_of(third)[0].node == "a"
    fourth = state.place(whole(2), 1, 0, 0, pools)
    assert state.placement_of(fourth)[0].node == "a"  # a has 4 left and is used; b stays whole
    assert state.entirely_free_gpus() == 8


def test_gang_is_all_or_nothing_and_failure_leaves_no_trace():
    state = state_of(node("a", 8), node("b", 8))
    pools = state.eligible_pools(anyone(), whole(8))
    before = snapshot_free(state)
    assert state.place(whole(8), 3, 0, 0, pools) is None
    assert snapshot_free(state) == before
    gang = state.place(whole(8), 2, 0, 0, pools)
    assert gang is not None and {p.node for p in state.placement_of(gang)} == {"a", "b"}
    state.release(gang)
    assert snapshot_free(state) == before


def test_fit_count_is_exact_per_node_blocks():
    state = state_of(node("a", 8), node("b", 3))
    pools = state.eligible_pools(anyone(), whole(2))
    assert state.capacity_bound(whole(2), pools) == 4 + 1
    assert state.capacity_bound(whole(4), pools) == 2
    assert state.capacity_bound(whole(8), pools) == 1
    assert state.never_fits(whole(16), pools)


def test_fractions_best_fit_on_shared_gpus_only():
    state = state_of(node("t", 2, "T4", shared=True), node("x", 2, "T4"))
    option = Option("T4", Kind.FRACTION, ("T4",), 600)
    pools = state.eligible_pools(anyone(), option)
    first = state.place(option, 1, 0, 0, pools)
    small = state.place(Option("T4", Kind.FRACTION, ("T4",), 300), 1, 0, 0, pools)
    # 300m goes next to the 600m pod (400m left there), not onto a fresh GPU.
    assert state.placement_of(first)[0].gpus == state.placement_of(small)[0].gpus
    assert all(p.node == "t" for a in (first, small) for p in state.placement_of(a))
    # The unshared node's GPUs still count as whole GPUs.
    assert state.capacity_bound(whole(2, "T4"), state.eligible_pools(anyone(), whole(2, "T4"))) == 1


def test_mig_slices_are_taken_and_given_back():
    layout = (MigSlice(profile="3g.40gb", start=0), MigSlice(profile="3g.40gb", start=4))
    state = state_of(Node(name="m", gpus=(Gpu(index=0, model="H100-80GB", mig=layout),)))
    option = Option("mig-3g.40gb", Kind.MIG, ("H100-80GB",), 1, "3g.40gb")
    pools = state.eligible_pools(anyone(), option)
    both = state.place(option, 2, 0, 0, pools)
    assert [p.mig_start for p in state.placement_of(both)] == [0, 4]
    assert state.place(option, 1, 0, 0, pools) is None
    state.release(both)
    assert state.capacity_bound(option, pools) == 2


def test_unhealthy_gpus_and_taints_and_selectors():
    sick = Node(
        name="s",
        gpus=(Gpu(index=0, model="H100-80GB", healthy=False), Gpu(index=1, model="H100-80GB")),
    )
    tainted = Node(
        name="t",
        taints=(Taint(key="dedicated", value="x"),),
        gpus=(Gpu(index=0, model="H100-80GB"),),
    )
    labelled = Node(name="l", labels={"zone": "a"}, gpus=(Gpu(index=0, model="H100-80GB"),))
    state = state_of(sick, tainted, labelled)
    plain = Workload(name="w", queue="q", demand=Demand(gpus=1))
    pools = state.eligible_pools(plain, whole(1))
    assert state.capacity_bound(whole(1), pools) == 2  # s/gpu1 and l; t is tainted
    tolerant = plain.model_copy(
        update={"tolerations": (Toleration(key="dedicated", operator="Exists"),)}
    )
    assert state.capacity_bound(whole(1), state.eligible_pools(tolerant, whole(1))) == 3
    picky = plain.model_copy(update={"node_selector": {"zone": "a"}})
    # A selector first seen after compilation: pools do not key on it, a node filter does.
    assert state.node_filter(plain) is None
    got = state.place(
        whole(1), 1, 0, 0, state.eligible_pools(picky, whole(1)), state.node_filter(picky)
    )
    assert state.placement_of(got)[0].node == "l"
    # Compiled with the workload in the snapshot, pools key on its label: exact counts.
    keyed = ClusterState(Snapshot(nodes=(sick, tainted, labelled), workloads=(picky,)), CATALOG)
    assert keyed.node_filter(picky) is None
    assert keyed.capacity_bound(whole(1), keyed.eligible_pools(picky, whole(1))) == 1


def test_cpu_and_memory_constrain_the_node_choice():
    small = Node(name="a", cpu_milli=1000, gpus=(Gpu(index=0, model="H100-80GB"),))
    big = Node(
        name="b", cpu_milli=64000, gpus=tuple(Gpu(index=i, model="H100-80GB") for i in range(2))
    )
    state = state_of(small, big)
    pools = state.eligible_pools(anyone(), whole(1))
    got = state.place(whole(1), 1, 8000, 0, pools)
    assert state.placement_of(got)[0].node == "b"


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 8), st.integers(0, 50)), max_size=40),
)
def test_whole_gpu_search_follows_the_rule_and_the_bucket_bits_stay_exact(
    sizes: list[int], steps: list[tuple[bool, int, int]]
) -> None:
    """The placement search visits only the buckets whose bits are set: after any sequence
    of places and releases, the bits are exactly the non-empty buckets, and each pod lands
    where the rule says (a used node before an entirely free one, then the smallest
    remainder, then the lowest node)."""
    state = state_of(*(node(f"n{i}", size) for i, size in enumerate(sizes)))
    held = []
    for is_place, k, pick in steps:
        if is_place or not held:
            per_node = [
                sum(state.gpu_free_milli[g] == 1000 for g in state.node_gpus[n].values())
                for n in range(len(sizes))
            ]
            fitting = [(f == sizes[n], f, n) for n, f in enumerate(per_node) if f >= k]
            got = state.place(whole(k), 1, 0, 0, state.eligible_pools(anyone(), whole(k)))
            if not fitting:
                assert got is None
                continue
            assert got is not None and got.pods[0].node == min(fitting)[2]
            held.append(got)
        else:
            state.release(held.pop(pick % len(held)))
        for pool in state.pools:
            bits = 0
            for (entirely_free, free), nodes in pool.buckets.items():
                if nodes:
                    bits |= 1 << (free + (pool.max_size + 1) * entirely_free)
            assert pool.occupied == bits


def test_a_gpu_held_outside_the_workloads_is_the_nodes_but_never_free() -> None:
    # A pod Apportion does not manage holds GPU 0 of a: a used node with 7 free, filled
    # before b is broken, and never on GPU 0; yet a's 8 still count for "can ever fit".
    held = Node(
        name="a", gpus=tuple(Gpu(index=i, model="H100-80GB", held=i == 0) for i in range(8))
    )
    state = state_of(held, node("b", 7))
    pools = state.eligible_pools(anyone(), whole(1))
    assert state.entirely_free_gpus() == 7  # b's; a is not entirely free
    first = state.place(whole(1), 1, 0, 0, pools)
    assert first is not None and state.placement_of(first)[0] == PodPlacement(node="a", gpus=(1,))
    assert state.place(whole(8), 1, 0, 0, state.eligible_pools(anyone(), whole(8))) is None
    assert not state.never_fits(whole(8), pools)


def test_a_mig_slice_held_outside_the_workloads_is_never_given() -> None:
    layout = (MigSlice(profile="3g.40gb", start=0, held=True), MigSlice(profile="3g.40gb", start=4))
    state = state_of(Node(name="m", gpus=(Gpu(index=0, model="H100-80GB", mig=layout),)))
    slice_of = Option("mig-3g.40gb", Kind.MIG, ("H100-80GB",), 1, profile="3g.40gb")
    pools = state.eligible_pools(anyone(), slice_of)
    taken = state.place(slice_of, 1, 0, 0, pools)
    assert taken is not None and state.placement_of(taken)[0].mig_start == 4
    assert state.place(slice_of, 1, 0, 0, pools) is None


# ------------------------------------------------------- boundaries (mutation audit)
def test_a_gang_that_places_some_pods_but_not_all_holds_nothing() -> None:
    """The fit count sees 2 free nodes for a 2-pod gang, but only one has the CPU: the
    first pod is placed, the second finds no spot, and the first is given back."""
    roomy = Node(name="a", cpu_milli=16000, gpus=(Gpu(index=0, model="H100-80GB"),))
    short = Node(name="b", cpu_milli=1000, gpus=(Gpu(index=0, model="H100-80GB"),))
    state = state_of(roomy, short)
    pools = state.eligible_pools(anyone(), whole(1))
    before = snapshot_free(state)
    assert state.place(whole(1), 2, 8000, 0, pools) is None
    assert snapshot_free(state) == before


def test_a_pod_asking_exactly_the_nodes_free_cpu_is_placed() -> None:
    """Free CPU equal to the request is enough, for a GPU share as for a MIG slice."""
    shared = Node(name="t", cpu_milli=4000, gpus=(Gpu(index=0, model="H100-80GB", shared=True),))
    share = Option("H100-80GB", Kind.FRACTION, ("H100-80GB",), 500)
    state = state_of(shared)
    got = state.place(share, 1, 4000, 0, state.eligible_pools(anyone(), share))
    assert got is not None and state.placement_of(got) == (
        PodPlacement(node="t", gpus=(0,), milli=500),
    )
    layout = (MigSlice(profile="3g.40gb", start=0), MigSlice(profile="3g.40gb", start=4))
    sliced = Node(name="m", cpu_milli=4000, gpus=(Gpu(index=0, model="H100-80GB", mig=layout),))
    slice_of = Option("mig-3g.40gb", Kind.MIG, ("H100-80GB",), 1, profile="3g.40gb")
    state = state_of(sliced)
    got = state.place(slice_of, 1, 4000, 0, state.eligible_pools(anyone(), slice_of))
    assert got is not None and state.placement_of(got) == (
        PodPlacement(node="m", gpus=(0,), mig_start=0),
    )


def test_a_mig_slice_is_searched_only_on_the_nodes_the_filter_allows() -> None:
    """A selector first seen after compilation filters nodes (``node_filter``): the slice
    goes to zone b's h1, though zone a's h0 comes first."""
    layout = (MigSlice(profile="3g.40gb", start=0), MigSlice(profile="3g.40gb", start=4))
    h0 = Node(name="h0", labels={"zone": "a"}, gpus=(Gpu(index=0, model="H100-80GB", mig=layout),))
    h1 = Node(name="h1", labels={"zone": "b"}, gpus=(Gpu(index=0, model="H100-80GB", mig=layout),))
    state = state_of(h0, h1)
    picky = anyone().model_copy(update={"node_selector": {"zone": "b"}})
    slice_of = Option("mig-3g.40gb", Kind.MIG, ("H100-80GB",), 1, profile="3g.40gb")
    nodes = state.node_filter(picky)
    assert nodes is not None
    got = state.place(slice_of, 1, 0, 0, state.eligible_pools(picky, slice_of), nodes)
    assert got is not None and state.placement_of(got) == (
        PodPlacement(node="h1", gpus=(0,), mig_start=0),
    )


def test_take_held_refuses_an_unhealthy_gpu_and_takes_nothing() -> None:
    """A pod outside the workloads cannot be said to hold a GPU out of service, whole or as
    a MIG slice: False, and nothing is taken."""
    layout = (MigSlice(profile="3g.40gb", start=0), MigSlice(profile="3g.40gb", start=4))
    sick = Node(
        name="s",
        gpus=(
            Gpu(index=0, model="H100-80GB", healthy=False),
            Gpu(index=1, model="H100-80GB", healthy=False, mig=layout),
            Gpu(index=2, model="H100-80GB"),
        ),
    )
    state = state_of(sick)
    before = snapshot_free(state)
    assert state.take_held(0, [0], []) is False
    assert state.take_held(0, [], [(1, 0)]) is False
    assert state.take_held(0, [2, 0], []) is False
    assert snapshot_free(state) == before
