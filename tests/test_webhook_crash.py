"""Nothing is lost when a controller replica dies at any point of its work (hypothesis).

Everything the controller decides is recorded on the pods, so that a restarted replica
rebuilds the same state from a list. Here replica A runs against kubefake on a drawn
cluster (waiting one-pod workloads and gangs of 2–3, whole GPUs or MIG slices, priorities;
running workloads they may preempt; the queue's quota) until K of its writes have landed,
and is killed there: the fake refuses every later write of A's (``Fake.fail(...,
client=...)``), then A is stopped. Replica B, a fresh ``LiveCluster`` as a restarted
process has, runs until quiet. What B leaves must keep every gang whole, give no device
twice nor one Apportion does not own, keep the queue within its quota, leave every waiting
pod gated with a reason and saying it waits (not ``decision: admitted``, nor a placement:
``test_a_gang_a_dead_replica_admitted_in_part_that_then_waits_says_it_waits``), leave
what A released where A placed it, untouched, and end each
workload as one replica that never crashed does (admitted, evicted, or waiting for the
same reason).

Where A died between the evictions of a gang victim's pods, B completes that eviction:
A marked every pod of it before the first eviction (``evicted-for``), and B evicts the
rest, whatever its own decision would pick
(``test_a_gang_victims_eviction_a_dead_replica_started_is_completed_by_the_next``; before
the mark B saw a gang whose member ended, kept running, and might evict another workload
in its place). Every workload's end is compared with the clean run's.

Writes counted: every POST, PUT, PATCH and DELETE A sends (``kubefake.WRITES``): pod
patches (placements, releases, reasons, nominations), evictions and Events. An Event
changes nothing the controller reads back, but a process dies between two writes whatever
they are, so each is a crash point. K ranges over 0 to the writes a clean run makes, one
within a gang's admission or just after an eviction drawn as often as any. The workers
make one call at a time (``api_concurrency=1``), so a run's writes come in one order and
an example replays as it ran.

``APPORTION_PROPERTY_SCALE=10`` runs ten times the examples (30 take about 30 s).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from controller_support import SETTINGS, TEAM_A, eventually, gates_of, waiting_pod
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from kubefake import WRITES, Fake, running_fake

from scheduler.model import Quota
from scheduler.reasons import Reason
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.controller import Controller
from webhook.kubeapi import KubeApi
from webhook.metrics import Metrics
from webhook.pods import ANNOTATION_PLACEMENT, parse_placement

NAMESPACE = "gpu-team-a"
TEMPLATE = "patched-gpu-1"
"""The recorded gated pod the scenario's pods are made from (``waiting_pod``), then
deleted: adopted by whichever replica sees it first, it would race with the others."""
MIG = "nvidia.com/mig-1g.10gb"
FOREVER = 10**9
ONE_CALL_AT_A_TIME = replace(
    SETTINGS, tick_s=0.1, debounce_s=0.02, watch_timeout_s=1, api_concurrency=1
)
"""Fast cycles, and each cycle's writes in one order, so that an example replays."""

SCALE = float(os.environ.get("APPORTION_PROPERTY_SCALE", "1"))
"""Multiplies max_examples, as in test_allocator_properties.py."""

Device = tuple[str, int, int | None]
"""(node, GPU index, MIG slice start): None for the whole GPU."""


# ----------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Ask:
    """A workload of ``pods`` pods (a gang if more than one), each asking ``gpus`` whole
    H100s or, with ``mig``, one 1g.10gb slice."""

    name: str
    pods: int
    gpus: int
    mig: bool
    priority: int

    def pod_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.pods)] if self.pods > 1 else [self.name]


@dataclass(frozen=True)
class Scenario:
    """Workloads waiting, workloads running (admitted and bound: preemption victims for
    those of higher priority, the queue preempting ``LowerPriority`` within itself), and
    the queue's nominal quota of whole GPUs and of MIG slices."""

    waiting: tuple[Ask, ...]
    running: tuple[Ask, ...]
    quota: int
    mig_quota: int


@functools.cache
def givable() -> frozenset[Device]:
    """The devices of the recorded cluster that are Apportion's to give: not held by the
    recorded pods it does not manage (as a replica with no queue sees them)."""
    with running_fake() as fake:
        cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
        controller = Controller(
            KubeApi(fake.api_client()), cluster, ONE_CALL_AT_A_TIME, Metrics(cluster), queues=list
        )
        controller.start()
        try:
            eventually(controller.synced)
            nodes = cluster.snapshot().nodes
        finally:
            _stop(fake, controller)
    devices: set[Device] = set()
    for node in nodes:
        for gpu in node.gpus:
            if gpu.mig is None:
                devices |= set() if gpu.held else {(node.name, gpu.index, None)}
            else:
                devices |= {(node.name, gpu.index, s.start) for s in gpu.mig if not s.held}
    return frozenset(devices)


def running_placements(scenario: Scenario) -> dict[str, str]:
    """Where each running pod is placed: first fit on the free whole GPUs, node by node."""
    free = sorted((node, gpu) for node, gpu, start in givable() if start is None)
    placements = {}
    for ask in scenario.running:
        for name in ask.pod_names():
            node = next(n for n, _ in free if sum(m == n for m, _ in free) >= ask.gpus)
            gpus = [g for n, g in free if n == node][: ask.gpus]
            free = [(n, g) for n, g in free if n != node or g not in gpus]
            placements[name] = f"{node}:{','.join(map(str, gpus))}"
    return placements


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    quota = draw(st.sampled_from([4, 6, 9]))  # of the 9 whole GPUs free
    room = quota
    running = []
    for i in range(draw(st.integers(0, 2))):
        pods, gpus = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        if pods * gpus <= room:
            priority = draw(st.sampled_from([0, 5]))
            running.append(Ask(f"r{i}", pods, gpus, mig=False, priority=priority))
            room -= pods * gpus
    waiting = []
    for i in range(draw(st.integers(1, 4))):
        pods = draw(st.sampled_from([1, 1, 2, 3]))
        mig = draw(st.sampled_from([False, False, False, True]))
        gpus = 1 if mig else draw(st.integers(1, 3))
        priority = draw(st.sampled_from([0, 5, 10, 100]))
        waiting.append(Ask(f"w{i}", pods, gpus, mig, priority))
    return Scenario(tuple(waiting), tuple(running), quota, draw(st.sampled_from([2, 14])))


def _seed(fake: Fake, scenario: Scenario) -> None:
    """The scenario's pods in the recorded cluster: waiting ones as the webhook leaves
    them, running ones admitted, bound and placed first fit on the free whole GPUs."""
    fake.put_namespace(NAMESPACE, {keys.NAMESPACE_ENABLED: "true"})

    def pod_of(ask: Ask, name: str) -> dict[str, Any]:
        return waiting_pod(
            fake,
            name,
            gpus=ask.gpus,
            priority=ask.priority,
            workload=f"{NAMESPACE}/{ask.name}",
            gang=ask.pods if ask.pods > 1 else None,
        )

    for ask in scenario.waiting:
        for name in ask.pod_names():
            pod = pod_of(ask, name)
            if ask.mig:
                resources = pod["spec"]["containers"][0]["resources"]
                for part in ("limits", "requests"):
                    del resources[part]["nvidia.com/gpu"]
                    resources[part][MIG] = "1"
                fake.put_pod(pod)
    placements = running_placements(scenario)
    for ask in scenario.running:
        for name in ask.pod_names():
            pod = pod_of(ask, name)
            pod["metadata"]["annotations"] |= {
                keys.ANNOTATION_DECISION: "admitted",
                ANNOTATION_PLACEMENT: placements[name],
            }
            pod["spec"]["schedulingGates"] = []
            fake.put_pod(pod)
            fake.bind(NAMESPACE, name, placements[name].split(":")[0])
            fake.set_pod_phase(NAMESPACE, name, "Running")
    fake.delete_pod(NAMESPACE, TEMPLATE)


# ------------------------------------------------------------------------------ replicas
def _replica(fake: Fake, name: str, scenario: Scenario) -> Controller:
    """A controller process of its own: its own cache, and its own client (User-Agent
    ``name``, which the fake tells its requests by)."""
    queue = TEAM_A.model_copy(
        update={
            "quota": {
                "H100-80GB": Quota(nominal=scenario.quota),
                "mig-1g.10gb": Quota(nominal=scenario.mig_quota),
            }
        }
    )
    client = fake.api_client()
    client.user_agent = name
    cluster = LiveCluster(clock=time.time, intent_ttl_s=30)
    return Controller(
        KubeApi(client, ONE_CALL_AT_A_TIME.api_timeout_s),
        cluster,
        ONE_CALL_AT_A_TIME,
        Metrics(cluster),
        queues=lambda: [queue],
    )


def _writes(fake: Fake, client: str) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.client == client and r.method in WRITES]


def _quiet(fake: Fake, controller: Controller, client: str) -> bool:
    """Whether two whole passes of the controller's loop wrote nothing: it settled."""
    before = len(_writes(fake, client))
    passes = controller.stuck_reviews
    eventually(lambda: controller.stuck_reviews >= passes + 2)
    return len(_writes(fake, client)) == before


def _stop(fake: Fake, controller: Controller) -> None:
    """Stop the controller, its informers woken by bookmarks rather than left to wait for
    their watches to time out."""
    stopping = threading.Thread(target=controller.stop)
    stopping.start()
    while stopping.is_alive():
        fake.send_bookmark()
        stopping.join(0.02)


# ---------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class PodRecord:
    """What the cluster says of one pod: its workload, whether it still carries a gate,
    where Apportion placed it, why it waits and what it was decided."""

    workload: str
    gated: bool
    placement: str | None
    reason: str | None
    decision: str | None


Pods = dict[str, PodRecord]
"""The scenario's pods that exist, by name."""


def _pods(fake: Fake, scenario: Scenario) -> Pods:
    names = {n for a in scenario.waiting + scenario.running for n in a.pod_names()}
    items, _ = fake.store.list(
        fake.rtype("pods"), NAMESPACE, lambda pod: pod["metadata"]["name"] in names
    )
    records = {}
    for pod in items:
        name = pod["metadata"]["name"]
        annotations = pod["metadata"].get("annotations") or {}
        records[name] = PodRecord(
            annotations.get(keys.ANNOTATION_WORKLOAD, f"{NAMESPACE}/{name}"),
            bool(gates_of(pod)),
            annotations.get(ANNOTATION_PLACEMENT),
            annotations.get(keys.ANNOTATION_REASON),
            annotations.get(keys.ANNOTATION_DECISION),
        )
    return records


@dataclass(frozen=True)
class CleanRun:
    writes: list[tuple[str, str]]
    """(method, path) of every write, in order."""
    pods: Pods


def _run(fake: Fake, scenario: Scenario, name: str, stop: Callable[[], bool] | None = None) -> None:
    """Replica ``name`` from its start until it is quiet (or ``stop`` says so), stopped."""
    controller = _replica(fake, name, scenario)
    controller.start()
    try:
        eventually(controller.synced)
        eventually(lambda: (stop is not None and stop()) or _quiet(fake, controller, name))
    finally:
        _stop(fake, controller)


@functools.lru_cache(maxsize=16)
def _clean_run(scenario: Scenario) -> CleanRun:
    """What one replica that never crashes leaves, and the writes it makes on the way."""
    with running_fake() as fake:
        _seed(fake, scenario)
        _run(fake, scenario, "clean")
        return CleanRun(_writes(fake, "clean"), _pods(fake, scenario))


@dataclass(frozen=True)
class CrashRun:
    cut: bool
    """Whether A tried a write past the K-th (False: it settled within K)."""
    at_crash: Pods
    after: Pods
    """Once B has settled."""
    written_by_b: list[tuple[str, str]]


def _crash_run(scenario: Scenario, k: int) -> CrashRun:
    """Replica A killed once K of its writes have landed, then replica B until quiet."""
    with running_fake() as fake:
        _seed(fake, scenario)
        killed = fake.fail(".*", method=WRITES, after=k, times=FOREVER, status=503, client="a")
        _run(fake, scenario, "a", stop=lambda: killed.times < FOREVER)
        at_crash = _pods(fake, scenario)
        _run(fake, scenario, "b")
        return CrashRun(killed.times < FOREVER, at_crash, _pods(fake, scenario), _writes(fake, "b"))


# ---------------------------------------------------------------------------- invariants
def _members(pods: Pods) -> dict[str, dict[str, PodRecord]]:
    by_workload: dict[str, dict[str, PodRecord]] = {}
    for name, pod in pods.items():
        by_workload.setdefault(pod.workload, {})[name] = pod
    return by_workload


def _admitted(pods: Pods) -> set[str]:
    """Workloads whose every pod still there is released."""
    return {
        w for w, members in _members(pods).items() if not any(p.gated for p in members.values())
    }


def _claims(placement: str) -> list[Device]:
    parsed = parse_placement(placement)
    assert parsed is not None, placement
    if parsed.mig_start is not None:
        return [(parsed.node, parsed.gpus[0], parsed.mig_start)]
    return [(parsed.node, gpu, None) for gpu in parsed.gpus]


ADMITTED_NOW = {Reason.ADMITTED.value, Reason.ADMITTED_BORROWING.value}
"""The reasons of an admission made at once, which a waiting pod must not show (one that
waits for its victims says ``AdmittedByPriorityPreemption: waits …``)."""


def _violations(scenario: Scenario, pods: Pods) -> list[str]:
    """What a platform engineer relies on, broken: a gang partly released, a released pod
    without its placement, a device given twice or not Apportion's to give, the queue
    past its quota, a waiting pod without its reason or saying it was admitted (its
    decision, a placement, or an admission's reason)."""
    problems = []
    for workload, members in sorted(_members(pods).items()):
        released = sorted(n for n, p in members.items() if not p.gated)
        if released and len(released) < len(members):
            problems.append(f"{workload} partly released: {released} of {sorted(members)}")
    claimed: dict[Device, str] = {}
    whole = slices = 0
    for name, pod in sorted(pods.items()):
        if pod.gated:
            if not pod.reason:
                problems.append(f"{name} waits without a reason")
            claims = (pod.reason or "").split(":")[0] in ADMITTED_NOW
            if pod.decision == "admitted" or pod.placement is not None or claims:
                problems.append(f"{name} waits, yet says it was admitted: {pod}")
            continue
        if pod.placement is None:
            problems.append(f"{name} released without a placement")
            continue
        for device in _claims(pod.placement):
            node, gpu, start = device
            if device not in givable():
                problems.append(f"{name} placed on {device}, not Apportion's to give")
            overlapping = [device] if start is None else [device, (node, gpu, None)]
            for other in overlapping:
                if other in claimed:
                    problems.append(f"{name} and {claimed[other]} both placed on {other}")
            claimed[device] = name
            whole += start is None
            slices += start is not None
    if whole > scenario.quota:
        problems.append(f"{whole} whole GPUs admitted, past the quota of {scenario.quota}")
    if slices > scenario.mig_quota:
        problems.append(f"{slices} MIG slices admitted, past the quota of {scenario.mig_quota}")
    return problems


def _pod_written(path: str) -> str | None:
    """The pod a patch or an eviction is sent to."""
    written = re.fullmatch(rf"/api/v1/namespaces/{NAMESPACE}/pods/([^/]+)(/eviction)?", path)
    return written and written.group(1)


def _admitted_twice(crash: CrashRun, scenario: Scenario) -> list[str]:
    """The pods A released that B patched, evicted or placed elsewhere."""
    running = {n for a in scenario.running for n in a.pod_names()}
    problems = []
    for name, pod in sorted(crash.at_crash.items()):
        if pod.gated or name in running:
            continue
        after = crash.after.get(name)
        if after is None or after.placement != pod.placement:
            problems.append(f"{name} released by A on {pod.placement}, then {after} under B")
        touched = [w for w in crash.written_by_b if _pod_written(w[1]) == name]
        if touched:
            problems.append(f"{name} released by A, then written by B: {touched}")
    return problems


def _outcomes(scenario: Scenario, pods: Pods) -> dict[str, str]:
    """Each workload's end: admitted, evicted, or the reason its pods wait."""
    members = _members(pods)
    outcomes = {}
    for ask in scenario.waiting + scenario.running:
        workload = f"{NAMESPACE}/{ask.name}"
        there = members.get(workload, {})
        if not there:
            outcomes[ask.name] = "evicted"
        elif workload in _admitted(pods):
            outcomes[ask.name] = "admitted"
        else:
            reasons = {(p.reason or "").split(":")[0] for p in there.values()}
            outcomes[ask.name] = "waits: " + "/".join(sorted(reasons))
    return outcomes


# ------------------------------------------------------------------------------ property
ANYWHERE, WITHIN_A_GANG, AFTER_AN_EVICTION = "anywhere", "within a gang", "after an eviction"


def _crash_point(scenario: Scenario, clean: CleanRun, where: str, pick: int) -> int:
    """How many of A's writes land: ``pick`` among the points ``where`` says, of the
    clean run's writes: any number of them, one within a gang's admission (its members'
    last patches, each recorded then each released: after the first, up to the last), or
    one just after an eviction (any number where the clean run makes no such write)."""
    within_gangs: list[int] = []
    admitted = _admitted(clean.pods)
    for ask in scenario.waiting:
        if ask.pods > 1 and f"{NAMESPACE}/{ask.name}" in admitted:
            names = ask.pod_names()
            patches = [i for i, (_, path) in enumerate(clean.writes) if _pod_written(path) in names]
            admission = patches[-2 * ask.pods :]
            within_gangs += range(admission[0] + 1, admission[-1] + 1)
    points = {
        ANYWHERE: list(range(len(clean.writes) + 1)),
        WITHIN_A_GANG: within_gangs,
        AFTER_AN_EVICTION: [
            i + 1 for i, (_, path) in enumerate(clean.writes) if path.endswith("/eviction")
        ],
    }
    chosen = points[where] or points[ANYWHERE]
    return chosen[pick % len(chosen)]


def _where_cut(scenario: Scenario, crash: CrashRun) -> set[str]:
    """What the crash interrupted, read from what A left."""
    if not crash.cut:
        return {"A settled before its K-th write"}
    kinds = {"A killed"}
    left = crash.at_crash
    for ask in scenario.waiting:
        members = [left[name] for name in ask.pod_names()]
        if ask.pods > 1 and any(p.placement for p in members) and any(p.gated for p in members):
            kinds.add("mid-gang")
    given = {d for pod in left.values() if pod.placement for d in _claims(pod.placement)}
    if _victims_cut_in_part(scenario, crash):
        kinds.add("a gang victim's eviction cut short")
    placements = running_placements(scenario)
    for ask in scenario.running:
        gone = [name for name in ask.pod_names() if name not in left]
        freed = {d for name in gone for d in _claims(placements[name])}
        if freed and not freed & given:
            kinds.add("victim evicted, its room not given yet")
    return kinds


def _victims_cut_in_part(scenario: Scenario, crash: CrashRun) -> set[str]:
    """The gang victims A had evicted in part when it died: some pods gone, some not."""
    return {
        ask.name
        for ask in scenario.running
        if 0 < len(set(ask.pod_names()) & crash.at_crash.keys()) < ask.pods
    }


GANG_VICTIM = Scenario(
    waiting=(Ask("w0", pods=2, gpus=2, mig=False, priority=5),),
    running=(
        Ask("r0", pods=1, gpus=1, mig=False, priority=0),
        Ask("r1", pods=2, gpus=2, mig=False, priority=0),
    ),
    quota=6,
    mig_quota=2,
)
"""A gang victim of two pods (r1) for a gang of a higher priority (w0), beside a smaller
workload (r0) that no clean run evicts: the half-evicted victim the property found."""

REACHED: Counter[str] = Counter()
"""What the crashes interrupted, over the property's examples."""


@settings(
    max_examples=max(1, round(30 * SCALE)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    scenario=scenarios(),
    where=st.sampled_from([ANYWHERE, WITHIN_A_GANG, AFTER_AN_EVICTION]),
    pick=st.integers(0, 1000),
)
# The two cuts the test below requires, reached in every run (drawn, they were missed in
# about one run of five): a gang half admitted, a victim's room freed and not yet given.
@example(
    scenario=Scenario((Ask("w0", pods=2, gpus=1, mig=False, priority=5),), (), 6, 2),
    where=WITHIN_A_GANG,
    pick=0,
)
@example(
    scenario=GANG_VICTIM,
    where=AFTER_AN_EVICTION,
    pick=0,
)
def crash_and_restart(scenario: Scenario, where: str, pick: int) -> None:
    clean = _clean_run(scenario)
    assert _violations(scenario, clean.pods) == []
    crash = _crash_run(scenario, _crash_point(scenario, clean, where, pick))
    for kind in sorted(_where_cut(scenario, crash)):
        event(kind)
        REACHED[kind] += 1
    assert _violations(scenario, crash.after) == []
    assert _admitted_twice(crash, scenario) == []
    assert _outcomes(scenario, crash.after) == _outcomes(scenario, clean.pods)


def test_a_replica_killed_at_any_write_leaves_nothing_a_restart_does_not_complete() -> None:
    REACHED.clear()
    crash_and_restart()
    assert REACHED["mid-gang"] and REACHED["victim evicted, its room not given yet"], REACHED


def test_a_gang_victims_eviction_a_dead_replica_started_is_completed_by_the_next() -> None:
    """What the property found. r1 (two pods of 2 GPUs) is to be evicted for gang w0 (two
    pods of 2 GPUs; quota 6, 5 in use with r0's 1). A dies once r1-0's eviction has
    landed, and r1-0 ends at once. Was: B saw r1 as a gang whose member ended (kept
    running, for its owner to replace it): 3 GPUs in use, w0 needs 4, so B evicted r0,
    which no clean run touches, and r1-1 ran on without its peer; nothing recorded r1's
    eviction before it started. A marks both r1 pods first (``evicted-for``), and B
    completes r1's eviction, as a clean run does."""
    scenario = GANG_VICTIM
    clean = _clean_run(scenario)
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    assert clean.writes[:3] == [
        ("PATCH", f"{pods}/r1-0"),  # the marks, before any eviction
        ("PATCH", f"{pods}/r1-1"),
        ("POST", f"{pods}/r1-0/eviction"),
    ]
    crash = _crash_run(scenario, 3)
    assert _victims_cut_in_part(scenario, crash) == {"r1"}
    evicted = [w for w in crash.written_by_b if w[1].endswith("/eviction")]
    assert evicted == [("POST", f"{pods}/r1-1/eviction")]
    assert _violations(scenario, crash.after) == []
    assert (
        _outcomes(scenario, crash.after)
        == _outcomes(scenario, clean.pods)
        == {
            "w0": "admitted",
            "r0": "admitted",
            "r1": "evicted",
        }
    )


def test_a_gang_a_dead_replica_admitted_in_part_that_then_waits_says_it_waits() -> None:
    """A records w0-0's admission (decision, reason, placement: still gated) and dies
    before w0-1's. Meanwhile the webhook admits n0 at creation onto the GPUs A recorded
    for w0-0 (nothing holds them: w0's record is not whole), and w0 no longer fits its
    queue's quota. Was: B left w0 waiting, and wrote w0-0's reason, but w0-0 went on
    saying ``decision: admitted`` and its placement, on n0's GPUs. It says it waits."""
    scenario = Scenario((Ask("w0", pods=2, gpus=2, mig=False, priority=5),), (), 4, 2)
    with running_fake() as fake:
        _seed(fake, scenario)
        killed = fake.fail(".*", method=WRITES, after=1, times=FOREVER, status=503, client="a")
        _run(fake, scenario, "a", stop=lambda: killed.times < FOREVER)
        recorded = _pods(fake, scenario)["w0-0"]
        assert recorded.gated and recorded.decision == "admitted" and recorded.placement
        _admitted_at_creation(fake, "n0", like="w0-1", placement=recorded.placement)
        _run(fake, scenario, "b")
        pods = _pods(fake, scenario)
    assert _violations(scenario, pods) == []
    quota = "QuotaExhausted: queue team-a at nominal H100-80GB quota 2/4; needs 4"
    for name in ("w0-0", "w0-1"):
        assert (pods[name].gated, pods[name].decision, pods[name].placement) == (
            True,
            "pending",
            None,
        )
        assert pods[name].reason == quota


def _admitted_at_creation(fake: Fake, name: str, like: str, placement: str) -> None:
    """A pod of its own, ``like`` that pod's ask, admitted by the webhook at creation on
    ``placement``, bound and running."""
    pod = copy.deepcopy(fake.get("pods", like, NAMESPACE))
    metadata = pod["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        metadata.pop(key, None)
    metadata["name"] = name
    metadata["labels"].pop(keys.LABEL_GANG, None)
    metadata["annotations"] = {
        keys.ANNOTATION_WORKLOAD: f"{NAMESPACE}/{name}",
        keys.ANNOTATION_DECISION: "admitted",
        ANNOTATION_PLACEMENT: placement,
    }
    pod["spec"]["schedulingGates"] = []
    fake.put_pod(pod)
    fake.bind(NAMESPACE, name, placement.split(":")[0])
    fake.set_pod_phase(NAMESPACE, name, "Running")


def test_a_gang_victim_a_disruption_budget_lets_go_one_pod_at_a_time_is_completed() -> None:
    """The same scenario without a crash: a PodDisruptionBudget refuses r1-1's eviction
    (429) while r1-0's is made and r1-0 ends at once. Was: the next cycles saw r1 as a gang
    of one pod, 3 GPUs in use, and evicted r0 for w0. r1's marks make its eviction one
    under way: every cycle evicts r1-1 again, none evicts r0, and w0 waits for r1-1."""
    scenario = GANG_VICTIM
    with running_fake() as fake:
        _seed(fake, scenario)
        fake.block_evictions(NAMESPACE, "r1-1")
        controller = _replica(fake, "one", scenario)
        controller.start()
        try:
            eventually(controller.synced)
            eventually(lambda: len([e for e in fake.evictions if e["name"] == "r1-1"]) >= 3)
            reason = _pods(fake, scenario)["w0-0"].reason or ""
            assert reason.startswith(
                "AdmittedByPriorityPreemption: waits for the workloads it preempts to end"
            ), reason
            verdict = controller.cluster.last_decisions()[f"{NAMESPACE}/w0"]
            assert verdict.victims == (f"{NAMESPACE}/r1",)
            assert verdict.message.endswith(f"it preempts is under way: {NAMESPACE}/r1"), verdict
            fake.allow_evictions()
            eventually(lambda: _quiet(fake, controller, "one"))
        finally:
            _stop(fake, controller)
        assert {e["name"] for e in fake.evictions} == {"r1-0", "r1-1"}
        pods = _pods(fake, scenario)
    assert _violations(scenario, pods) == []
    assert _outcomes(scenario, pods) == {"w0": "admitted", "r0": "admitted", "r1": "evicted"}
