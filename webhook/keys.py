"""The labels, annotations, gate and resource names Apportion reads and writes on objects.

One place, so the webhook, the controller, the RBAC-facing docs and the tests agree on
spelling. Users set the *input* keys; only Apportion's service account may set the
*decision* keys (the validating webhook enforces that).
"""

from __future__ import annotations

__all__ = [
    "ANNOTATION_DECISION",
    "ANNOTATION_EVICTED_FOR",
    "ANNOTATION_GANG_SIZE",
    "ANNOTATION_GPU_MEMORY",
    "ANNOTATION_GPU_MODELS",
    "ANNOTATION_NOMINATED",
    "ANNOTATION_REASON",
    "ANNOTATION_SHADOW",
    "ANNOTATION_TOLD",
    "ANNOTATION_WORKLOAD",
    "DECISION_KEYS",
    "GATE",
    "GPU_RESOURCE",
    "JOBSET_NAME",
    "JOBSET_REPLICAS",
    "KUEUE_GROUP_LABEL",
    "KUEUE_GROUP_TOTAL",
    "LABEL_GANG",
    "LABEL_MANAGED",
    "LABEL_QUEUE",
    "MIG_RESOURCE_PREFIX",
    "NAMESPACE_DEFAULT_QUEUE",
    "NAMESPACE_ENABLED",
    "NAMESPACE_MODE",
    "NODE_GPU_MEMORY",
    "NODE_HOSTNAME",
    "NODE_PRODUCT",
    "PREFIX",
    "RECORDED_KEYS",
    "SHARED_SUFFIX",
]

PREFIX = "apportion.io/"

GATE = PREFIX + "admission"
"""Scheduling gate on pods that must wait; only the controller removes it."""

# Inputs a user (or the namespace owner) sets.
LABEL_QUEUE = PREFIX + "queue"
LABEL_GANG = PREFIX + "gang"
"""Pods with the same gang label in a namespace are admitted all together or not at all."""
ANNOTATION_GANG_SIZE = PREFIX + "gang-size"
ANNOTATION_GPU_MEMORY = PREFIX + "gpu-memory"
"""A GPU-memory need (``18Gi``) instead of a device count: Apportion picks the device."""
ANNOTATION_GPU_MODELS = PREFIX + "gpu-models"
"""Acceptable GPU models in preference order, comma-separated (``H100-80GB,A100-80GB``)."""
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
"""On a JobSet's Jobs and pods: the pods of one JobSet are one gang."""
JOBSET_REPLICAS = "jobset.sigs.k8s.io/global-replicas"
"""On a JobSet's pods: how many Jobs the JobSet has in all."""
PYTORCHJOB_NAME = "training.kubeflow.org/job-name"
"""On a PyTorchJob's pods (Kubeflow training operator): one gang per PyTorchJob."""
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_TOTAL = "kueue.x-k8s.io/pod-group-total-count"

NAMESPACE_ENABLED = PREFIX + "enabled"
"""Namespace label ``"true"``: Apportion manages the namespace's GPU pods (opt-in)."""
NAMESPACE_DEFAULT_QUEUE = PREFIX + "default-queue"
NAMESPACE_MODE = PREFIX + "mode"
"""Namespace label ``shadow``: annotate what Apportion would do, change nothing else."""

# Decisions Apportion writes.
LABEL_MANAGED = PREFIX + "managed"
ANNOTATION_WORKLOAD = PREFIX + "workload"
ANNOTATION_DECISION = PREFIX + "decision"
ANNOTATION_REASON = PREFIX + "reason"
ANNOTATION_SHADOW = PREFIX + "shadow-decision"
ANNOTATION_NOMINATED = PREFIX + "nominated-until"
"""On a waiting pod victims were evicted for: until when (RFC 3339) its workload goes first
to the room they free."""
ANNOTATION_EVICTED_FOR = PREFIX + "evicted-for"
"""On the running pods of a workload of several pods whose eviction starts (written on each
before the first is evicted): until when (RFC 3339), why (``PreemptedByHigherPriority``,
``PreemptedToReclaimQuota``) and for which workload, space-separated. While one of its
pods carries it unexpired, every cycle evicts the rest, whoever started it."""
ANNOTATION_TOLD = PREFIX + "told"
"""On a waiting pod an Event told why it waits (its reason): that pod's uid. A pod copied
from it carries its reason too, and is told all the same."""
DECISION_KEYS = frozenset(
    {
        LABEL_MANAGED,
        ANNOTATION_WORKLOAD,
        ANNOTATION_DECISION,
        ANNOTATION_REASON,
        ANNOTATION_NOMINATED,
        ANNOTATION_EVICTED_FOR,
        ANNOTATION_TOLD,
    }
)

RECORDED_KEYS = frozenset({LABEL_QUEUE, LABEL_GANG, ANNOTATION_GANG_SIZE})
"""Inputs Apportion records on a pod it manages and the controller reads back from it: once
checked and decided at creation, only Apportion may change them."""

# Kubernetes and NVIDIA names.
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
SHARED_SUFFIX = ".shared"
"""Time-slicing with ``renameByDefault`` offers ``nvidia.com/gpu.shared`` and
``nvidia.com/mig-<profile>.shared``: replicas, not devices Apportion hands out."""
NODE_PRODUCT = "nvidia.com/gpu.product"
NODE_GPU_MEMORY = "nvidia.com/gpu.memory"
"""GFD's usable memory of one GPU, in MiB (of one MIG device under the single strategy)."""
NODE_HOSTNAME = "kubernetes.io/hostname"
