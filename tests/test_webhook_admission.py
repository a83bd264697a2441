"""Mutate and validate on AdmissionReviews captured from a real kube-apiserver, and variants."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_support import (
    FIXTURES,
    SERVICE_ACCOUNT,
    admission,
    answer,
    fixture_cluster,
    mutated,
    patch_of,
    review,
    vary,
)

from scheduler.catalog import default_catalog
from scheduler.model import Node, Toleration
from webhook import keys
from webhook.admission import Admission
from webhook.cluster import LiveCluster
from webhook.jobs import job_row
from webhook.kubeobjects import node_from_object
from webhook.nodeconstraints import core_tolerations, required_affinity
from webhook.patches import admit_gated, node_expressions
from webhook.pods import ANNOTATION_PLACEMENT, PodReader
from webhook.quantities import parse_bytes_mib
from webhook.queueview import waiting_workloads
from webhook.review import parse_review
from webhook.settings import AdmissionSettings

GPU_1 = "create-pod-gpu-1.mutate-create"
GPU_8 = "create-pod-gpu-8.mutate-create"
MIG_1G = "create-pod-mig-1g-10gb.mutate-create"


def _pod_after(body: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = jsonpatch.apply_patch(body["request"]["object"], patch_of(response))
    return pod


def _gated(pod: dict[str, Any]) -> bool:
    return {"name": keys.GATE} in (pod["spec"].get("schedulingGates") or [])


def _required_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


# -- what Apportion leaves alone ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "create-pod-gpu-1.validate-create-binding",
        "delete-pod-graceful.validate-delete",
        "delete-pod-force.validate-delete-3",
        "delete-pod-unscheduled.validate-delete-2",
    ],
)
def test_bindings_and_deletes_are_allowed_without_a_patch(name: str) -> None:
    body = review(name)
    for handler in (admission().mutate, admission().validate):
        response = answer(handler, body)
        assert response == {"uid": body["request"]["uid"], "allowed": True}


def test_a_pod_without_gpus_is_allowed_untouched() -> None:
    body = vary(review(GPU_1), resources={})
    for handler in (admission().mutate, admission().validate):
        assert answer(handler, body) == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("zero", ["0", "0.0", "0k"])
def test_a_pod_asking_zero_gpus_is_allowed_untouched(zero: str) -> None:
    """Charts often template ``nvidia.com/gpu: 0`` for CPU-only runs: no GPU is asked, in
    whatever form the zero is written."""
    body = vary(review(GPU_1), resources={"nvidia.com/gpu": zero})
    for handler in (admission().mutate, admission().validate):
        assert answer(handler, body) == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("zero", ["0", "0Gi", "0.0", "", " "])
def test_a_zero_or_empty_gpu_memory_need_asks_nothing(zero: str) -> None:
    """As a GPU resource of 0: a chart templating the annotation for CPU-only runs. Was:
    such a pod, asking no GPU, was refused ("'0' is zero")."""
    body = vary(review(GPU_1), resources={}, annotations={keys.ANNOTATION_GPU_MEMORY: zero})
    for handler in (admission().mutate, admission().validate):
        assert answer(handler, body) == {"uid": body["request"]["uid"], "allowed": True}
    # Beside a GPU request it is no second ask ("use one or the other"): the GPU is asked.
    body = vary(review(GPU_1), annotations={keys.ANNOTATION_GPU_MEMORY: zero})
    pod = _pod_after(body, answer(admission().mutate, body))
    assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"


@pytest.mark.parametrize("resource", ["nvidia.com/gpu.shared", "nvidia.com/mig-1g.10gb.shared"])
def test_a_pod_asking_time_sliced_gpus_is_allowed_untouched(resource: str) -> None:
    """The device plugin's time-slicing with ``renameByDefault`` offers ``<name>.shared``,
    for whole GPUs and mixed-strategy MIG instances alike: replicas Apportion does not
    count or hand out, so it manages neither (nor refuses one as an unknown MIG profile)."""
    for name, handler in (
        (GPU_1, admission().mutate),
        ("create-pod-gpu-1.validate-create", admission().validate),
    ):
        body = vary(review(name), resources={resource: "1"})
        assert answer(handler, body) == {"uid": body["request"]["uid"], "allowed": True}


def _mirror_pod(body: dict[str, Any]) -> dict[str, Any]:
    """The kubelet's mirror of a static pod: created bound to its node."""
    body["request"]["userInfo"] = {"username": "system:node:gpu-node-b", "groups": ["system:nodes"]}
    pod = body["request"]["object"]
    pod["metadata"]["annotations"] = {
        "kubernetes.io/config.mirror": "0f3c1b2a",
        "kubernetes.io/config.source": "file",
    }
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Node", "name": "gpu-node-b", "uid": "n", "controller": True}
    ]
    pod["spec"]["nodeName"] = "gpu-node-b"
    return body


def _daemonset_pod(body: dict[str, Any]) -> dict[str, Any]:
    """A DaemonSet's pod (a GPU burn-in, a validator): pinned to its node by affinity."""
    pod = body["request"]["object"]
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "gpu-burn", "uid": "d",
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    field = {"key": "metadata.name", "operator": "In", "values": ["gpu-node-b"]}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [field]}]
            }
        }
    }
    return body


@pytest.mark.parametrize("shape", [_mirror_pod, _daemonset_pod])
def test_a_pod_whose_node_is_already_chosen_is_allowed_untouched(shape: Any) -> None:
    """Apportion cannot choose their node: the API server refuses a gate on a pod created
    with spec.nodeName, the kubelet refuses one pinned to another node, and a DaemonSet's
    pod pinned to another node than its own stays Pending for ever. Once bound they are
    foreign GPU pods, whose devices are not capacity."""
    for name, handler in (
        (GPU_1, admission().mutate),
        ("create-pod-gpu-1.validate-create", admission().validate),
    ):
        body = shape(vary(review(name)))
        assert answer(handler, body) == {"uid": body["request"]["uid"], "allowed": True}


def test_a_gpu_pod_created_on_its_node_is_refused() -> None:
    """A pod created with spec.nodeName skips the scheduler: no gate can hold it (the API
    server refuses one beside a node name), so it ran outside its queue, never charged.
    Refused by the mutating call, which fails closed, and by the validating one; the
    kubelet's mirror of a static pod stays untouched (above), and so does such a pod that
    asks no GPU, whose namespace did not opt in, or a DaemonSet's (its controller may name
    the node)."""
    why = (
        "Apportion: spec.nodeName 'gpu-node-b': a GPU pod placed on its node at creation "
        "skips its queue and quota; ask for the node with the nodeSelector "
        "kubernetes.io/hostname instead"
    )
    for name, handler in (
        (GPU_1, admission().mutate),
        ("create-pod-gpu-1.validate-create", admission().validate),
    ):
        body = vary(review(name))
        body["request"]["object"]["spec"]["nodeName"] = "gpu-node-b"
        assert answer(handler, body)["status"] == {"code": 403, "message": why}
        daemonset = copy.deepcopy(body)  # a DaemonSet controller may name the node itself
        daemonset["request"]["object"]["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u",
             "controller": True}
        ]  # fmt: skip
        for untouched in (
            vary(body, resources={}),
            vary(body, namespace="not-opted-in"),
            daemonset,
        ):
            assert answer(handler, untouched) == {
                "uid": untouched["request"]["uid"],
                "allowed": True,
            }
    # Shadow mode: let through, with what enforcing would do noted and warned.
    body = vary(review(GPU_1))
    body["request"]["object"]["spec"]["nodeName"] = "gpu-node-b"
    shadow = admission(mode="shadow")
    response = answer(shadow.mutate, body)
    noted = _pod_after(body, response)["metadata"]["annotations"][keys.ANNOTATION_SHADOW]
    assert noted == f"deny: Refused: {why.removeprefix('Apportion: ')}"
    [warning] = answer(shadow.validate, mutated(body, response))["warnings"]
    assert warning.startswith("Apportion (shadow mode) would deny this pod: spec.nodeName")


def test_a_namespace_that_did_not_opt_in_is_not_managed() -> None:
    body = vary(review(GPU_8), namespace="not-opted-in")
    assert answer(admission().mutate, body) == {"uid": body["request"]["uid"], "allowed": True}
    assert answer(admission().validate, body)["allowed"] is True


# -- admitted at creation -------------------------------------------------------------------


def test_one_gpu_pod_is_admitted_and_pinned_to_a_node() -> None:
    body = review(GPU_1)
    response = answer(admission().mutate, body)
    pod = _pod_after(body, response)
    metadata = pod["metadata"]
    assert metadata["labels"] == {
        "app": "train-gpu-1",
        keys.LABEL_QUEUE: "team-a",
        keys.LABEL_MANAGED: "true",
    }
    annotations = metadata["annotations"]
    assert annotations[keys.ANNOTATION_WORKLOAD] == "gpu-team-a/train-gpu-1"
    assert annotations[keys.ANNOTATION_DECISION] == "admitted"
    assert annotations[keys.ANNOTATION_REASON].startswith("Admitted: ")
    node = annotations[ANNOTATION_PLACEMENT].split(":")[0]
    assert _required_terms(pod) == [
        {
            "matchExpressions": [
                {"key": keys.NODE_PRODUCT, "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
                {"key": keys.NODE_HOSTNAME, "operator": "In", "values": [node]},
            ]
        }
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert not _gated(pod)
    # The validating call sees the mutated pod and lets it in.
    assert answer(admission().validate, mutated(body, response))["allowed"] is True


def _with_affinity(body: dict[str, Any], *terms: dict[str, Any]) -> dict[str, Any]:
    body = vary(body)
    body["request"]["object"]["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }
    return body


def test_a_pods_required_node_affinity_decides_where_it_is_pinned() -> None:
    # Was: ignored, so this pod was pinned to mig-node-c (best fit) on top of its own term:
    # "gpu-node-b AND mig-node-c", which no node satisfies.
    on_a = {"key": keys.NODE_HOSTNAME, "operator": "In", "values": ["gpu-node-a"]}
    body = _with_affinity(review(GPU_1), {"matchExpressions": [on_a]})
    pod = _pod_after(body, answer(admission().mutate, body))
    assert pod["metadata"]["annotations"][ANNOTATION_PLACEMENT].startswith("gpu-node-a:")
    [term] = _required_terms(pod)
    assert on_a in term["matchExpressions"]
    # Affinity no GPU node satisfies: the pod waits, saying so.
    nowhere = {"key": keys.NODE_HOSTNAME, "operator": "In", "values": ["cpu-node-z"]}
    body = _with_affinity(review(GPU_1), {"matchExpressions": [nowhere]})
    pod = _pod_after(body, answer(admission().mutate, body))
    assert _gated(pod)
    reason = pod["metadata"]["annotations"][keys.ANNOTATION_REASON]
    assert reason.startswith("NoMatchingNodes: "), reason


@pytest.mark.parametrize("empty", [{}, {"matchExpressions": []}, {"matchFields": None}])
@pytest.mark.parametrize("leads", [True, False], ids=["admitted", "gated"])
def test_an_empty_node_selector_term_still_matches_no_node(
    empty: dict[str, Any], leads: bool
) -> None:
    """Kubernetes: an empty term matches no node; ORed with one allowing gpu-node-b, the pod
    may go to gpu-node-b only. Was: Apportion's expressions (its placement, or a waiting
    pod's GPU products) were added to the empty term too, which then matched other nodes,
    and the pod could run where its user did not allow it."""
    from webhook.admission import Admission
    from webhook.settings import AdmissionSettings

    on_b = {"key": keys.NODE_HOSTNAME, "operator": "In", "values": ["gpu-node-b"]}
    picky = vary(review(GPU_1), annotations={keys.ANNOTATION_GPU_MODELS: "H100"})
    body = _with_affinity(picky, dict(empty), {"matchExpressions": [on_b]})
    handler = Admission(fixture_cluster(), AdmissionSettings(), admits_now=lambda: leads)
    pod = _pod_after(body, answer(handler.mutate, body))
    assert _gated(pod) is not leads
    first, second = _required_terms(pod)
    assert first == empty
    assert on_b in second["matchExpressions"] and len(second["matchExpressions"]) > 1
    if leads:
        assert pod["metadata"]["annotations"][ANNOTATION_PLACEMENT].startswith("gpu-node-b:")


def test_an_affinity_the_api_server_refuses_is_not_made_valid() -> None:
    """``nodeSelectorTerms: []`` is refused by the API server ("must have at least one node
    selector term"). Was: replaced by Apportion's term, so the pod was created, pinned where
    its user never asked."""
    body = _with_affinity(review(GPU_1))
    patch = patch_of(answer(admission().mutate, body))
    assert patch and not [op for op in patch if op["path"].startswith("/spec/affinity")]


def test_a_pod_another_controller_holds_back_is_gated_not_admitted() -> None:
    # Was: admitted (placement, quota charged) while another party's gate kept it from
    # running: GPUs reserved and idle for as long as that gate stays.
    body = vary(review(GPU_1))
    body["request"]["object"]["spec"]["schedulingGates"] = [{"name": "example.com/hold"}]
    pod = _pod_after(body, answer(admission().mutate, body))
    assert _gated(pod)
    assert {"name": "example.com/hold"} in pod["spec"]["schedulingGates"]
    annotations = pod["metadata"]["annotations"]
    assert ANNOTATION_PLACEMENT not in annotations
    assert annotations[keys.ANNOTATION_REASON] == (
        "NotSelectedByOptimizer: held back by scheduling gate(s) example.com/hold, not "
        "Apportion's: decided once they are removed"
    )


def test_tolerations_are_read_as_kubernetes_means_them_and_never_fail_a_read() -> None:
    read = core_tolerations(
        [
            {"key": "gpu", "operator": "Exists", "effect": ""},  # every effect
            {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
            {"key": "x", "operator": "Lt", "value": "3"},  # not a toleration operator
            {"key": 5, "operator": "Exists"},  # the API server would refuse it
        ]
    )
    assert read == (
        Toleration(key="gpu", operator="Exists"),
        Toleration(key="dedicated", value="ml", effect="NoSchedule"),
    )


def test_a_malformed_node_affinity_is_denied_naming_the_field() -> None:
    body = _with_affinity(
        review("create-pod-gpu-1.validate-create"),
        {"matchExpressions": [{"key": "rack", "operator": "Gt", "values": ["x"]}]},
    )
    assert (
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
        "nodeSelectorTerms[0].matchExpressions[0]: operator Gt needs one integer value "
        "(given ['x'])"
    ) in _denial(body)


def test_a_pod_created_with_the_gate_and_admitted_is_released_at_once() -> None:
    """A manifest copied from a waiting pod carries Apportion's gate (only Apportion may
    remove it): admitted at creation, the pod must not wait on the gate for a controller."""
    body = review("create-pod-scheduling-gated.mutate-create")
    response = answer(admission().mutate, body)
    pod = _pod_after(body, response)
    assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"
    assert not _gated(pod)
    assert answer(admission().validate, mutated(body, response))["allowed"] is True


def test_a_mig_slice_lands_on_the_mig_node() -> None:
    body = review(MIG_1G)
    pod = _pod_after(body, answer(admission().mutate, body))
    assert pod["metadata"]["annotations"][ANNOTATION_PLACEMENT] == "mig-node-c:6@0"
    assert _required_terms(pod)[0]["matchExpressions"][1]["values"] == ["mig-node-c"]


def test_admissions_are_charged_so_the_next_request_sees_them() -> None:
    cluster = fixture_cluster()
    handler = admission(cluster).mutate
    nodes = []
    for index in range(2):
        body = vary(review(GPU_8), name=f"train-{index}")
        pod = _pod_after(body, answer(handler, body))
        assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"
        nodes.append(pod["metadata"]["annotations"][ANNOTATION_PLACEMENT])
    assert sorted(nodes) == ["gpu-node-a:0,1,2,3,4,5,6,7", "gpu-node-b:0,1,2,3,4,5,6,7"]
    # The cohort's 22 GPUs of quota have 6 left: the third 8-GPU pod waits, gated.
    body = vary(review(GPU_8), name="train-late")
    pod = _pod_after(body, answer(handler, body))
    assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "pending"
    assert pod["metadata"]["annotations"][keys.ANNOTATION_REASON] == (
        "CohortExhausted: queue team-a at 16/12 H100-80GB; cohort lab lends 6 more; needs 8"
    )
    assert _gated(pod)


def _with_cpu(body: dict[str, Any], cpu: str) -> dict[str, Any]:
    body["request"]["object"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
    return body


def test_a_pods_cpu_and_memory_are_charged_to_its_node() -> None:
    """The captured pod asks 1 CPU and 4 GiB besides its GPU; at 60 CPU a pod leaves its node
    36 of 96, so the next one goes to another node though the first has 7 GPUs free."""
    handler = admission(fixture_cluster()).mutate
    nodes = []
    for index in range(2):
        body = _with_cpu(vary(review(GPU_1), name=f"cpu-heavy-{index}"), "60")
        pod = _pod_after(body, answer(handler, body))
        assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"
        nodes.append(pod["metadata"]["annotations"][ANNOTATION_PLACEMENT].split(":")[0])
    assert nodes[0] != nodes[1], nodes


def test_more_cpu_than_any_gpu_node_has_is_denied() -> None:
    body = _with_cpu(vary(review("create-pod-gpu-1.validate-create")), "200")
    assert _denial(body) == (
        "Apportion: 200 CPU and 4 GiB of memory in one pod: no node with GPUs in this cluster "
        "has that much allocatable"
    )


def _with_init(
    body: dict[str, Any], gpus: str, *, sidecar: bool, resource: str = "nvidia.com/gpu"
) -> dict[str, Any]:
    """The pod's container again as an init container asking ``gpus`` of ``resource``
    (instead of what the container asks)."""
    spec = body["request"]["object"]["spec"]
    init = copy.deepcopy(spec["containers"][0])
    init["name"] = f"init-{len(spec.get('initContainers', []))}"
    for part in ("requests", "limits"):
        asked = init["resources"][part]
        for name in [n for n in asked if n.startswith("nvidia.com/")]:
            del asked[name]
        asked[resource] = gpus
    if sidecar:
        init["restartPolicy"] = "Always"
    spec.setdefault("initContainers", []).append(init)
    return body


@pytest.mark.parametrize(
    ("inits", "gpus"),
    [
        ([("1", True)], 2),  # a sidecar runs beside the app container: 1 + 1
        ([("1", False)], 1),  # an init container runs alone: max(1, 1)
        ([("4", False)], 4),  # max(4, 1)
        ([("1", True), ("2", False)], 3),  # the init runs beside the sidecar: max(1+1, 1+2)
        ([("2", False), ("1", True)], 2),  # the init runs before the sidecar: max(1+1, 2)
    ],
)
def test_gpus_of_init_containers_and_sidecars_count_as_the_scheduler_counts_them(
    inits: list[tuple[str, bool]], gpus: int
) -> None:
    body = vary(review(GPU_1))
    for count, sidecar in inits:
        body = _with_init(body, count, sidecar=sidecar)
    pod = _pod_after(body, answer(admission().mutate, body))
    placement = pod["metadata"]["annotations"][ANNOTATION_PLACEMENT]
    assert len(placement.split(":")[1].split(",")) == gpus, placement


_BOTH = (
    "Kubernetes holds both for the pod's whole life (each resource at the larger of what the "
    "init containers and the app containers request), and Apportion admits a pod on whole "
    "GPUs or on one MIG instance, not both"
)


@pytest.mark.parametrize(
    ("fixture", "resource", "sidecar", "message"),
    [
        (
            "create-pod-gpu-1",
            "nvidia.com/mig-1g.10gb",
            False,
            "spec.initContainers[init-0] requests nvidia.com/mig-1g.10gb: 1 beside "
            f"nvidia.com/gpu: 1 of the app containers; {_BOTH}: request nvidia.com/gpu in "
            "init-0 instead (up to 1, which the pod holds anyway), or no GPU there",
        ),
        (
            "create-pod-mig-1g-10gb",
            "nvidia.com/gpu",
            False,
            "spec.initContainers[init-0] requests nvidia.com/gpu: 1 beside "
            f"nvidia.com/mig-1g.10gb: 1 of the app containers; {_BOTH}: request "
            "nvidia.com/mig-1g.10gb in init-0 instead (up to 1, which the pod holds anyway), "
            "or no GPU there",
        ),
        (
            "create-pod-gpu-1",
            "nvidia.com/mig-1g.10gb",
            True,
            "spec.initContainers[init-0] (a sidecar) requests nvidia.com/mig-1g.10gb: 1 "
            f"beside nvidia.com/gpu: 1 of the app containers; {_BOTH}: request nvidia.com/gpu "
            "in init-0 instead (added to what the app containers hold: a sidecar runs beside "
            "them), or no GPU there",
        ),
    ],
)
def test_an_init_container_asking_another_kind_of_gpu_device_is_refused_naming_it(
    fixture: str, resource: str, sidecar: bool, message: str
) -> None:
    """Kubernetes accepts such a pod and holds both devices for its whole life; Apportion
    cannot charge one pod to two flavors, and letting it through unmanaged would escape
    its quota: refused, naming the init container and what to ask instead."""
    handler = admission()
    body = _with_init(vary(review(f"{fixture}.mutate-create")), "1", sidecar=sidecar,
                      resource=resource)  # fmt: skip
    response = answer(handler.mutate, body)
    assert patch_of(response) == [
        {"op": "add", "path": "/spec/schedulingGates", "value": [{"name": keys.GATE}]}
    ]  # held, never decided, should the validating call fail
    denied = answer(handler.validate, mutated(body, response))
    assert denied["allowed"] is False
    assert denied["status"]["message"] == f"Apportion: {message}"


def test_several_kinds_of_gpu_device_in_app_containers_are_refused_naming_them() -> None:
    body = vary(review("create-pod-gpu-1.validate-create"))
    spec = body["request"]["object"]["spec"]
    other = copy.deepcopy(spec["containers"][0])
    other["name"] = "infer"
    for part in ("requests", "limits"):
        del other["resources"][part]["nvidia.com/gpu"]
        other["resources"][part]["nvidia.com/mig-1g.10gb"] = "1"
    spec["containers"].append(other)
    assert _denial(body) == (
        "Apportion: the pod requests several kinds of GPU device (nvidia.com/gpu: 1 by "
        "container main; nvidia.com/mig-1g.10gb: 1 by container infer); a pod gets whole "
        "GPUs or one MIG instance"
    )


# -- waiting --------------------------------------------------------------------------------


def test_a_pod_that_must_wait_is_gated_with_the_reason() -> None:
    cluster = fixture_cluster()
    handler = admission(cluster).mutate
    # team-b (default queue of gpu-team-b) has 10 nominal and may borrow team-a's 12.
    answers = []
    for index in range(3):
        body = vary(
            review(GPU_8),
            namespace="gpu-team-b",
            name=f"b-{index}",
            labels={keys.LABEL_QUEUE: None},
        )
        answers.append(_pod_after(body, answer(handler, body)))
    decisions = [p["metadata"]["annotations"][keys.ANNOTATION_DECISION] for p in answers]
    assert decisions == ["admitted", "admitted", "pending"]
    waiting = answers[2]
    assert _gated(waiting)
    assert waiting["metadata"]["labels"][keys.LABEL_QUEUE] == "team-b"
    reason = waiting["metadata"]["annotations"][keys.ANNOTATION_REASON]
    assert reason.split(":")[0] in {"InsufficientCapacity", "CohortExhausted", "QuotaExhausted"}
    assert "affinity" not in waiting["spec"]  # no placement pinned: the controller adds it
    assert ANNOTATION_PLACEMENT not in waiting["metadata"]["annotations"]


def test_a_gated_pod_carries_at_most_its_acceptable_models() -> None:
    cluster = fixture_cluster()
    handler = admission(cluster).mutate
    for index in range(3):
        handler_body = vary(review(GPU_8), name=f"fill-{index}")
        answer(handler, handler_body)
    body = vary(review(GPU_8), name="picky", annotations={keys.ANNOTATION_GPU_MODELS: "H100"})
    pod = _pod_after(body, answer(handler, body))
    assert _gated(pod)
    products = _required_terms(pod)[0]["matchExpressions"]
    assert len(products) == 1 and products[0]["key"] == keys.NODE_PRODUCT
    assert "NVIDIA-H100-80GB-HBM3" in products[0]["values"]


@pytest.mark.parametrize(
    "product",
    [
        "NVIDIA-H100-80GB-HBM3-SHARED",  # time-slicing without rename (GFD appends -SHARED)
        "nvidia-h100-80gb-hbm3",  # the catalog reads products in any case; nodes may too
    ],
)
def test_a_gated_pod_is_pinned_to_the_product_labels_its_models_nodes_carry(
    product: str,
) -> None:
    # Was pinned to the catalog's spellings only: the controller's admission then added the
    # node's own value, no node had both, and the pod never ran.
    cluster = fixture_cluster()
    node = _object_node("odd", **{keys.NODE_PRODUCT: product})
    cluster.replace_nodes([node])
    body = vary(review(GPU_1), annotations={keys.ANNOTATION_GPU_MODELS: "H100"})
    pod = _pod_after(body, answer(_follower(cluster).mutate, body))
    (pin,) = _required_terms(pod)[0]["matchExpressions"]
    assert pin["key"] == keys.NODE_PRODUCT
    # And every GFD spelling of the model, time-sliced or not, for nodes that join later:
    # a gated pod's affinity can only be narrowed.
    h100 = default_catalog()["H100"].products
    assert pin["values"] == sorted({product, *h100, *(p + "-SHARED" for p in h100)})
    released = jsonpatch.apply_patch(pod, admit_gated(pod, node_expressions([node])))
    terms, problems = required_affinity(released["spec"])
    assert not problems and any(t.matches(node.name, node.labels) for t in terms)


def test_sizes_past_any_cluster_are_refused_or_kept_in_range() -> None:
    """The core takes at most 1,000,000 pods in a workload and 32-bit priorities: a gang
    size of up to 18 digits, a recorded pod's priority past 32 bits, or a Job's
    parallelism of millions made building the workload fail (the webhook let the pod
    through unmanaged; the controller's snapshot failed with it)."""
    huge = vary(
        review("create-pod-gpu-8.validate-create"),
        labels={keys.LABEL_GANG: "g"},
        annotations={keys.ANNOTATION_GANG_SIZE: "2000000"},
    )
    assert _denial(huge).startswith(
        f"Apportion: metadata.annotations[{keys.ANNOTATION_GANG_SIZE}]: '2000000' is not a "
        "whole number from 1 to 1,000,000; "
    )
    body = vary(review(GPU_8), name="urgent")
    body["request"]["object"]["spec"]["priority"] = 2**40
    verdict = admission().mutate(parse_review(json.dumps(body).encode()))
    assert verdict.outcome == "admitted", verdict
    job = {"metadata": {"namespace": "ns", "name": "j"}, "spec": {"parallelism": 2_000_000}}
    assert job_row(job) == ("ns", "j", None, None)


def test_a_gang_is_always_gated_and_sized_from_its_job() -> None:
    cluster = fixture_cluster()
    body = review("job-controller-creates-pods.mutate-create")
    # Without a size the pod is gated but not decided, and the validating call says what to
    # add.
    undecided = _pod_after(body, answer(admission(cluster).mutate, body))
    assert _gated(undecided) and keys.ANNOTATION_WORKLOAD not in undecided["metadata"].get(
        "annotations", {}
    )
    denial = answer(
        admission(cluster).validate, review("job-controller-creates-pods.validate-create")
    )
    assert denial["allowed"] is False
    assert keys.ANNOTATION_GANG_SIZE in denial["status"]["message"]
    # Once the controller has seen the Indexed Job (parallelism 2), the gang is sized.
    cluster.jobs.put("gpu-team-a", "gang-train", 2)
    pod = _pod_after(body, answer(admission(cluster).mutate, body))
    assert _gated(pod)
    annotations = pod["metadata"]["annotations"]
    assert annotations[keys.ANNOTATION_WORKLOAD] == "gpu-team-a/gang-train"
    assert annotations[keys.ANNOTATION_GANG_SIZE] == "2"
    assert annotations[keys.ANNOTATION_DECISION] == "pending"
    assert annotations[keys.ANNOTATION_REASON] == (
        "NotSelectedByOptimizer: gang gang-train of 2 pods: admitted all together by the "
        "controller once every member exists"
    )
    cluster.jobs.put("gpu-team-a", "gang-train", 1)  # was: 'of 1 pods'
    pod = _pod_after(body, answer(admission(cluster).mutate, body))
    assert "gang gang-train of 1 pod: " in pod["metadata"]["annotations"][keys.ANNOTATION_REASON]


def test_kueue_pod_group_labels_are_accepted() -> None:
    body = vary(
        review(GPU_1),
        labels={keys.KUEUE_GROUP_LABEL: "llm"},
        annotations={keys.KUEUE_GROUP_TOTAL: "4"},
    )
    pod = _pod_after(body, answer(admission().mutate, body))
    assert pod["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD] == "gpu-team-a/llm"
    assert _gated(pod)


def test_generated_names_get_a_stable_workload_name_from_the_request() -> None:
    body = review("job-controller-creates-pods.mutate-create")
    body = vary(body, labels={keys.LABEL_GANG: None}, new_uid=False)
    pod = _pod_after(body, answer(admission().mutate, body))
    uid = body["request"]["uid"]
    assert pod["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD] == (
        f"gpu-team-a/gang-train-0-{uid.replace('-', '')[:12]}"
    )


# -- a memory need becomes a device ---------------------------------------------------------


def test_a_small_memory_need_becomes_the_cheapest_mig_slice() -> None:
    body = vary(review(GPU_1), resources={}, annotations={keys.ANNOTATION_GPU_MEMORY: "9Gi"})
    response = answer(admission().mutate, body)
    pod = _pod_after(body, response)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert resources["requests"]["nvidia.com/mig-1g.10gb"] == "1"
    annotations = pod["metadata"]["annotations"]
    assert keys.ANNOTATION_GPU_MEMORY not in annotations
    assert annotations["apportion.io/requested-gpu-memory"] == "9Gi"
    assert annotations[ANNOTATION_PLACEMENT].startswith("mig-node-c:")
    assert answer(admission().validate, mutated(body, response))["allowed"] is True


def test_a_memory_need_no_free_slice_holds_becomes_a_whole_gpu() -> None:
    # 30 GiB needs a 3g.40gb slice; this cluster's MIG GPUs only have 1g.10gb instances.
    body = vary(review(GPU_1), resources={}, annotations={keys.ANNOTATION_GPU_MEMORY: "30Gi"})
    pod = _pod_after(body, answer(admission().mutate, body))
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"


def _follower(cluster: LiveCluster | None = None) -> Admission:
    """A replica that does not lead: every pod it answers waits for the controller."""
    return Admission(cluster or fixture_cluster(), AdmissionSettings(), admits_now=lambda: False)


def _needing(need: str, **change: Any) -> dict[str, Any]:
    """A pod of queue team-a asking only ``need`` of GPU memory."""
    annotations = {keys.ANNOTATION_GPU_MEMORY: need, **change.pop("annotations", {})}
    return vary(review(GPU_1), resources={}, annotations=annotations, **change)


def _gpu_limits(pod: dict[str, Any]) -> dict[str, str]:
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    return {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}


@pytest.mark.parametrize(
    ("need", "device"),
    [
        ("9Gi", "nvidia.com/mig-1g.10gb"),  # a 1g.10gb slice: mig-node-c has 14
        # No node has a 1g.20gb or a 3g.40gb slice, and team-a has no quota for them: was
        # rewritten to those, a resource no node offers, and waited until deleted.
        ("18Gi", "nvidia.com/gpu"),
        ("30Gi", "nvidia.com/gpu"),
    ],
)
def test_a_waiting_memory_need_asks_a_device_some_node_has(need: str, device: str) -> None:
    body = _needing(need)
    pod = _pod_after(body, answer(_follower().mutate, body))
    assert _gated(pod)
    assert _gpu_limits(pod) == {device: "1"}
    # The leader decides the same when the pod must wait (a gang member, here).
    gang = _needing(
        need, labels={keys.LABEL_GANG: "g"}, annotations={keys.ANNOTATION_GANG_SIZE: "2"}
    )
    gated = _pod_after(gang, answer(admission().mutate, gang))
    assert _gated(gated) and _gpu_limits(gated) == {device: "1"}


def test_a_waiting_memory_need_takes_its_queues_own_quota_before_borrowed() -> None:
    # team-b has H100 quota only: a 1g.10gb slice would borrow team-a's, a whole GPU not.
    body = _needing("9Gi", namespace="gpu-team-b", labels={keys.LABEL_QUEUE: None})
    pod = _pod_after(body, answer(_follower().mutate, body))
    assert pod["metadata"]["labels"][keys.LABEL_QUEUE] == "team-b"
    assert _gpu_limits(pod) == {"nvidia.com/gpu": "1"}


def test_a_waiting_memory_need_asks_a_device_on_a_node_it_may_use() -> None:
    # Only mig-node-c has 1g.10gb slices; a pod held to gpu-node-a asks a whole GPU.
    body = _needing("9Gi")
    body["request"]["object"]["spec"]["nodeSelector"] = {keys.NODE_HOSTNAME: "gpu-node-a"}
    pod = _pod_after(body, answer(_follower().mutate, body))
    assert _gpu_limits(pod) == {"nvidia.com/gpu": "1"}


def test_a_waiting_memory_need_asks_what_its_queue_can_be_charged_for() -> None:
    # A team-a of its own with whole H100s only: a 1g.10gb slice could never be charged.
    cluster = fixture_cluster()
    alone = cluster.queues["team-a"].model_copy(
        update={"quota": {"H100-80GB": cluster.queues["team-a"].quota["H100-80GB"]}, "cohort": None}
    )
    cluster.replace_queues([alone, cluster.queues["team-b"]])
    body = _needing("9Gi")
    pod = _pod_after(body, answer(_follower(cluster).mutate, body))
    assert _gpu_limits(pod) == {"nvidia.com/gpu": "1"}


@pytest.mark.parametrize("need", ["80Gi", "79.7Gi"])
def test_a_memory_need_past_any_devices_usable_memory_is_refused(need: str) -> None:
    # An H100 "80GB" reports 81,559 MiB usable (79.65 GiB): was admitted onto one.
    assert _denial(_needing(need)) == (
        f"Apportion: {parse_bytes_mib(need)} MiB of GPU memory: no GPU or MIG slice on this "
        "cluster's nodes holds that much (the largest: a whole H100-80GB, 81559 MiB usable)"
    )


def _object_node(name: str, **labels: str) -> Node:
    """A node of the capture (8 whole H100) as the watch reads it, with labels changed."""
    obj = json.loads((FIXTURES / "objects" / "node-gpu-node-a-8xH100.json").read_text())
    obj["metadata"]["name"] = name
    obj["metadata"]["labels"] |= {keys.NODE_HOSTNAME: name, **labels}
    node, why = node_from_object(obj, default_catalog())
    assert node is not None, why
    return node


def test_a_whole_gpus_usable_memory_is_what_its_node_reports() -> None:
    cluster = fixture_cluster()
    cluster.replace_nodes([_object_node("small", **{"nvidia.com/gpu.memory": "40960"})])
    response = answer(admission(cluster).validate, _needing("41Gi"))
    assert response["status"]["message"] == (
        "Apportion: 41984 MiB of GPU memory: no GPU or MIG slice on this cluster's nodes "
        "holds that much (the largest: a whole H100-80GB, 40960 MiB usable)"
    )
    body = _needing("40Gi")
    pod = _pod_after(body, answer(_follower(cluster).mutate, body))
    assert _gpu_limits(pod) == {"nvidia.com/gpu": "1"}
    # A label above the catalog's figure, which the decision core fits needs to, is not
    # believed: offered on its word, 80 GB of an 81,920 MiB label would be refused by the
    # core as it is here, and the refusal named the label's 81920.
    cluster.replace_nodes([_object_node("big", **{"nvidia.com/gpu.memory": "90000"})])
    response = answer(admission(cluster).validate, _needing("80Gi"))
    assert response["status"]["message"] == (
        "Apportion: 81920 MiB of GPU memory: no GPU or MIG slice on this cluster's nodes "
        "holds that much (the largest: a whole H100-80GB, 81559 MiB usable)"
    )


# -- modes ----------------------------------------------------------------------------------


def test_shadow_mode_only_annotates() -> None:
    body = review(GPU_8)
    response = answer(admission(mode="shadow").mutate, body)
    assert patch_of(response) == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {
                keys.ANNOTATION_SHADOW: patch_of(response)[0]["value"][keys.ANNOTATION_SHADOW]
            },
        }
    ]
    assert patch_of(response)[0]["value"][keys.ANNOTATION_SHADOW].startswith("admit: Admitted: ")
    assert answer(admission(mode="shadow").validate, mutated(body, response))["allowed"] is True


@pytest.mark.parametrize("where", ["global", "namespace"])
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"labels": {keys.LABEL_QUEUE: "nope"}},
         "queue 'nope' does not exist (queues: team-a, team-b)"),
        ({"resources": {"nvidia.com/gpu": "16"}},
         "16 GPUs in one pod: the largest node in this cluster has 8 whole GPUs"),
    ],
)  # fmt: skip
def test_shadow_mode_denies_nothing_and_notes_what_enforcing_would(
    where: str, change: dict[str, Any], problem: str
) -> None:
    """Was: shadow mode, "pods run as if Apportion were not there", still denied a pod with
    no queue or one asking more GPUs than any node has; a namespace opted in without a
    default queue had its GPU pods rejected during the safe rollout."""
    cluster = fixture_cluster()
    if where == "namespace":
        cluster.put_namespace(
            "gpu-team-a", {keys.NAMESPACE_ENABLED: "true", keys.NAMESPACE_MODE: "shadow"}
        )
    shadow = admission(cluster, mode="shadow" if where == "global" else "enforce")
    body = vary(review(GPU_1), **change)
    response = answer(shadow.mutate, body)
    assert patch_of(response) == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {keys.ANNOTATION_SHADOW: f"deny: Refused: {problem}"},
        }
    ]
    validated = answer(shadow.validate, mutated(body, response))
    assert validated["allowed"] is True
    assert validated["warnings"] == [f"Apportion (shadow mode) would deny this pod: {problem}"]
    assert cluster.snapshot().workloads == ()
    # Enforcing, the same pod is denied.
    enforcing = admission(fixture_cluster())
    assert answer(enforcing.validate, body)["status"]["message"] == f"Apportion: {problem}"


@pytest.mark.parametrize(
    "change",
    [
        {"resources": {"nvidia.com/mig-9g.99gb": "1"}},
        {"labels": {keys.LABEL_QUEUE: None}, "annotations": {keys.ANNOTATION_GPU_MODELS: "Nope"}},
    ],
)
def test_a_shadow_mode_warning_is_short_and_its_annotation_whole(change: dict[str, Any]) -> None:
    """Kubernetes advises warnings of at most 120 characters; the API server may cut one
    past 256. Was: 326 to 1,084 characters (every MIG resource of the catalog listed)."""
    cluster = fixture_cluster()
    shadow = admission(cluster, mode="shadow")
    body = vary(review(GPU_1), **change)
    response = answer(shadow.mutate, body)
    noted = _pod_after(body, response)["metadata"]["annotations"][keys.ANNOTATION_SHADOW]
    whole = noted.removeprefix("deny: Refused: ")
    [warning] = answer(shadow.validate, mutated(body, response))["warnings"]
    assert len(warning) <= 120
    assert warning.startswith("Apportion (shadow mode) would deny this pod: ")
    assert warning.endswith(f"… (see annotation {keys.ANNOTATION_SHADOW})")
    assert answer(admission(fixture_cluster()).validate, body)["status"]["message"] == (
        f"Apportion: {whole}"
    )


def test_an_unknown_mig_profile_is_refused_naming_the_nearest_known() -> None:
    """Was: every MIG resource of the catalog named, some 1,050 characters."""
    body = vary(review(GPU_1), resources={"nvidia.com/mig-1g.10gbb": "1"})
    assert _denial(body) == (
        "Apportion: nvidia.com/mig-1g.10gbb is not a MIG profile of any GPU model Apportion "
        "knows (did you mean nvidia.com/mig-1g.10gb or nvidia.com/mig-2g.10gb? 'apportion "
        "catalog' lists them)"
    )


def test_the_rightsizing_warning_is_short() -> None:
    """Was: the report's whole message, past 200 characters."""
    from types import SimpleNamespace

    from scheduler.telemetry.rightsizing import ClassUsage

    usage = ClassUsage(
        queue="team-a", flavor="H100-80GB", workloads=12, devices=96, requested_mib=81_559,
        used_peak_mib=9_000, used_mean_mib=7_000, util_mean_milli=123,
        fits="1g.10gb on H100-80GB",
        message="team-a on H100-80GB: 12 workloads, 96 devices; peak 9,000 MiB (mean 7,000) of "
        "81,559 MiB offered, 12.3 % busy; 1g.10gb on H100-80GB would hold the peak + 10 % and "
        "its compute at its busy time + 10 % (reported by 95 of 96 devices)",
    )  # fmt: skip
    cluster = fixture_cluster()
    cluster.telemetry = SimpleNamespace(rightsizing=(usage,))  # type: ignore[assignment]
    body = review(GPU_1)
    admitted = mutated(body, answer(admission(cluster).mutate, body))
    validated = answer(admission(cluster).validate, admitted)
    assert validated["warnings"] == [
        "Apportion: team-a on H100-80GB peaks at 9,000 of 81,559 MiB; 1g.10gb on H100-80GB "
        "would hold it"
    ]


def test_a_dry_run_decides_but_reserves_nothing() -> None:
    cluster = fixture_cluster()
    body = review("create-pod-dry-run.mutate-create-dryrun")
    pod = _pod_after(body, answer(admission(cluster).mutate, body))
    assert pod["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"
    assert cluster.snapshot().workloads == ()


def test_allocator_failure_gates_by_default_and_can_let_the_pod_through() -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("solver exploded")

    cluster = fixture_cluster()
    cluster.admit_now = broken  # type: ignore[method-assign]
    body = review(GPU_1)
    pod = _pod_after(body, answer(admission(cluster).mutate, body))
    assert _gated(pod)
    assert "could not answer" in pod["metadata"]["annotations"][keys.ANNOTATION_REASON]
    response = answer(admission(cluster, on_allocator_failure="allow").mutate, body)
    assert "patch" not in response and response["allowed"] is True
    assert response["warnings"] == ["Apportion could not decide; the pod runs unmanaged"]
    # The validating call then sees the pod unmarked, and lets it run unmanaged too.
    validated = answer(
        admission(cluster, on_allocator_failure="allow").validate, mutated(body, response)
    )
    assert validated["allowed"] is True, validated


# -- validation: clear denials --------------------------------------------------------------


def _denial(body: dict[str, Any]) -> str:
    response = answer(admission().validate, body)
    assert response["allowed"] is False, response
    message: str = response["status"]["message"]
    return message


def test_too_many_gpus_for_any_node_is_denied() -> None:
    assert _denial(review("create-pod-unschedulable-gpu-16.validate-create")) == (
        "Apportion: 16 GPUs in one pod: the largest node in this cluster has 8 whole GPUs"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"labels": {keys.LABEL_QUEUE: "nope"}},
            "queue 'nope' does not exist (queues: team-a, team-b)",
        ),
        (
            {"namespace": "gpu-team-b"},
            "queue 'team-a' is not open to namespace 'gpu-team-b' (open to: gpu-team-a)",
        ),
        (
            {"resources": {"nvidia.com/mig-9g.99gb": "1"}},
            "nvidia.com/mig-9g.99gb is not a MIG profile of any GPU model Apportion knows",
        ),
        (
            {"annotations": {keys.ANNOTATION_GPU_MODELS: "H100,Voodoo5"}},
            "unknown GPU model 'Voodoo5'",
        ),
        (
            {"annotations": {keys.ANNOTATION_GPU_MEMORY: "200Gi"}, "resources": {}},
            "204800 MiB of GPU memory: no GPU or MIG slice on this cluster's nodes holds that "
            "much (the largest: a whole H100-80GB, 81559 MiB usable)",
        ),
        (
            {"annotations": {keys.ANNOTATION_GPU_MODELS: "A100-80GB,L40S"}},
            "no node in this cluster has A100-80GB/L40S GPUs (it has H100-80GB)",
        ),
        (
            {"annotations": {keys.ANNOTATION_GPU_MEMORY: "lots"}, "resources": {}},
            "'lots' is not a byte quantity like 18Gi or 20G",
        ),
        (  # was: '9223372036854775807 GPUs in one pod'
            {"resources": {"nvidia.com/gpu": "99999999999999999999"}},
            "spec.containers[main].resources.limits.nvidia.com/gpu: '99999999999999999999' is "
            "more devices than Kubernetes counts (at most 2^63 - 1)",
        ),
    ],
)
def test_denials_name_the_problem(change: dict[str, Any], message: str) -> None:
    body = vary(review("create-pod-gpu-1.validate-create"), **change)
    assert message in _denial(body)


@pytest.mark.parametrize(("count", "gpus"), [("1k", 1000), ("3Ki", 3072), ("1e3", 1000)])
def test_a_whole_count_in_any_quantity_form_is_read_as_that_count(count: str, gpus: int) -> None:
    body = vary(review("create-pod-gpu-1.validate-create"), resources={"nvidia.com/gpu": count})
    assert _denial(body) == (
        f"Apportion: {gpus} GPUs in one pod: the largest node in this cluster has 8 whole GPUs"
    )


def test_a_fraction_of_a_gpu_is_refused_as_such() -> None:
    body = vary(review(GPU_1), resources={"nvidia.com/gpu": "500m"})
    assert "nvidia.com/gpu: '500m' is not a whole number of devices" in _denial(body)


def test_requests_must_equal_limits() -> None:
    body = vary(review("create-pod-gpu-1.validate-create"))
    body["request"]["object"]["spec"]["containers"][0]["resources"]["requests"][
        "nvidia.com/gpu"
    ] = "2"
    assert "nvidia.com/gpu request 2 != limit 1; GPU requests and limits must be equal" in (
        _denial(body)
    )


def test_priority_above_the_queue_maximum_is_denied() -> None:
    body = vary(
        review("create-pod-gpu-1.validate-create"),
        namespace="gpu-team-b",
        labels={keys.LABEL_QUEUE: None},
    )
    body["request"]["object"]["spec"]["priority"] = 5000
    assert "priority 5000 is above the maximum 1000 of queue 'team-b'" in _denial(body)


@pytest.mark.parametrize(
    "copied", [None, "gpu-team-b/train-gpu-1"], ids=["no-decision", "another-namespace-s"]
)
def test_a_gpu_pod_the_mutating_webhook_did_not_decide_is_refused_naming_why(
    copied: str | None,
) -> None:
    """Also one carrying the workload annotation of a pod of another namespace it was copied
    from (was: taken for decided, and let through unmanaged). The mutating call fails
    closed, so no outage leads here: a mutating webhook called after Apportion's added the
    GPU, or the namespace opted in between the two calls. Was: 503 "outage or timeout;
    create it again", which clients retry as a passing fault, the same way for ever in the
    first case."""
    body = review("create-pod-gpu-1.validate-create")
    if copied is not None:
        body = vary(body, annotations={keys.ANNOTATION_WORKLOAD: copied})
    response = answer(admission().validate, body)
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 403,
        "message": "Apportion: its mutating webhook did not decide this GPU pod: it saw no "
        "GPU request (a mutating webhook called after it added one: name that webhook's "
        "configuration to sort before apportion's, or ask for the GPU in the pod) or a "
        "namespace not opted in yet (create the pod again)",
    }


def test_only_apportion_may_remove_its_gate() -> None:
    body = review("update-pod-ungate-add-nodeselector.validate-update")
    assert _denial(body) == (
        "Apportion: only Apportion may change the scheduling gate apportion.io/admission "
        "(user kubernetes-admin)"
    )
    body["request"]["userInfo"]["username"] = SERVICE_ACCOUNT
    assert answer(admission().validate, body)["allowed"] is True


def test_users_cannot_forge_a_decision() -> None:
    body = review("update-pod-ungate-add-nodeselector.validate-update")
    old = body["request"]["oldObject"]
    body["request"]["object"]["spec"]["schedulingGates"] = old["spec"]["schedulingGates"]
    body["request"]["object"]["metadata"].setdefault("annotations", {})[
        keys.ANNOTATION_DECISION
    ] = "admitted"
    assert "only Apportion may change annotation apportion.io/decision" in _denial(body)


def _changed(part: str, key: str, value: str | None, *, managed: bool) -> dict[str, Any]:
    """The captured UPDATE of a waiting pod, gate kept (if managed), one key changed."""
    body = review("update-pod-ungate-add-nodeselector.validate-update")
    old, new = body["request"]["oldObject"], body["request"]["object"]
    for pod in (old, new):
        if managed:
            pod["spec"]["schedulingGates"] = [{"name": keys.GATE}]
            pod["metadata"]["annotations"] = {
                keys.ANNOTATION_WORKLOAD: "gpu-team-a/gated-gpu-2",
                keys.ANNOTATION_GANG_SIZE: "4",
            }
            pod["metadata"]["labels"][keys.LABEL_GANG] = "gated-gpu"
        else:
            pod["spec"].pop("schedulingGates", None)
    if value is None:
        del new["metadata"][part][key]
    else:
        new["metadata"][part][key] = value
    return body


@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("labels", keys.LABEL_QUEUE, "team-b"),
        ("labels", keys.LABEL_GANG, None),
        ("annotations", keys.ANNOTATION_GANG_SIZE, "1"),
    ],
)
def test_users_cannot_move_a_managed_pod_to_another_queue_or_gang(
    part: str, key: str, value: str | None
) -> None:
    """The queue was checked at creation (open to the namespace, priority cap) and the
    controller reads queue and gang from the pod: relabelled, a waiting pod would skip to
    a queue its namespace may not use, or a member of a gang of 4 be admitted alone."""
    body = _changed(part, key, value, managed=True)
    assert f"only Apportion may change {part[:-1]} {key}" in _denial(body)
    body["request"]["userInfo"]["username"] = SERVICE_ACCOUNT
    assert answer(admission().validate, body)["allowed"] is True


def test_the_queue_label_of_a_pod_apportion_does_not_manage_is_the_users() -> None:
    body = _changed("labels", keys.LABEL_QUEUE, "team-b", managed=False)
    assert answer(admission().validate, body)["allowed"] is True


def _ungating(
    namespace: str = "gpu-team-a", *, gpus: bool = True, owner: str | None = None
) -> dict[str, Any]:
    """The captured UPDATE of gated-gpu-2 by its user (gate removed, nodeSelector added),
    its pod in ``namespace``, without its GPU, or owned by a ``owner`` kind."""
    body = review("update-pod-ungate-add-nodeselector.validate-update")
    body["request"]["namespace"] = namespace
    for pod in (body["request"]["object"], body["request"]["oldObject"]):
        pod["metadata"]["namespace"] = namespace
        if not gpus:
            for part in pod["spec"]["containers"][0]["resources"].values():
                part.pop("nvidia.com/gpu")
        if owner is not None:
            reference = {"apiVersion": "apps/v1", "kind": owner, "name": "o", "uid": "u"}
            pod["metadata"]["ownerReferences"] = [{**reference, "controller": True}]
    return body


@pytest.mark.parametrize(
    "body",
    [
        _ungating("not-opted-in"),
        _ungating(gpus=False),
        _ungating(owner="DaemonSet"),
    ],
    ids=["namespace-not-opted-in", "no-gpu", "daemonset"],
)
def test_the_gate_on_a_pod_apportion_does_not_manage_is_its_users(body: dict[str, Any]) -> None:
    """The validating webhook judges by itself whether Apportion manages a pod, as at
    creation, not by its configuration's selectors: with a wider namespaceSelector, or an
    UPDATE reaching it for another reason, a user removing Apportion's gate (or changing
    its keys) on a pod Apportion does not manage is not refused."""
    assert answer(admission().validate, body) == {"uid": body["request"]["uid"], "allowed": True}
    new = body["request"]["object"]
    new["spec"]["schedulingGates"] = body["request"]["oldObject"]["spec"]["schedulingGates"]
    new["metadata"]["annotations"] = {keys.ANNOTATION_DECISION: "admitted"}
    new["metadata"]["labels"][keys.LABEL_QUEUE] = "team-b"
    assert answer(admission().validate, body)["allowed"] is True


def test_a_pod_apportion_decided_stays_guarded_once_its_namespace_opts_out() -> None:
    """Decided and waiting in its queue, the pod is still Apportion's (the controller
    releases it in fair-share order): the label gone from its namespace, an UPDATE that
    reaches the webhook still may not remove the gate."""
    body = _ungating("not-opted-in")
    for pod in (body["request"]["object"], body["request"]["oldObject"]):
        pod["metadata"]["annotations"] = {keys.ANNOTATION_WORKLOAD: "not-opted-in/gated-gpu-2"}
    assert _denial(body) == (
        "Apportion: only Apportion may change the scheduling gate apportion.io/admission "
        "(user kubernetes-admin)"
    )


# -- standalone bookkeeping -----------------------------------------------------------------


def test_standalone_mode_tracks_pods_from_validate_and_delete() -> None:
    cluster = fixture_cluster()
    webhook = admission(cluster)
    body = review(GPU_8)
    response = answer(webhook.mutate, body)
    assert answer(webhook.validate, mutated(body, response))["allowed"] is True
    running = cluster.snapshot().workloads
    assert [(w.name, w.pods, w.flavor) for w in running] == [
        ("gpu-team-a/train-gpu-8", 1, "H100-80GB")
    ]
    delete = review("delete-pod-graceful.validate-delete")
    delete["request"]["oldObject"] = _pod_after(body, response)
    assert answer(webhook.validate, delete)["allowed"] is True
    assert cluster.snapshot().workloads == ()


class _Clock:
    """The cluster's clock, moved by the test."""

    def __init__(self, now: float = 1_764_091_500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _admitted_mig(webhook: Any, name: str) -> dict[str, Any]:
    """The captured MIG pod created under ``name``: mutated, then validated as the API
    server stores it (a uid of its own); the pod as validated."""
    body = vary(review(MIG_1G), name=name)
    response = answer(webhook.mutate, body)
    validate = mutated(body, response)
    validate["request"]["object"]["metadata"]["uid"] = str(uuid.uuid4())
    assert answer(webhook.validate, validate)["allowed"] is True
    pod: dict[str, Any] = validate["request"]["object"]
    return pod


def _deleted(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    """A captured DELETE review of infer-mig-1g (bound to mig-node-c) made of ``pod``:
    what the capture's pod carried then (node, status, a deletion under way and its
    grace) on the pod Apportion admitted."""
    body = review(name)
    captured = body["request"]["oldObject"]
    old = copy.deepcopy(pod)
    old["spec"]["nodeName"] = captured["spec"]["nodeName"]
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        if key in captured["metadata"]:
            old["metadata"][key] = captured["metadata"][key]
    old["status"] = captured["status"]
    body["request"]["name"] = old["metadata"]["name"]
    body["request"]["oldObject"] = old
    return body


def _gracefully_deleted_mig() -> tuple[_Clock, Any, Any, dict[str, Any]]:
    """Standalone: the captured MIG pod admitted, then deleted with its 30 s grace (the
    clock, the cluster, the webhook and the pod)."""
    clock = _Clock()
    cluster = fixture_cluster(clock)
    webhook = admission(cluster)
    pod = _admitted_mig(webhook, "infer-mig-1g")
    answer(webhook.validate, _deleted("delete-pod-graceful.validate-delete", pod))
    return clock, cluster, webhook, pod


def _placement(pod: dict[str, Any]) -> str:
    text: str = pod["metadata"]["annotations"][ANNOTATION_PLACEMENT]
    return text


def test_standalone_a_deleted_pod_holds_its_gpus_for_its_grace_period() -> None:
    """Without a watch, a DELETE is the only word that a pod goes: a bound pod then runs
    on for its grace period (the kubelet stops it), so its slice is not handed out again
    until that has passed."""
    clock = _Clock()
    cluster = fixture_cluster(clock)
    webhook = admission(cluster)
    first = _admitted_mig(webhook, "infer-mig-1g")
    delete = _deleted("delete-pod-graceful.validate-delete", first)
    assert delete["request"]["options"]["gracePeriodSeconds"] == 30
    assert answer(webhook.validate, delete)["allowed"] is True
    clock.now += 29
    second = _admitted_mig(webhook, "infer-mig-1g-b")
    assert _placement(second) != _placement(first)
    assert {w.name for w in cluster.snapshot().workloads} == {
        "gpu-team-a/infer-mig-1g",
        "gpu-team-a/infer-mig-1g-b",
    }
    clock.now += 1  # the 30 s the DELETE said
    assert {w.name for w in cluster.snapshot().workloads} == {"gpu-team-a/infer-mig-1g-b"}
    assert _placement(_admitted_mig(webhook, "infer-mig-1g-c")) == _placement(first)


@pytest.mark.parametrize(
    "name",
    [
        "delete-pod-force.validate-delete",  # gracePeriodSeconds=0 of a terminating pod
        "delete-pod-force.validate-delete-3",  # the same, after the force delete's update
    ],
)
def test_standalone_a_pod_deleted_without_grace_frees_its_gpus_at_once(name: str) -> None:
    """A DELETE with gracePeriodSeconds 0 (a force delete, or the kubelet's last one once
    the containers stopped): the pod is gone from the API and the kube-scheduler counts
    its devices free at once; so does Apportion."""
    cluster = fixture_cluster(_Clock())
    webhook = admission(cluster)
    pod = _admitted_mig(webhook, "infer-mig-1g")
    answer(webhook.validate, _deleted("delete-pod-graceful.validate-delete", pod))
    assert answer(webhook.validate, _deleted(name, pod))["allowed"] is True
    assert cluster.snapshot().workloads == ()


def test_standalone_an_unbound_pod_deleted_frees_its_gpus_at_once() -> None:
    """A pod never bound never ran: the API server deletes it at once (gracePeriodSeconds
    0 in the captured DELETE of a pending pod), whatever its grace."""
    cluster = fixture_cluster(_Clock())
    webhook = admission(cluster)
    pod = _admitted_mig(webhook, "infer-mig-1g")
    delete = review("delete-pod-unscheduled.validate-delete")
    assert delete["request"]["options"]["gracePeriodSeconds"] == 0
    delete["request"]["options"].pop("gracePeriodSeconds")  # the pod's 30 s would not count
    delete["request"]["oldObject"] = pod
    assert answer(webhook.validate, delete)["allowed"] is True
    assert cluster.snapshot().workloads == ()


def test_standalone_a_later_delete_never_lengthens_the_hold() -> None:
    """As on the API server, a later DELETE may shorten a pod's grace, never lengthen it."""
    clock, cluster, webhook, pod = _gracefully_deleted_mig()
    clock.now += 20
    answer(webhook.validate, _deleted("delete-pod-graceful.validate-delete", pod))
    clock.now += 10
    assert cluster.snapshot().workloads == ()


def test_standalone_the_end_of_a_grace_drops_only_the_pod_that_left() -> None:
    """A pod created under the name of one whose last DELETE went unseen waits for its
    grace to end; then the old one goes, and the new one stays recorded."""
    clock, cluster, webhook, _ = _gracefully_deleted_mig()
    clock.now += 10
    new = _admitted_mig(webhook, "infer-mig-1g")
    assert _gated(new)
    clock.now += 20
    # The grace ends where the cluster is next read for a decision (the queue view's read
    # alone would not end it, and would pass whatever the end of a grace dropped).
    assert [(w.name, w.placement) for w in cluster.snapshot().workloads] == [
        ("gpu-team-a/infer-mig-1g", None)
    ]
    assert [(w.workload, w.pods_present) for w in waiting_workloads(cluster)] == [
        ("gpu-team-a/infer-mig-1g", 1)
    ]


def test_standalone_a_delete_of_another_pod_under_the_name_ends_no_earlier_grace() -> None:
    """The DELETE of a pod Apportion never recorded (it asks no GPU) under the name of one
    still in its grace period, whose last DELETE went unseen: each pod's grace ends on its
    own, and the GPU pod's slice is free once its own has passed."""
    clock, cluster, webhook, old = _gracefully_deleted_mig()
    clock.now += 10
    other = copy.deepcopy(old)
    other["metadata"]["uid"] = str(uuid.uuid4())
    for part in other["spec"]["containers"][0]["resources"].values():
        for name in [n for n in part if n.startswith("nvidia.com/")]:
            del part[name]
    delete = review("delete-pod-unscheduled.validate-delete")
    delete["request"]["oldObject"] = other
    assert answer(webhook.validate, delete)["allowed"] is True
    assert [w.name for w in cluster.snapshot().workloads] == ["gpu-team-a/infer-mig-1g"]
    clock.now += 20  # the 30 s the GPU pod's DELETE said
    assert cluster.snapshot().workloads == ()
    assert _placement(_admitted_mig(webhook, "infer-mig-1g-b")) == _placement(old)


def test_a_retried_create_gets_the_same_admission() -> None:
    cluster = fixture_cluster()
    body = review(GPU_8)
    first = _pod_after(body, answer(admission(cluster).mutate, body))
    again = _pod_after(body, answer(admission(cluster).mutate, vary(body)))
    key = ANNOTATION_PLACEMENT
    assert again["metadata"]["annotations"][key] == first["metadata"]["annotations"][key]
    assert len(cluster.snapshot().workloads) == 1


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("on_allocator_failure", ["gate", "allow"])
def test_a_create_under_the_name_of_a_pod_that_holds_gpus_waits_for_it(
    dry_run: bool, on_allocator_failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pod recreated under its name (a StatefulSet's, a bare pod deleted and applied
    again) while the old one still holds its GPUs, or a create (dry run) of a pod that
    exists: no allocator failure, so neither a gate that blames it nor, with ``allow``, a
    pod let through unmanaged; it waits, saying for what."""
    cluster = fixture_cluster()
    webhook = admission(cluster, on_allocator_failure=on_allocator_failure)
    body = review(GPU_8)
    response = answer(webhook.mutate, body)
    assert answer(webhook.validate, mutated(body, response))["allowed"] is True
    before = cluster.snapshot().workloads
    again = vary(body, dry_run=dry_run)
    with caplog.at_level("ERROR", logger="apportion"):
        pod = _pod_after(again, answer(webhook.mutate, again))
    assert caplog.records == []
    assert _gated(pod)
    assert pod["metadata"]["annotations"][keys.ANNOTATION_REASON] == (
        "NotSelectedByOptimizer: a pod named gpu-team-a/train-gpu-8 still holds its GPUs "
        "(being deleted, or this one already exists); the controller decides this one once "
        "it is gone"
    )
    assert cluster.snapshot().workloads == before


def _owned(body: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    body["request"]["object"]["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": kind, "name": name, "uid": "u", "controller": True}
    ]
    return body


def test_a_pytorchjob_is_a_gang_of_its_world_size() -> None:
    body = vary(
        review(GPU_1), name="ddp-worker-0", labels={"training.kubeflow.org/job-name": "ddp"}
    )
    body = _owned(body, "PyTorchJob", "ddp")
    body["request"]["object"]["spec"]["containers"][0]["env"] = [
        {"name": "WORLD_SIZE", "value": "4"}
    ]
    pod = _pod_after(body, answer(admission().mutate, body))
    assert _gated(pod)
    assert pod["metadata"]["labels"][keys.LABEL_GANG] == "ddp"
    assert pod["metadata"]["annotations"][keys.ANNOTATION_GANG_SIZE] == "4"
    assert pod["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD] == "gpu-team-a/ddp"


def test_a_jobset_is_sized_once_all_its_jobs_are_known() -> None:
    cluster = fixture_cluster()
    body = vary(
        review("create-pod-gpu-1.validate-create"),
        labels={keys.JOBSET_NAME: "llm"},
        annotations={keys.JOBSET_REPLICAS: "2"},
    )
    body = _owned(body, "Job", "llm-workers-0")
    cluster.jobs.put("gpu-team-a", "llm-workers-0", 4, "llm")
    denial = answer(admission(cluster).validate, body)
    assert denial["allowed"] is False and "gang 'llm'" in denial["status"]["message"]
    cluster.jobs.put("gpu-team-a", "llm-workers-1", 4, "llm")
    mutate = vary(body)
    mutate["request"]["operation"] = "CREATE"
    pod = _pod_after(mutate, answer(admission(cluster).mutate, mutate))
    assert pod["metadata"]["annotations"][keys.ANNOTATION_GANG_SIZE] == "8"
    assert _gated(pod)


@pytest.mark.parametrize(
    ("change", "asks"),
    [
        ({"resources": {"nvidia.com/gpu": "8"}}, "nvidia.com/gpu: 8"),
        ({"resources": {"nvidia.com/mig-1g.10gb": "1"}}, "nvidia.com/mig-1g.10gb: 1"),
        (
            {"annotations": {keys.ANNOTATION_GPU_MODELS: "H100-80GB"}},
            "nvidia.com/gpu: 1 of H100-80GB",
        ),
    ],
    ids=["count", "mig", "models"],
)
def test_a_gang_member_asking_differently_from_its_members_is_refused(
    change: dict[str, Any], asks: str
) -> None:
    """Was: a gang was decided as its pods × its first member's ask, so a JobSet's leader
    asking 1 GPU beside workers asking 8 (or a MIG slice beside whole GPUs) was charged
    for less than it used, outside its queue's quota, on devices reserved for another ask.
    A member that asks differently from the members already known is refused at creation,
    naming both asks; one that asks the same is not."""
    handler = admission()

    def create(name: str, **changes: Any) -> dict[str, Any]:
        annotations = {keys.ANNOTATION_GANG_SIZE: "3", **changes.pop("annotations", {})}
        body = vary(
            review(GPU_1), name=name, labels={keys.LABEL_GANG: "llm"}, annotations=annotations,
            **changes,
        )  # fmt: skip
        return answer(handler.validate, mutated(body, answer(handler.mutate, body)))

    assert create("llm-0")["allowed"] and create("llm-1")["allowed"]
    denial = create("llm-2", **change)
    assert denial["allowed"] is False
    assert denial["status"]["message"] == (
        f"Apportion: the members of gang gpu-team-a/llm ask differently: this pod asks {asks} "
        "in queue team-a, its member llm-0 asks nvidia.com/gpu: 1 in queue team-a. Apportion "
        "admits a gang as its pods × one ask: give every member the same GPU request, models "
        "(apportion.io/gpu-models) and queue (apportion.io/queue), or put the pods that ask "
        "differently in a gang of their own (apportion.io/gang, apportion.io/gang-size)"
    )
    assert create("llm-2")["allowed"]


@pytest.mark.parametrize("gang_first", [True, False], ids=["gang-first", "pod-first"])
def test_a_pod_named_like_a_gang_of_its_namespace_is_refused(gang_first: bool) -> None:
    """Was: both were workload gpu-team-a/train. A pod after the gang was admitted as one of
    its members (the gang, one pod too many, then never decided); a gang after the pod was
    refused as asking differently from "its member train"."""
    handler = admission()

    def create(name: str, in_gang: bool) -> dict[str, Any]:
        body = vary(
            review(GPU_1), name=name,
            labels={keys.LABEL_GANG: "train"} if in_gang else {},
            annotations={keys.ANNOTATION_GANG_SIZE: "2"} if in_gang else {},
        )  # fmt: skip
        return answer(handler.validate, mutated(body, answer(handler.mutate, body)))

    if gang_first:
        assert create("train-0", True)["allowed"] and create("train-1", True)["allowed"]
        denial, members = create("train", False), "train-0, train-1"
    else:
        assert create("train", False)["allowed"]
        denial, members = create("train-0", True), "train-0"
    assert denial["status"]["message"] == (
        f"Apportion: workload gpu-team-a/train names both a gang (members: {members}) and the "
        "pod train of its own: give the gang or the pod another name"
    )
    kept = {p.name for p in handler.cluster.members("gpu-team-a/train")}
    assert kept == ({"train-0", "train-1"} if gang_first else {"train"})


def test_only_the_leading_replica_admits_at_creation() -> None:
    from webhook.admission import Admission
    from webhook.settings import AdmissionSettings

    follower = Admission(fixture_cluster(), AdmissionSettings(), admits_now=lambda: False)
    body = review(GPU_1)
    pod = _pod_after(body, answer(follower.mutate, body))
    assert _gated(pod)
    assert pod["metadata"]["annotations"][keys.ANNOTATION_REASON] == (
        "NotSelectedByOptimizer: decided by the controller's next cycle (this replica does "
        "not lead)"
    )
    assert follower.cluster.snapshot().workloads == ()  # nothing reserved here


_COPIED = {
    ANNOTATION_PLACEMENT: "gpu-node-a:0",
    keys.ANNOTATION_NOMINATED: "2099-01-01T00:00:00Z",
    keys.ANNOTATION_EVICTED_FOR: "2099-01-01T00:00:00Z PreemptedByHigherPriority gpu-team-a/urgent",
    keys.ANNOTATION_TOLD: "0f3c1b2a-0000-4000-8000-000000000000",
    keys.ANNOTATION_WORKLOAD: "gpu-team-a/victim",
    keys.ANNOTATION_DECISION: "admitted",
    keys.ANNOTATION_REASON: "Admitted: copied",
}
"""What a pod copied from a running victim (``kubectl get -o yaml``) carries of Apportion's."""


def test_every_key_only_apportion_writes_is_removed_from_a_pod_created_with_it() -> None:
    """A gated pod with a placement is one Apportion admitted (a gang's members are placed
    before their gates come off), a nominated one goes first, a marked one is evicted for
    another workload (was: the eviction mark survived creation, and the copy of a victim
    was evicted once it ran): each is removed unless the answer writes it anew, whatever
    answer the pod gets (waiting, refused, shadow)."""
    from webhook.admission import APPORTION_ONLY, Admission
    from webhook.settings import AdmissionSettings

    assert _COPIED.keys() | {keys.LABEL_MANAGED} == APPORTION_ONLY  # a key added is added here
    follower = Admission(fixture_cluster(), AdmissionSettings(), admits_now=lambda: False)
    body = vary(review(GPU_1), name="copy-of-victim", annotations=dict(_COPIED))
    pod = _pod_after(body, answer(follower.mutate, body))
    assert _gated(pod)
    annotations = pod["metadata"]["annotations"]
    assert {k: annotations[k] for k in _COPIED.keys() & annotations.keys()} == {
        keys.ANNOTATION_WORKLOAD: "gpu-team-a/copy-of-victim",
        keys.ANNOTATION_DECISION: "pending",
        keys.ANNOTATION_REASON: annotations[keys.ANNOTATION_REASON],
    }
    assert not annotations[keys.ANNOTATION_REASON].startswith("Admitted")
    assert PodReader(fixture_cluster().catalog).observed(pod).evicted_for is None  # type: ignore[union-attr]
    refused = vary(body, labels={keys.LABEL_QUEUE: "nope"})
    for handler, changed in (
        (admission().mutate, refused),
        (admission(mode="shadow").mutate, body),
    ):
        pod = _pod_after(changed, answer(handler, changed))
        assert not _COPIED.keys() & pod["metadata"]["annotations"].keys()


def test_an_arrival_does_not_pass_higher_priority_work_of_its_queue() -> None:
    from scheduler.model import Demand
    from webhook.pods import ManagedPod

    cluster = fixture_cluster()
    cluster.put_pod(
        ManagedPod(
            namespace="gpu-team-a", name="big-0", workload="gpu-team-a/big", queue="team-a",
            demand=Demand(gpus=8), priority=500, created=1, gang_size=1, gated=True,
        )
    )  # fmt: skip
    low = _pod_after(review(GPU_1), answer(admission(cluster).mutate, review(GPU_1)))
    assert _gated(low)
    assert low["metadata"]["annotations"][keys.ANNOTATION_REASON] == (
        "NotSelectedByOptimizer: queue team-a has waiting work of priority 500 > 0; the "
        "controller decides the order"
    )
    body = vary(review(GPU_1), name="urgent")
    body["request"]["object"]["spec"]["priority"] = 900
    urgent = _pod_after(body, answer(admission(cluster).mutate, body))
    assert urgent["metadata"]["annotations"][keys.ANNOTATION_DECISION] == "admitted"


def test_a_pod_the_validating_webhook_refuses_is_gated_and_told_by_the_controller() -> None:
    """Was: left untouched by the mutating webhook, for the validating one to deny; but that
    one's failurePolicy is Ignore, and a pod whose validating call failed ran outside every
    queue. Now gated with nothing of a decision (a workload copied from a pod of its
    namespace removed): the controller keeps such a pod gated, tells why, and takes it into
    its queue once the reason is gone (``strays.py``)."""
    from webhook.strays import may_be_stray

    cluster = fixture_cluster()
    body = vary(
        review(GPU_8),
        name="typo",
        labels={keys.LABEL_QUEUE: "team-aa"},
        annotations={keys.ANNOTATION_WORKLOAD: "gpu-team-a/other"},
    )
    response = answer(admission(cluster).mutate, body)
    pod = _pod_after(body, response)
    assert _gated(pod)
    assert not {k for k in pod["metadata"]["annotations"] if k.startswith(keys.PREFIX)}
    assert keys.LABEL_MANAGED not in pod["metadata"]["labels"]
    assert "affinity" not in pod["spec"]
    denial = answer(admission(cluster).validate, mutated(body, response))
    assert denial["status"]["message"] == (
        "Apportion: queue 'team-aa' does not exist (queues: team-a, team-b)"
    )
    # Past a failed validating call, the controller finds it gated and never decided.
    pod["metadata"]["uid"] = "typo-uid"
    assert may_be_stray(pod)
    refused = admission(cluster).adopt(pod)
    assert (refused.answer.allowed, refused.answer.message) == (
        False,
        "queue 'team-aa' does not exist (queues: team-a, team-b)",
    )
    pod["metadata"]["labels"][keys.LABEL_QUEUE] = "team-a"  # its user fixes it
    assert admission(cluster).adopt(pod).outcome == "gated"


# -- gated pods the webhook never saw (adopted by the controller) ----------------------------


def _never_seen(**changes: Any) -> dict[str, Any]:
    """The captured one-GPU pod as the controller's watch serves one created past the
    webhook with Apportion's gate (a manifest copied from a waiting pod)."""
    pod: dict[str, Any] = vary(review(GPU_1), namespace="gpu-team-a", name="copied", **changes)[
        "request"
    ]["object"]
    pod["spec"]["schedulingGates"] = [{"name": keys.GATE}]
    return pod


def test_a_gated_pod_the_webhook_never_saw_is_adopted_as_one_that_must_wait() -> None:
    """What the mutating webhook records on a pod that must wait, nothing admitted yet: the
    controller's next cycle decides it."""
    pod = _never_seen()
    verdict = admission().adopt(pod)
    assert (verdict.outcome, verdict.workload) == ("gated", "gpu-team-a/copied")
    adopted = jsonpatch.apply_patch(pod, list(verdict.answer.patch))
    metadata = adopted["metadata"]
    assert metadata["labels"][keys.LABEL_MANAGED] == "true"
    assert metadata["labels"][keys.LABEL_QUEUE] == "team-a"
    assert {k: v for k, v in metadata["annotations"].items() if k.startswith(keys.PREFIX)} == {
        keys.ANNOTATION_WORKLOAD: "gpu-team-a/copied",
        keys.ANNOTATION_DECISION: "pending",
        keys.ANNOTATION_REASON: "NotSelectedByOptimizer: adopted; the controller decides it",
    }
    assert _gated(adopted) and "affinity" not in adopted["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in adopted[
        "spec"
    ]["tolerations"]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        (
            {"labels": {keys.LABEL_QUEUE: "nope"}},
            "queue 'nope' does not exist (queues: team-a, team-b)",
        ),
        (
            {"resources": {"nvidia.com/gpu": "16"}},
            "16 GPUs in one pod: the largest node in this cluster has 8 whole GPUs",
        ),
        (
            {"resources": {}, "annotations": {keys.ANNOTATION_GPU_MEMORY: "9Gi"}},
            f"a GPU-memory need ({keys.ANNOTATION_GPU_MEMORY}) becomes a device only when the "
            "pod is created",
        ),
    ],
    ids=["unknown-queue", "never-fits", "memory-need"],
)
def test_a_gated_pod_the_webhook_never_saw_is_refused_as_the_webhook_would(
    changes: dict[str, Any], why: str
) -> None:
    verdict = admission().adopt(_never_seen(**changes))
    assert (verdict.answer.allowed, verdict.answer.message) == (False, why)


@pytest.mark.parametrize(
    "copied", [None, "gpu-team-b/gated-gpu-2"], ids=["no-decision", "another-namespace-s"]
)
@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("labels", keys.LABEL_QUEUE, "team-b"),
        ("annotations", keys.ANNOTATION_GANG_SIZE, "2"),
    ],
)
def test_a_gated_pod_the_webhook_never_decided_can_be_fixed_by_its_user(
    part: str, key: str, value: str, copied: str | None
) -> None:
    """Was: the controller keeps such a pod gated while its webhook would refuse it and
    tells its user to label it with a queue (or size its gang): it joins its queue once that
    is fixed. Yet its queue label and gang size were guarded as if Apportion had decided
    them, so the fix was refused. They are the user's until Apportion decides the pod (its
    adoption checks them then); its gate stays Apportion's. A workload annotation copied
    from a pod of another namespace is no decision of this pod (was: guarded as one)."""
    body = _changed(part, key, value, managed=True)
    for pod in (body["request"]["oldObject"], body["request"]["object"]):
        if copied is None:
            del pod["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD]
        else:
            pod["metadata"]["annotations"][keys.ANNOTATION_WORKLOAD] = copied
    assert answer(admission().validate, body)["allowed"] is True
    body["request"]["object"]["spec"]["schedulingGates"] = []
    assert _denial(body) == (
        "Apportion: only Apportion may change the scheduling gate apportion.io/admission "
        "(user kubernetes-admin)"
    )


# -- what users write is text: no value of it makes the webhook fail open ------------------
# A request the webhook fails on is let through unmanaged (server.py): outside every quota.
# Annotation and env values are any text to the API server; label values are checked by it.

_LABEL_VALUE = st.text(st.sampled_from("abz09-_."), min_size=1, max_size=8).filter(
    lambda v: v[0].isalnum() and v[-1].isalnum()
)
_USER_TEXT = st.text(max_size=12) | st.sampled_from(
    ["\u00b2", "\u0661", "9" * 5000, " 3 ", "1e999", "-1", "0", "+2"]
)


@st.composite
def _user_written(draw: st.DrawFn) -> dict[str, Any]:
    """A captured 1-GPU pod as a gang, a Kueue pod group, a JobSet's or a PyTorchJob's, with
    the texts Apportion reads of it drawn."""
    labels: dict[str, str | None] = {}
    annotations: dict[str, str | None] = {}
    for label, size_key in (
        (keys.LABEL_GANG, keys.ANNOTATION_GANG_SIZE),
        (keys.KUEUE_GROUP_LABEL, keys.KUEUE_GROUP_TOTAL),
        (keys.JOBSET_NAME, keys.JOBSET_REPLICAS),
        (keys.PYTORCHJOB_NAME, None),
    ):
        if draw(st.booleans()):
            labels[label] = draw(_LABEL_VALUE)
        if size_key is not None and draw(st.booleans()):
            annotations[size_key] = draw(_USER_TEXT)
    for key in (keys.ANNOTATION_GPU_MEMORY, keys.ANNOTATION_GPU_MODELS):
        if draw(st.booleans()):
            annotations[key] = draw(_USER_TEXT)
    body = vary(review(GPU_1), labels=labels, annotations=annotations)
    container = body["request"]["object"]["spec"]["containers"][0]
    if draw(st.booleans()):
        container["env"] = [{"name": "WORLD_SIZE", "value": draw(_USER_TEXT)}]
    return body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_user_written())
def test_no_annotation_or_env_value_makes_the_webhook_fail(body: dict[str, Any]) -> None:
    """Raised before: '²' is a digit to ``str.isdigit`` but not to ``int``, and ``int``
    refuses 5,000 digits (gang sizes, Kueue's and JobSet's counts, WORLD_SIZE)."""
    cluster = fixture_cluster()
    for handler in (admission(cluster).mutate, admission(cluster).validate):
        response = answer(handler, body)  # raises where the server would let the pod through
        assert isinstance(response["allowed"], bool)
    # The controller reads the same pod from its watch, in any namespace.
    pod = body["request"]["object"]
    PodReader(cluster.catalog).observed({**pod, "spec": {**pod["spec"], "nodeName": "gpu-a"}})


@pytest.mark.parametrize("gates", [{"name": keys.GATE}, "x"])
@pytest.mark.parametrize("leads", [True, False], ids=["admitted", "gated"])
def test_scheduling_gates_the_api_server_refuses_make_no_handler_fail(
    gates: Any, leads: bool
) -> None:
    """The mutating call comes before the API server validates the pod. Was: a map there
    raised in an admission (KeyError), and the server let the pod through with "allowed";
    a waiting pod's was replaced by Apportion's gate, made valid. Left for the API server
    to refuse."""
    from webhook.admission import Admission
    from webhook.settings import AdmissionSettings

    handler = Admission(fixture_cluster(), AdmissionSettings(), admits_now=lambda: leads)
    body = vary(review(GPU_1))
    body["request"]["object"]["spec"]["schedulingGates"] = gates
    response = answer(handler.mutate, body)
    assert response["allowed"] is True
    assert not [op for op in patch_of(response) if "schedulingGates" in op["path"]]


def test_a_bound_pod_with_an_unreadable_count_is_still_read() -> None:
    """In a namespace that never opted in, where no webhook checked it: raising here failed
    the controller's whole pod list, again at every relist."""
    pod = json.loads((FIXTURES / "objects" / "pod-bound-gpu-1.json").read_text())
    pod["metadata"]["namespace"] = "not-opted-in"
    pod["metadata"].setdefault("annotations", {})[keys.JOBSET_REPLICAS] = "\u00b2"
    pod["metadata"]["labels"] = {keys.JOBSET_NAME: "js"}
    observed = PodReader(fixture_cluster().catalog).observed(pod)
    assert observed is not None and observed.namespace == "not-opted-in"
