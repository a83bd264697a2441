"""The replica's memory limit, read from its cgroup, and the memory series /metrics exports
beside it (alert ApportionReplicaMemoryHigh divides one by the other)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from webhook.cluster import LiveCluster
from webhook.memorylimit import memory_limit_bytes
from webhook.metrics import Metrics


def _cgroup(tmp_path: Path, relative: str, text: str) -> Path:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return tmp_path


def test_cgroup_v2_limit(tmp_path: Path) -> None:
    assert memory_limit_bytes(_cgroup(tmp_path, "memory.max", "2147483648\n")) == 2**31


def test_cgroup_v2_without_limit(tmp_path: Path) -> None:
    assert memory_limit_bytes(_cgroup(tmp_path, "memory.max", "max\n")) is None


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, "memory/memory.limit_in_bytes", "536870912\n")
    assert memory_limit_bytes(root) == 512 * 2**20


def test_cgroup_v1_without_limit(tmp_path: Path) -> None:
    """v1 writes "no limit" as the largest page-aligned 64-bit value."""
    root = _cgroup(tmp_path, "memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert memory_limit_bytes(root) is None


@pytest.mark.parametrize("text", ["", "lots", "-1", "0", "\xff"])
def test_an_unreadable_limit_is_no_limit(tmp_path: Path, text: str) -> None:
    assert memory_limit_bytes(_cgroup(tmp_path, "memory.max", text)) is None


def test_no_cgroup_is_no_limit(tmp_path: Path) -> None:
    assert memory_limit_bytes(tmp_path / "absent", tmp_path / "no-proc") is None


@pytest.mark.parametrize(
    ("own", "relative"),
    [
        ("0::/kubepods/burstable/pod1/ctr\n", "kubepods/burstable/pod1/ctr/memory.max"),
        # This project's own machine: v1 with named hierarchies, its memory cgroup nested.
        ("9:name=systemd:/\n4:memory:/process_api/72eb\n1:cpu:/\n0::/\n",
         "memory/process_api/72eb/memory.limit_in_bytes"),
        ("5:cpu,memory:/kubepods/pod2/ctr\n", "memory/kubepods/pod2/ctr/memory.limit_in_bytes"),
    ],
)  # fmt: skip
def test_without_a_cgroup_namespace_the_own_cgroups_limit_is_read(
    tmp_path: Path, own: str, relative: str
) -> None:
    """Was: only the root's file was read, the host's (unlimited) where the container has
    no cgroup namespace of its own, and the alert had no limit to divide by."""
    root = _cgroup(tmp_path / "fs", relative, "2147483648\n")
    _cgroup(tmp_path / "fs", "memory/memory.limit_in_bytes", "9223372036854771712\n")
    proc = tmp_path / "cgroup"
    proc.write_text(own)
    assert memory_limit_bytes(root, proc) == 2**31
    # A path that climbs out of the mount is not followed.
    proc.write_text("0::/../../etc\n")
    assert memory_limit_bytes(root, proc) is None


def _scrape(metrics: Metrics) -> dict[str, float]:
    samples = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process metrics read /proc")
def test_metrics_export_resident_memory_and_the_limit() -> None:
    cluster = LiveCluster(clock=lambda: 0.0, intent_ttl_s=30)
    samples = _scrape(Metrics(cluster, memory_limit=2**31))
    assert samples["apportion_memory_limit_bytes"] == 2**31
    assert samples["process_resident_memory_bytes"] > 10 * 2**20  # an interpreter and its imports
    assert "apportion_memory_limit_bytes" not in _scrape(Metrics(cluster))
