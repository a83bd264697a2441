"""Kubernetes quantities and a pod's CPU and memory requests, counted as kube-scheduler does."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.model import MAX_AMOUNT
from webhook.quantities import (
    QuantityError,
    parse_bytes_mib,
    parse_count,
    parse_cpu_milli,
    pod_requests,
)


@pytest.mark.parametrize(
    ("text", "mib"),
    [("18Gi", 18 * 1024), ("20G", 19_074), ("19327352832", 18 * 1024), ("1.5Gi", 1536), ("1k", 1)],
)
def test_byte_quantities_in_mib_rounded_up(text: str, mib: int) -> None:
    assert parse_bytes_mib(text) == mib


@pytest.mark.parametrize(
    ("text", "milli"), [("2", 2000), ("1.5", 1500), ("500m", 500), ("0.1", 100), ("7910m", 7910)]
)
def test_cpu_quantities_in_milli(text: str, milli: int) -> None:
    assert parse_cpu_milli(text) == milli


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lots", "'lots' is not a byte quantity like 18Gi or 20G"),
        ("0", "'0' is zero"),
        ("5m", "'5m' is not a byte quantity like 18Gi or 20G"),
    ],
)
def test_bad_byte_quantities_say_why(text: str, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_bytes_mib(text)


@pytest.mark.parametrize(
    ("text", "count"),
    [("1", 1), ("8", 8), ("1k", 1000), ("3Ki", 3072), ("1e3", 1000), ("2E0", 2), ("0", 0)],
)
def test_device_counts_are_whole_numbers_in_any_quantity_form(text: str, count: int) -> None:
    """The API server keeps 1000 as ``1k``, 3072 as ``3Ki``, ``1e3`` as written."""
    assert parse_count(text) == count


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("500m", "'500m' is not a whole number"),
        ("1.5", "'1.5' is not a whole number"),
        ("two", "'two' is not a whole number"),
        ("9" * 5000, "is not a whole number"),
    ],
)
def test_bad_device_counts_say_why(text: str, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_count(text)


def _container(cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "resources": {"requests": requests}, **extra}


def test_containers_add_up_and_overhead_is_added() -> None:
    spec = {
        "containers": [_container("1", "4Gi"), _container("500m", "1Gi")],
        "overhead": {"cpu": "250m", "memory": "120Mi"},
    }
    assert pod_requests(spec) == (1750, 5 * 1024 + 120)


def test_an_init_container_counts_alone_and_sidecars_run_alongside() -> None:
    spec = {
        "initContainers": [
            _container("1", "1Gi", restartPolicy="Always"),  # a sidecar: runs throughout
            _container("8", "2Gi"),  # runs alone beside the sidecar: 9 CPU, 3 GiB
        ],
        "containers": [_container("2", "16Gi")],
    }
    assert pod_requests(spec) == (9000, 17 * 1024)


def test_a_limit_alone_counts_as_the_request_and_nothing_counts_as_zero() -> None:
    spec = {
        "containers": [
            {"name": "a", "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}},
            {"name": "b"},
            {"name": "c", "resources": {"requests": {"memory": "0"}}},
        ]
    }
    assert pod_requests(spec) == (3000, 1024)


def test_quantities_past_int64_are_kept_at_its_largest() -> None:
    """The API server accepts ``1e999``; exact, it was a 1,000-digit integer that a
    message's float division overflowed and ``str`` refused past 4,300 digits. CPU and
    memory stop at the most the core takes (10^12 milli-cores or MiB): past it, a pod's
    workload could not be built, which failed its admission and the controller's
    snapshot; no node has as much, so such a pod still never fits. A device count is
    refused there instead: kept at 2^63 - 1, 10^20 GPUs were reported as
    '9223372036854775807 GPUs in one pod'."""
    assert parse_count(str(2**63 - 2)) == 2**63 - 2
    for count in ("1e999", "9" * 4000, "99999999999999999999", str(2**63 - 1)):
        with pytest.raises(QuantityError, match=r"is more devices than Kubernetes counts"):
            parse_count(count)
    assert parse_cpu_milli("1e999") == parse_cpu_milli("1e9") == MAX_AMOUNT
    assert parse_cpu_milli("999999999") == MAX_AMOUNT - 1000
    assert parse_bytes_mib("1e999") == parse_bytes_mib("2Ei") == MAX_AMOUNT
    assert pod_requests({"containers": [{"resources": {"requests": {"cpu": "2E999"}}}]}) == (
        MAX_AMOUNT,
        0,
    )


def test_the_exbi_suffix_is_not_an_exponent() -> None:
    """``1Ei`` was read as an exponent ('E' then 'i'): a ValueError, not a QuantityError,
    so a pod asking 1Ei of memory failed its admission."""
    assert parse_count("1Ei") == 2**60
    assert parse_bytes_mib("1Ei") == MAX_AMOUNT  # 2^40 MiB, past the most a pod may ask
    assert parse_count("1E3") == parse_count("1e3") == 1000
