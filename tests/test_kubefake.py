"""The kube-apiserver fake, driven by the real `kubernetes` client over HTTP.

Each test checks a behaviour the recordings (tests/fixtures/objects) or the rules observed on a
real v1.36 server (gated-pod rules, Status bodies) fix, so the fake can be trusted as the
controller's stand-in.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import urllib3
from kubefake import (
    SPEC_FORBIDDEN,
    WRITES,
    ApiError,
    Fake,
    json_patch,
    running_fake,
    strategic_merge_patch,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

OBJECTS = Path(__file__).parent / "fixtures" / "objects"
NS = "gpu-team-a"
GATE = "apportion.io/admission"
PRODUCT = "nvidia.com/gpu.product"


def recorded(name: str) -> dict:
    return json.loads((OBJECTS / name).read_text())


@pytest.fixture
def fake() -> Iterator[Fake]:
    with running_fake() as running:
        yield running


@pytest.fixture
def core(fake: Fake) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(fake.api_client())


def raw(response: urllib3.BaseHTTPResponse) -> dict:
    return json.loads(response.data)


def status_of(error: ApiException) -> dict:
    return json.loads(error.body)


def events(fake: Fake, func, count: int, **kwargs) -> list[tuple[str, dict]]:
    """The first `count` watch events as (type, raw object)."""
    seen: list[tuple[str, dict]] = []
    watch = Watch()
    for event in watch.stream(func, **kwargs):
        seen.append((event["type"], event["raw_object"]))
        if len(seen) == count:
            watch.stop()
            break
    return seen


def gated_pod(name: str) -> dict:
    """The recorded gated pod, renamed, carrying the acceptable models and a node selector."""
    pod = recorded("pod-gated-by-webhook-patch.json")
    pod["metadata"] = {"name": name, "namespace": NS, "labels": {"apportion.io/queue": "team-a"}}
    pod.pop("status")
    pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": PRODUCT,
                                "operator": "In",
                                "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    return pod


# ---- shapes: what the recordings hold ------------------------------------------------------
def test_lists_and_gets_are_the_recorded_bodies(core: kubernetes.client.CoreV1Api) -> None:
    assert raw(core.list_node(_preload_content=False)) == recorded("nodelist.json")
    podlist = raw(core.list_namespaced_pod(NS, _preload_content=False))
    assert podlist == recorded("podlist-gpu-team-a.json")
    assert all("apiVersion" not in item and "kind" not in item for item in podlist["items"])
    for file, name in [
        ("pod-bound-gpu-1.json", "train-gpu-1"),
        ("pod-bound-gpu-8-priorityclass.json", "train-gpu-8"),
        ("pod-ungated-with-nodeselector-bound.json", "gated-gpu-2"),
        ("pod-gated-by-webhook-patch.json", "patched-gpu-1"),
    ]:
        assert raw(core.read_namespaced_pod(name, NS, _preload_content=False)) == recorded(file)
    for file, name in [
        ("node-gpu-node-a-8xH100.json", "gpu-node-a"),
        ("node-mig-node-c-mig-1g.10gb.json", "mig-node-c"),
    ]:
        assert raw(core.read_node(name, _preload_content=False)) == recorded(file)


def test_typed_client_reads_and_404_status(core: kubernetes.client.CoreV1Api) -> None:
    pods = core.list_pod_for_all_namespaces()
    assert pods.metadata.resource_version == "314"
    assert {p.metadata.name for p in pods.items} == {
        "gang-train-0-6lttv",
        "gang-train-1-x7ffl",
        "gated-gpu-2",
        "patched-gpu-1",
        "train-gpu-1",
        "train-gpu-8",
    }
    assert core.read_namespaced_pod("patched-gpu-1", NS).spec.scheduling_gates[0].name == GATE
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", NS)
    assert missing.value.status == 404
    assert status_of(missing.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }


def test_selectors(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    def names(**selectors: str) -> list[str]:
        return [p.metadata.name for p in core.list_pod_for_all_namespaces(**selectors).items]

    assert names(field_selector="spec.nodeName=gpu-node-a") == [
        "gang-train-1-x7ffl",
        "gated-gpu-2",
        "train-gpu-1",
    ]
    assert names(field_selector="spec.nodeName=") == ["patched-gpu-1"]
    assert names(field_selector="metadata.name=train-gpu-8,spec.nodeName!=gpu-node-a") == [
        "train-gpu-8"
    ]
    assert names(
        label_selector="apportion.io/gang=gang-train,batch.kubernetes.io/job-"
        "completion-index in (1)"
    ) == ["gang-train-1-x7ffl"]
    assert names(label_selector="!apportion.io/gang,app") == [
        "gated-gpu-2",
        "patched-gpu-1",
        "train-gpu-1",
        "train-gpu-8",
    ]
    with pytest.raises(ApiException) as refused:
        names(field_selector="spec.priority=0")
    assert (refused.value.status, status_of(refused.value)["message"]) == (
        400,
        "field label not supported: spec.priority",
    )
    fake.put_namespace(NS, {"apportion.io/enabled": "true"})
    opted_in = core.list_namespace(label_selector="apportion.io/enabled=true")
    assert [n.metadata.name for n in opted_in.items] == [NS]


def test_lists_in_pages_read_one_snapshot(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    """``limit`` and ``continue`` as kube-apiserver serves them from etcd: each page but the
    last names the rest, all at the first page's resourceVersion, whatever changed since."""
    whole = raw(core.list_pod_for_all_namespaces(_preload_content=False))
    first = raw(core.list_pod_for_all_namespaces(limit=4, _preload_content=False))
    assert first["metadata"]["resourceVersion"] == whole["metadata"]["resourceVersion"]
    assert first["metadata"]["remainingItemCount"] == 2
    token = first["metadata"]["continue"]
    assert json.loads(base64.urlsafe_b64decode(token))["rv"] == 314
    core.delete_namespaced_pod(whole["items"][-1]["metadata"]["name"], NS, grace_period_seconds=0)
    now = raw(core.list_pod_for_all_namespaces(_preload_content=False))
    assert len(now["items"]) == len(whole["items"]) - 1
    rest = raw(core.list_pod_for_all_namespaces(limit=4, _continue=token, _preload_content=False))
    assert rest["metadata"] == {"resourceVersion": "314"}  # the last page: no continue
    assert first["items"] + rest["items"] == whole["items"]  # the deletion is not seen
    selected = raw(
        core.list_pod_for_all_namespaces(
            limit=1, label_selector="apportion.io/gang=gang-train", _preload_content=False
        )
    )
    assert "remainingItemCount" not in selected["metadata"]  # unknown under a selector
    assert [p["metadata"]["name"] for p in selected["items"]] == ["gang-train-0-6lttv"]


def test_a_list_continued_after_a_compaction_is_410(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    token = core.list_pod_for_all_namespaces(limit=2).metadata._continue
    fake.set_pod_phase(NS, "train-gpu-1", "Running")
    fake.expire_history()
    with pytest.raises(ApiException) as gone:
        core.list_pod_for_all_namespaces(limit=2, _continue=token)
    assert (gone.value.status, status_of(gone.value)["reason"]) == (410, "Expired")
    assert status_of(gone.value)["message"].startswith(
        "The provided continue parameter is too old to display a consistent list result."
    )
    with pytest.raises(ApiException) as bad:
        core.list_pod_for_all_namespaces(limit=2, _continue="not-a-token")
    assert bad.value.status == 400


# ---- watch ---------------------------------------------------------------------------------
def test_watch_replays_changes_after_a_resource_version_in_order(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    start = core.list_namespaced_pod(NS).metadata.resource_version
    fake.put_pod(gated_pod("new-pod"))
    core.patch_namespaced_pod("new-pod", NS, [{"op": "remove", "path": "/spec/schedulingGates"}])
    fake.bind(NS, "new-pod", "gpu-node-b")
    fake.delete_pod(NS, "new-pod")
    seen = events(fake, core.list_namespaced_pod, 4, namespace=NS, resource_version=start)
    assert [t for t, _ in seen] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in seen]
    assert versions == list(range(int(start) + 1, int(start) + 5))
    assert all((o["apiVersion"], o["kind"]) == ("v1", "Pod") for _, o in seen)
    assert seen[2][1]["spec"]["nodeName"] == "gpu-node-b"
    assert seen[2][1]["status"]["conditions"][0]["status"] == "True"


def test_watch_streams_live_changes_and_bookmarks(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    start = core.list_node().metadata.resource_version
    seen: list[tuple[str, str]] = []
    watch = Watch()
    subscribed = threading.Event()

    def consume() -> None:
        for event in watch.stream(
            core.list_node, resource_version=start, allow_watch_bookmarks=True
        ):
            seen.append((event["type"], event["raw_object"]["metadata"]["resourceVersion"]))
            if len(seen) == 3:
                watch.stop()
                return

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(200):
        if fake.open_watches:
            subscribed.set()
            break
        threading.Event().wait(0.01)
    assert subscribed.is_set()
    node = recorded("node-gpu-node-a-8xH100.json")
    node["metadata"]["labels"]["apportion.io/pool"] = "a"
    fake.put_node(node)
    fake.send_bookmark()
    fake.delete_node("mig-node-c")
    thread.join(5)
    rv = int(start)
    assert seen == [("MODIFIED", str(rv + 1)), ("BOOKMARK", str(rv + 1)), ("DELETED", str(rv + 2))]
    assert watch.resource_version == str(rv + 2)


def test_watch_without_resource_version_starts_with_the_current_state(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    seen = events(fake, core.list_node, 3)
    assert [(t, o["metadata"]["name"]) for t, o in seen] == [
        ("ADDED", "gpu-node-a"),
        ("ADDED", "gpu-node-b"),
        ("ADDED", "mig-node-c"),
    ]


def test_watch_field_selector_sees_pods_enter_and_leave(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    start = core.list_namespaced_pod(NS).metadata.resource_version
    fake.put_pod({**gated_pod("p"), "spec": {**gated_pod("p")["spec"], "schedulingGates": []}})
    fake.bind(NS, "p", "gpu-node-b")
    core.delete_namespaced_pod("p", NS)
    seen = events(
        fake,
        core.list_namespaced_pod,
        2,
        namespace=NS,
        resource_version=start,
        field_selector="spec.nodeName=gpu-node-b",
    )
    assert [t for t, _ in seen] == ["ADDED", "MODIFIED"]  # bound, then Terminating
    assert seen[1][1]["metadata"]["deletionTimestamp"]


def test_watch_from_a_compacted_resource_version_is_410(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    old = core.list_namespaced_pod(NS).metadata.resource_version
    fake.set_pod_phase(NS, "train-gpu-1", "Running")
    fake.expire_history()
    with pytest.raises(ApiException) as gone:
        for _ in Watch().stream(core.list_namespaced_pod, namespace=NS, resource_version=old):
            pass
    assert gone.value.status == 410
    assert gone.value.reason == f"Expired: too old resource version: {old} ({int(old) + 1})"
    # The client retried once by itself before giving up: two watch requests.
    assert len(fake.requests_to(f"/api/v1/namespaces/{NS}/pods")) == 3
    fake.gone_as_http = True
    with pytest.raises(ApiException) as http_gone:
        for _ in Watch().stream(core.list_namespaced_pod, namespace=NS, resource_version=old):
            pass
    assert http_gone.value.status == 410
    assert status_of(http_gone.value)["reason"] == "Expired"
    # A relist gives a resourceVersion the watch accepts again.
    fresh = core.list_namespaced_pod(NS).metadata.resource_version
    fake.set_pod_phase(NS, "train-gpu-1", "Succeeded")
    [(kind, obj)] = events(fake, core.list_namespaced_pod, 1, namespace=NS, resource_version=fresh)
    assert (kind, obj["status"]["phase"]) == ("MODIFIED", "Succeeded")


# ---- pod patches and the gated-pod rules ---------------------------------------------------
def test_json_patch_ungates_with_affinity(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    before = core.read_namespaced_pod("patched-gpu-1", NS).metadata.resource_version
    with pytest.raises(ApiError) as gated:
        fake.bind(NS, "patched-gpu-1", "gpu-node-a")
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": PRODUCT, "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": ["gpu-node-a"],
                            },
                        ]
                    }
                ]
            }
        }
    }
    patched = core.patch_namespaced_pod(
        "patched-gpu-1",
        NS,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": before},
            {"op": "add", "path": "/spec/affinity", "value": affinity},
            {"op": "remove", "path": "/spec/schedulingGates"},
            {
                "op": "add",
                "path": "/metadata/annotations/apportion.io~1decision",
                "value": "admitted",
            },
        ],
    )
    assert patched.spec.scheduling_gates is None
    assert patched.metadata.annotations["apportion.io/decision"] == "admitted"
    assert patched.metadata.resource_version == "315"  # one counter for all objects
    assert patched.metadata.generation == 2
    assert fake.requests[-1].content_type == "application/json-patch+json"
    assert "non-empty .spec.schedulingGates" in str(gated.value)
    fake.bind(NS, "patched-gpu-1", "gpu-node-a")
    assert core.read_namespaced_pod("patched-gpu-1", NS).spec.node_name == "gpu-node-a"


ACCEPTED = {
    "tighten: add a matchExpression": [
        {
            "op": "add",
            "path": "/spec/affinity/nodeAffinity/"
            "requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/-",
            "value": {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-node-a"]},
        }
    ],
    "add a nodeSelector key": [{"op": "add", "path": "/spec/nodeSelector/zone", "value": "a"}],
    "add a toleration": [
        {
            "op": "add",
            "path": "/spec/tolerations/-",
            "value": {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        }
    ],
    "add labels and annotations": [
        {"op": "add", "path": "/metadata/labels/x", "value": "1"},
        {"op": "add", "path": "/metadata/annotations", "value": {"y": "2"}},
    ],
}

TERMS = (
    "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"
)
TERMS_FIELD = TERMS[1:].replace("/", ".")
REJECTED = {
    "narrow the values": (
        [
            {
                "op": "replace",
                "path": f"{TERMS}/0/matchExpressions/0/values",
                "value": ["NVIDIA-H100-80GB-HBM3"],
            }
        ],
        f'{TERMS_FIELD}[0]: Invalid value: {{"MatchExpressions":[{{"Key":"{PRODUCT}","Operator":'
        '"In","Values":["NVIDIA-H100-80GB-HBM3"]}],"MatchFields":null}: only additions are '
        "allowed (no mutations or deletions)",
    ),
    "add a second term (OR)": (
        [
            {
                "op": "add",
                "path": f"{TERMS}/-",
                "value": {
                    "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "Exists"}]
                },
            }
        ],
        f"{TERMS_FIELD}: Invalid value: "
        f'[{{"MatchExpressions":[{{"Key":"{PRODUCT}","Operator":"In","Values":['
        '"NVIDIA-H100-80GB-HBM3","NVIDIA-A100-SXM4-80GB"]}],"MatchFields":null},'
        '{"MatchExpressions":[{"Key":"kubernetes.io/hostname","Operator":"Exists","Values":'
        'null}],"MatchFields":null}]: no additions/deletions to non-empty NodeSelectorTerms '
        "list are allowed",
    ),
    "change a nodeSelector value": (
        [{"op": "replace", "path": "/spec/nodeSelector/nvidia.com~1gpu.present", "value": "x"}],
        'spec.nodeSelector: Invalid value: {"nvidia.com/gpu.present":"x"}: only additions to '
        "spec.nodeSelector are allowed (no mutations or deletions)",
    ),
    "add a scheduling gate": (
        [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": "other.io/gate"}}],
        "spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but found new "
        "scheduling gate 'other.io/gate'",
    ),
    "change resources": (
        [
            {
                "op": "replace",
                "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu",
                "value": "2",
            }
        ],
        f"spec: Forbidden: {SPEC_FORBIDDEN}\n",
    ),
}


@pytest.mark.parametrize("ops", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_gated_pod_accepts(fake: Fake, core: kubernetes.client.CoreV1Api, ops: list) -> None:
    fake.put_pod(gated_pod("g"))
    before = fake.get("pods", "g", NS)
    after = core.patch_namespaced_pod("g", NS, ops, _preload_content=False)
    assert raw(after) == json_patch(before, ops) | {"metadata": raw(after)["metadata"]}
    assert int(raw(after)["metadata"]["resourceVersion"]) > int(
        before["metadata"]["resourceVersion"]
    )


@pytest.mark.parametrize(("ops", "message"), REJECTED.values(), ids=REJECTED.keys())
def test_gated_pod_rejects(
    fake: Fake, core: kubernetes.client.CoreV1Api, ops: list, message: str
) -> None:
    fake.put_pod(gated_pod("g"))
    before = fake.get("pods", "g", NS)
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod("g", NS, ops)
    body = status_of(refused.value)
    assert (refused.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith(f'Pod "g" is invalid: {message}')
    assert body["details"]["causes"][0]["field"] == message.split(":")[0]
    assert fake.get("pods", "g", NS) == before


def test_ungated_pod_placement_is_immutable(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod("gated-gpu-2", NS, {"spec": {"nodeSelector": {"a": "b"}}})
    assert status_of(refused.value)["message"].startswith(
        f'Pod "gated-gpu-2" is invalid: spec: Forbidden: {SPEC_FORBIDDEN}\n'
    )


def test_failed_test_op_is_422_and_changes_nothing(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    before = fake.get("pods", "patched-gpu-1", NS)
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_pod(
            "patched-gpu-1",
            NS,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                {"op": "remove", "path": "/spec/schedulingGates"},
            ],
        )
    assert status_of(refused.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server rejected our request due to an error in our request",
        "reason": "Invalid",
        "details": {},
        "code": 422,
    }
    assert fake.get("pods", "patched-gpu-1", NS) == before


def test_strategic_and_merge_patches(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    pod = core.patch_namespaced_pod(
        "patched-gpu-1",
        NS,
        {
            "metadata": {"labels": {"apportion.io/workload": "w"}},
            "spec": {"schedulingGates": [{"name": GATE, "$patch": "delete"}]},
        },
    )
    assert fake.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert pod.spec.scheduling_gates is None or pod.spec.scheduling_gates == []
    assert pod.metadata.labels == {
        "app": "patched-gpu-1",
        "apportion.io/queue": "team-a",
        "apportion.io/workload": "w",
    }
    pod = core.patch_namespaced_pod(
        "patched-gpu-1",
        NS,
        {"metadata": {"labels": {"app": None}}},
        _content_type="application/merge-patch+json",
    )
    assert "app" not in pod.metadata.labels


def test_put_with_a_stale_resource_version_is_409(core: kubernetes.client.CoreV1Api) -> None:
    pod = core.read_namespaced_pod("train-gpu-1", NS)
    pod.metadata.labels["first"] = "yes"
    core.replace_namespaced_pod("train-gpu-1", NS, pod)
    pod.metadata.labels["second"] = "yes"
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_pod("train-gpu-1", NS, pod)
    assert stale.value.status == 409
    assert status_of(stale.value)["message"] == (
        'Operation cannot be fulfilled on pods "train-gpu-1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


# ---- eviction, events, leases, config maps, custom objects ---------------------------------
def eviction(name: str) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": NS},
    }


def test_eviction_deletes_and_a_pdb_blocks(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    start = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod_eviction("train-gpu-1", NS, eviction("train-gpu-1"))
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("train-gpu-1", NS)
    assert missing.value.status == 404
    seen = events(fake, core.list_namespaced_pod, 2, namespace=NS, resource_version=start)
    assert [(t, bool(o["metadata"].get("deletionTimestamp"))) for t, o in seen] == [
        ("MODIFIED", True),
        ("DELETED", True),
    ]
    response = fake.requests[-3]  # the eviction POST, before the watch
    assert response.path.endswith("/pods/train-gpu-1/eviction")
    fake.block_evictions(NS, "train-gpu-8", pdb="team-a-pdb")
    with pytest.raises(ApiException) as blocked:
        core.create_namespaced_pod_eviction("train-gpu-8", NS, eviction("train-gpu-8"))
    assert blocked.value.status == 429
    assert status_of(blocked.value)["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert core.read_namespaced_pod("train-gpu-8", NS).metadata.deletion_timestamp is None
    # A Job pod keeps its finalizer: it stays Terminating, as on a real server.
    core.create_namespaced_pod_eviction("gang-train-0-6lttv", NS, eviction("gang-train-0-6lttv"))
    assert core.read_namespaced_pod("gang-train-0-6lttv", NS).metadata.deletion_timestamp
    assert [(e["name"], e["allowed"]) for e in fake.evictions] == [
        ("train-gpu-1", True),
        ("train-gpu-8", False),
        ("gang-train-0-6lttv", True),
    ]


def test_events_are_stored(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "train-gpu-8."},
            "involvedObject": {"kind": "Pod", "name": "train-gpu-8", "namespace": NS},
            "reason": "Preempted",
            "message": "for team-b/big",
            "type": "Normal",
        },
    )
    [event] = fake.events(NS)
    assert (event["reason"], event["involvedObject"]["name"]) == ("Preempted", "train-gpu-8")
    assert event["metadata"]["name"].startswith("train-gpu-8.")


def _event_body(pod: str) -> dict:
    return {
        "metadata": {"generateName": f"{pod}."},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NS},
        "reason": "Admitted",
        "message": "admitted",
        "type": "Normal",
    }


def test_a_generated_name_that_is_taken_is_drawn_again(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    """Was: 409 AlreadyExists, where kube-apiserver (RetryGenerateName, on by default
    since v1.31, GA in v1.32) draws another name, up to 8 names in all."""
    drawn = iter(["bcdfg", "bcdfg", "bcdfg", "hjklm"])
    fake.store.name_suffix = lambda: next(drawn)
    first = core.create_namespaced_event(NS, _event_body("train-gpu-8"))
    second = core.create_namespaced_event(NS, _event_body("train-gpu-8"))
    assert (first.metadata.name, second.metadata.name) == ("train-gpu-8.bcdfg", "train-gpu-8.hjklm")


def test_a_generated_name_taken_eight_times_is_a_conflict_naming_the_last(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    taken = [f"tkn{i}x" for i in range(8)]
    for suffix in taken:
        core.create_namespaced_event(NS, {**_event_body("x"), "metadata": {"name": f"x.{suffix}"}})
    drawn = iter([*taken, "frees"])
    fake.store.name_suffix = lambda: next(drawn)
    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_event(NS, _event_body("x"))
    assert status_of(conflict.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'events "x.tkn7x" already exists, the server was not able to generate a '
        "unique name for the object",
        "reason": "AlreadyExists",
        "details": {"name": "x.tkn7x", "kind": "events", "retryAfterSeconds": 1},
        "code": 409,
    }
    assert core.create_namespaced_event(NS, _event_body("x")).metadata.name == "x.frees"


def test_generated_names_are_the_real_servers(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    """Five characters of kube-apiserver's alphabet, after a generateName cut at 58."""
    long = "p" * 70
    name = core.create_namespaced_event(NS, _event_body(long)).metadata.name
    assert name[:58] == long[:58] and len(name) == 63
    assert set(name[58:]) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_lease_conflicts(fake: Fake) -> None:
    leases = kubernetes.client.CoordinationV1Api(fake.api_client())
    body = {
        "metadata": {"name": "apportion-controller"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    created = leases.create_namespaced_lease("kube-system", body)
    with pytest.raises(ApiException) as exists:
        leases.create_namespaced_lease("kube-system", body)
    assert (exists.value.status, status_of(exists.value)["reason"]) == (409, "AlreadyExists")
    assert status_of(exists.value)["message"] == (
        'leases.coordination.k8s.io "apportion-controller" already exists'
    )
    created.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("apportion-controller", "kube-system", created)
    created.spec.holder_identity = "c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        leases.replace_namespaced_lease("apportion-controller", "kube-system", created)
    assert (stale.value.status, status_of(stale.value)["reason"]) == (409, "Conflict")
    read = leases.read_namespaced_lease("apportion-controller", "kube-system")
    assert read.spec.holder_identity == "b" == renewed.spec.holder_identity


def test_config_maps(fake: Fake, core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_config_map(
        "apportion", {"metadata": {"name": "queues"}, "data": {"queues.yaml": "a: 1"}}
    )
    start = core.list_namespaced_config_map("apportion").metadata.resource_version
    core.patch_namespaced_config_map("queues", "apportion", {"data": {"queues.yaml": "a: 2"}})
    [(kind, obj)] = events(
        fake, core.list_namespaced_config_map, 1, namespace="apportion", resource_version=start
    )
    assert (kind, obj["data"]) == ("MODIFIED", {"queues.yaml": "a: 2"})


def test_custom_objects(fake: Fake) -> None:
    fake.register_custom("apportion.io", "v1alpha1", "queues", "Queue")
    fake.put(
        {
            "apiVersion": "apportion.io/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": "team-a"},
            "spec": {"nominalQuota": {"nvidia.com/gpu": 8}},
        }
    )
    custom = kubernetes.client.CustomObjectsApi(fake.api_client())
    listed = custom.list_cluster_custom_object("apportion.io", "v1alpha1", "queues")
    assert listed["kind"] == "QueueList"
    assert [(q["apiVersion"], q["kind"]) for q in listed["items"]] == [
        ("apportion.io/v1alpha1", "Queue")
    ]  # CRD list items keep apiVersion/kind
    with pytest.raises(ApiException) as unsupported:  # CRDs take no strategic merge
        custom.patch_cluster_custom_object(
            "apportion.io",
            "v1alpha1",
            "queues",
            "team-a",
            {"spec": {"cohort": "none"}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert unsupported.value.status == 415
    custom.patch_cluster_custom_object(
        "apportion.io", "v1alpha1", "queues", "team-a", {"spec": {"cohort": "all"}}
    )
    assert fake.requests[-1].content_type == "application/merge-patch+json"
    [(kind, obj)] = events(
        fake,
        custom.list_cluster_custom_object,
        1,
        group="apportion.io",
        version="v1alpha1",
        plural="queues",
        resource_version=listed["metadata"]["resourceVersion"],
    )
    assert (kind, obj["spec"]["cohort"]) == ("MODIFIED", "all")


# ---- failure injection and the request log -------------------------------------------------
def test_injected_failures(fake: Fake) -> None:
    config = fake.configuration()
    config.retries = 0
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    fake.fail("/api/v1/nodes", times=2, status=500)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            core.list_node()
        assert failed.value.status == 500
    assert len(core.list_node().items) == 3
    fake.fail("/api/v1/namespaces/[^/]+/pods/.*", status="drop", method="GET")
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.read_namespaced_pod("train-gpu-1", NS)
    assert core.read_namespaced_pod("train-gpu-1", NS).metadata.name == "train-gpu-1"
    fake.fail("/api/v1/namespaces/[^/]+/pods/.*", status="lost", method="PATCH")
    with pytest.raises(urllib3.exceptions.HTTPError):  # carried out, the answer lost
        core.patch_namespaced_pod("train-gpu-1", NS, {"metadata": {"labels": {"lost": "yes"}}})
    assert core.read_namespaced_pod("train-gpu-1", NS).metadata.labels["lost"] == "yes"
    fake.fail("/api/v1/namespaces/[^/]+/pods/.*", status="slow", delay_s=0.5, method="GET")
    with pytest.raises(urllib3.exceptions.HTTPError):  # a read timeout
        core.read_namespaced_pod("train-gpu-1", NS, _request_timeout=0.2)
    started = time.monotonic()
    fake.fail("/api/v1/namespaces/[^/]+/pods/.*", status="slow", delay_s=0.5, method="GET")
    assert core.read_namespaced_pod("train-gpu-1", NS).metadata.name == "train-gpu-1"
    assert time.monotonic() - started >= 0.5
    assert [(r.method, r.path) for r in fake.requests_to("/api/v1/nodes")] == [
        ("GET", "/api/v1/nodes")
    ] * 3
    assert all(r.at <= time.time() for r in fake.requests)


def test_one_clients_writes_fail_after_its_first_few_as_a_killed_process_makes_no_more(
    fake: Fake,
) -> None:
    """A process killed after its 2nd write: its later writes change nothing, whatever the
    method; its reads and another client's writes are carried out as usual."""

    def client(name: str) -> kubernetes.client.CoreV1Api:
        api_client = fake.api_client()
        api_client.user_agent = name
        return kubernetes.client.CoreV1Api(api_client)

    killed, other = client("killed"), client("other")
    cut = fake.fail(".*", method=WRITES, after=2, times=10**9, status=503, client="killed")

    def label(core: kubernetes.client.CoreV1Api, value: str) -> None:
        core.patch_namespaced_pod("train-gpu-1", NS, {"metadata": {"labels": {"by": value}}})

    label(killed, "first")
    killed.read_namespaced_pod("train-gpu-1", NS)  # a read: not counted
    killed.create_namespaced_pod_eviction(
        "gang-train-0-6lttv", NS, {"metadata": {"name": "gang-train-0-6lttv"}}
    )
    for write in (
        lambda: label(killed, "third"),
        lambda: killed.delete_namespaced_pod("train-gpu-8", NS),
        lambda: killed.create_namespaced_pod_eviction(
            "gated-gpu-2", NS, {"metadata": {"name": "gated-gpu-2"}}
        ),
    ):
        with pytest.raises(ApiException) as refused:
            write()
        assert refused.value.status == 503
    assert killed.read_namespaced_pod("train-gpu-1", NS).metadata.labels["by"] == "first"
    label(other, "other")
    assert other.read_namespaced_pod("train-gpu-1", NS).metadata.labels["by"] == "other"
    assert [e["name"] for e in fake.evictions] == ["gang-train-0-6lttv"]
    assert (cut.after, cut.times) == (0, 10**9 - 3)
    assert [(r.client, r.method) for r in fake.requests] == [
        ("killed", "PATCH"),
        ("killed", "GET"),
        ("killed", "POST"),
        ("killed", "PATCH"),
        ("killed", "DELETE"),
        ("killed", "POST"),
        ("killed", "GET"),
        ("other", "PATCH"),
        ("other", "GET"),
    ]


def test_injected_latency_delays_every_matching_request_and_counts_those_in_flight(
    fake: Fake, core: kubernetes.client.CoreV1Api
) -> None:
    latency = fake.add_latency("/api/v1/namespaces/[^/]+/pods/.*", 0.5, method="GET")
    ready = threading.Barrier(4)
    took: list[float] = []

    def read() -> None:
        ready.wait()
        started = time.monotonic()
        core.read_namespaced_pod("train-gpu-1", NS)
        took.append(time.monotonic() - started)

    for _ in range(2):  # every time, not a number of times
        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(took) == 8 and min(took) >= 0.5
    assert (latency.peak, latency.in_flight) == (4, 0)
    started = time.monotonic()
    core.list_node()  # another path
    core.patch_namespaced_pod("train-gpu-1", NS, {"metadata": {"labels": {"a": "b"}}})
    assert time.monotonic() - started < 0.5
    assert (latency.peak, latency.in_flight) == (4, 0)


# ---- the patch functions on their own ------------------------------------------------------
def test_strategic_merge_keys_and_directives() -> None:
    pod = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [{"name": "main", "image": "x"}],
            "schedulingGates": [{"name": "g"}],
            "tolerations": [{"key": "t"}],
        },
    }
    patched = strategic_merge_patch(
        pod,
        {
            "metadata": {"finalizers": ["b"]},
            "spec": {
                "containers": [{"name": "main", "image": "y"}, {"name": "side"}],
                "schedulingGates": [{"name": "g", "$patch": "delete"}],
                "tolerations": [{"key": "u"}],
                "$setElementOrder/containers": [],
            },
        },
    )
    assert patched == {
        "metadata": {"finalizers": ["a", "b"]},
        "spec": {
            "containers": [{"name": "main", "image": "y"}, {"name": "side"}],
            "schedulingGates": [],
            "tolerations": [{"key": "u"}],
        },
    }
    assert strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})[
        "metadata"
    ] == {"finalizers": []}
    assert pod["spec"]["schedulingGates"] == [{"name": "g"}]  # input untouched
    doc = copy.deepcopy(pod)
    assert json_patch(
        doc,
        [
            {"op": "move", "from": "/spec/tolerations", "path": "/t"},
            {"op": "copy", "from": "/t/0", "path": "/spec/u"},
        ],
    )["spec"]["u"] == {"key": "t"}


def test_watch_timeout_ends_the_stream(core: kubernetes.client.CoreV1Api) -> None:
    start = core.list_node().metadata.resource_version
    assert list(Watch().stream(core.list_node, resource_version=start, timeout_seconds=1)) == []


def test_without_a_kubelet_a_deleted_bound_pod_stays_terminating() -> None:
    with running_fake(kubelet=False) as fake:
        core = kubernetes.client.CoreV1Api(fake.api_client())
        core.delete_namespaced_pod("train-gpu-8", NS)
        assert core.read_namespaced_pod("train-gpu-8", NS).metadata.deletion_timestamp
        fake.finish_termination(NS, "train-gpu-8")
        with pytest.raises(ApiException) as gone:
            core.read_namespaced_pod("train-gpu-8", NS)
        assert gone.value.status == 404
        core.delete_namespaced_pod("patched-gpu-1", NS)  # unbound: at once
        assert "patched-gpu-1" not in {p.metadata.name for p in core.list_namespaced_pod(NS).items}


def test_binding_subresource(core: kubernetes.client.CoreV1Api) -> None:
    binding = {
        "metadata": {"name": "patched-gpu-1"},
        "target": {"kind": "Node", "name": "gpu-node-a"},
    }
    with pytest.raises(ApiException) as gated:
        core.create_namespaced_pod_binding("patched-gpu-1", NS, binding)
    assert gated.value.status == 409
    core.patch_namespaced_pod(
        "patched-gpu-1", NS, [{"op": "remove", "path": "/spec/schedulingGates"}]
    )
    # The server answers a Status, which the typed client cannot read as a V1Binding (a known
    # client problem, also against a real server): read the raw response.
    answer = core.create_namespaced_pod_binding(
        "patched-gpu-1", NS, binding, _preload_content=False
    )
    assert (answer.status, raw(answer)["status"]) == (201, "Success")
    assert core.read_namespaced_pod("patched-gpu-1", NS).spec.node_name == "gpu-node-a"
