"""Builders for webhook tests: captured AdmissionReviews, variants of them, the capture's cluster.

Every review starts from a body kube-apiserver really sent (tests/fixtures/admission) and
is varied the way a user would vary the pod (namespace, labels, annotations, resources).
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch

from scheduler.model import Node
from webhook.admission import Admission
from webhook.cluster import LiveCluster
from webhook.review import parse_review, review_response
from webhook.settings import AdmissionSettings
from webhook.standalone import load_cluster_file, seed_cluster

FIXTURES = Path(__file__).parent / "fixtures"
ADMISSION = FIXTURES / "admission"
CLUSTER_FILE = FIXTURES / "webhook" / "cluster.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:apportion-system:apportion"


def review(name: str) -> dict[str, Any]:
    """A captured AdmissionReview body by file name (without .json)."""
    data: dict[str, Any] = json.loads((ADMISSION / f"{name}.json").read_text())
    return data


def vary(
    body: dict[str, Any],
    *,
    namespace: str | None = None,
    name: str | None = None,
    labels: dict[str, str | None] | None = None,
    annotations: dict[str, str | None] | None = None,
    resources: dict[str, str] | None = None,
    dry_run: bool | None = None,
    new_uid: bool = True,
) -> dict[str, Any]:
    """A copy of a captured review with the pod changed as a user would change it."""
    body = copy.deepcopy(body)
    request = body["request"]
    if new_uid:
        request["uid"] = str(uuid.uuid4())
    pod = request.get("object") or {}
    metadata = pod.setdefault("metadata", {})
    if namespace is not None:
        request["namespace"] = namespace
        metadata["namespace"] = namespace
    if name is not None:
        request["name"] = name
        metadata["name"] = name
    for field, changes in (("labels", labels), ("annotations", annotations)):
        if changes:
            current = metadata.setdefault(field, {})
            for key, value in changes.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
    if resources is not None:
        container = pod["spec"]["containers"][0]
        kept = {k: v for k, v in container["resources"]["limits"].items() if "nvidia.com" not in k}
        container["resources"]["limits"] = {**kept, **resources}
        kept = {
            k: v for k, v in container["resources"]["requests"].items() if "nvidia.com" not in k
        }
        container["resources"]["requests"] = {**kept, **resources}
    if dry_run is not None:
        request["dryRun"] = dry_run
    return body


def fixture_cluster(
    clock: float | Callable[[], float] = 1_764_091_500.0, **kwargs: Any
) -> LiveCluster:
    """The capture's cluster (3 H100 nodes, one with MIG) loaded from the standalone file;
    ``clock`` a time, or a callable the test moves."""
    cluster = LiveCluster(clock=clock if callable(clock) else lambda: clock, **kwargs)
    snapshot, namespaces = load_cluster_file(CLUSTER_FILE)
    seed_cluster(cluster, snapshot, namespaces)
    return cluster


def admission(cluster: LiveCluster | None = None, **settings: Any) -> Admission:
    settings.setdefault("trusted_users", frozenset({SERVICE_ACCOUNT}))
    return Admission(cluster or fixture_cluster(), AdmissionSettings(**settings), standalone=True)


def answer(handler: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview response ``handler`` (admission.mutate/validate) gives a body."""
    request = parse_review(json.dumps(body).encode())
    response: dict[str, Any] = review_response(request.uid, handler(request).answer)["response"]
    return response


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


def mutated(body: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The review the validating webhook then sees: the pod with the mutation applied."""
    body = copy.deepcopy(body)
    pod = body["request"]["object"]
    body["request"]["object"] = jsonpatch.apply_patch(pod, patch_of(response))
    body["request"]["uid"] = str(uuid.uuid4())
    return body


def cpu_only_pod(
    name: str,
    node: str | None = "gpu-node-a",
    cpu: str = "2",
    memory: str = "8Gi",
    phase: str = "Running",
) -> dict[str, Any]:
    """A pod asking no GPU (a data loader, an agent): the recorded bound GPU pod
    (fixtures/objects/pod-bound-gpu-1.json) without its GPU, with these requests."""
    pod: dict[str, Any] = json.loads((FIXTURES / "objects" / "pod-bound-gpu-1.json").read_text())
    metadata = pod["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        metadata.pop(key, None)
    metadata["name"] = name
    metadata["labels"] = {"app": name}
    pod["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"memory": memory},
    }
    if node is None:
        pod["spec"].pop("nodeName", None)
    else:
        pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": phase}
    return pod


def free_host(node: Node) -> tuple[int, int]:
    """CPU milli and memory MiB of the node not held by pods outside the workloads."""
    assert node.cpu_milli is not None and node.memory_mib is not None
    return node.cpu_milli - node.cpu_held_milli, node.memory_mib - node.memory_held_mib
