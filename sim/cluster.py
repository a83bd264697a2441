"""The simulated cluster: nodes, GPU models and queues, as an empty ``Snapshot``.

A cluster comes from the embedded demo cluster (``default``), a snapshot YAML/JSON file,
the openb node list, PAI's machine spec, or ``uniform:NODESxGPUSxMODEL`` for synthetic
benchmarks. Traces name tenants (users, virtual clusters) the cluster may have no queue
for: ``with_queues`` gives each such tenant a queue — an equal share of every flavor as
nominal quota in one cohort, borrowing unlimited — so fair sharing has something to
divide, and says so in the run's output.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from scheduler.catalog import Catalog
from scheduler.consistency import MAX_NODE_GPUS
from scheduler.demand import Option, OptionsByDemand
from scheduler.loading import SnapshotError, load_snapshot_text
from scheduler.model import (
    CustomGpuModel,
    Gpu,
    Node,
    Queue,
    Quota,
    Snapshot,
    Workload,
    flavor_of_mig,
)
from scheduler.state import ClusterState
from scheduler.textfile import read_text
from sim.job import DEFAULT_QUEUE, Job

__all__ = ["SIM_COHORT", "Cluster", "ClusterError", "load_cluster", "uniform_cluster"]

SIM_COHORT = "sim"
"""The cohort synthesized queues share."""
_DEFAULT_FROM = (
    "the queue of jobs the trace names no queue for: an empty or missing queue column or "
    "key, every openb pod"
)


class ClusterError(ValueError):
    """The cluster description cannot be used (message names the file and the problem)."""


@dataclass(frozen=True)
class Cluster:
    snapshot: Snapshot
    """Nodes, GPU models, prices and queues; never any workloads."""
    source: str
    synthesized_queues: tuple[str, ...] = field(default=())

    @cached_property
    def catalog(self) -> Catalog:
        return self.snapshot.catalog()

    def capacity(self) -> dict[str, int]:
        """Healthy capacity per quota flavor: whole GPUs per model, instances per MIG profile."""
        catalog = self.catalog
        out: dict[str, int] = {}
        for node in self.snapshot.nodes:
            for gpu in node.gpus:
                if not gpu.healthy:
                    continue
                if gpu.mig is None:
                    name = catalog[gpu.model].name
                    out[name] = out.get(name, 0) + 1
                else:
                    for s in gpu.mig:
                        flavor = flavor_of_mig(s.profile)
                        out[flavor] = out.get(flavor, 0) + 1
        return dict(sorted(out.items()))

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.snapshot.nodes)

    def check_models(self, jobs: Iterable[Job]) -> None:
        """Raise ClusterError when a job names a GPU model (acceptable models, throughput
        rates) this cluster's catalog lacks: the core looks names up in the middle of a
        run, where an unknown one is a KeyError."""
        catalog = self.catalog
        unknown: dict[str, str] = {}
        for job in jobs:
            for name in (*job.workload.demand.models, *job.workload.throughput):
                if catalog.get(name) is None:
                    unknown.setdefault(name, job.name)
        if unknown:
            shown = ", ".join(f"{m!r} (job {j})" for m, j in list(unknown.items())[:10])
            raise ClusterError(
                f"the trace names GPU model(s) {self.source} does not know: {shown}; "
                f"known: {', '.join(catalog.names())}"
            )

    def never_fitting(self, jobs: Iterable[Job]) -> list[Job]:
        """Jobs this cluster can never run, even empty: on no option does one pod fit any
        node it may use, or do all its pods fit at once. A replay leaves them waiting to
        the end, counted as unfinished; the commands say so up front."""
        state = ClusterState(self.snapshot.model_copy(update={"workloads": ()}), self.catalog)
        options = OptionsByDemand(self.catalog, state.models_present)

        def fits(w: Workload, option: Option) -> bool:
            pools = state.eligible_pools(w, option)
            return not state.never_places(
                option, pools, w.cpu_milli, w.memory_mib
            ) and w.pods <= state.capacity_bound(option, pools, enough=w.pods)

        return [j for j in jobs if not any(fits(j.workload, o) for o in options(j.workload))]

    def with_queues(
        self, names: Iterable[str], weights: Mapping[str, float] | None = None
    ) -> Cluster:
        """This cluster with a queue for every tenant in ``names`` that has none.

        With no queues at all, every tenant gets an equal share (by weight) of each flavor
        as nominal quota, in one cohort, borrowing unlimited. A cluster that defines queues
        keeps them; a tenant it lacks is an error, not a silent new queue."""
        wanted = sorted(set(names))
        known = {q.name for q in self.snapshot.queues}
        if known:
            missing = [n for n in wanted if n not in known]
            if missing:
                # The user never wrote 'default': say where it came from.
                said = [f"{n} ({_DEFAULT_FROM})" if n == DEFAULT_QUEUE else n for n in missing]
                shown = ", ".join(said[:10]) + (" …" if len(missing) > 10 else "")
                raise ClusterError(
                    f"{self.source}: the trace uses queue(s) the cluster does not define: "
                    f"{shown}; the cluster has {', '.join(sorted(known))}"
                )
            return self
        if not wanted:
            return self
        weights = weights or {}
        total = sum(weights.get(n, 1.0) for n in wanted)
        quota: dict[str, dict[str, Quota]] = {n: {} for n in wanted}
        for flavor, amount in self.capacity().items():
            # Largest-remainder split: the nominal quotas add up to exactly the capacity.
            exact = {n: amount * weights.get(n, 1.0) / total for n in wanted}
            floors = {n: int(v) for n, v in exact.items()}
            left = amount - sum(floors.values())
            for n in sorted(wanted, key=lambda n: (floors[n] - exact[n], n))[:left]:
                floors[n] += 1
            for n in wanted:
                quota[n][flavor] = Quota(nominal=floors[n])
        queues = tuple(
            Queue(name=n, cohort=SIM_COHORT, weight=weights.get(n, 1.0), quota=quota[n])
            for n in wanted
        )
        return Cluster(
            self.snapshot.model_copy(update={"queues": queues}), self.source, tuple(wanted)
        )


MAX_UNIFORM_NODES = 100_000
"""Far above the largest GPU clusters (a few thousand nodes; the benchmarks' largest has
4,000)."""

_UNIFORM = re.compile(r"uniform:(\d+)x(\d+)x([A-Za-z0-9._-]+)(?::shared)?")


def uniform_cluster(nodes: int, gpus: int, model: str, shared: bool = False) -> Cluster:
    """``nodes`` identical nodes of ``gpus`` GPUs of ``model`` (for synthetic runs)."""
    from sim.models import trace_models_for

    width = len(str(max(0, nodes - 1)))
    return Cluster(
        Snapshot(
            gpu_models=trace_models_for({model}),
            nodes=tuple(
                Node(
                    name=f"node-{i:0{width}d}",
                    gpus=tuple(Gpu(index=g, model=model, shared=shared) for g in range(gpus)),
                )
                for i in range(nodes)
            ),
        ),
        f"uniform:{nodes}x{gpus}x{model}" + (":shared" if shared else ""),
    )


def load_cluster(spec: str) -> Cluster:
    """A cluster from ``default``, ``uniform:NxGxMODEL[:shared]``, or a file: a snapshot
    YAML/JSON, an openb node list CSV, or PAI's ``pai_machine_spec.csv``. One without a
    GPU is an error: nothing could run, and the engine's GPU arrays would be empty."""
    cluster = _load_cluster(spec)
    if not cluster.gpu_count:
        nodes = len(cluster.snapshot.nodes)
        raise ClusterError(f"{spec}: the cluster has no GPU ({nodes} node(s)); nothing can run")
    return cluster


def _load_cluster(spec: str) -> Cluster:
    if not spec.strip():  # Path('') is '.': "cannot read cluster : Is a directory"
        raise ClusterError(
            f"cluster {spec!r} is an empty path; give a file, default or uniform:NODESxGPUSxMODEL"
        )
    if spec == "default":
        from scheduler.defaults import default_snapshot

        return Cluster(default_snapshot(), "the embedded demo cluster")
    match = _UNIFORM.fullmatch(spec)
    if match:
        nodes, gpus, model = int(match[1]), int(match[2]), match[3]
        if nodes > MAX_UNIFORM_NODES:
            raise ClusterError(
                f"{spec}: {nodes} nodes; at most {MAX_UNIFORM_NODES:,} (a typo would build "
                "them all before the run starts)"
            )
        if gpus > MAX_NODE_GPUS:
            raise ClusterError(
                f"{spec}: {gpus} GPUs per node; no node has more than {MAX_NODE_GPUS}"
            )
        try:
            cluster = uniform_cluster(nodes, gpus, model, spec.endswith(":shared"))
            cluster.catalog[model]  # an unknown model fails here, not in the middle of a run
        except KeyError as error:
            raise ClusterError(f"{spec}: {error.args[0]}") from None
        except ValueError as error:
            raise ClusterError(f"{spec}: {error}") from None
        return cluster
    if spec.startswith("uniform:") and not Path(spec).exists():
        raise ClusterError(
            f"{spec}: not uniform:NODESxGPUSxMODEL[:shared] (e.g. uniform:4x8xH100-80GB)"
        )
    path = Path(spec)
    try:
        text = read_text(path)
    except OSError as error:
        raise ClusterError(f"cannot read cluster {spec}: {error.strerror}") from None
    if path.suffix.lower() == ".csv":
        return _csv_cluster(text, spec)
    try:
        snapshot = load_snapshot_text(text, source=spec)
    except SnapshotError as error:
        raise ClusterError(f"{spec} is not a valid cluster snapshot:\n{error}") from None
    if snapshot.workloads:
        snapshot = snapshot.model_copy(update={"workloads": ()})
    return Cluster(snapshot, spec)


def _csv_cluster(text: str, source: str) -> Cluster:
    first = next(csv.reader([text.splitlines()[0] if text else ""]), [])
    header = [h.strip() for h in first]
    # A bad row is a ValueError naming its cell; as a ClusterError the commands print it.
    try:
        if {"sn", "gpu", "model"} <= set(header):
            from sim.openb import load_openb_nodes

            models, nodes = load_openb_nodes(text, source)
            return Cluster(_neutral_prices(models, nodes), source)
        if len(header) == 5:
            from sim.pai import load_pai_machines

            models, nodes = load_pai_machines(text, source)
            return Cluster(_neutral_prices(models, nodes), source)
    except ValueError as error:
        raise ClusterError(str(error)) from None
    raise ClusterError(
        f"{source} line 1: not a known cluster CSV (an openb node list has columns "
        "sn, cpu_milli, memory_mib, gpu, model; PAI's machine spec has 5 unnamed columns)"
    )


def _neutral_prices(models: tuple[CustomGpuModel, ...], nodes: tuple[Node, ...]) -> Snapshot:
    """A trace's cluster with every GPU model at the same price. The traces publish no
    prices and their anonymised or retired parts have neutral placeholder prices; keeping
    the catalog's real price for the one model it knows (T4) next to them would invent a
    preference for it that the traced cluster never had."""
    snapshot = Snapshot(gpu_models=models, nodes=nodes)
    catalog = snapshot.catalog()
    custom = {m.name for m in models}
    present = {catalog[g.model].name for n in nodes for g in n.gpus}
    neutral = CustomGpuModel(name="neutral", memory_mib=1).price_per_hour
    prices = {name: neutral for name in sorted(present - custom)}
    return snapshot.model_copy(update={"prices": prices})
