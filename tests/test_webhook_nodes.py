"""Node objects as the watch reads them (``kubeobjects.node_from_object``, ``Watched``'s node
handlers): what Apportion counts of each, and the nodes it leaves out, said once each."""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

import pytest
from webhook_support import FIXTURES

from scheduler.catalog import default_catalog
from webhook.cluster import LiveCluster
from webhook.kubeobjects import node_from_object
from webhook.metrics import Metrics
from webhook.strays import StrayGates
from webhook.watched import Watched


def _mig_node() -> dict[str, Any]:
    """mig-node-c of the capture: 6 whole H100 and 2 in MIG, 7 × 1g.10gb each (mixed)."""
    obj: dict[str, Any] = json.loads(
        (FIXTURES / "objects" / "node-mig-node-c-mig-1g.10gb.json").read_text()
    )
    return obj


def _single(obj: dict[str, Any], product: str) -> dict[str, Any]:
    """The node as the device plugin's single MIG strategy shows it, every GPU in
    all-1g.10gb: each MIG device is an nvidia.com/gpu, and GFD counts them."""
    obj = copy.deepcopy(obj)
    labels = obj["metadata"]["labels"]
    labels |= {
        "nvidia.com/gpu.product": product,
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/gpu.count": "56",
    }
    offered = {"nvidia.com/gpu": "56"}
    for part in ("allocatable", "capacity"):
        devices = obj["status"][part]
        obj["status"][part] = {k: v for k, v in devices.items() if "nvidia" not in k} | offered
    return obj


def _watched() -> Watched:
    cluster = LiveCluster(clock=time.time)
    strays = StrayGates(
        cluster,
        Metrics(cluster),
        adopt=lambda pod: pytest.fail("no pod here"),
        patch=lambda *args: pytest.fail("no pod here"),
        event=lambda *args: pytest.fail("no pod here"),
        before_acting=lambda: None,
    )
    return Watched(cluster, strays)


@pytest.mark.parametrize(
    "product",
    [
        "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
        "A100-SXM4-40GB-MIG-1g.5gb",  # the facts' example: no NVIDIA- prefix
        "NVIDIA-H100-80GB-HBM3-MIG-INVALID",  # GPUs not all in one profile
    ],
)
def test_a_node_under_the_single_mig_strategy_is_left_out(product: str) -> None:
    # Was modelled as 56 GPUs (8 with 7 slices, 48 empty "MIG GPUs"), or dropped as an
    # unknown product: its nvidia.com/gpu devices are MIG slices a pod cannot tell apart.
    node, why = node_from_object(_single(_mig_node(), product), default_catalog())
    assert node is None
    assert why == (
        "node mig-node-c uses the NVIDIA device plugin's single MIG strategy "
        f"(nvidia.com/gpu.product={product}): each MIG device is offered as nvidia.com/gpu, "
        "which Apportion cannot tell from a whole GPU; left out of its capacity (the mixed "
        "strategy is supported)"
    )


def test_the_mixed_strategy_node_is_counted_as_it_is() -> None:
    node, why = node_from_object(_mig_node(), default_catalog())
    assert node is not None and why == ""
    layouts = [g.mig for g in node.gpus]
    assert layouts.count(None) == 6
    assert [len(m) for m in layouts if m is not None] == [7, 7]


def test_a_left_out_node_is_warned_of_once(caplog: pytest.LogCaptureFixture) -> None:
    watched = _watched()
    single = _single(_mig_node(), "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb")
    with caplog.at_level(logging.WARNING, logger="apportion.controller"):
        watched.replace_nodes([single])
        for heartbeat in range(3):  # its updates come often
            single["metadata"]["labels"]["example.com/beat"] = str(heartbeat)
            watched.node_event("MODIFIED", single)
        watched.replace_nodes([single])  # a relist
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("node mig-node-c uses the NVIDIA")
    assert watched.cluster.nodes == {}  # none of its GPUs counted
    # Back to the mixed strategy it is counted; left out again later, it is said again.
    watched.node_event("MODIFIED", _mig_node())
    assert list(watched.cluster.nodes) == ["mig-node-c"]
    assert watched.left_out == {}
    with caplog.at_level(logging.WARNING, logger="apportion.controller"):
        watched.node_event("MODIFIED", single)
    assert len(caplog.records) == 2
    watched.node_event("DELETED", single)
    assert watched.left_out == {}
