"""MIG geometry: layout validation, packing, cheapest profile and the repartition planner.

The expectations come from the facts sheet (§1.2-1.4), not from the code under test: the
maximal combinations it lists, and an independent brute force over every placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.catalog import GpuModel, MigProfile, default_catalog
from scheduler.mig import (
    IdleGpu,
    MigDemand,
    cheapest_profile,
    free_placements,
    layout_problems,
    pack_profiles,
    plan_repartitions,
)
from scheduler.model import MigSlice

CATALOG = default_catalog()
MIG_MODELS = [m for m in CATALOG.models if m.mig_capable]
EIGHT_SLOT = [m for m in MIG_MODELS if m.mig_memory_slices == 8]
H100 = CATALOG["H100-80GB"]
A30 = CATALOG["A30"]
GIB = 1024


def s(profile: str, start: int) -> MigSlice:
    return MigSlice(profile=profile, start=start)


def role(model: GpuModel, name: str) -> MigProfile:
    """A profile by its role in facts §1.2 ("1g", "1g.2m", "1g+me", "2g", ...)."""
    shape = {
        "1g": (1, 1),
        "1g+me": (1, 1),
        "1g.2m": (1, 2),
        "2g": (2, 2),
        "3g": (3, 4),
        "4g": (4, 4),
        "7g": (7, 8),
    }[name]
    media = name.endswith("+me")
    for p in model.mig_profiles:
        if (p.compute_slices, p.memory_slices) == shape and ("+me" in p.name) == media:
            return p
    raise AssertionError(f"{model.name} has no {name}")


def expand(model: GpuModel, combo: str) -> list[MigProfile]:
    """'2g×2+1g' → [2g, 2g, 1g] as the model's profiles."""
    out: list[MigProfile] = []
    for part in combo.split("+"):
        name, _, count = part.partition("×")
        if name == "me":  # "1g+me" was split on '+'
            out[-1] = role(model, "1g+me")
            continue
        out.extend([role(model, name)] * int(count or 1))
    return out


# --- independent oracle -------------------------------------------------------------------


def rules_ok(model: GpuModel, slices: Sequence[MigSlice]) -> bool:
    """Facts §1.4 rules, written separately from scheduler.mig."""
    mask = 0
    compute = 0
    for mig in slices:
        profile = model.mig_profile(mig.profile)
        if profile is None:
            return False
        spots = [p for p in profile.placements if p.start == mig.start]
        if not spots or spots[0].mask & mask:
            return False
        mask |= spots[0].mask
        compute += profile.compute_slices
    counts = Counter(m.profile for m in slices)
    return (
        compute <= model.mig_compute_slices
        and sum(n for name, n in counts.items() if "+me" in name) <= 1
        and all(n <= (model.mig_profile(name) or _never()).max_count for name, n in counts.items())
    )


def _never() -> MigProfile:
    raise AssertionError("unreachable")


def brute_force(model: GpuModel, profiles: Sequence[MigProfile]) -> tuple[MigSlice, ...] | None:
    """Try every placement for every instance (pruning only on memory overlap)."""

    def search(i: int, mask: int, chosen: list[MigSlice]) -> tuple[MigSlice, ...] | None:
        if i == len(profiles):
            return tuple(chosen) if rules_ok(model, chosen) else None
        for placement in profiles[i].placements:
            if placement.mask & mask:
                continue
            found = search(
                i + 1, mask | placement.mask, [*chosen, s(profiles[i].name, placement.start)]
            )
            if found is not None:
                return found
        return None

    return search(0, 0, [])


# --- layout_problems ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "profile", "start"),
    [
        pytest.param(m, p, pl.start, id=f"{m.name}-{p.name}@{pl.start}")
        for m in MIG_MODELS
        for p in m.mig_profiles
        for pl in p.placements
    ],
)
def test_every_catalog_placement_is_valid_alone(
    model: GpuModel, profile: MigProfile, start: int
) -> None:
    assert layout_problems(model, [s(profile.name, start)]) == []
    assert start in free_placements(model, 0, 0, profile)


def test_placements_stay_inside_the_gpu() -> None:
    for m in MIG_MODELS:
        full = (1 << m.mig_memory_slices) - 1
        for p in m.mig_profiles:
            assert p.compute_slices <= m.mig_compute_slices
            for pl in p.placements:
                assert pl.size == p.memory_slices
                assert pl.mask & ~full == 0, (m.name, p.name, pl)


def test_empty_and_full_layouts_are_valid() -> None:
    assert layout_problems(H100, []) == []
    assert layout_problems(H100, [s("4g.40gb", 0), s("3g.40gb", 4)]) == []
    assert layout_problems(H100, [s("1g.10gb", i) for i in range(7)]) == []


def test_unknown_profile_is_named_with_the_known_ones() -> None:
    (problem,) = layout_problems(H100, [s("1g.5gb", 0)])
    assert problem.startswith("layout[0].profile: '1g.5gb' is not a MIG profile of H100-80GB")
    assert "1g.10gb" in problem


def test_invalid_start_lists_the_valid_starts() -> None:
    (problem,) = layout_problems(H100, [s("3g.40gb", 2)], "mig")
    assert problem == "mig[0].start: 2 is not a valid start for 3g.40gb on H100-80GB (valid: 0, 4)"
    (problem,) = layout_problems(H100, [s("1g.10gb", 7)])
    assert "(valid: 0, 1, 2, 3, 4, 5, 6)" in problem


def test_overlap_names_the_other_slice_and_the_memory_slices() -> None:
    (problem,) = layout_problems(H100, [s("4g.40gb", 0), s("2g.20gb", 2)])
    assert problem == "layout[1]: 2g.20gb@2 overlaps layout[0] (4g.40gb@0) in memory slices"


def test_compute_over_the_total_is_rejected() -> None:
    problems = layout_problems(H100, [s("7g.80gb", 0), s("1g.10gb", 0)])
    assert "layout: compute slices sum to 8, more than the 7 of H100-80GB" in problems
    problems = layout_problems(A30, [s("4g.24gb", 0), s("1g.6gb", 3)])
    assert "layout: compute slices sum to 5, more than the 4 of A30" in problems


def test_only_one_media_instance_per_gpu() -> None:
    problems = layout_problems(H100, [s("1g.10gb+me", 0), s("1g.10gb+me", 1)])
    assert (
        "layout[1].profile: '1g.10gb+me' is a second media-extension (+me) instance; "
        "a GPU has one (first: layout[0])" in problems
    )
    problems = layout_problems(A30, [s("1g.6gb+me", 0), s("2g.12gb+me", 2)])
    assert any("second media-extension" in p for p in problems)
    assert layout_problems(H100, [s("1g.10gb+me", 0), s("1g.10gb", 1)]) == []


def test_non_mig_model_is_rejected() -> None:
    (problem,) = layout_problems(CATALOG["T4"], [])
    assert problem.startswith("layout: T4 does not support MIG (MIG-capable: A30, ")


def test_every_problem_is_reported() -> None:
    problems = layout_problems(
        H100, [s("7g.80gb", 0), s("3g.40gb", 2), s("nope", 0), s("1g.10gb", 0)]
    )
    assert len(problems) == 4  # bad start, unknown, overlap, compute 8 > 7


# --- free_placements --------------------------------------------------------------------------


def test_free_placements_respects_memory_and_compute() -> None:
    three = role(H100, "3g")
    assert free_placements(H100, 0, 0, three) == [0, 4]
    assert free_placements(H100, 0b0000_0011, 2, three) == [4]
    assert free_placements(H100, 0b0000_0011, 5, three) == []  # 5 + 3 > 7
    assert free_placements(H100, 0, 0, role(H100, "1g")) == [0, 1, 2, 3, 4, 5, 6]
    assert free_placements(H100, 0b0111_1111, 0, role(H100, "1g.2m")) == []


# --- pack_profiles: facts sheet combinations --------------------------------------------------

MAXIMAL_8_SLOT = [
    "7g",
    "4g+3g",
    "4g+2g+1g",
    "4g+1g×3",
    "4g+1g.2m+1g×2",
    "4g+2g+1g.2m",
    "3g+2g×2",
    "3g+2g+1g×2",
    "3g+1g×4",
    "2g×3+1g",
    "2g×3+1g.2m",
    "2g×2+1g×3",
    "2g×2+1g.2m+1g×2",
    "2g+1g×5",
    "2g+1g.2m+1g×4",
    "1g×7",
    "1g.2m+1g×6",
]


@pytest.mark.parametrize("model", EIGHT_SLOT, ids=lambda m: m.name)
@pytest.mark.parametrize("combo", [*MAXIMAL_8_SLOT, "1g+me+1g×6", "3g×2", "1g.2m×4"])
def test_facts_combinations_pack(model: GpuModel, combo: str) -> None:
    profiles = expand(model, combo)
    layout = pack_profiles(model, profiles)
    assert layout is not None
    assert layout_problems(model, layout) == []
    assert Counter(m.profile for m in layout) == Counter(p.name for p in profiles)


@pytest.mark.parametrize("model", EIGHT_SLOT, ids=lambda m: m.name)
@pytest.mark.parametrize("combo", ["3g×2+1g", "4g×2", "7g+1g", "1g×8", "3g+1g.2m+1g×3"])
def test_impossible_combinations_do_not_pack(model: GpuModel, combo: str) -> None:
    assert pack_profiles(model, expand(model, combo)) is None


@pytest.mark.parametrize("model", EIGHT_SLOT, ids=lambda m: m.name)
def test_full_compute_multisets_are_exactly_the_facts_list(model: GpuModel) -> None:
    """Every multiset that uses all 7 compute slices and packs is on the sheet, and back."""
    plain = [p for p in model.mig_profiles if "+" not in p.name]
    found: set[tuple[str, ...]] = set()

    def grow(i: int, chosen: list[MigProfile], compute: int) -> None:
        if compute == model.mig_compute_slices:
            if pack_profiles(model, chosen) is not None:
                found.add(tuple(sorted(p.name for p in chosen)))
            return
        if i == len(plain):
            return
        for k in range(model.mig_compute_slices // plain[i].compute_slices + 1):
            if compute + k * plain[i].compute_slices <= model.mig_compute_slices:
                grow(i + 1, chosen + [plain[i]] * k, compute + k * plain[i].compute_slices)

    grow(0, [], 0)
    expected = {tuple(sorted(p.name for p in expand(model, c))) for c in MAXIMAL_8_SLOT}
    assert found == expected


@pytest.mark.parametrize("combo", ["4g", "2g×2", "2g+1g×2", "1g×4"])
def test_a30_maximal_sets_pack(combo: str) -> None:
    names = {"4g": "4g.24gb", "2g": "2g.12gb", "1g": "1g.6gb"}
    profiles = []
    for part in combo.split("+"):
        name, _, count = part.partition("×")
        profiles += [A30.mig_profile(names[name])] * int(count or 1)
    layout = pack_profiles(A30, [p for p in profiles if p is not None])
    assert layout is not None and layout_problems(A30, layout) == []


def test_pack_refuses_a_second_media_instance() -> None:
    me = role(H100, "1g+me")
    assert pack_profiles(H100, [me, me]) is None
    assert pack_profiles(H100, [me], base=[s(me.name, 0)]) is None


def test_pack_keeps_base_slices_and_adds_around_them() -> None:
    layout = pack_profiles(H100, [role(H100, "3g")], base=[s("4g.40gb", 0)])
    assert layout == (s("4g.40gb", 0), s("3g.40gb", 4))
    assert pack_profiles(H100, [], base=[s("3g.40gb", 4)]) == (s("3g.40gb", 4),)
    assert pack_profiles(H100, [role(H100, "4g")], base=[s("1g.10gb", 0)]) is None
    assert pack_profiles(H100, [], base=[s("3g.40gb", 2)]) is None  # invalid base


def test_pack_leaves_the_most_useful_free_space() -> None:
    # A lone 1g goes to the end, leaving room for 4g@0 + 2g@4.
    assert pack_profiles(H100, [role(H100, "1g")]) == (s("1g.10gb", 6),)
    # The double-memory 1g takes slots 6-7, which no other 1g can use.
    assert pack_profiles(H100, [role(H100, "1g.2m")]) == (s("1g.20gb", 6),)
    # 3g+2g+1g: 3g@0/2g@4/1g@6 would strand slot 7 and a compute slice; this leaves 1g@3.
    layout = pack_profiles(H100, [role(H100, "3g"), role(H100, "2g"), role(H100, "1g")])
    assert layout == (s("2g.20gb", 0), s("1g.10gb", 2), s("3g.40gb", 4))


def test_pack_uses_the_models_own_profile_by_name() -> None:
    assert pack_profiles(A30, [role(H100, "1g")]) is None  # no 1g.10gb on an A30
    assert pack_profiles(CATALOG["T4"], []) is None


# --- pack_profiles: property against brute force ---------------------------------------------


@st.composite
def model_and_profiles(draw: st.DrawFn) -> tuple[GpuModel, list[MigProfile]]:
    model = draw(st.sampled_from(MIG_MODELS))
    small = [p for p in model.mig_profiles if p.compute_slices <= 2]
    pool = st.one_of(st.sampled_from(small), st.sampled_from(model.mig_profiles))
    return model, draw(st.lists(pool, max_size=7))


@settings(max_examples=300, deadline=None)
@given(model_and_profiles())
def test_pack_is_valid_exact_or_provably_impossible(
    case: tuple[GpuModel, list[MigProfile]],
) -> None:
    model, profiles = case
    layout = pack_profiles(model, profiles)
    if layout is None:
        assert brute_force(model, profiles) is None
    else:
        assert layout_problems(model, layout) == []
        assert rules_ok(model, layout)
        assert brute_force(model, profiles) is not None
        assert Counter(m.profile for m in layout) == Counter(p.name for p in profiles)
        assert pack_profiles(model, profiles) == layout  # deterministic
        assert pack_profiles(model, list(reversed(profiles))) == layout  # order-free


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(MIG_MODELS).flatmap(
        lambda m: st.tuples(
            st.just(m),
            st.lists(
                st.builds(
                    s,
                    st.sampled_from([p.name for p in m.mig_profiles]),
                    st.integers(0, m.mig_memory_slices),
                ),
                max_size=5,
            ),
        )
    )
)
def test_layout_problems_agrees_with_the_rules(case: tuple[GpuModel, list[MigSlice]]) -> None:
    model, slices = case
    assert (layout_problems(model, slices) == []) == rules_ok(model, slices)


# --- cheapest_profile ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gib", "expected"),
    [(9, "1g.10gb"), (12, "1g.20gb"), (30, "3g.40gb"), (90, None), (0, "1g.10gb")],
)
def test_cheapest_profile_h100(gib: int, expected: str | None) -> None:
    found = cheapest_profile(H100, gib * GIB)
    assert (found.name if found else None) == expected


def test_cheapest_profile_uses_usable_not_nominal_memory() -> None:
    # 1g.10gb reports 9.75 GiB: a request for the full 10 GiB needs the double-memory 1g.
    found = cheapest_profile(H100, 10 * GIB)
    assert found is not None and found.name == "1g.20gb"


def test_cheapest_profile_never_picks_media_variants() -> None:
    for model in MIG_MODELS:
        for p in model.mig_profiles:
            found = cheapest_profile(model, p.usable_memory_mib)
            assert found is not None and "+me" not in found.name
            assert found.usable_memory_mib >= p.usable_memory_mib
            if "+me" in p.name:
                # Not comparable: A100-40GB's 1g.5gb+me has no capture, so its inferred
                # usable memory (97.5% of 5 GiB) is above the captured 1g.5gb's 4.75 GiB.
                continue
            assert (found.compute_slices, found.memory_slices) <= (
                p.compute_slices,
                p.memory_slices,
            )


# --- plan_repartitions ----------------------------------------------------------------------


def idle(
    node: str,
    index: int,
    model: GpuModel = H100,
    current: tuple[MigSlice, ...] | None = (s("7g.80gb", 0),),
) -> IdleGpu:
    return IdleGpu(node, index, model, current)


def test_plan_message_and_benefit() -> None:
    demands = [
        MigDemand("nb-1", "3g.40gb", 1),
        MigDemand("nb-2", "2g.20gb", 1),
        MigDemand("nb-3", "1g.10gb", 1),
    ]
    (plan,) = plan_repartitions([idle("h100-07", 3)], demands, CATALOG)
    assert plan.node == "h100-07" and plan.gpu == 3
    assert plan.current == (s("7g.80gb", 0),)
    assert plan.proposed == (s("2g.20gb", 0), s("1g.10gb", 2), s("3g.40gb", 4))
    assert plan.admits == ("nb-1", "nb-2", "nb-3")
    assert plan.benefit_gpus == pytest.approx(6 / 7)
    assert plan.message == (
        "node h100-07 GPU 3 is idle; repartition 1×7g.80gb → "
        "2g.20gb@0 + 1g.10gb@2 + 3g.40gb@4 admits nb-1, nb-2, nb-3 (3 pods, 6/7 of a GPU)"
    )


def test_plan_fills_one_gpu_before_opening_the_next() -> None:
    gpus = [idle("n", i) for i in range(3)]
    demands = [MigDemand(f"w{i}", "1g.10gb", 1) for i in range(4)]
    (plan,) = plan_repartitions(gpus, demands, CATALOG)
    assert plan.gpu == 0
    assert plan.admits == ("w0", "w1", "w2", "w3")
    assert plan.benefit_gpus == pytest.approx(4 / 7)
    assert "(4 pods, 4/7 of a GPU)" in plan.message


def test_plan_admits_gangs_whole_or_not_at_all() -> None:
    demands = [MigDemand("big", "3g.40gb", 3), MigDemand("small", "1g.10gb", 1)]
    (plan,) = plan_repartitions([idle("n", 0)], demands, CATALOG)
    assert plan.admits == ("small",)
    assert plan.proposed == (s("1g.10gb", 6),)


def test_plan_spreads_a_gang_over_gpus() -> None:
    plans = plan_repartitions(
        [idle("a", 0), idle("b", 1)], [MigDemand("big", "3g.40gb", 3)], CATALOG
    )
    assert [(p.node, p.admits) for p in plans] == [("a", ("big",)), ("b", ("big",))]
    assert [p.benefit_gpus for p in plans] == pytest.approx([6 / 7, 3 / 7])
    assert "apply together with node b GPU 1" in plans[0].message


def test_plan_only_uses_gpus_whose_model_has_the_profile() -> None:
    gpus = [idle("h", 0), IdleGpu("a30", 1, A30, None)]
    (plan,) = plan_repartitions(gpus, [MigDemand("w", "2g.12gb", 2)], CATALOG)
    assert plan.node == "a30"
    assert plan.proposed == (s("2g.12gb", 0), s("2g.12gb", 2))
    assert plan.benefit_gpus == 1.0
    assert "whole GPU (MIG off)" in plan.message and "4/4 of a GPU" in plan.message


def test_no_plan_when_nothing_fits() -> None:
    assert plan_repartitions([idle("n", 0)], [MigDemand("w", "7g.80gb", 2)], CATALOG) == []
    assert plan_repartitions([idle("n", 0)], [MigDemand("w", "no.such", 1)], CATALOG) == []
    assert plan_repartitions([idle("n", 0)], [MigDemand("w", "1g.6gb", 1)], CATALOG) == []
    assert plan_repartitions([], [MigDemand("w", "1g.10gb", 1)], CATALOG) == []
    assert plan_repartitions([idle("n", 0)], [], CATALOG) == []


def test_no_plan_when_the_layout_would_not_change() -> None:
    current = (s("3g.40gb", 0), s("3g.40gb", 4))
    plans = plan_repartitions(
        [idle("n", 0, current=current)], [MigDemand("w", "3g.40gb", 2)], CATALOG
    )
    assert plans == []


def test_a_gpu_already_drafted_takes_a_pod_only_where_its_workload_may_run() -> None:
    """x (anywhere) opens a draft on h0; y may run only on h1: it does not join h0's draft
    but opens h1's."""
    demands = [
        MigDemand("x", "1g.10gb", 1),
        MigDemand("y", "1g.10gb", 1, hosts=frozenset({("h1", H100.name)})),
    ]
    plans = plan_repartitions([idle("h0", 0), idle("h1", 0)], demands, CATALOG)
    assert [(p.node, p.admits) for p in plans] == [("h0", ("x",)), ("h1", ("y",))]


def test_demand_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="count must be at least 1"):
        MigDemand("w", "1g.10gb", 0)


PROFILE_NAMES = sorted(CATALOG.mig_profile_names())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(MIG_MODELS), max_size=4),
    st.lists(st.tuples(st.sampled_from(PROFILE_NAMES), st.integers(1, 4)), max_size=6),
)
def test_plans_are_valid_whole_and_deterministic(
    models: list[GpuModel], raw: list[tuple[str, int]]
) -> None:
    gpus = [IdleGpu(f"node-{i}", i, m, None) for i, m in enumerate(models)]
    demands = [MigDemand(f"w{i}", profile, n) for i, (profile, n) in enumerate(raw)]
    plans = plan_repartitions(gpus, demands, CATALOG)
    assert plans == plan_repartitions(gpus, demands, CATALOG)

    by_gpu = {(g.node, g.index): g for g in gpus}
    assert len(by_gpu) == len(gpus)
    assert len({(p.node, p.gpu) for p in plans}) == len(plans)
    admitted = {w for p in plans for w in p.admits}
    placed: Counter[str] = Counter()
    for plan in plans:
        model = by_gpu[(plan.node, plan.gpu)].model
        assert layout_problems(model, plan.proposed) == []
        compute = 0
        for mig in plan.proposed:
            profile = model.mig_profile(mig.profile)
            assert profile is not None
            compute += profile.compute_slices
        assert plan.benefit_gpus == pytest.approx(compute / model.mig_compute_slices)
        assert f"{compute}/{model.mig_compute_slices} of a GPU" in plan.message
        placed.update(m.profile for m in plan.proposed)
    wanted: Counter[str] = Counter()
    for d in demands:
        if d.workload in admitted:
            wanted[d.profile] += d.count  # the whole gang, never part of it
    assert placed == wanted
