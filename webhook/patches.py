"""JSONPatch (RFC 6902) operations on pods, written only with changes the API server accepts.

At CREATE anything goes. On a gated pod afterwards only *additions* are accepted
(tests/fixtures and the gated-pod rules recorded on kube-apiserver v1.36): a new
matchExpression in each existing nodeSelectorTerm, new nodeSelector keys, labels,
annotations, tolerations, and deleting the gate — so every builder of the spec here adds,
and the admission patch is built so that it can only narrow what the pod already says.
Labels and annotations are metadata, which any pod may change (``remove_metadata``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.model import Node
from webhook import keys
from webhook.nodeconstraints import affinity_parts
from webhook.pods import gate_names

__all__ = [
    "Patch",
    "add_gate",
    "add_tolerations",
    "admit_gated",
    "escape",
    "node_expressions",
    "remove_gate",
    "remove_metadata",
    "require_nodes",
    "same_pod",
    "set_gpu_resource",
    "set_metadata",
]

Patch = list[dict[str, Any]]


def escape(key: str) -> str:
    """A map key as one JSON-pointer token (``apportion.io/queue`` → ``apportion.io~1queue``)."""
    return key.replace("~", "~0").replace("/", "~1")


def set_metadata(pod: Mapping[str, Any], field: str, values: Mapping[str, str]) -> Patch:
    """Add or overwrite labels/annotations, creating the map when the pod has none."""
    metadata = pod.get("metadata") or {}
    current = metadata.get(field)
    if not isinstance(current, dict):
        return (
            [{"op": "add", "path": f"/metadata/{field}", "value": dict(values)}] if values else []
        )
    return [
        {"op": "add", "path": f"/metadata/{field}/{escape(k)}", "value": v}
        for k, v in values.items()
        if current.get(k) != v
    ]


def remove_metadata(pod: Mapping[str, Any], field: str, names: Iterable[str]) -> Patch:
    """Remove those labels/annotations the pod has."""
    current = (pod.get("metadata") or {}).get(field)
    if not isinstance(current, dict):
        return []
    return [
        {"op": "remove", "path": f"/metadata/{field}/{escape(k)}"} for k in names if k in current
    ]


def add_gate(pod: Mapping[str, Any]) -> Patch:
    """The scheduling gate, unless the pod already carries it."""
    gates = (pod.get("spec") or {}).get("schedulingGates")
    gate = {"name": keys.GATE}
    if gates is not None and not isinstance(gates, list):
        return []  # the API server refuses it: never made valid here
    if not gates:
        return [{"op": "add", "path": "/spec/schedulingGates", "value": [gate]}]
    if keys.GATE in gate_names(pod.get("spec") or {}):
        return []
    return [{"op": "add", "path": "/spec/schedulingGates/-", "value": gate}]


def add_tolerations(pod: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> Patch:
    """Tolerations the pod lacks (adding tolerations is allowed even on gated pods)."""
    current = (pod.get("spec") or {}).get("tolerations")
    have = current if isinstance(current, list) else []
    missing = [dict(t) for t in tolerations if dict(t) not in have]
    if not missing:
        return []
    if not have:
        return [{"op": "add", "path": "/spec/tolerations", "value": missing}]
    return [{"op": "add", "path": "/spec/tolerations/-", "value": t} for t in missing]


def require_nodes(pod: Mapping[str, Any], expressions: list[dict[str, Any]]) -> Patch:
    """AND ``expressions`` into the pod's required node affinity.

    Terms of ``nodeSelectorTerms`` are ORed, so the narrowing that the API server accepts
    on a gated pod is: the same expressions appended to *every* existing term but an empty
    one, which matches no node (given expressions, it would match some). A pod without
    required node affinity gets one term. An affinity the API server refuses (a level that
    is not an object, no terms) is left as it is: made valid, the pod would run with a
    constraint its user never wrote instead of being refused.
    """
    if not expressions:
        return []
    affinity, node_affinity, required = affinity_parts(pod.get("spec") or {})
    if any(
        part is not None and not isinstance(part, dict)
        for part in (affinity, node_affinity, required)
    ):
        return []
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    term = {"matchExpressions": expressions}
    if not isinstance(affinity, dict):
        return [
            {
                "op": "add",
                "path": "/spec/affinity",
                "value": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [term]
                        }
                    }
                },
            }
        ]
    if not isinstance(node_affinity, dict):
        return [
            {
                "op": "add",
                "path": "/spec/affinity/nodeAffinity",
                "value": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
                },
            }
        ]
    base = "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"
    if not isinstance(required, dict):
        return [{"op": "add", "path": base, "value": {"nodeSelectorTerms": [term]}}]
    if not isinstance(terms, list) or not terms:
        return []
    patch: Patch = []
    for index, existing in enumerate(terms):
        if not isinstance(existing, dict) or not (
            existing.get("matchExpressions") or existing.get("matchFields")
        ):
            continue  # matches no node, and must go on matching none
        exprs = existing.get("matchExpressions")
        path = f"{base}/nodeSelectorTerms/{index}/matchExpressions"
        if not isinstance(exprs, list):
            patch.append({"op": "add", "path": path, "value": list(expressions)})
        else:
            patch.extend({"op": "add", "path": f"{path}/-", "value": e} for e in expressions)
    return patch


def node_expressions(nodes: Iterable[Node]) -> list[dict[str, Any]]:
    """Required node-affinity expressions pinning a pod to these nodes and their GPU product
    (hostname label, else the node name)."""
    chosen = list(nodes)
    products = sorted(
        {n.labels[keys.NODE_PRODUCT] for n in chosen if keys.NODE_PRODUCT in n.labels}
    )
    hostnames = sorted(n.labels.get(keys.NODE_HOSTNAME, n.name) for n in chosen)
    expressions: list[dict[str, Any]] = []
    if products:
        expressions.append({"key": keys.NODE_PRODUCT, "operator": "In", "values": products})
    expressions.append({"key": keys.NODE_HOSTNAME, "operator": "In", "values": hostnames})
    return expressions


def remove_gate(pod: Mapping[str, Any]) -> Patch:
    """Apportion's gate removed; ``test`` guards against a stale view of the gates."""
    gates = (pod.get("spec") or {}).get("schedulingGates")
    gates = gates if isinstance(gates, list) else []
    patch: Patch = []
    for index in reversed(range(len(gates))):
        if isinstance(gates[index], dict) and gates[index].get("name") == keys.GATE:
            path = f"/spec/schedulingGates/{index}"
            patch.append({"op": "test", "path": path, "value": gates[index]})
            patch.append({"op": "remove", "path": path})
    return patch


def same_pod(pod: Mapping[str, Any], *, unchanged: bool = False) -> Patch:
    """``test``s that the patch applies to ``pod`` as seen: not to one created since under
    its name (its uid) and, ``unchanged``, not to it changed since (its resourceVersion:
    a patch made once already, whose answer was lost, must not be made again)."""
    metadata = pod.get("metadata") or {}
    patch: Patch = [{"op": "test", "path": "/metadata/uid", "value": metadata.get("uid", "")}]
    version = metadata.get("resourceVersion")
    if unchanged and version:
        patch.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return patch


def admit_gated(pod: Mapping[str, Any], expressions: list[dict[str, Any]]) -> Patch:
    """Placement and ungating in one patch."""
    return require_nodes(pod, expressions) + remove_gate(pod)


def set_gpu_resource(pod: Mapping[str, Any], container: int, resource: str, count: int) -> Patch:
    """Give one container ``count`` of ``resource`` (requests = limits), at CREATE only."""
    containers = (pod.get("spec") or {}).get("containers") or []
    if container >= len(containers):
        return []
    target = containers[container]
    base = f"/spec/containers/{container}/resources"
    value = str(count)
    resources = target.get("resources")
    if not isinstance(resources, dict):
        return [
            {
                "op": "add",
                "path": base,
                "value": {"requests": {resource: value}, "limits": {resource: value}},
            }
        ]
    patch: Patch = []
    for part in ("requests", "limits"):
        current = resources.get(part)
        if not isinstance(current, dict):
            patch.append({"op": "add", "path": f"{base}/{part}", "value": {resource: value}})
        else:
            patch.append({"op": "add", "path": f"{base}/{part}/{escape(resource)}", "value": value})
    return patch
