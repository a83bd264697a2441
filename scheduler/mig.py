"""MIG geometry: validate layouts, find free slots, pack instances, plan repartitions.

MIG instances are not interchangeable counts: each sits at an explicit ``{start}:size`` slot
in memory-slice units, and where the early ones sit decides what still fits (mig-parted
retries every creation order for this reason). So everything here works on explicit
placements taken from the catalog, never on "7 slices minus what is used".

The rules (facts sheet §1.4): placements must be ones the catalog lists, memory slices must
not overlap, compute slices must not exceed the model's total, at most one ``+me`` instance
per GPU, and no profile beyond its ``max_count``.

Everything is pure and deterministic: the same input always yields the same layout, so a
plan can be diffed, tested and explained.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from scheduler.catalog import Catalog, GpuModel, MigProfile, default_catalog
from scheduler.model import MigSlice, RepartitionPlan

__all__ = [
    "IdleGpu",
    "MigDemand",
    "cheapest_profile",
    "fitting_profiles",
    "free_placements",
    "layout_problems",
    "pack_profiles",
    "plan_repartitions",
]


def _has_media(profile_name: str) -> bool:
    """``+me`` and ``+me.all`` take the GPU's single set of media engines (one per GPU)."""
    return "+me" in profile_name


def _attribute_variant(profile_name: str) -> bool:
    """Profiles with a ``+`` attribute (``+me``, ``+me.all``, ``+gfx``) carry extra engines.

    They are for media or graphics work; picking one for a plain memory request would burn
    the GPU's only media slot, so automatic choices skip them.
    """
    return "+" in profile_name


def _label(profile: str, start: int) -> str:
    return f"{profile}@{start}"


def layout_problems(model: GpuModel, slices: Sequence[MigSlice], path: str = "layout") -> list[str]:
    """Why a MIG layout is impossible on ``model``; empty when it is valid.

    Every rule is checked and reported, not just the first, each message prefixed with the
    slice's path (``nodes[3].gpus[1].mig[2].start: …``) so a file's author finds the line.
    """
    if not model.mig_capable:
        capable = ", ".join(m.name for m in default_catalog().models if m.mig_capable)
        return [f"{path}: {model.name} does not support MIG (MIG-capable: {capable})"]
    problems = []
    taken: list[tuple[int, int, str]] = []
    counts: dict[str, int] = {}
    compute = 0
    media: int | None = None
    for k, piece in enumerate(slices):
        where = f"{path}[{k}]"
        profile = model.mig_profile(piece.profile)
        if profile is None:
            names = ", ".join(p.name for p in model.mig_profiles)
            problems.append(
                f"{where}.profile: {piece.profile!r} is not a MIG profile of "
                f"{model.name} (profiles: {names})"
            )
            continue
        placement = next((p for p in profile.placements if p.start == piece.start), None)
        if placement is None:
            starts = ", ".join(str(p.start) for p in profile.placements)
            problems.append(
                f"{where}.start: {piece.start} is not a valid start for "
                f"{profile.name} on {model.name} (valid: {starts})"
            )
            continue
        label = f"{profile.name}@{piece.start}"
        compute += profile.compute_slices
        counts[profile.name] = counts.get(profile.name, 0) + 1
        if _has_media(profile.name):
            if media is not None:
                problems.append(
                    f"{where}.profile: {profile.name!r} is a second media-extension "
                    f"(+me) instance; a GPU has one (first: {path}[{media}])"
                )
            media = k if media is None else media
        elif counts[profile.name] == profile.max_count + 1:
            problems.append(
                f"{where}.profile: {profile.name!r} appears more than "
                f"{profile.max_count} times, its maximum on {model.name}"
            )
        for other, mask, other_label in taken:
            if mask & placement.mask:
                problems.append(
                    f"{where}: {label} overlaps {path}[{other}] ({other_label}) in memory slices"
                )
        taken.append((k, placement.mask, label))
    if compute > model.mig_compute_slices:
        problems.append(
            f"{path}: compute slices sum to {compute}, more than the "
            f"{model.mig_compute_slices} of {model.name}"
        )
    return problems


def free_placements(
    model: GpuModel, used_mask: int, used_compute: int, profile: MigProfile
) -> list[int]:
    """Valid starts for one more ``profile`` instance beside the slices in ``used_mask``.

    Only geometry and the compute budget are checked; the ``+me`` and ``max_count`` limits
    depend on which profiles are already placed, which a mask cannot tell, so callers that
    add media profiles check those with :func:`layout_problems` (as :func:`pack_profiles`
    does). The profile is looked up on ``model`` by name, so a same-named profile from
    another model uses this model's placements.
    """
    own = model.mig_profile(profile.name)
    if own is None or used_compute + own.compute_slices > model.mig_compute_slices:
        return []
    return [p.start for p in own.placements if not p.mask & used_mask]


def fitting_profiles(model: GpuModel, memory_mib: int) -> list[MigProfile]:
    """The profiles whose usable memory holds ``memory_mib``, smallest first.

    Smallest means fewest compute slices, then fewest memory slices: compute is the scarce
    part (7 per GPU against 8 memory slices), so a 1g with double memory beats a 2g.
    Usable memory is what ``nvidia-smi`` reports (a few percent under the name's GB), so a
    9.9 GiB request does not land on a 1g.10gb that only holds 9.75. Attribute variants
    (``+me``) are never picked automatically.
    """
    fitting = [
        p
        for p in model.mig_profiles
        if not _attribute_variant(p.name) and p.usable_memory_mib >= memory_mib
    ]
    return sorted(
        fitting, key=lambda p: (p.compute_slices, p.memory_slices, p.usable_memory_mib, p.name)
    )


def cheapest_profile(model: GpuModel, memory_mib: int) -> MigProfile | None:
    """The smallest profile that holds ``memory_mib`` (``fitting_profiles``), or None."""
    fitting = fitting_profiles(model, memory_mib)
    return fitting[0] if fitting else None


# --- packing ---------------------------------------------------------------------------

_Geometry = tuple[int, int, tuple[tuple[int, int, tuple[int, ...]], ...]]
"""(memory slices, compute slices, ((compute, memory, placement masks) per plain profile))."""


def _geometry(model: GpuModel) -> _Geometry:
    """The hashable shape of a model, so free-space scores can be cached across calls."""
    return (
        model.mig_memory_slices,
        model.mig_compute_slices,
        tuple(
            (p.compute_slices, p.memory_slices, tuple(pl.mask for pl in p.placements))
            for p in model.mig_profiles
            if not _attribute_variant(p.name)
        ),
    )


@cache
def _free_score(geometry: _Geometry, used_mask: int, spare_compute: int) -> tuple[int, ...]:
    """How useful the space left by a layout is; larger is better.

    In order: compute slices more instances could still use (a 1g in memory slot 7 is
    worthless), the largest profile that still fits, then the longest run of free memory
    slices, so leftovers stay in one piece.
    """
    memory_slices, _, profiles = geometry
    largest = (0, 0)
    for compute, memory, masks in profiles:
        if compute <= spare_compute and any(not m & used_mask for m in masks):
            largest = max(largest, (compute, memory))
    run = longest = 0
    for bit in range(memory_slices):
        run = 0 if used_mask >> bit & 1 else run + 1
        longest = max(longest, run)
    return (_max_fill(geometry, used_mask, spare_compute), *largest, longest)


@cache
def _max_fill(geometry: _Geometry, used_mask: int, spare_compute: int) -> int:
    """Most compute slices more plain instances could still use in the free space (exact)."""
    best = 0
    for compute, _memory, masks in geometry[2]:
        if compute > spare_compute:
            continue
        for mask in masks:
            if not mask & used_mask:
                best = max(
                    best, compute + _max_fill(geometry, used_mask | mask, spare_compute - compute)
                )
    return best


def _layouts(
    groups: Sequence[tuple[MigProfile, int]], used_mask: int
) -> Iterator[tuple[tuple[MigProfile, tuple[int, ...]], ...]]:
    """Every way to place the groups in the free space, larger profiles first, low starts first.

    Instances of one profile are interchangeable, so each group takes a *set* of starts
    (combinations, not permutations): that keeps the search exact yet tiny.
    """
    if not groups:
        yield ()
        return
    (profile, count), rest = groups[0], groups[1:]
    free = [p for p in profile.placements if not p.mask & used_mask]
    for combo in itertools.combinations(free, count):
        mask = 0
        for placement in combo:
            if mask & placement.mask:
                break
            mask |= placement.mask
        else:
            starts = tuple(p.start for p in combo)
            for tail in _layouts(rest, used_mask | mask):
                yield ((profile, starts), *tail)


def pack_profiles(
    model: GpuModel, profiles: Sequence[MigProfile], base: Sequence[MigSlice] = ()
) -> tuple[MigSlice, ...] | None:
    """A valid layout holding ``base`` plus one instance per entry of ``profiles``, or None.

    The search is exact (at most 7 instances, a handful of slots each), so None means no
    placement exists, not that a heuristic gave up. Among the layouts that work it keeps
    the one whose free space is most useful (see ``_free_score``); ties go to the first
    found with larger profiles placed first at their lowest starts, so the answer is
    deterministic. Profiles are looked up on ``model`` by name. The result is sorted by
    start; base slices keep their positions.
    """
    if not model.mig_capable or layout_problems(model, base):
        return None
    wanted: dict[str, tuple[MigProfile, int]] = {}
    for requested in profiles:
        profile = model.mig_profile(requested.name)
        if profile is None:
            return None
        wanted[profile.name] = (profile, wanted.get(profile.name, (profile, 0))[1] + 1)
    groups = sorted(
        wanted.values(), key=lambda g: (-g[0].memory_slices, -g[0].compute_slices, g[0].name)
    )

    base_mask = 0
    base_compute = 0
    counts: dict[str, int] = {}
    for mig in base:
        known = model.mig_profile(mig.profile)
        assert known is not None  # layout_problems checked it
        profile = known
        base_mask |= next(p.mask for p in profile.placements if p.start == mig.start)
        base_compute += profile.compute_slices
        counts[profile.name] = counts.get(profile.name, 0) + 1
    compute = base_compute + sum(p.compute_slices * n for p, n in groups)
    memory = base_mask.bit_count() + sum(p.memory_slices * n for p, n in groups)
    media = sum(n for name, n in counts.items() if _has_media(name)) + sum(
        n for p, n in groups if _has_media(p.name)
    )
    if (
        compute > model.mig_compute_slices
        or memory > model.mig_memory_slices
        or media > 1
        or any(counts.get(p.name, 0) + n > p.max_count for p, n in groups)
    ):
        return None

    geometry = _geometry(model)
    spare = model.mig_compute_slices - compute
    best: tuple[tuple[int, ...], tuple[tuple[MigProfile, tuple[int, ...]], ...]] | None = None
    for layout in _layouts(groups, base_mask):
        mask = base_mask
        for profile, starts in layout:
            for start in starts:
                mask |= next(p.mask for p in profile.placements if p.start == start)
        score = _free_score(geometry, mask, spare)
        if best is None or score > best[0]:
            best = (score, layout)
    if best is None:
        return None
    placed = [*base] + [
        MigSlice(profile=profile.name, start=start)
        for profile, starts in best[1]
        for start in starts
    ]
    return tuple(sorted(placed, key=lambda s: (s.start, s.profile)))


# --- repartition planning -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdleGpu:
    """A MIG-capable GPU with nothing running on it, so its layout may be replaced freely."""

    node: str
    index: int
    model: GpuModel
    current: tuple[MigSlice, ...] | None
    """The configured layout; None when MIG is off (the whole GPU is one device)."""


@dataclass(frozen=True, slots=True)
class MigDemand:
    """A pending workload that asked for ``count`` instances of one MIG profile (a gang)."""

    workload: str
    profile: str
    count: int
    hosts: frozenset[tuple[str, str]] | None = None
    """(node, GPU model) pairs the workload may land on — its node selector, affinity,
    tolerations, acceptable models, and CPU and memory left for a pod; None: any."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"{self.workload}: count must be at least 1, got {self.count}")


@dataclass(slots=True)
class _Draft:
    """A GPU being filled: the instances it will hold and who they are for."""

    gpu: IdleGpu
    profiles: list[MigProfile]
    layout: tuple[MigSlice, ...]
    pods: dict[str, int]
    """Pods per workload, in admission order."""
    compute: dict[str, int]
    """Compute slices per workload."""

    def copy(self) -> _Draft:
        return _Draft(
            self.gpu, list(self.profiles), self.layout, dict(self.pods), dict(self.compute)
        )


def _describe_current(current: tuple[MigSlice, ...] | None) -> str:
    if current is None:
        return "whole GPU (MIG off)"
    if not current:
        return "empty MIG layout"
    counts: dict[str, int] = {}
    for mig in sorted(current, key=lambda s: (s.start, s.profile)):
        counts[mig.profile] = counts.get(mig.profile, 0) + 1
    return " + ".join(f"{n}×{name}" for name, n in counts.items())


def _same_layout(a: tuple[MigSlice, ...] | None, b: tuple[MigSlice, ...]) -> bool:
    return a is not None and sorted((s.start, s.profile) for s in a) == sorted(
        (s.start, s.profile) for s in b
    )


def plan_repartitions(
    gpus: Sequence[IdleGpu], demands: Sequence[MigDemand], catalog: Catalog
) -> list[RepartitionPlan]:
    """Propose new MIG layouts for idle GPUs that would admit pending MIG demands.

    Demands are taken greedily in the given order (the caller's priority / fair-share
    order), each gang whole or not at all: a gang that does not fit entirely is skipped
    and the GPUs it would have used stay available to the demands after it. Each pod goes
    to the first GPU already being filled that can still take it (repacked from scratch,
    so earlier choices do not fragment it), otherwise to the next idle GPU in the given
    order whose model has the profile: few GPUs are disturbed, and the caller chooses which
    ones first by ordering ``gpus``. One plan per GPU whose layout would change, in the
    order the GPUs were opened. Plans are proposals; nothing here applies them.
    """
    known = catalog.mig_profile_names()
    drafts: list[_Draft] = []
    opened: set[tuple[str, int]] = set()
    memo: dict[tuple[int, tuple[str, ...]], tuple[MigSlice, ...] | None] = {}

    def pack(model: GpuModel, profiles: list[MigProfile]) -> tuple[MigSlice, ...] | None:
        key = (id(model), tuple(sorted(p.name for p in profiles)))
        if key not in memo:
            memo[key] = pack_profiles(model, profiles)
        return memo[key]

    def place_pod(
        trial: list[_Draft],
        trial_opened: set[tuple[str, int]],
        refused: set[int],
        demand: MigDemand,
    ) -> tuple[_Draft, MigProfile] | None:
        """Put one pod on the first draft that takes it, else open the next idle GPU."""
        name, hosts = demand.profile, demand.hosts
        for number, draft in enumerate(trial):
            if number in refused:
                continue
            if hosts is not None and (draft.gpu.node, draft.gpu.model.name) not in hosts:
                continue
            profile = draft.gpu.model.mig_profile(name)
            layout = None if profile is None else pack(draft.gpu.model, [*draft.profiles, profile])
            if profile is None or layout is None:
                refused.add(number)  # a draft only fills up: it will refuse this profile again
                continue
            draft.profiles.append(profile)
            draft.layout = layout
            return draft, profile
        for gpu in gpus:
            profile = gpu.model.mig_profile(name)
            if (gpu.node, gpu.index) in trial_opened or profile is None:
                continue
            if hosts is not None and (gpu.node, gpu.model.name) not in hosts:
                continue
            layout = pack(gpu.model, [profile])
            if layout is None:
                continue
            trial.append(_Draft(gpu, [profile], layout, {}, {}))
            trial_opened.add((gpu.node, gpu.index))
            return trial[-1], profile
        return None

    for demand in demands:
        if demand.profile not in known:
            continue
        trial = [d.copy() for d in drafts]
        trial_opened = set(opened)
        refused: set[int] = set()
        for _ in range(demand.count):
            found = place_pod(trial, trial_opened, refused, demand)
            if found is None:
                break  # no partial gangs: drop the trial, keep the drafts as they were
            draft, profile = found
            draft.pods[demand.workload] = draft.pods.get(demand.workload, 0) + 1
            draft.compute[demand.workload] = (
                draft.compute.get(demand.workload, 0) + profile.compute_slices
            )
        else:
            drafts, opened = trial, trial_opened

    plans: list[RepartitionPlan] = []
    for draft in drafts:
        gpu = draft.gpu
        if _same_layout(gpu.current, draft.layout) or layout_problems(gpu.model, draft.layout):
            continue
        pods = sum(draft.pods.values())
        slices = sum(draft.compute.values())
        total = gpu.model.mig_compute_slices
        admits = tuple(draft.pods)
        proposed = " + ".join(_label(s.profile, s.start) for s in draft.layout)
        message = (
            f"node {gpu.node} GPU {gpu.index} is idle; repartition "
            f"{_describe_current(gpu.current)} → {proposed} admits {', '.join(admits)} "
            f"({pods} pod{'' if pods == 1 else 's'}, {slices}/{total} of a GPU)"
        )
        others = [
            f"node {o.gpu.node} GPU {o.gpu.index}"
            for o in drafts
            if o is not draft and any(w in o.pods for w in admits)
        ]
        if others:
            message += f"; apply together with {', '.join(others)} (gang spans GPUs)"
        plans.append(
            RepartitionPlan(
                node=gpu.node,
                gpu=gpu.index,
                current=gpu.current,
                proposed=draft.layout,
                admits=admits,
                benefit_gpus=slices / total,
                message=message,
            )
        )
    return plans
