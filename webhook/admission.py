"""Mutate and validate: what happens to a pod at the API server's door.

Pure functions of a parsed request and the live cluster; the aiohttp server is a thin
shell around them. Rules that keep clusters safe:
- anything Apportion does not manage (not a Pod CREATE, no GPU request, namespace not
  opted in, a DaemonSet's pod or a static pod's mirror) is allowed untouched, with no
  patch, before any expensive work;
- a GPU pod it manages that names its node (``spec.nodeName``) is refused: no gate can
  hold it, and it would run outside its queue;
- resources are fixed at CREATE, so the device (whole GPUs or a MIG profile) is chosen
  here even when the pod must wait;
- a pod created without the gate can never be gated later, so "wait" is decided here too;
- the mutate call never runs the ILP: the incremental allocator answers in microseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from scheduler.compiled import quota_book
from scheduler.demand import Kind, Option, demand_options
from scheduler.model import Demand, Snapshot, Workload, WorkloadDecision
from scheduler.quota import QuotaBook
from scheduler.reasons import Outcome, Reason
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.devices import resource_of, wants_gpus
from webhook.gangs import clash, refusal
from webhook.kubeobjects import SHARED_PRODUCT_SUFFIX
from webhook.leaving import grace_period_s
from webhook.namespaces import NamespacePolicy
from webhook.nodeconstraints import core_tolerations
from webhook.observed import queue_refusals
from webhook.patches import (
    Patch,
    add_gate,
    add_tolerations,
    node_expressions,
    remove_gate,
    remove_metadata,
    require_nodes,
    set_gpu_resource,
    set_metadata,
)
from webhook.pods import (
    ANNOTATION_PLACEMENT,
    PodAsk,
    PodReader,
    daemonset_pod,
    decided_workload,
    format_placement,
    gate_names,
    held_back,
    not_managed,
    placed_by_others,
    raw_identity,
)
from webhook.review import AdmissionRequest, Answer, allow, deny
from webhook.settings import AdmissionSettings

__all__ = ["Admission", "Verdict"]

log = logging.getLogger("apportion.admission")

ANNOTATION_REQUESTED_MEMORY = keys.PREFIX + "requested-gpu-memory"
"""Where a memory need moves once Apportion turned it into a device request."""

APPORTION_ONLY = keys.DECISION_KEYS | {ANNOTATION_PLACEMENT}
"""The labels and annotations only Apportion writes: users may not change them on a pod it
decided, and a pod created with them has them only copied (``kubectl get -o yaml``,
``kubectl debug --copy-to``): the mutating webhook removes them. A key Apportion's
controller adds joins ``keys.DECISION_KEYS``, and is guarded and removed so."""

NOT_DECIDED = (
    "Apportion: its mutating webhook did not decide this GPU pod: it saw no GPU request (a "
    "mutating webhook called after it added one: name that webhook's configuration to sort "
    "before apportion's, or ask for the GPU in the pod) or a namespace not opted in yet "
    "(create the pod again)"
)
"""The validating webhook's refusal of a GPU pod of an opted-in namespace that the
mutating one left undecided. Not an outage (that call fails closed: the create fails
before this one), so not a 503: clients retry a 503 as a passing fault, and where a
later webhook adds the GPU every retry is refused the same way."""

WARNING_CHARS = 120
"""The longest warning: Kubernetes advises at most 120 characters, and the API server may
cut one past 256 (and drops them past 4,096 in all)."""

MIRROR = "kubernetes.io/config.mirror"
"""The annotation on a static pod's mirror, which the kubelet creates bound to its node."""

SHADOW_REFUSED = "Refused"
"""The shadow annotation's reason for a pod enforcing would deny (``deny: Refused: …``)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """An answer and the outcome label metrics and logs use."""

    answer: Answer
    outcome: str
    """ignored, admitted, gated, shadow, invalid, denied, allowed, error"""
    workload: str = ""


class Admission:
    def __init__(
        self,
        cluster: LiveCluster,
        settings: AdmissionSettings,
        *,
        standalone: bool = False,
        admits_now: Callable[[], bool] = lambda: True,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.reader = PodReader(cluster.catalog)
        self.standalone = standalone
        """No watch feeds pods: the validating call records them, DELETE releases them."""
        self._admits_now = admits_now
        """Whether this replica may admit at creation. With several replicas only the one
        whose controller leads does: one writer, so two replicas never hand out the same
        GPUs in the moment before each sees the other's pods. The others gate the pod and
        the leader's controller admits it within a second or so."""

    # -- /mutate -------------------------------------------------------------------------

    def mutate(self, req: AdmissionRequest) -> Verdict:
        pod = _pod_create(req)
        named = _named_node(pod) if pod is not None else None
        if pod is None or not wants_gpus(pod) or (named is None and placed_by_others(pod)):
            return Verdict(allow(), "ignored")
        policy = self.cluster.policy(req.namespace)
        if not policy.enabled:
            return Verdict(allow(), "ignored")
        shadow = self._shadow(policy)
        if named is not None:
            if shadow:
                return _shadow_note(pod, f"deny: {SHADOW_REFUSED}: {named}")
            # No gate can hold it (the API server refuses one beside a node name), and the
            # validating call fails open: refused here, where a failed call fails closed.
            return Verdict(deny(f"Apportion: {named}"), "denied")
        ask = self.reader.ask(pod, req.namespace)
        queue = self.cluster.queue_for(ask)
        if problems := self._refusals(ask, queue):
            if shadow:  # let through, as if Apportion were not there; what it would do noted
                return _shadow_note(pod, f"deny: {SHADOW_REFUSED}: {'; '.join(problems)}")
            # The validating webhook denies it with the reason. Its call may fail (its
            # failurePolicy is Ignore): gated, undecided, the pod can never run outside every
            # queue; the controller keeps it so and tells why (``strays.py``).
            return Verdict(allow(_copied_removed(pod) + add_gate(pod)), "invalid")
        assert queue is not None
        workload = self._workload(ask, queue, req.uid)
        decision: WorkloadDecision | None
        if ask.gang is not None:
            decision = _waiting(workload, Reason.NOT_SELECTED, self._gang_message(ask))
        elif ask.other_gates:
            decision = _waiting(workload, Reason.NOT_SELECTED, held_back(ask.other_gates))
        elif not shadow and not self._admits_now():
            decision = _waiting(
                workload,
                Reason.NOT_SELECTED,
                "decided by the controller's next cycle (this replica does not lead)",
            )
        else:
            decision = self._decide(workload, reserve=not (req.dry_run or shadow))
            if decision is None:
                return Verdict(
                    allow(
                        _copied_removed(pod),
                        warnings=("Apportion could not decide; the pod runs unmanaged",),
                    ),
                    "error",
                    workload.name,
                )
        if shadow:
            text = f"{decision.outcome.label}: {decision.reason.value}: {decision.message}"
            return _shadow_note(pod, text, workload.name)
        return self._apply(pod, ask, workload, decision)

    def adopt(self, pod: dict[str, Any]) -> Verdict:
        """The mutating webhook's "wait" for a GPU pod of an opted-in namespace that carries
        Apportion's gate but that it never decided (created before the namespace opted in,
        or past the webhook), after the validating webhook's checks: the controller records
        it (``strays.py``) and its next cycle decides it in fair-share order, like any
        waiting pod. Denied with the checks' reasons otherwise; a memory need becomes a
        device only at creation (resources are fixed then), so such a pod is denied too."""
        namespace, _, uid = raw_identity(pod)
        ask = self.reader.ask(pod, namespace)
        queue = self.cluster.queue_for(ask)
        problems = self._refusals(ask, queue)
        if ask.gpu.memory_mib is not None:
            problems.append(
                f"a GPU-memory need ({keys.ANNOTATION_GPU_MEMORY}) becomes a device only when "
                "the pod is created"
            )
        if problems:
            return Verdict(deny("; ".join(problems)), "denied")
        assert queue is not None
        workload = self._workload(ask, queue, uid)
        waiting = _waiting(workload, Reason.NOT_SELECTED, "adopted; the controller decides it")
        return self._apply(pod, ask, workload, waiting)

    def _shadow(self, policy: NamespacePolicy) -> bool:
        """The whole webhook in shadow mode, or this namespace trying Apportion out."""
        return self.settings.mode == "shadow" or policy.shadow

    def _decide(self, workload: Workload, *, reserve: bool) -> WorkloadDecision | None:
        """The incremental allocator's answer; on failure, the configured failure mode."""
        try:
            return self.cluster.admit_now(workload, reserve=reserve)
        except Exception:  # any allocator failure takes the failure policy
            log.exception("allocator failed", extra={"workload": workload.name})
            if self.settings.on_allocator_failure == "allow":
                return None
            return _waiting(
                workload,
                Reason.NOT_SELECTED,
                "the allocator could not answer at admission; the controller decides shortly",
            )

    def _apply(
        self, pod: dict[str, Any], ask: PodAsk, workload: Workload, decision: WorkloadDecision
    ) -> Verdict:
        admitted = decision.outcome is Outcome.ADMIT
        demand = self._device_for(workload, decision)
        patch: Patch = []
        annotations = {
            keys.ANNOTATION_WORKLOAD: workload.name,
            keys.ANNOTATION_DECISION: "admitted" if admitted else "pending",
            keys.ANNOTATION_REASON: f"{decision.reason.value}: {decision.message}",
        }
        if ask.gpu.memory_mib is not None and demand is not None:
            resource, count = resource_of(demand)
            patch += set_gpu_resource(pod, ask.gpu.container, resource, count)
            annotations[ANNOTATION_REQUESTED_MEMORY] = ask.annotations[keys.ANNOTATION_GPU_MEMORY]
            patch += remove_metadata(pod, "annotations", [keys.ANNOTATION_GPU_MEMORY])
        if ask.gang is not None:
            annotations[keys.ANNOTATION_GANG_SIZE] = str(workload.pods)
        if admitted and decision.placement:
            annotations[ANNOTATION_PLACEMENT] = format_placement(decision.placement[0])
        labels = {keys.LABEL_MANAGED: "true", keys.LABEL_QUEUE: workload.queue}
        if ask.gang is not None:
            # Recorded in Apportion's own keys whatever named the gang (Kueue's labels, a
            # PyTorchJob, a JobSet), so the controller reads every gang the same way.
            labels[keys.LABEL_GANG] = ask.gang
        patch += _copied_removed(pod, keep=annotations.keys() | labels.keys())
        patch += set_metadata(pod, "labels", labels)
        patch += set_metadata(pod, "annotations", annotations)
        patch += add_tolerations(pod, self.settings.gpu_tolerations)
        if admitted:
            # A pod may arrive with Apportion's gate (a manifest copied from a waiting pod):
            # admitted, it must not wait for the controller to remove it.
            patch += require_nodes(pod, self._placement_expressions(decision))
            patch += remove_gate(pod)
            return Verdict(allow(patch), "admitted", workload.name)
        models = (demand.models if demand is not None else ()) or ask.models
        if models:
            patch += require_nodes(pod, [self._products_expression(models)])
        patch += add_gate(pod)
        return Verdict(allow(patch), "gated", workload.name)

    def _device_for(self, workload: Workload, decision: WorkloadDecision) -> Demand | None:
        """The concrete device of a memory need: what was admitted, else the one it waits for
        (``_waiting_device``)."""
        demand = workload.demand
        if demand.gpu_memory_mib is None:
            return demand
        if decision.outcome is Outcome.ADMIT and decision.flavor is not None:
            if decision.flavor.startswith("mig-"):
                profile = decision.flavor.removeprefix("mig-")
                node = self.cluster.nodes.get(decision.placement[0].node)
                model = node.gpus[0].model if node and node.gpus else None
                return Demand(mig_profile=profile, models=(model,) if model else ())
            return Demand(gpus=1, models=(decision.flavor,))
        option = self._waiting_device(workload)
        if option is None:
            return None
        if option.kind is Kind.MIG:
            return Demand(mig_profile=option.profile, models=option.models)
        return Demand(gpus=1, models=option.models)

    def _waiting_device(self, workload: Workload) -> Option | None:
        """The device a memory need that must wait asks for. Resources are fixed at creation
        and Apportion never repartitions a GPU itself, so it is one a node has (in use or
        not: ``_offered``), chosen as the decision core would on an idle cluster: on a node
        the pod may use, charged to quota its queue has or can borrow, within its nominal
        quota before borrowed, then the cheapest. Every replica, leading or not, answers
        alike."""
        need = workload.demand.gpu_memory_mib
        assert need is not None
        offers = self.cluster.offers()
        queue = workload.queue
        book = self._idle_book(queue)
        ranked: list[tuple[bool, bool, bool, int]] = []
        options = self._offered(workload.demand)
        for i, option in enumerate(options):
            amount = option.quota_per_pod * workload.pods
            ranked.append(
                (
                    not any(offer.may_host(workload) for offer in offers.where(option, need)),
                    not book.check(queue, option.flavor, amount).ok,
                    not book.within_nominal(queue, option.flavor, amount),
                    i,
                )
            )
        return options[min(ranked)[-1]] if ranked else None

    def _idle_book(self, queue: str) -> QuotaBook:
        """The quota book of ``queue``'s cohort with nothing charged: what it can ever get."""
        queues = self.cluster.queues
        cohort = queues[queue].cohort
        mates = tuple(
            q for q in queues.values() if q.name == queue or (cohort and q.cohort == cohort)
        )
        return quota_book(Snapshot(queues=mates), self.cluster.catalog)

    def _offered(self, demand: Demand) -> list[Option]:
        """The options of a memory need (cheapest first) that some node has a device for: a
        MIG profile in its layouts, or a whole GPU whose usable memory holds the need
        (``nodeshapes.usable_memory``)."""
        need = demand.gpu_memory_mib
        assert need is not None
        present = tuple(sorted(self.cluster.largest_nodes()))
        offers = self.cluster.offers()
        options = [
            option
            for option in demand_options(demand, self.cluster.catalog, present)
            if offers.has(option, need)
        ]
        if not self.settings.whole_gpu_fallback:
            mig = [o for o in options if o.kind is Kind.MIG]
            options = mig or options
        return options

    def _placement_expressions(self, decision: WorkloadDecision) -> list[dict[str, Any]]:
        nodes = {p.node for p in decision.placement}
        return node_expressions([n for name, n in self.cluster.nodes.items() if name in nodes])

    def _products_expression(self, models: tuple[str, ...]) -> dict[str, Any]:
        """A waiting pod's pin to its acceptable models: the product labels their nodes carry
        (GFD appends ``-SHARED`` under time-slicing; spellings differ in case), and the
        catalog's GFD spellings with and without ``-SHARED`` for nodes that join later. A
        gated pod's affinity can only be narrowed, and the controller's admission adds the
        chosen node's own value: one missing here would keep the pod off that node."""
        present = self.cluster.products()
        products: set[str] = set()
        for name in models:
            model = self.cluster.catalog[name]
            products |= present.get(model.name, frozenset())
            products.update(model.products)
            products.update(p + SHARED_PRODUCT_SUFFIX for p in model.products)
        return {"key": keys.NODE_PRODUCT, "operator": "In", "values": sorted(products)}

    def _gang_message(self, ask: PodAsk) -> str:
        size = self.cluster.jobs.gang_size(ask)
        return (
            f"gang {ask.gang} of {size} pod{'' if size == 1 else 's'}: admitted all together "
            "by the controller once every member exists"
        )

    # -- /validate -----------------------------------------------------------------------

    def validate(self, req: AdmissionRequest) -> Verdict:
        if req.kind != "Pod" or req.resource != "pods" or req.sub_resource:
            return Verdict(allow(), "ignored")
        if req.operation == "CREATE":
            return self._validate_create(req)
        if req.operation == "UPDATE":
            return self._validate_update(req)
        if req.operation == "DELETE" and self.standalone and not req.dry_run:
            self._forget_pod(req.old_object, req.options)
        return Verdict(allow(), "ignored")

    def _validate_create(self, req: AdmissionRequest) -> Verdict:
        pod = req.object
        named = _named_node(pod) if pod is not None else None
        if pod is None or not wants_gpus(pod) or (named is None and placed_by_others(pod)):
            return Verdict(allow(), "ignored")
        policy = self.cluster.policy(req.namespace)
        if not policy.enabled:
            return Verdict(allow(), "ignored")
        shadow = self._shadow(policy)
        if named is not None:  # refused by the mutating call: one a later webhook placed
            return _refused([named], shadow=shadow)
        ask = self.reader.ask(pod, req.namespace)
        queue = self.cluster.queue_for(ask)
        if problems := self._refusals(ask, queue):
            return _refused(problems, shadow=shadow)
        if not shadow and decided_workload(pod) is None:
            if self.settings.on_allocator_failure == "allow":
                # What the mutating call did when it could not decide: this call cannot
                # tell that from an outage, and the setting lets both run unmanaged.
                return Verdict(
                    allow(warnings=("Apportion did not decide this pod; it runs unmanaged",)),
                    "allowed",
                )
            return Verdict(deny(NOT_DECIDED), "denied")
        if ask.gang is not None and (differs := self._gang_refusal(pod)) is not None:
            return Verdict(deny(f"Apportion: {differs}"), "denied")
        if self.standalone and not req.dry_run and not shadow:
            observed = self.reader.observed(pod)
            if observed is not None:
                self.cluster.put_pod(observed)
        return Verdict(allow(warnings=self._rightsizing(ask, queue)), "allowed")

    def _gang_refusal(self, pod: dict[str, Any]) -> str | None:
        """A gang member that asks differently from the members the cache knows
        (``gangs.refusal``): members created together reach the cache too late to be
        compared here, and the controller never decides them (``gangs.mixed``)."""
        observed = self.reader.observed(pod)
        if observed is None:
            return None
        return refusal(observed, self.cluster.members(observed.workload))

    def _rightsizing(self, ask: PodAsk, queue: str | None) -> list[str]:
        """Soft advice from GPU metrics: this queue's workloads on these GPUs use far less
        memory than the GPUs offer (a warning the user sees; never a denial). Its numbers
        in short: the report's message says more than a warning keeps."""
        report = self.cluster.telemetry
        if report is None or not ask.gpu.gpus:
            return []
        return [
            _warning(
                f"Apportion: {usage.queue} on {usage.flavor} peaks at {usage.used_peak_mib:,} "
                f"of {usage.requested_mib:,} MiB; {usage.fits} would hold it"
            )
            for usage in report.rightsizing
            if usage.queue == queue
            and usage.fits is not None
            and (not ask.models or usage.flavor in ask.models)
            and usage.flavor in self.cluster.largest_nodes()
        ][:1]

    def _validate_update(self, req: AdmissionRequest) -> Verdict:
        new, old = req.object or {}, req.old_object or {}
        if req.username in self.settings.trusted_users:
            if self.standalone and not req.dry_run:
                observed = self.reader.observed(new)
                if observed is not None:
                    self.cluster.put_pod(observed)
            return Verdict(allow(), "allowed")
        if not_managed(old, self.cluster.policy(req.namespace).enabled) is not None:
            # Judged here as at creation, not left to the webhook configuration's
            # selectors: a pod Apportion does not manage is its user's to change.
            return Verdict(allow(), "ignored")
        changed = _decision_changes(old, new)
        if changed:
            return Verdict(
                deny(
                    f"Apportion: only Apportion may change {', '.join(changed)} "
                    f"(user {req.username or 'unknown'})"
                ),
                "denied",
            )
        return Verdict(allow(), "ignored")

    def _forget_pod(self, pod: dict[str, Any] | None, options: dict[str, Any] | None) -> None:
        """Standalone: a DELETE was accepted. The pod's GPUs stay held for its grace period
        (the kubelet stops it meanwhile; the DELETE that ends it sooner says 0)."""
        if not pod:
            return
        metadata = pod.get("metadata") or {}
        self.cluster.pod_leaving(
            str(metadata.get("namespace", "")),
            str(metadata.get("name", "")),
            uid=str(metadata.get("uid") or ""),
            workload=decided_workload(pod),
            grace_s=grace_period_s(pod, options),
        )

    # -- shared checks -------------------------------------------------------------------

    def _refusals(self, ask: PodAsk, queue: str | None) -> list[str]:
        """Why the validating webhook refuses the pod (none if it does not)."""
        return [
            *ask.problems,
            *self._queue_problems(ask, queue),
            *self._never_fits(ask),
            *self._name_clash(ask),
        ]

    def _name_clash(self, ask: PodAsk) -> list[str]:
        """A gang named like a pod of its own of the namespace, or such a pod named like a
        gang (``gangs.clash``); a generated name is unique."""
        workload = _own_name(ask)
        if workload is None or ask.name is None:
            return []
        members = self.cluster.members(workload)
        found = clash(workload, ask.gang is not None, ask.name, members) if members else None
        return [found] if found else []

    def _queue_problems(self, ask: PodAsk, queue_name: str | None) -> list[str]:
        if queue_name is None:
            return [
                f"no queue: label the pod {keys.LABEL_QUEUE}=<queue> or label namespace "
                f"{ask.namespace} with {keys.NAMESPACE_DEFAULT_QUEUE}=<queue>"
            ]
        queue = self.cluster.queues.get(queue_name)
        if queue is None:
            known = ", ".join(sorted(self.cluster.queues)) or "none"
            return [f"queue {queue_name!r} does not exist (queues: {known})"]
        problems = queue_refusals(queue, ask.namespace, ask.priority)
        if ask.gang is not None and self.cluster.jobs.gang_size(ask) is None:
            problems.append(
                f"gang {ask.gang!r}: say how many pods it has with the annotation "
                f"{keys.ANNOTATION_GANG_SIZE} (or {keys.KUEUE_GROUP_TOTAL}); Apportion reads "
                "it from the owner only for Jobs it has seen"
            )
        return problems

    def _never_fits(self, ask: PodAsk) -> list[str]:
        """A request no node of this cluster can ever hold (ignoring what is in use)."""
        largest = self.cluster.largest_nodes()
        if not largest:
            return []  # nothing synced yet: never deny on an empty view
        catalog = self.cluster.catalog
        models = [m for m in largest if not ask.models or m in ask.models]
        if not models:
            return [
                f"no node in this cluster has {'/'.join(ask.models)} GPUs (it has "
                f"{', '.join(sorted(largest))})"
            ]
        gpu = ask.gpu
        if gpu.gpus:
            best = max((largest[m] for m in models), default=0)
            if gpu.gpus > best:
                where = f" of {'/'.join(ask.models)}" if ask.models else ""
                return [
                    f"{gpu.gpus} GPUs in one pod: the largest node{where} in this cluster "
                    f"has {best} whole GPUs"
                ]
        elif gpu.mig_profile is not None:
            if not any(catalog[m].mig_profile(gpu.mig_profile) is not None for m in models):
                return [f"no GPU in this cluster can hold a MIG {gpu.mig_profile} instance"]
        elif gpu.memory_mib is not None and not self._offered(
            Demand(gpu_memory_mib=gpu.memory_mib, models=ask.models)
        ):
            return [self._memory_refusal(gpu.memory_mib, models)]
        shapes = self.cluster.node_shapes()
        if (ask.cpu_milli or ask.memory_mib) and not any(
            (cpu is None or cpu >= ask.cpu_milli) and (memory is None or memory >= ask.memory_mib)
            for m in models
            for cpu, memory in shapes.get(m, ())
        ):
            where = f" with {'/'.join(ask.models)} GPUs" if ask.models else " with GPUs"
            return [
                f"{ask.cpu_milli / 1000:g} CPU and {ask.memory_mib / 1024:g} GiB of memory in one "
                f"pod: no node{where} in this cluster has that much allocatable"
            ]
        return []

    def _memory_refusal(self, need: int, models: list[str]) -> str:
        """Why no device holds a memory need, with the largest one the nodes have."""
        largest = self.cluster.offers().largest
        sizes: list[tuple[int, str]] = []
        for name in models:
            memory, profiles = largest.get(name, (0, frozenset()))
            if memory:
                sizes.append((memory, f"a whole {name}"))
            model = self.cluster.catalog[name]
            sizes += [
                (profile.usable_memory_mib, f"a {profile.name} slice of {name}")
                for p in profiles
                if (profile := model.mig_profile(p)) is not None
            ]
        most = max(sizes, default=None)
        largest_one = f" (the largest: {most[1]}, {most[0]} MiB usable)" if most else ""
        return (
            f"{need} MiB of GPU memory: no GPU or MIG slice on this cluster's nodes holds that "
            f"much{largest_one}"
        )

    def _workload(self, ask: PodAsk, queue: str, uid: str) -> Workload:
        # A name not chosen yet (generateName) is the request's: 48 random bits of its uid,
        # so that two of a namespace's pods alive at once do not share one (at 32 bits,
        # one in a hundred among 10,000 pods of one generateName).
        name = _own_name(ask) or (
            f"{ask.namespace}/{ask.generate_name or 'pod-'}{uid.replace('-', '')[:12]}"
        )
        demand = ask.demand
        assert demand is not None  # wants_gpus held and the ask has no problems
        tolerations = core_tolerations((*ask.tolerations, *self.settings.gpu_tolerations))
        return Workload(
            name=name,
            queue=queue,
            namespace=ask.namespace,
            priority=ask.priority,
            created=int(self.cluster.now()),
            pods=self.cluster.jobs.gang_size(ask) or 1,
            demand=demand,
            node_selector=ask.node_selector,
            node_affinity=ask.node_affinity,
            tolerations=tolerations,
            cpu_milli=ask.cpu_milli,
            memory_mib=ask.memory_mib,
        )


def _own_name(ask: PodAsk) -> str | None:
    """The workload a pod belongs to by name: its gang's, else its own; None while the API
    server has not chosen its name yet (generateName)."""
    if ask.gang is not None:
        return f"{ask.namespace}/{ask.gang}"
    if ask.name is not None:
        return f"{ask.namespace}/{ask.name}"
    return None


def _refused(problems: list[str], *, shadow: bool) -> Verdict:
    """The validating call's refusal; in shadow mode, the user warned what enforcing would
    do (in full in the annotation the mutating call wrote)."""
    if shadow:
        warning = _warning(
            "Apportion (shadow mode) would deny this pod: " + "; ".join(problems),
            f"annotation {keys.ANNOTATION_SHADOW}",
        )
        return Verdict(allow(warnings=(warning,)), "shadow")
    return Verdict(deny("Apportion: " + "; ".join(problems)), "denied")


def _named_node(pod: dict[str, Any]) -> str | None:
    """Why a GPU pod created with ``spec.nodeName`` is refused: it skips the scheduler, so
    no gate can hold it (the API server refuses one beside a node name) and no queue is
    charged for it, as Kueue's pods, always gated, cannot be created so either. None for
    a DaemonSet's pod (its node chosen by affinity) and a static pod's mirror, the kubelet's
    record of a pod it runs already."""
    node = (pod.get("spec") or {}).get("nodeName")
    mirror = MIRROR in ((pod.get("metadata") or {}).get("annotations") or {})
    if not node or mirror or daemonset_pod(pod):
        return None
    return (
        f"spec.nodeName {node!r}: a GPU pod placed on its node at creation skips its queue "
        f"and quota; ask for the node with the nodeSelector {keys.NODE_HOSTNAME} instead"
    )


def _pod_create(req: AdmissionRequest) -> dict[str, Any] | None:
    if req.kind != "Pod" or req.resource != "pods" or req.sub_resource:
        return None
    if req.operation != "CREATE":
        return None
    return req.object


def _warning(text: str, whole: str | None = None) -> str:
    """``text`` as a warning: cut to ``WARNING_CHARS`` (at a word unless that drops a long
    one, a field path), saying where it is ``whole``."""
    if len(text) <= WARNING_CHARS:
        return text
    tail = f"… (see {whole})" if whole else "…"
    head = text[: WARNING_CHARS - len(tail)]
    word = head.rsplit(" ", 1)[0]
    return (word if len(word) * 4 > len(head) * 3 else head) + tail


def _copied_removed(pod: dict[str, Any], keep: Iterable[str] = ()) -> Patch:
    """``APPORTION_ONLY`` keys the pod was created with, but those the answer sets (``keep``)
    removed: only copied (a waiting pod's placement would read as an admission, a
    nomination would go first, a victim's eviction mark would have this pod evicted)."""
    metadata = pod.get("metadata") or {}
    kept = set(keep)
    return [
        operation
        for part in ("labels", "annotations")
        for operation in remove_metadata(
            pod, part, sorted(APPORTION_ONLY & (metadata.get(part) or {}).keys() - kept)
        )
    ]


def _shadow_note(pod: dict[str, Any], text: str, workload: str = "") -> Verdict:
    """Shadow mode's answer: the pod goes through as if Apportion were not there, with
    what enforcing would have done in its annotation."""
    patch = _copied_removed(pod) + set_metadata(pod, "annotations", {keys.ANNOTATION_SHADOW: text})
    return Verdict(allow(patch), "shadow", workload)


def _waiting(workload: Workload, reason: Reason, message: str) -> WorkloadDecision:
    return WorkloadDecision(
        workload=workload.name,
        queue=workload.queue,
        outcome=Outcome.PENDING,
        reason=reason,
        message=message,
    )


def _decision_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Decision labels/annotations a user changed, the queue or gang of a pod Apportion
    decided, and a removed gate."""

    def gated(pod: dict[str, Any]) -> bool:
        return keys.GATE in gate_names(pod.get("spec") or {})

    metadata = old.get("metadata") or {}
    guarded = APPORTION_ONLY
    if decided_workload(old) is not None:
        # Checked and decided: only then Apportion's. A gated pod it never decided (a
        # stray, ``strays.py``, also one copied with a decision of another namespace) is
        # checked when the controller adopts it, and until then its user may fix what
        # keeps it out (its queue, its gang's size).
        guarded |= keys.RECORDED_KEYS
    changed: list[str] = []
    for part in ("labels", "annotations"):
        before = metadata.get(part) or {}
        after = (new.get("metadata") or {}).get(part) or {}
        for key in sorted(guarded):
            if before.get(key) != after.get(key):
                changed.append(f"{part[:-1]} {key}")

    if gated(old) and not gated(new):
        changed.append(f"the scheduling gate {keys.GATE}")
    return changed
