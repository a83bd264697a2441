"""The replica's memory limit as the kernel enforces it: the container's cgroup.

Exported beside the process's resident memory so that an alert can warn before the limit
is reached, without a cluster add-on (kube-state-metrics) to tell the Deployment's limit.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CGROUP_ROOT", "OWN_CGROUP", "memory_limit_bytes"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
OWN_CGROUP = Path("/proc/self/cgroup")

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value; any limit a
# kubelet sets is far below 2**62.
_UNLIMITED_V1 = 2**62


def memory_limit_bytes(root: Path = CGROUP_ROOT, own: Path = OWN_CGROUP) -> int | None:
    """The limit of the cgroup the process runs in, or None when there is none or it cannot
    be read (not Linux, no cgroup mounted).

    A container with its own cgroup namespace (the default of container runtimes on cgroup
    v2) sees its cgroup at the root; one without sees the host's tree, its own cgroup at the
    path ``own`` names, where the limit is looked up first."""
    v2, v1 = _own_paths(own)
    candidates = [
        root / v2 / "memory.max",
        root / "memory.max",
        root / "memory" / v1 / "memory.limit_in_bytes",
        root / "memory" / "memory.limit_in_bytes",
    ]
    for path in candidates:
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


def _own_paths(own: Path) -> tuple[str, str]:
    """This process's cgroup path in the v2 hierarchy and in v1's memory hierarchy (relative,
    '' where not named): the lines of /proc/self/cgroup, ``id:controllers:path``."""
    v2 = v1 = ""
    try:
        lines = own.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return v2, v1
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.strip().lstrip("/")
        if ".." in Path(relative).parts:
            continue
        if hierarchy == "0" and not controllers:
            v2 = relative
        elif "memory" in controllers.split(","):
            v1 = relative
    return v2, v1
