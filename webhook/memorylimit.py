"""The replica's memory limit as the kernel enforces it: the container's cgroup.

Exported beside the process's resident memory so that an alert can warn before the limit
is reached, without a cluster add-on (kube-state-metrics) to tell the Deployment's limit.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CGROUP_ROOT", "memory_limit_bytes"]

CGROUP_ROOT = Path("/sys/fs/cgroup")

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value; any limit a
# kubelet sets is far below 2**62.
_UNLIMITED_V1 = 2**62


def memory_limit_bytes(root: Path = CGROUP_ROOT) -> int | None:
    """The limit of the cgroup the process runs in (a container sees its own at the root),
    or None when there is none or it cannot be read (not Linux, no cgroup mounted)."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):  # v2, v1
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            return None
        return limit if 0 < limit < _UNLIMITED_V1 else None
    return None
