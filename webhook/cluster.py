"""The live cluster as Apportion knows it: nodes, queues, namespaces, and managed pods.

Fed by the controller's watches (or by files in standalone mode) and read by the webhook.
It is a cache, never the truth: the truth is the pods' labels, annotations, gates and
node bindings, so a restart rebuilds everything from a list of the cluster.

Two kinds of state meet here:
- *observed* pods (from the API): bound or admitted pods hold capacity; gated pods wait;
- *intents* (``intents``) the webhook made before the pod is observed (it answered "admit"
  or "wait" a few milliseconds before the API server stores the pod), and the controller's
  admissions, reserved before it patches the pods (``reserve``), until the watch shows
  them admitted, one of them is deleted, or ``intent_ttl_s`` passes without them.

Bound pods that ask no GPU are kept apart (``hostpods``: node, CPU, memory per pod): their
requests leave their node's allocatable, as foreign GPU pods' do.

The incremental allocator answers the webhook; it is rebuilt from ``snapshot()``'s view
(``snapshots``) only when something changed that it cannot follow in place (``following``).
Thread safety: one lock; every public method holds it for microseconds to milliseconds,
and what it calls on (``intents``, ``following``, ``LeftOut``, ``Leaving``, ``NodeShapes``,
``QueueSources``) expects it held; the controller's snapshot, and the allocator a node
change drops (``_prebuild``), are built outside it (``snapshots.build``: what builds keep
for the next, the pod groups' workloads and ``FreeDevices``, any thread may read and
store).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from scheduler.catalog import Catalog, default_catalog
from scheduler.incremental import IncrementalAllocator
from scheduler.model import Node, Queue, RepartitionPlan, Snapshot, Workload, WorkloadDecision
from scheduler.reasons import Outcome
from scheduler.telemetry.report import TelemetryReport
from webhook.following import (
    as_placed,
    capacity_view,
    follow_foreign,
    follow_host,
    follow_node,
    foreign_on,
    gave_back,
    held_by,
    rejoin,
)
from webhook.hostpods import HostPod, HostPods, Moved
from webhook.intents import Intents, Refusal, already_admitted, answer
from webhook.jobs import JobIndex
from webhook.kubeobjects import FreeDevices
from webhook.leaving import Leaving
from webhook.namespaces import NamespacePolicy, is_system
from webhook.nodeshapes import NodeShapes, Offers
from webhook.observed import ForeignHold, PodGroup, nodes_less_foreign
from webhook.podindex import PodIndex
from webhook.pods import ManagedPod, PodAsk, raw_identity
from webhook.queues import QueueSources
from webhook.rates import AdmissionRates
from webhook.snapshots import LeftOut, View, build

__all__ = ["LiveCluster"]


class LiveCluster:
    """Thread-safe cache of the cluster plus the incremental allocator the webhook uses."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        gpu_models: tuple[Any, ...] = (),
        prices: dict[str, float] | None = None,
        intent_ttl_s: float = 120.0,
        all_namespaces: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._base = Snapshot(gpu_models=gpu_models, prices=dict(prices or {}))
        self.catalog: Catalog = self._base.catalog() if gpu_models or prices else default_catalog()
        self.all_namespaces = all_namespaces
        self.nodes: dict[str, Node] = {}
        self.queues: dict[str, Queue] = {}
        self._queue_sources = QueueSources(self.catalog)
        self.namespaces: dict[str, NamespacePolicy] = {}
        self._index = PodIndex()
        """Apportion's pods, by workload too: nothing on the webhook's path walks them all."""
        self.host_pods = HostPods()
        """Bound pods that ask no GPU: their CPU and memory are not Apportion's to give."""
        self._strays: dict[tuple[str, str], dict[str, Any]] = {}
        """Pods carrying Apportion's gate that it never decided (``strays.may_be_stray``), as
        the API serves them: the controller releases or adopts them (``strays.py``)."""
        self._intents = Intents(clock, intent_ttl_s)
        """Admissions made before their pods are observed, until they are (``intents``)."""
        self._left_out = LeftOut()
        """Admissions left out of a build for a clash, and with whom: warned of once."""
        self._leaving = Leaving()
        """Standalone (no watch): pods being deleted, kept until their grace period ends."""
        self.jobs = JobIndex()
        """Jobs' parallelism and JobSets: the size of a gang of Job pods."""
        self._allocator: IncrementalAllocator | None = None
        self._shapes = NodeShapes()
        self._free = FreeDevices()
        """Per node, its free devices, kept for the next build (``snapshots.build``)."""
        self._observing = False
        """True once a watch feeds pods: intents then expire when their pod never shows."""
        self.telemetry: TelemetryReport | None = None
        """The last DCGM assessment (unhealthy GPUs, idle workloads, the metrics note)."""
        self._decisions: dict[str, WorkloadDecision] = {}
        self._refused: dict[str, Refusal] = {}
        """Admissions of the last decision ``reserve`` refused: they wait for the next."""
        self._repartitions: tuple[RepartitionPlan, ...] = ()
        self.admissions = AdmissionRates(clock)
        """Per queue, admissions over the last hour (the queue view's wait estimate)."""
        self.generation = 0
        """Bumped on every change the global decision cares about (the controller debounces)."""

    # -- inputs --------------------------------------------------------------------------

    def _changed(self) -> None:
        self._allocator = None
        self.generation += 1

    def _nodes_changed(self) -> None:
        self._shapes.forget()
        self._changed()

    def largest_nodes(self) -> dict[str, int]:
        """Per GPU model present: the most whole GPUs one node has (0 for all-MIG models).

        What "can this ever fit" checks need; recomputed only when nodes change.
        """
        with self._lock:
            return self._shapes.largest(self.nodes.values())

    def node_shapes(self) -> dict[str, frozenset[tuple[int | None, int | None]]]:
        """Per GPU model present: the (CPU milli, memory MiB) its nodes have allocatable,
        None where a node does not say. For "can this pod ever fit" checks; a cluster has
        few node shapes, so the answer is a handful of pairs per model."""
        with self._lock:
            return self._shapes.hosts(self.nodes.values())

    def offers(self) -> Offers:
        """Per node and GPU model, its devices whatever is in use (``NodeShapes.offers``):
        what a device chosen at creation must be one of."""
        with self._lock:
            return self._shapes.offers(self.nodes.values(), self.catalog)

    def products(self) -> dict[str, frozenset[str]]:
        """Per GPU model present, the product labels its nodes carry: what a waiting pod's
        pin to its models must name."""
        with self._lock:
            return self._shapes.products(self.nodes.values())

    def replace_nodes(self, nodes: Iterable[Node]) -> None:
        with self._lock:
            self.nodes = {n.name: n for n in nodes}
            self._free.keep_only(self.nodes)
            self._nodes_changed()

    def put_node(self, node: Node) -> None:
        """A node added or changed. A change in labels or allocatable CPU and memory alone
        is followed in place (``following.follow_node``); any other is built anew here
        (``_prebuild``). Dropped, the allocator was rebuilt under the lock at the next
        review (78 ms median, 219 ms at most at 1,250 nodes and 20,000 pods), for any label
        of any node."""
        with self._lock:
            before = self.nodes.get(node.name)
            if before == node:
                return
            self.nodes[node.name] = node
            if before is not None and follow_node(self._allocator, before, node):
                if (before.cpu_milli, before.memory_mib) != (node.cpu_milli, node.memory_mib):
                    self._shapes.forget()
                elif before.labels != node.labels:
                    self._shapes.relabelled(before, node)
                self.generation += 1  # the global decision reads them
                return
            self._nodes_changed()
        self._prebuild()

    def remove_node(self, name: str) -> None:
        with self._lock:
            if self.nodes.pop(name, None) is None:
                return
            self._free.keep_only(self.nodes)
            self._nodes_changed()
        self._prebuild()

    def replace_queues(self, queues: Iterable[Queue], source: str = "file") -> None:
        """The queues of one source (``file``: a mounted file; ``crd``: Queue objects),
        merged with the other's (``QueueSources.replace``)."""
        with self._lock:
            self.queues = self._queue_sources.replace(source, queues)
            self._changed()

    def set_telemetry(self, report: TelemetryReport) -> None:
        """New GPU metrics: unhealthy GPUs leave capacity, idle workloads are marked."""
        with self._lock:
            before = self.telemetry
            self.telemetry = report
            if before is None or before.unhealthy != report.unhealthy:
                self._changed()
            elif before.idle.names() != report.idle.names():
                # Idle marks only order a preemption's victims, which the live allocator
                # never makes: the global decision cares, the allocator need not be rebuilt.
                self.generation += 1

    def pod_owner(self) -> dict[tuple[str, str], str]:
        """(namespace, pod) → workload, for attributing GPU metrics to workloads."""
        with self._lock:
            return {(p.namespace, p.name): p.workload for p in self.pods.values() if not p.foreign}

    def put_namespace(self, name: str, labels: dict[str, str]) -> None:
        with self._lock:
            self.namespaces[name] = NamespacePolicy.from_labels(labels)

    def remove_namespace(self, name: str) -> None:
        with self._lock:
            self.namespaces.pop(name, None)

    def replace_namespaces(self, labels: dict[str, dict[str, str]]) -> None:
        """Every Namespace, as a relist sees them: one deleted while the watch was down goes."""
        with self._lock:
            self.namespaces = {n: NamespacePolicy.from_labels(v) for n, v in labels.items()}

    def replace_pods(
        self,
        pods: Iterable[ManagedPod],
        host_pods: Iterable[HostPod] = (),
        strays: Iterable[dict[str, Any]] = (),
    ) -> None:
        """A full relist: the observed pods are now exactly these (and the pods asking no
        GPU, ``host_pods``, and the gated ones Apportion never decided, ``strays``). The new
        index is built and its groups worked out before the lock is taken: the webhook's
        answers wait for it, and at 20,000 pods that is 0.1–0.25 s."""
        index = PodIndex(pods)
        index.settle()
        with self._lock:
            self._observing = True
            self._index = index
            self.host_pods.replace(host_pods)
            self._strays = {raw_identity(raw)[:2]: raw for raw in strays}
            self._intents.retire_observed(self._index)
            self._changed()

    def put_pod(self, pod: ManagedPod) -> None:
        with self._lock:
            self._observing = True
            key = (pod.namespace, pod.name)
            self._follow_host(self.host_pods.remove(key))
            before = self._index.get(key)
            if before is not None and capacity_view(before) == capacity_view(pod):
                self._index.put(pod)
                self.generation += 1 if before.raw is not pod.raw else 0
                return
            if pod.foreign and (before is None or before.foreign):
                was = foreign_on(
                    self.nodes, self._index, {pod.node, None if before is None else before.node}
                )
                self._index.put(pod)
                self._follow_foreign(was)
                return
            touched = {pod.workload, *(() if before is None else (before.workload,))}
            held = held_by(self._index, touched)
            self._index.put(pod)
            name = self._intents.placed_by(pod)
            if name is not None:
                # The pod Apportion admitted shows up where it was placed: the allocator
                # already holds it; the intent retires once every pod is seen admitted.
                self._intents.retire_if_observed(name, self._index)
                if name != pod.workload and name not in self._intents:
                    self._rejoin(pod.workload, name)
                self.generation += 1
                return
            # A pod that waits came, or changed: what runs is as it was, and so is the
            # incremental allocator (rebuilding it costs a walk over every pod). Not so
            # where a foreign pod, or what admitted pods hold, changed.
            foreign = pod.foreign or (before is not None and before.foreign)
            self._followed(not foreign and held == held_by(self._index, touched))

    def put_host_pod(self, pod: HostPod) -> None:
        """A bound pod that asks no GPU: what it requests is held on its node.

        Only a change to a tracked node's sums (a pod landing on or leaving a GPU node, or
        its requests resized) changes the incremental allocator, in place; status updates
        and pods on CPU-only nodes cost a dict lookup.
        """
        with self._lock:
            moved = self.host_pods.put(pod)
            if self._index.pop(pod.key) is not None:
                self._changed()  # a GPU pod's key, now a host pod's: what it held goes
            else:
                self._follow_host(moved)

    def remove_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            key = (namespace, name)
            pod = self._index.get(key)
            if pod is not None and pod.foreign:
                was = foreign_on(self.nodes, self._index, {pod.node})
                self._index.pop(key)
                self._follow_foreign(was)
                return
            held = () if pod is None else held_by(self._index, {pod.workload})
            self._index.pop(key)
            self._follow_host(self.host_pods.remove(key))
            if pod is None:
                return
            ended = self._intents.end_with(pod.workload, self._index)
            after = held_by(self._index, {pod.workload})
            self._followed(not ended and gave_back(self._allocator, held, after, self._as_placed))

    def pod_leaving(
        self, namespace: str, name: str, *, uid: str, workload: str | None, grace_s: float
    ) -> None:
        """Standalone, where no watch says when a pod is gone: a DELETE of it was accepted.

        A bound pod runs on for its grace period while the kubelet stops it, so it keeps
        its devices (and its admission, if its pod was never recorded) ``grace_s`` more,
        then is gone; 0 means at once. A later DELETE of the same pod may shorten that,
        never lengthen it, as on the API server."""
        with self._lock:
            until = self._clock() + max(grace_s, 0.0)
            self._leaving.accepted((namespace, name, uid), workload, until)
            self._expire_leaving()

    def _expire_leaving(self) -> None:
        for (namespace, name, uid), workload in self._leaving.gone(self._clock()):
            pod = self.pods.get((namespace, name))
            if pod is not None and uid and pod.identity[2] not in ("", uid):
                continue  # another pod under its name, recorded since: not the one that left
            self.remove_pod(namespace, name)
            if workload is not None:
                self.forget(workload)

    def put_stray(self, namespace: str, name: str, pod: dict[str, Any] | None) -> None:
        """A pod carrying Apportion's gate that Apportion never decided (None: no longer,
        or gone). A new one wakes the controller."""
        with self._lock:
            key = (namespace, name)
            if pod is None:
                self._strays.pop(key, None)
                return
            if key not in self._strays:
                self.generation += 1
            self._strays[key] = pod

    def strays(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._strays.values())

    def _followed(self, in_place: bool) -> None:
        """A change the live allocator followed in place (``following``), or, False, one it
        is rebuilt for: the controller sees a change either way."""
        if in_place:
            self.generation += 1
        else:
            self._changed()

    def _follow_foreign(self, was: dict[str, ForeignHold]) -> None:
        """Foreign pods came to these nodes or left them (``was``: what they held before)."""
        allocator = self._allocator
        self._followed(
            allocator is None
            or follow_foreign(allocator, was, self.nodes, self._index, self._intents)
        )

    def _follow_host(self, moved: Moved) -> None:
        """What host pods hold moved: a change only on the nodes Apportion tracks."""
        tracked = {node: held for node, held in moved.items() if node in self.nodes}
        if tracked:
            self._followed(follow_host(self._allocator, tracked))

    # -- queries -------------------------------------------------------------------------

    def policy(self, namespace: str) -> NamespacePolicy:
        with self._lock:
            known = self.namespaces.get(namespace)
        if known is not None:
            return known
        return NamespacePolicy(enabled=self.all_namespaces and not is_system(namespace))

    def known_policy(self, namespace: str) -> NamespacePolicy | None:
        """The namespace's policy, or None while its Namespace has not been seen (a watch
        event may bring a pod before its new namespace)."""
        with self._lock:
            known = self.namespaces.get(namespace)
        if known is not None or not self.all_namespaces:
            return known
        return self.policy(namespace)

    def queue_for(self, ask: PodAsk) -> str | None:
        return ask.queue or self.policy(ask.namespace).default_queue

    def now(self) -> float:
        return self._clock()

    def snapshot(self, *, with_telemetry: bool = True) -> Snapshot:
        """Everything the global decision needs: running, intended and waiting workloads;
        with the last GPU metrics applied unless ``with_telemetry`` is False (what the
        metrics reader itself judges)."""
        with self._lock:
            self._expire_intents()
            view = self._view(with_telemetry)
        return self._build(view)

    def managed_pods(self) -> list[ManagedPod]:
        with self._lock:
            return list(self.pods.values())

    @property
    def pods(self) -> dict[tuple[str, str], ManagedPod]:
        """The pods observed, by (namespace, name); read-only."""
        return self._index.pods

    def members(self, workload: str) -> list[ManagedPod]:
        """The pods observed under ``workload`` (its workload annotation)."""
        with self._lock:
            return self._index.members(workload)

    def groups(self) -> dict[str, PodGroup]:
        """The pods by the workload the allocator decides them as (``observed.groups_of``),
        from the index: no regrouping of every pod."""
        with self._lock:
            return self._index.all_groups()

    def queue_names(self) -> list[str]:
        with self._lock:
            return sorted(self.queues)

    def groups_and_queues(self) -> tuple[dict[str, PodGroup], dict[str, Queue]]:
        """The groups and the queues, as one consistent view."""
        with self._lock:
            return self._index.all_groups(), dict(self.queues)

    def set_last_decisions(
        self,
        decisions: Iterable[WorkloadDecision],
        repartitions: tuple[RepartitionPlan, ...] = (),
    ) -> None:
        with self._lock:
            self._decisions = {d.workload: d for d in decisions}
            self._refused = {}
            self._repartitions = repartitions

    def last_decisions(self) -> dict[str, WorkloadDecision]:
        with self._lock:
            return dict(self._decisions)

    def refused(self) -> dict[str, Refusal]:
        """The last decision's admissions that no longer stood when reserved, by workload:
        their verdict is not what their pods live until the next decision."""
        with self._lock:
            return dict(self._refused)

    def last_repartitions(self) -> tuple[RepartitionPlan, ...]:
        """The last global decision's MIG repartition proposals (never applied)."""
        with self._lock:
            return self._repartitions

    # -- the webhook's path --------------------------------------------------------------

    def admit_now(self, workload: Workload, *, reserve: bool) -> WorkloadDecision:
        """Admit ``workload`` now if quota and capacity allow, else say why it waits.

        With ``reserve`` the admission is charged until its pod is observed (or the
        intent expires); without (dry runs, shadow mode) nothing is kept.
        """
        with self._lock:
            self._expire_intents()
            held = self._intents.get(workload.name)
            if held is not None and held.workload.placement is not None:
                return already_admitted(held.workload)
            allocator = self._current_allocator()
            decision = answer(workload, allocator, self._index)
            if decision.outcome is Outcome.ADMIT:
                if reserve:
                    self.admissions.record(workload.queue)
                    self._intents.admit(workload, decision)
                else:
                    allocator.release(workload.name)
            return decision

    def forget(self, workload: str) -> bool:
        """Drop an intent: its pod was deleted before it was ever observed, or the
        controller's patches recording its admission were refused (``reserve``)."""
        with self._lock:
            intent = self._intents.pop(workload)
            if intent is None:
                return False
            if intent.workload.placement is not None:
                allocator = self._allocator
                if allocator is None or not allocator.release(workload):
                    self._changed()
            return True

    def reserve(self, workload: Workload) -> Refusal | None:
        """Hold the controller's admission of a waiting workload (its placement, flavor and
        start set) before its pods are patched, until they are seen admitted; None once
        held, else why it no longer stands as decided, with nothing held.

        The global decision was taken on a snapshot up to seconds old, while the webhook
        kept admitting pods at creation: its place, its queue's quota or its nodes' CPU and
        memory may have been given away since. Checked and held first, they go to one of
        them, never to both. A refusal leaves the generation: what overtook the decision
        wakes the next cycle itself (the pod of an admission at creation seen, a queue
        changed; at the latest the tick), or ends later (a victim still running: its end
        wakes it); moved here, every cycle would decide the same and be refused the same,
        twice a second. Nothing is counted as freed by the decision's
        evictions: their victims hold what they hold until they are gone, and the workload
        they make room for waits for that before it is admitted and reserved (as does one
        the decision placed in that room: refused until then)."""
        with self._lock:
            self._expire_intents()
            refusal = self._intents.reserve(
                workload, self.queues, self._index, self._current_allocator
            )
            if refusal is not None:
                self._refused[workload.name] = refusal
                return refusal
            self.generation += 1
            return None

    def seed_running(self, workload: Workload) -> None:
        """Standalone: a workload the cluster file says runs. No watch will show its pods,
        so it holds its devices until a DELETE of one of them is reviewed (``forget``), not
        for ``intent_ttl_s`` like an admission whose pods are yet to show."""
        with self._lock:
            self._intents.seed(workload)
            self._changed()

    def _rejoin(self, gang: str, replacements: str) -> None:
        """The gang's replacements, admitted apart, are all seen among its members: from
        now on the live allocator holds the gang whole (``following.rejoin``), or is rebuilt."""
        allocator = self._allocator
        if allocator is not None and not rejoin(
            allocator, gang, replacements, self._as_placed(gang)
        ):
            self._changed()

    def _as_placed(self, name: str) -> Workload | None:
        """``following.as_placed``, as the pods, queues and nodes are now."""
        return as_placed(name, self._index, self.queues, self.nodes, self._clock())

    # -- internals -----------------------------------------------------------------------

    def _prebuild(self) -> None:
        """The allocator a node change dropped, built on the caller's thread (the node
        watch's) from a view taken under the lock, not at the next review under it: a
        cordon, a taint or a MIG reconfiguration cost the webhook's next answer a build. It
        is kept only if nothing changed meanwhile; else the next review builds it, as
        before."""
        with self._lock:
            self._expire_intents()
            if self._allocator is not None:
                return
            generation = self.generation
            view = self._view(with_telemetry=True)
        allocator = IncrementalAllocator(self._build(view, running_only=True))
        with self._lock:
            if self._allocator is None and self.generation == generation:
                self._allocator = allocator

    def _current_allocator(self) -> IncrementalAllocator:
        if self._allocator is None:
            self._allocator = IncrementalAllocator(self._snapshot(running_only=True))
        return self._allocator

    def _expire_intents(self) -> None:
        self._expire_leaving()
        if not self._observing:
            return
        expired = self._intents.expire()
        if any(intent.workload.placement is not None for intent in expired):
            self._allocator = None
        if expired:
            self.generation += 1

    def _view(self, with_telemetry: bool) -> View:
        """What a snapshot is built from, as it is now (under the lock)."""
        return View(
            self.host_pods.less_held(nodes_less_foreign(self.nodes, self._index.foreign())),
            self._index.all_groups(),
            [intent.workload for intent in self._intents.values()],
            dict(self.queues),
            self._clock(),
            self.telemetry if with_telemetry else None,
            self._free,
        )

    def _snapshot(self, with_telemetry: bool = True, running_only: bool = False) -> Snapshot:
        """The snapshot as it is now (the lock held); ``running_only``: the incremental
        allocator's (``snapshots.build``)."""
        return self._build(self._view(with_telemetry), running_only)

    def _build(self, view: View, running_only: bool = False) -> Snapshot:
        """The snapshot of ``view`` (``snapshots.build``), the lock held or not: ``snapshot``
        builds it outside, as the webhook's answers wait for the lock (the first build after
        a relist makes every workload: 0.35 s at 20,000 pods, ``snapshots``). An admission
        whose devices are not free is left out, with a warning (under the lock, which it
        takes)."""
        snapshot, clashes = build(view, self._base, running_only)
        if clashes:
            with self._lock:
                self._left_out.warn(clashes, self._intents)
        return snapshot
