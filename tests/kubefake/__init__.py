"""An in-process fake kube-apiserver speaking the recorded v1.36 shapes (tests/README.md)."""

from .fake import RECORDINGS, WRITES, Failure, Fake, Latency, RequestRecord, running_fake
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .podrules import SPEC_FORBIDDEN, pod_update_errors
from .status import ApiError
from .store import ResourceType, Store

__all__ = [
    "RECORDINGS",
    "SPEC_FORBIDDEN",
    "WRITES",
    "ApiError",
    "Failure",
    "Fake",
    "Latency",
    "PatchError",
    "RequestRecord",
    "ResourceType",
    "Store",
    "json_patch",
    "merge_patch",
    "pod_update_errors",
    "running_fake",
    "strategic_merge_patch",
]
