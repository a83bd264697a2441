"""Device rows joined to the snapshot: which GPU (and MIG slice) and which workload.

A row names its GPU by node label + index; when the node label is not a snapshot node (an
exporter that reports its pod name as ``Hostname``), the physical UUID finds it through the
UUIDs learned from rows that did join (the caller keeps them between refreshes). A MIG row
adds its profile; its placement start is known when the GPU has one slice of that profile,
or from the workload that holds it. The GPU-instance ID is not a placement (facts §1.1),
so it is never used as one.

Workloads are found by the pod labels (the kubelet's pod-resources view of who holds the
device, which the snapshot's placement indices need not match): the caller's pod → workload
map, else a workload named like the pod in its namespace. Rows without pod labels fall back
to the snapshot's placement when one workload holds the device: on a live cluster, whose
indices only count a node's GPUs, only when it holds the whole node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.model import Gpu, Snapshot, Workload
from scheduler.telemetry.samples import DeviceSample

__all__ = ["Joined", "JoinedRow", "join_samples"]


@dataclass(frozen=True, slots=True)
class JoinedRow:
    sample: DeviceSample
    node: str
    gpu: int
    mig_start: int | None
    """Placement start of the MIG slice, when it could be told; None for whole GPUs."""
    workload: str | None
    """The workload holding the device, or None (free, or not attributable)."""


@dataclass(slots=True)
class Joined:
    rows: list[JoinedRow] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Rows that name no snapshot GPU (ignored), or a MIG profile the GPU's layout lacks
    (joined to the GPU without a slice: its XIDs count, its pod labels name its workload)."""
    unmatched_pods: list[str] = field(default_factory=list)
    """Rows whose pod labels name no workload: joined to the GPU, not to a workload."""
    uuids: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Physical GPU UUID → (node, index), learned from rows joined by node and index."""


_Holder = tuple[Workload, int | None]
"""A running workload on a GPU, with its MIG start (None: whole or a share)."""


def _holders(snapshot: Snapshot) -> dict[tuple[str, int], list[_Holder]]:
    """(node, GPU index) → running workloads on it."""
    held: dict[tuple[str, int], list[_Holder]] = {}
    for w in snapshot.workloads:
        for pod in w.placement or ():
            for g in pod.gpus:
                held.setdefault((pod.node, g), []).append((w, pod.mig_start))
    return held


def _held_whole(snapshot: Snapshot, held: Mapping[tuple[str, int], list[_Holder]]) -> set[str]:
    """Nodes one running workload holds whole: each GPU its own, none in MIG slices, none
    held by anything else. Any of their devices is that workload's, whichever the kubelet
    gave it."""
    whole = set()
    for node in snapshot.nodes:
        holders = [held.get((node.name, g.index), []) for g in node.gpus]
        names = {w.name for on_gpu in holders for w, _ in on_gpu}
        if len(names) == 1 and all(len(h) == 1 and h[0][1] is None for h in holders):
            whole.add(node.name)
    return whole


def _by_kind_and_rank(
    snapshot: Snapshot, samples: list[DeviceSample]
) -> dict[tuple[str, int], int]:
    """(node, NVML index) → the snapshot's index, where a node's indices only count its GPUs
    and DCGM's kinds disagree with the snapshot's at some index: the k-th whole GPU DCGM
    reports on such a node is the node's k-th whole GPU, the k-th MIG GPU (one with MIG
    instance rows) its k-th MIG GPU. By index alone, a node whose NVML GPU 0 is in MIG and
    whose snapshot numbers its whole GPUs first had each kind's XIDs charged to the other
    kind. Where the kinds agree, the index is kept (absent from the map)."""
    mig: dict[tuple[str, int], bool] = {}
    for sample in samples:
        where = (sample.key.node, sample.key.gpu)
        mig[where] = mig.get(where, False) or sample.key.is_mig
    reported: dict[str, list[tuple[int, bool]]] = {}
    for (name, index), in_mig in sorted(mig.items()):
        reported.setdefault(name, []).append((index, in_mig))
    ranked: dict[tuple[str, int], int] = {}
    for node in snapshot.nodes:
        seen = reported.get(node.name, [])
        kinds = {g.index: g.mig is not None for g in node.gpus}
        if all(kinds.get(index) == in_mig for index, in_mig in seen):
            continue
        for kind in (False, True):
            own = sorted(index for index, in_mig in kinds.items() if in_mig == kind)
            theirs = [index for index, in_mig in seen if in_mig == kind]
            for nvml, index in zip(theirs, own, strict=False):
                ranked[(node.name, nvml)] = index
    return ranked


def join_samples(
    snapshot: Snapshot,
    samples: Iterable[DeviceSample],
    known_uuids: Mapping[str, tuple[str, int]] | None = None,
    pod_owner: Mapping[tuple[str, str], str] | None = None,
    indices_name_devices: bool = True,
) -> Joined:
    """Place every sample row on a snapshot GPU and, when it can, on a workload.

    ``pod_owner`` maps (namespace, pod) → workload name (gang pods usually carry their own
    names); ``known_uuids`` carries UUIDs learned in earlier refreshes. Unless
    ``indices_name_devices`` (``TelemetrySettings``), a row's GPU is found by its kind and
    rank on its node (``_by_kind_and_rank``), and a row without pod labels is a workload's
    only where it holds its node whole: its placement's indices are not the devices the
    kubelet gave it."""
    gpus: dict[tuple[str, int], Gpu] = {
        (n.name, g.index): g for n in snapshot.nodes for g in n.gpus
    }
    workloads = {(w.namespace, w.name): w for w in snapshot.workloads if w.running}
    by_name = {w.name: w for w in snapshot.workloads}
    held = _holders(snapshot)
    held_whole = None if indices_name_devices else _held_whole(snapshot, held)
    ranked = None
    if not indices_name_devices:
        samples = list(samples)
        ranked = _by_kind_and_rank(snapshot, samples)
    owners = pod_owner or {}
    joined = Joined(uuids=dict(known_uuids or {}))
    for sample in samples:
        key = sample.key
        where = (key.node, key.gpu if ranked is None else ranked.get((key.node, key.gpu), key.gpu))
        gpu = gpus.get(where)
        if gpu is not None and key.uuid:
            joined.uuids[key.uuid] = where
        elif gpu is None and key.uuid in joined.uuids:
            where = joined.uuids[key.uuid]
            gpu = gpus.get(where)
        if gpu is None:
            joined.unknown.append(f"{key.describe()}: no such GPU in the snapshot")
            continue
        starts: tuple[int, ...] = ()
        if key.is_mig:
            starts = tuple(s.start for s in gpu.mig or () if s.profile == key.gi_profile)
            if not starts:
                # Still its GPU's row: an XID is the whole GPU's, and its pod labels still
                # name its workload; only which slice it is cannot be told.
                layout = ", ".join(f"{s.profile}@{s.start}" for s in gpu.mig or ()) or "none"
                joined.unknown.append(
                    f"{key.describe()}: the snapshot's MIG layout of that GPU has no "
                    f"{key.gi_profile or 'such'} slice (layout: {layout}); joined to the GPU"
                )
        owner: Workload | None = None
        if key.pod:
            name = owners.get((key.namespace, key.pod))
            owner = by_name.get(name) if name else workloads.get((key.namespace, key.pod))
            if owner is None:
                joined.unmatched_pods.append(f"{key.describe()}: no running workload")
        mig_start = starts[0] if len(starts) == 1 else None
        here = held.get(where, [])
        if key.is_mig and mig_start is None and owner is not None:
            # Several slices of this profile: the owner's placement says which one.
            mine = [s for w, s in here if w.name == owner.name and s in starts]
            mig_start = mine[0] if len(mine) == 1 else None
        if owner is None and not key.pod and (held_whole is None or where[0] in held_whole):
            if key.is_mig:
                candidates = [w for w, s in here if s is not None and s == mig_start]
            else:
                candidates = [w for w, s in here if s is None]
            owner = candidates[0] if len(candidates) == 1 and not gpu.shared else None
        joined.rows.append(
            JoinedRow(sample, where[0], where[1], mig_start, owner.name if owner else None)
        )
    return joined
