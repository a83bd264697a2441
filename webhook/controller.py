"""The controller: keeps the live cluster in sync and releases waiting pods.

1. Informers list and watch Nodes, Pods, Namespaces and Jobs (list + watch from the
   listed resourceVersion; relist on 410 Gone; bounded exponential backoff on errors) and
   feed ``LiveCluster`` (``watched.py``): GPU pods as ``ManagedPod``s, bound pods asking
   no GPU as ``HostPod``s (their CPU and memory), pods carrying Apportion's gate that it
   never decided as strays. Readiness turns true after every informer's first list.
2. The reconcile loop runs the global decision (ILP with greedy fallback) over the waiting
   workloads after a burst of changes settles (debounce) and on a periodic tick — only
   on the replica holding the Lease, which its own thread renews; a cycle stops where it
   is once that replica may no longer hold it.
3. Actions: admit = the admission reserved in the live cluster (``LiveCluster.reserve``:
   one whose place the webhook gave away since the decision waits for the next), then one
   JSONPatch per pod adding node affinity and removing the gate (``admitting.py``);
   preempt = the Eviction API plus an Event naming the reason and the beneficiary, which
   is nominated to the room its victims free (``preempting.py``); a victim of several pods
   is marked on them before its first eviction, and while marked every cycle evicts the
   rest of it and decides as if it were gone (``preempting.under_way``), its members
   recreated meanwhile waiting for it to end. A cycle evicts many
   victims at once, then nominates, admits, writes Queue objects' status
   (``queuestatus.py``) and waiting pods' reasons (``explaining.py``), many workloads at
   once each time (``workers.py``), each workload's own calls in their order.
   Everything is recorded on the pods, so a restart rebuilds the same state from a list.
   Before each decision, the pods carrying Apportion's gate that it never decided
   (``strays.py``) are settled, with an Event: nothing else would ever remove that gate.
   Those it does not manage lose it; the others are adopted, recorded as the webhook
   records a waiting pod, and decided like one (or, refused, keep the gate and are told why).
4. Admitted pods the kube-scheduler cannot place for ``stuck_after_s`` (``stuck.py``) are
   evicted, the whole workload at once, for their owner to recreate and the webhook to
   decide afresh; a bare pod nobody would recreate is only reported (Event, reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

from kubernetes.client import ApiException

from scheduler.allocator import decide
from scheduler.model import Decision, Eviction, Queue, Snapshot, Workload, WorkloadDecision
from scheduler.reasons import Outcome, Reason
from webhook.admission import Admission
from webhook.admitting import Admitter
from webhook.cluster import LiveCluster
from webhook.explaining import Explainer
from webhook.informer import Informer
from webhook.kubeapi import UNANSWERED, KubeApi, Raw, Resource, failure
from webhook.leader import LeaderElector, NotLeading
from webhook.metrics import Metrics
from webhook.observed import replaced_gang
from webhook.pods import ManagedPod
from webhook.preempting import Preemptor, under_way
from webhook.queuestatus import queue_statuses
from webhook.replacing import StuckReplacer
from webhook.settings import AdmissionSettings, ControllerSettings
from webhook.strays import StrayGates
from webhook.stuck import StuckWatch, StuckWorkload
from webhook.watched import Watched
from webhook.workers import Workers

__all__ = ["OWN_CONNECTIONS", "Controller"]

log = logging.getLogger("apportion.controller")


OWN_CONNECTIONS = 7
"""The API connections the controller holds at once beside its workers'
(``api_concurrency``): a watch per informer (Nodes, Pods, Namespaces, Jobs, Queues), the
Lease's renewals, and the reconcile thread's own calls (the Events
``StrayGates.tell_made`` makes at once)."""


class Controller:
    def __init__(
        self,
        api: KubeApi,
        cluster: LiveCluster,
        settings: ControllerSettings,
        metrics: Metrics,
        *,
        admission: AdmissionSettings | None = None,
        queues: Callable[[], list[Queue]] | None = None,
        elector: LeaderElector | None = None,
    ) -> None:
        """``admission``: what the webhook records on a pod that must wait, which the
        controller records on the gated pods it adopts (``strays.py``)."""
        self.api = api
        self.cluster = cluster
        self.settings = settings
        self.metrics = metrics
        self.elector = elector
        self._queues = queues
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

        def informer(
            resource: Resource,
            replace: Callable[[Iterator[Raw]], None],
            apply: Callable[[str, Raw], None],
            optional: bool = False,
        ) -> Informer:
            return Informer(
                api,
                resource,
                replace,
                apply,
                settings,
                self._stop,
                optional=optional,
                failed=metrics.api_failed,
            )

        self.cycles = 0
        self.explainer = Explainer(cluster, patch=self._patch, tell=self._tell)
        self.replacer = StuckReplacer(
            api,
            cluster,
            metrics,
            StuckWatch(settings.stuck_after_s),
            evict=settings.evict,
            before_acting=self._before_acting,
            set_reason=self.explainer.set_reason,
            event=self._event,
        )
        self.preemptor = Preemptor(
            api,
            cluster,
            metrics,
            before_acting=self._before_acting,
            patch=self._patch,
            event=self._event,
        )
        admission = admission or AdmissionSettings()
        self.strays = StrayGates(
            cluster,
            metrics,
            adopt=Admission(cluster, admission).adopt,
            patch=self._patch_answered,
            event=self._event,
            before_acting=self._before_acting,
            shadow=admission.mode == "shadow",
        )
        self.watched = watched = Watched(cluster, self.strays)
        self.informers = [
            informer(api.nodes(), watched.replace_nodes, watched.node_event),
            informer(api.pods(), watched.replace_pods, watched.pod_event),
            informer(api.namespaces(), watched.replace_namespaces, watched.namespace_event),
            informer(api.jobs(), watched.replace_jobs, watched.job_event),
            informer(
                api.queues(), watched.replace_queue_objects, watched.queue_event, optional=True
            ),
        ]
        self.admitter = Admitter(
            cluster,
            patch=self._patch,
            patch_answered=self._patch_answered,
            explain=self.explainer.explain,
            tell=self._tell,
        )
        self.stuck_reviews = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._queues is not None:
            self.cluster.replace_queues(self._queues())
        for informer in self.informers:
            self._spawn(informer.run, f"informer-{informer.resource.kind}")
        if self.elector is not None:
            self._spawn(self._lead_loop, "lease")
        self._spawn(self._reconcile_loop, "reconcile")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    # -- the reconcile loop ------------------------------------------------------------------

    def _lead_loop(self) -> None:
        """Renew the Lease on a thread of its own (client-go's way): a long cycle or a call
        waiting for its answer never delays a renewal."""
        assert self.elector is not None
        while not self._stop.is_set():
            leading = self.elector.try_acquire_or_renew()
            self.metrics.leader.set(1 if leading else 0)
            if not leading:
                # Only the leader looks for stuck pods: a former leader's last report
                # would stay on /metrics (and keep ApportionPodsStuck firing) for ever.
                self.metrics.stuck_reported.clear()
            self._stop.wait(self.settings.lease_duration_s / 5)

    def _leading(self) -> bool:
        return self.elector is None or self.elector.leading

    def _reconcile_loop(self) -> None:
        seen = -1
        last_run = 0.0
        while not self._stop.is_set():
            generation = self.cluster.generation
            due = time.monotonic() - last_run >= self.settings.tick_s
            if self._leading() and self.synced() and (generation != seen or due):
                # Debounce: let a burst of changes settle before deciding.
                self._stop.wait(self.settings.debounce_s)
                seen = self.cluster.generation
                last_run = time.monotonic()
                self._step(self.settle_strays, "settling gated pods Apportion never decided")
                self._step(self.reconcile_once, "reconcile")
                self._step(self.replace_stuck, "replacing stuck pods")
            self._stop.wait(min(0.2, self.settings.debounce_s))

    def _step(self, step: Callable[[], object], what: str) -> None:
        try:
            step()
        except NotLeading:
            log.warning("%s stopped: this replica may no longer hold the Lease", what)
        except Exception:
            log.exception("%s failed; retrying on the next change or tick", what)

    def _workers(self) -> Workers:
        """A step's API calls, many workloads' at once (``workers.py``)."""
        return Workers(self.settings.api_concurrency, self._stop, leading=self._leading)

    def settle_strays(self) -> None:
        """The gated pods Apportion never decided, settled (``strays.py``): a step of its
        own, every call of it (Events too) made before the cycle's decision."""
        with self._workers() as workers:
            self.strays.settle(workers)

    def reconcile_once(self) -> Decision | None:
        """One global decision over the waiting workloads, and its actions: many workloads'
        at once (``workers.py``), those of each phase ended before the next starts:
        evictions, then nominations (``preempting.py``), admissions, waiting pods' reasons.
        """
        with self._workers() as workers:
            return self._reconcile(workers)

    def _reconcile(self, workers: Workers) -> Decision | None:
        workers.each(self.admitter.complete_admissions(workers))
        workers.each(self.explainer.undecided(workers))
        # The victims in progress, read before the snapshot: seen later, one may have ended.
        under = []
        if self.settings.evict:  # the groups' pods as they are, unsorted: only marks are read
            groups = self.cluster.groups()
            under = under_way({n: g.pods for n, g in groups.items()}, self.cluster.now())
        snapshot = self.cluster.snapshot()
        self.strays.tell_made()
        if not any(w.placement is None for w in snapshot.workloads):
            self.cluster.set_last_decisions(())
            self._report_queue_status(workers, snapshot, None)
            return None
        nominated = self.preemptor.unseen_nominations(snapshot.workloads, self.cluster.now())
        started = time.perf_counter()
        decision = decide(_as_ended(snapshot, under, nominated), budget_ms=self.settings.budget_ms)
        self.cycles += 1
        self.metrics.allocator_seconds.labels(decision.stats.path).observe(
            time.perf_counter() - started
        )
        verdicts = [self._as_lived(_awaiting(v, under)) for v in decision.workloads]
        verdicts = _with_their_gang(verdicts, under, snapshot)
        evictions = [*under, *decision.evictions] if self.settings.evict else []
        if decision.repartitions != self.cluster.last_repartitions():
            for plan in decision.repartitions:
                log.info("MIG repartition proposal (not applied): %s", plan.message)
        self.cluster.set_last_decisions(verdicts, decision.repartitions)
        pods = self._pods_by_workload()
        self.preemptor.carry_out(workers, evictions, pods)
        workloads = {w.name: w for w in snapshot.workloads}
        undecided = [
            (verdict, members)
            for verdict in verdicts
            if (members := pods.get(verdict.workload, [])) and all(p.gated for p in members)
        ]
        # Admissions first: the reasons of what waits are thousands of patches on a large
        # cluster, and no admission should wait behind them (their Events, queued as they
        # are answered, come before the reasons too).
        workers.each(
            (
                f"admitting {verdict.workload}",
                partial(
                    self.admitter.admit, workers, workloads[verdict.workload], verdict, members
                ),
            )
            for verdict, members in undecided
            if verdict.outcome is Outcome.ADMIT
        )
        lived = decision.model_copy(update={"workloads": tuple(verdicts)})
        self._report_queue_status(workers, snapshot, lived)  # admissions reserved or refused
        present = {p.identity for group in pods.values() for p in group}
        self.explainer.keep_only(present)
        workers.each(
            (
                f"updating the reason on {verdict.workload}",
                partial(
                    self.explainer.explain, workers, verdict.reason.value, verdict.message, members
                ),
            )
            for verdict, members in undecided
            if verdict.outcome is not Outcome.ADMIT
        )
        return decision

    def _as_lived(self, verdict: WorkloadDecision) -> WorkloadDecision:
        """A preempting workload's verdict as its pods live it: the core admits it with its
        victims' eviction, here it stays gated until they have ended (their grace period),
        and in shadow mode nothing is evicted at all."""
        if verdict.outcome is not Outcome.PREEMPT:
            return verdict
        lead = (
            "waits for the workloads it preempts to end, then "
            if self.settings.evict
            else "waits: in shadow mode nothing is evicted; it would be "
        )
        return verdict.model_copy(update={"message": lead + verdict.message})

    def _report_queue_status(
        self, workers: Workers, snapshot: Snapshot, decision: Decision | None
    ) -> None:
        """Queue objects show usage, waiting and admitted counts (``kubectl get queues``):
        many Queues at once, ended before the cycle goes on."""
        # A copy, taken at once: the watch thread adds and removes Queues meanwhile.
        objects = dict(self.watched.queue_objects)
        workers.each(
            (f"the status of queue {name}", partial(self._patch_queue_status, name, status))
            for name, status in queue_statuses(self.cluster, objects, snapshot, decision).items()
        )

    def _patch_queue_status(self, name: str, status: Raw) -> None:
        self._before_acting()
        try:
            self.api.patch_queue_status(name, status)
        except (ApiException, *UNANSWERED) as error:
            self.metrics.api_failed("status", error)
            log.warning("status of queue %s: %s", name, failure(error))

    def _pods_by_workload(self) -> dict[str, list[ManagedPod]]:
        """Pods by the workload the decision names (``LiveCluster.groups``)."""
        groups = self.cluster.groups()
        return {name: sorted(g.pods, key=lambda p: p.name) for name, g in groups.items()}

    # -- the controller's own calls, which its collaborators act through too ------------

    def _before_acting(self) -> None:
        """Stop the cycle where it is once another replica could take the Lease over
        before what this one starts now is carried out; the next leader reads from the
        cluster what was done."""
        if not self._leading():
            raise NotLeading

    def _patch(self, pod: ManagedPod, patch: list[Raw], doing: str) -> bool:
        """Apply ``patch`` to ``pod``; False (logged) if the API refused or failed."""
        return self._patch_answered(pod.namespace, pod.name, patch, doing) is True

    def _patch_answered(
        self, namespace: str, name: str, patch: list[Raw], doing: str
    ) -> bool | None:
        """True if the patch was made, False (logged) if the API refused it, None (logged)
        if no answer came: it may have been made."""
        self._before_acting()
        try:
            self.api.patch_pod(namespace, name, patch)
        except (ApiException, *UNANSWERED) as error:
            # A stale view (the watch will bring the new one), a rejected change, or no
            # answer: the next cycle reads from the watch whether it was made.
            self.metrics.api_failed("patch", error)
            log.warning("%s %s/%s failed: %s", doing, namespace, name, failure(error))
            return False if isinstance(error, ApiException) else None
        return True

    def _tell(self, workers: Workers, pod: Raw, reason: str, message: str) -> None:
        """An Event on an admitted or waiting pod, left to the cycle's workers
        (``Workers.later``): best effort, and read back by nothing, so no admission waits
        for one. Asked once the call it tells of was answered, it is made after it."""
        name = (pod.get("metadata") or {}).get("name")
        workers.later(f"the event {reason} on {name}", partial(self._event, pod, reason, message))

    def _event(self, pod: Raw, reason: str, message: str, event_type: str = "Normal") -> None:
        try:
            self.api.record_event(pod, reason, message, event_type)
        except (ApiException, *UNANSWERED) as error:  # best effort, even the connection
            self.metrics.api_failed("event", error)
            log.debug("event on %s failed: %s", (pod.get("metadata") or {}).get("name"), error)

    # -- admitted pods the kube-scheduler cannot place ----------------------------------------

    def replace_stuck(self) -> list[StuckWorkload]:
        with self._workers() as workers:
            found = self.replacer.review(dict(self.watched.node_problems), workers)
        self.stuck_reviews += 1
        return found


def _as_ended(snapshot: Snapshot, under: list[Eviction], nominated: set[str]) -> Snapshot:
    """The snapshot the decision takes: the victims in progress (``preempting.under_way``)
    as if already gone, their beneficiaries nominated to the room they free, as are the
    workloads this replica nominated that the watch does not show so yet
    (``Preemptor.unseen_nominations``). The decision
    then picks no other victim in their place (seen running, a gang whose first pods have
    ended is a smaller workload, and the decision may evict another one instead), and
    gives their room to no other waiting workload. What it admits into that room is not
    admitted while they still run: their beneficiaries wait for them (``_awaiting``), and a
    reservation is checked against the live cluster, where they still hold what they hold
    (``LiveCluster.reserve``). A victim's replacements waiting (members its owner
    recreated) go with it: they wait for it to end (``_with_their_gang``)."""
    if not under and not nominated:
        return snapshot
    victims = {e.workload for e in under}
    beneficiaries = nominated | {e.beneficiary for e in under}

    def gone(w: Workload) -> bool:
        """A victim running, or its replacements waiting: they go with it."""
        return (w.name if w.placement is not None else replaced_gang(w.name)) in victims

    workloads = tuple(
        w.model_copy(update={"nominated": True})
        if w.name in beneficiaries and w.placement is None and not w.nominated
        else w
        for w in snapshot.workloads
        if not gone(w)
    )
    return snapshot.model_copy(update={"workloads": workloads})


def _with_their_gang(
    verdicts: list[WorkloadDecision], under: list[Eviction], snapshot: Snapshot
) -> list[WorkloadDecision]:
    """The verdicts, with one for each victim in progress's replacements waiting (members
    its owner recreated meanwhile, ``observed.groups_of``), which the decision does not
    take (``_as_ended``): they wait for its running pods to end, and are then decided with
    it. Admitted alone, they took room its beneficiary waits for, or any, and were evicted
    with the rest of it, which they join."""
    evicted = {e.workload: e for e in under}
    return verdicts + [
        WorkloadDecision(
            workload=w.name,
            queue=w.queue,
            outcome=Outcome.PENDING,
            reason=eviction.reason,
            message=f"gang {eviction.workload} is being preempted for {eviction.beneficiary}: "
            f"{eviction.message}. Its new pods wait until its running pods have ended, then "
            "are decided with the gang",
        )
        for w in snapshot.workloads
        if w.placement is None and (eviction := evicted.get(replaced_gang(w.name) or ""))
    ]


_ADMITTED_FOR = {
    Reason.PREEMPTED_PRIORITY: Reason.ADMITTED_BY_PRIORITY,
    Reason.PREEMPTED_RECLAIM: Reason.ADMITTED_BY_RECLAIM,
}


def _awaiting(verdict: WorkloadDecision, under: list[Eviction]) -> WorkloadDecision:
    """A beneficiary of victims in progress the decision admits (their room counted free,
    ``_as_ended``) as it lives it: it preempts them, and waits for them to end."""
    if verdict.outcome is not Outcome.ADMIT:
        return verdict
    mine = [e for e in under if e.beneficiary == verdict.workload]
    if not mine:
        return verdict
    victims = tuple(sorted({e.workload for e in mine}))
    message = (
        f"{verdict.message}; the eviction of {len(victims)} workload(s) it preempts is "
        f"under way: {', '.join(victims)}"
    )
    return verdict.model_copy(
        update={
            "outcome": Outcome.PREEMPT,
            "reason": _ADMITTED_FOR[mine[0].reason],
            "message": message,
            "victims": victims,
        }
    )
