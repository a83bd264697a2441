"""The cluster compiled for speed: free capacity indexed for O(1) fit checks.

A Snapshot is compiled once into plain lists. Nodes are grouped into *pools* (same GPU
model, labels and taints), and each pool keeps its nodes bucketed by how many whole GPUs
they have free, split into nodes that are entirely free and nodes already in use. A fit
check for N pods of k GPUs is then a sum over at most 2×(GPUs per node) buckets, and the
best-fit node is the first one in the first non-empty bucket — the fragmentation rule
("never break a whole node while a used one can take the pod; among used nodes, leave
the smallest remainder") is the bucket search order itself (``scheduler.pools``).

This module answers what fits where; ``scheduler.state`` places pods and changes it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from scheduler.catalog import MILLI_PER_GPU, Catalog
from scheduler.demand import Kind, Option
from scheduler.model import Node, NodeSelectorTerm, Snapshot, Workload
from scheduler.pools import Pool, bucket_at, tolerated, usable_bits

__all__ = ["UNTRACKED", "Capacity"]

UNTRACKED = 1 << 62
"""Free CPU/memory of a node whose allocatable is not tracked: never the constraint."""


class Capacity:
    """Free capacity of a snapshot's nodes, compiled, with the fit checks that read it
    (``ClusterState`` changes it)."""

    def __init__(self, snapshot: Snapshot, catalog: Catalog) -> None:
        self.catalog = catalog
        self.node_names: list[str] = []
        self.node_index: dict[str, int] = {}
        self.free_cpu: list[int] = []
        self.free_mem: list[int] = []
        self.node_cpu: list[int] = []
        self.node_mem: list[int] = []
        """Allocatable CPU milli and memory MiB per node (``UNTRACKED`` when not reported)."""
        self.held_cpu: list[int] = []
        self.held_mem: list[int] = []
        """Per node: what pods outside the workloads hold of it (``Node.cpu_held_milli``)."""
        self.gpu_node: list[int] = []
        self.gpu_index: list[int] = []
        self.gpu_model: list[str] = []
        self.gpu_healthy: list[bool] = []
        self.gpu_shared: list[bool] = []
        self.gpu_free_milli: list[int] = []
        """Non-MIG GPUs: free milli (1000 = entirely free). MIG GPUs: 0."""
        self.gpu_mig: list[dict[int, list[object]] | None] = []
        """MIG GPUs: start → [profile, used]."""
        self.gpu_pool: list[int] = []
        self.node_gpus: list[dict[int, int]] = []
        """Per node: GPU index → global GPU id."""
        self.pools: list[Pool] = []
        self.pool_label_keys = frozenset(k for w in snapshot.workloads for k in w.node_selector)
        """Labels that tell pools apart: only those some workload selects on. Keying pools on
        every label would make each node its own pool (hostname labels are unique)."""
        self.node_labels: list[dict[str, str]] = []
        self._node_filter_cache: dict[
            tuple[tuple[tuple[str, str], ...], tuple[NodeSelectorTerm, ...]], frozenset[int]
        ] = {}
        self._hosts_any_cache: dict[tuple[tuple[int, ...], frozenset[int]], bool] = {}
        self._eligible_cache: dict[tuple[object, ...], tuple[int, ...]] = {}
        self._never_fits_cache: dict[tuple[object, ...], bool] = {}
        self._never_hosts_cache: dict[tuple[object, ...], bool] = {}
        self._pool_mig_profiles: list[set[str]] | None = None
        self._node_pool_gpus: dict[tuple[int, int], list[int]] = {}
        """(node, pool) → its GPU ids, ascending (ids are handed out in order)."""
        self._whole_pool: list[int] = []
        """Per GPU: its pool if healthy and unshared (free milli only 0 or 1000), else −1."""
        self._compile_nodes(snapshot.nodes)
        self.models_present: tuple[str, ...] = tuple(dict.fromkeys(self.gpu_model))

    # ----------------------------------------------------------------- compile
    def _compile_nodes(self, nodes: Iterable[Node]) -> None:
        # Once per GPU, 32,000 times on a large cluster: the lists' appends are looked up
        # once, a node's GPUs look their pool up by model (hashing a pool key hashes its
        # taints, pydantic models), and free MIG slices and shared GPUs are sorted once.
        pool_of: dict[tuple[object, ...], int] = {}
        names: dict[str, str] = {}  # as written → catalog name (a lookup per GPU is slow)
        gpu_node, gpu_index = self.gpu_node.append, self.gpu_index.append
        gpu_model, gpu_healthy = self.gpu_model.append, self.gpu_healthy.append
        gpu_shared, gpu_pool = self.gpu_shared.append, self.gpu_pool.append
        gpu_mig, gpu_free_milli = self.gpu_mig.append, self.gpu_free_milli.append
        whole_pool, node_pool_gpus = self._whole_pool.append, self._node_pool_gpus
        g = 0
        for node in nodes:
            n = len(self.node_names)
            self.node_names.append(node.name)
            self.node_index[node.name] = n
            self.node_cpu.append(UNTRACKED if node.cpu_milli is None else node.cpu_milli)
            self.node_mem.append(UNTRACKED if node.memory_mib is None else node.memory_mib)
            # Held by pods outside the workloads: not free, still the node's (never_hosts).
            held_cpu = 0 if node.cpu_milli is None else node.cpu_held_milli
            held_mem = 0 if node.memory_mib is None else node.memory_held_mib
            self.held_cpu.append(held_cpu)
            self.held_mem.append(held_mem)
            self.free_cpu.append(max(0, self.node_cpu[n] - held_cpu))
            self.free_mem.append(max(0, self.node_mem[n] - held_mem))
            gpus_here: dict[int, int] = {}
            self.node_gpus.append(gpus_here)
            self.node_labels.append(node.labels)
            taints = tuple(sorted(node.taints, key=lambda t: (t.key, t.value, t.effect)))
            pool_labels = {k: v for k, v in node.labels.items() if k in self.pool_label_keys}
            labels_key = tuple(sorted(pool_labels.items()))
            # Model → its pool, the pool and the node's GPU ids in it, for this node: set up
            # when a node's first GPU of a model is met, not looked up per GPU.
            pools_here: dict[str, tuple[int, Pool, list[int]]] = {}
            for gpu in node.gpus:
                model = names.get(gpu.model)
                if model is None:
                    model = names[gpu.model] = self.catalog[gpu.model].name
                here = pools_here.get(model)
                if here is None:
                    key = (model, labels_key, taints)
                    p = pool_of.get(key, -1)
                    if p < 0:
                        p = pool_of[key] = len(self.pools)
                        self.pools.append(Pool(model, pool_labels, taints))
                    pool = self.pools[p]
                    ids: list[int] = []
                    node_pool_gpus[(n, p)] = ids
                    pool.nodes.append(n)  # its first GPU of the pool: n is new to it
                    pool.node_size[n] = 0
                    pool.whole_free[n] = 0
                    here = pools_here[model] = (p, pool, ids)
                p, pool, ids = here
                healthy, shared, mig = gpu.healthy, gpu.shared, gpu.mig
                gpu_node(n)
                gpu_index(gpu.index)
                gpu_model(model)
                gpu_healthy(healthy)
                gpu_shared(shared)
                gpu_pool(p)
                gpus_here[gpu.index] = g
                ids.append(g)
                whole_pool(p if healthy and not shared and mig is None else -1)
                if mig is not None:
                    gpu_free_milli(0)
                    gpu_mig({s.start: [s.profile, s.held] for s in mig})
                    if healthy:
                        for s in mig:
                            if not s.held:
                                pool.mig_free.setdefault(s.profile, []).append((n, g, s.start))
                else:
                    gpu_mig(None)
                    usable = healthy and not gpu.held
                    gpu_free_milli(MILLI_PER_GPU if usable else 0)
                    if healthy:
                        pool.node_size[n] += 1  # held or not: the node's (never_fits)
                        if shared:
                            pool.time_shared = True  # found once, not by never_fits' scans
                    if usable:
                        pool.whole_free[n] += 1
                        if shared:
                            pool.fractions.append((MILLI_PER_GPU, n, g))
                g += 1
        for pool in self.pools:
            pool.fractions.sort()
            for free in pool.mig_free.values():
                free.sort()
            pool.fill_buckets()

    def relabel(self, n: int, labels: dict[str, str]) -> bool:
        """Node ``n``'s labels are now ``labels``, as compiling it with them would read
        them; False, with nothing changed, where a label the pools key on changed (its GPUs
        would belong to another pool)."""
        before = self.node_labels[n]
        if any(before.get(k) != labels.get(k) for k in self.pool_label_keys):
            return False
        self.node_labels[n] = labels
        self._node_filter_cache.clear()  # the other caches read pools and node sets only
        return True

    # ------------------------------------------------------------- eligibility
    def eligible_pools(self, workload: Workload, option: Option) -> tuple[int, ...]:
        """Pools whose model serves the option and whose nodes the workload may land on."""
        selector = workload.node_selector
        key = (
            option.models,
            tuple(sorted(selector.items())) if selector else (),
            workload.tolerations,
        )
        cached = self._eligible_cache.get(key)
        if cached is not None:
            return cached
        result = tuple(
            p
            for p, pool in enumerate(self.pools)
            if pool.model in option.models
            and all(
                pool.labels.get(k) == v
                for k, v in workload.node_selector.items()
                if k in self.pool_label_keys
            )
            and tolerated(pool.taints, workload.tolerations)
        )
        self._eligible_cache[key] = result
        return result

    def node_filter(self, workload: Workload) -> frozenset[int] | None:
        """Nodes a workload may use when its pools do not say it all: it selects on labels
        the pools do not key on (a selector first seen after compilation), or it has a
        required node affinity (pools never key on it: a term naming hostnames would make
        each node its own pool). None when its pools say it all."""
        selector, affinity = workload.node_selector, workload.node_affinity
        if not selector and not affinity:
            return None
        extra = tuple(sorted((k, v) for k, v in selector.items() if k not in self.pool_label_keys))
        if not extra and not affinity:
            return None
        key = (extra, affinity)
        found = self._node_filter_cache.get(key)
        if found is None:
            names = self.node_names
            found = self._node_filter_cache[key] = frozenset(
                n
                for n, labels in enumerate(self.node_labels)
                if all(labels.get(k) == v for k, v in extra)
                and (not affinity or any(t.matches(names[n], labels) for t in affinity))
            )
        return found

    def hosts_any(self, pools: tuple[int, ...], nodes: frozenset[int]) -> bool:
        """Does any node of ``pools`` pass the node filter ``nodes``?"""
        key = (pools, nodes)
        known = self._hosts_any_cache.get(key)
        if known is None:
            known = self._hosts_any_cache[key] = any(
                n in nodes for p in pools for n in self.pools[p].nodes
            )
        return known

    # ------------------------------------------------------------ fit counting
    def capacity_bound(self, option: Option, pools: Sequence[int], enough: int = 1 << 62) -> int:
        """How many pods of this option fit now (exact without CPU/memory), counting up to
        ``enough`` — a fit check stops as soon as the answer is known."""
        total = 0
        if option.kind is Kind.WHOLE:
            k = option.per_pod
            for p in pools:
                pool = self.pools[p]
                usable = pool.occupied & usable_bits(k, pool.max_size)
                while usable:  # only the non-empty buckets a pod fits in
                    low = usable & -usable
                    usable ^= low
                    bucket = bucket_at(low.bit_length() - 1, pool.max_size)
                    total += len(pool.buckets[bucket].members) * (bucket[1] // k)
                if total >= enough:
                    return total
        elif option.kind is Kind.FRACTION:
            m = option.per_pod
            for p in pools:
                fr = self.pools[p].fractions
                for i in range(bisect_left(fr, (m, -1, -1)), len(fr)):
                    total += fr[i][0] // m
                    if total >= enough:
                        return total
        else:
            profile = option.profile or ""
            for p in pools:
                total += len(self.pools[p].mig_free.get(profile, ()))
        return total

    def hosted_room(
        self,
        option: Option,
        cpu: int,
        mem: int,
        pools: Sequence[int],
        nodes: frozenset[int] | None = None,
    ) -> int:
        """How many pods of this option fit now with their CPU and memory: per node, the
        devices free for it, capped by the pods its free CPU and memory can host (for
        pending messages: ``capacity_bound`` counts devices only)."""
        devices: dict[int, int] = {}
        for p in pools:
            pool = self.pools[p]
            if option.kind is Kind.WHOLE:
                for (_, free), members in pool.buckets.items():
                    if free >= option.per_pod:
                        for n in members:
                            devices[n] = free // option.per_pod
            elif option.kind is Kind.FRACTION:
                for free_milli, n, _ in pool.fractions:
                    devices[n] = devices.get(n, 0) + free_milli // option.per_pod
            else:
                for n, _, _ in pool.mig_free.get(option.profile or "", ()):
                    devices[n] = devices.get(n, 0) + 1
        return sum(
            min(
                count,
                self.free_cpu[n] // cpu if cpu else count,
                self.free_mem[n] // mem if mem else count,
            )
            for n, count in devices.items()
            if nodes is None or n in nodes
        )

    def max_block(
        self, option: Option, pools: Sequence[int], nodes: frozenset[int] | None = None
    ) -> int:
        """Largest per-node free amount for the option (for pending messages), on ``nodes``
        when given. Without them it stays a look at each pool's largest entry: a cycle's
        last pass writes this for every waiting workload."""
        best = 0
        for p in pools:
            pool = self.pools[p]
            if option.kind is Kind.WHOLE:
                best = max(
                    [
                        best,
                        *(
                            free
                            for (_, free), ns in pool.buckets.items()
                            if ns and (nodes is None or not nodes.isdisjoint(ns))
                        ),
                    ]
                )
            elif option.kind is Kind.FRACTION:
                if nodes is None:
                    best = max(best, pool.fractions[-1][0]) if pool.fractions else best
                else:
                    best = max([best, *(m for m, n, _ in pool.fractions if n in nodes)])
            else:
                slots = pool.mig_free.get(option.profile or "", ())
                if slots and (nodes is None or any(n in nodes for n, _, _ in slots)):
                    best = max(best, 1)
        return best

    def never_fits(
        self, option: Option, pools: tuple[int, ...], nodes: frozenset[int] | None = None
    ) -> bool:
        """True when no node (of ``nodes``, when given) could host one pod even if the
        cluster were empty."""
        key = (option.kind, option.per_pod, option.profile, pools, nodes)
        known = self._never_fits_cache.get(key)
        if known is None:
            if nodes is None:
                known = self._never_fits(option, pools)
            else:
                known = not any(
                    self._could_host(option, p, n)
                    for p in pools
                    for n in self.pools[p].nodes
                    if n in nodes
                )
            self._never_fits_cache[key] = known
        return known

    def _could_host(self, option: Option, p: int, n: int) -> bool:
        """Could node ``n``'s GPUs of pool ``p`` host one pod of the option, were they free?"""
        if option.kind is Kind.WHOLE:
            return self.pools[p].node_size[n] >= option.per_pod
        gpus = [
            g for g in self.node_gpus[n].values() if self.gpu_pool[g] == p and self.gpu_healthy[g]
        ]
        if option.kind is Kind.MIG:
            return any(
                str(slot[0]) == option.profile
                for g in gpus
                for slot in (self.gpu_mig[g] or {}).values()
            )
        return any(self.gpu_shared[g] and self.gpu_mig[g] is None for g in gpus)

    def never_places(self, option: Option, pools: tuple[int, ...], cpu: int, mem: int) -> bool:
        """True when no pod of this option could ever be placed on these pools: there are
        none, or none has the devices (``never_fits``) or the CPU and memory (``never_hosts``)
        for one even empty."""
        return not pools or self.never_fits(option, pools) or self.never_hosts(pools, cpu, mem)

    def never_hosts(
        self, pools: tuple[int, ...], cpu: int, mem: int, nodes: frozenset[int] | None = None
    ) -> bool:
        """True when no node of these pools (and of ``nodes``, when given) has the CPU and
        memory for one pod, even empty: its GPUs will never do (a pod asking 512 GiB of a
        model whose nodes have 384)."""
        key = (pools, cpu, mem, nodes)
        known = self._never_hosts_cache.get(key)
        if known is None:
            known = self._never_hosts_cache[key] = not any(
                self.node_cpu[n] >= cpu and self.node_mem[n] >= mem
                for p in pools
                for n in self.pools[p].nodes
                if nodes is None or n in nodes
            )
        return known

    def _never_fits(self, option: Option, pools: tuple[int, ...]) -> bool:
        if option.kind is Kind.WHOLE:
            return all(self.pools[p].max_size < option.per_pod for p in pools)
        if option.kind is Kind.MIG:
            profiles = self._mig_profiles()
            return not any(
                self.pools[p].model in option.models and option.profile in profiles[p]
                for p in pools
            )
        return not any(self.pools[p].time_shared for p in pools)

    def _mig_profiles(self) -> list[set[str]]:
        """Per pool: the MIG profiles its healthy GPUs are partitioned into (layouts do not
        change within a cycle). Found once, on first need: a scan per demand kind was a
        scan of every node of the pool."""
        if self._pool_mig_profiles is None:
            found: list[set[str]] = [set() for _ in self.pools]
            for g, layout in enumerate(self.gpu_mig):
                if layout is not None and self.gpu_healthy[g]:
                    found[self.gpu_pool[g]].update(str(slot[0]) for slot in layout.values())
            self._pool_mig_profiles = found
        return self._pool_mig_profiles

    # ----------------------------------------------------------------- metrics
    def entirely_free_gpus(self) -> int:
        """Free GPUs sitting on nodes with nothing else running: room for large gangs."""
        return sum(
            size * len(nodes)
            for pool in self.pools
            for (entirely_free, size), nodes in pool.buckets.items()
            if entirely_free
        )
