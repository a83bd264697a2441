"""Kubernetes resource quantities, and what a pod asks of its node besides GPUs.

Quantities arrive as the API server serialises them (``18Gi``, ``20G``, ``500m``, ``1.5``)
and become integers in base units (MiB, milli-CPU), rounded up, never floats, and at most
``MAX_AMOUNT`` (a billion cores, an exabyte: what the core takes; no node has more, so a
request past it never fits either way). A pod's CPU
and memory are what kube-scheduler counts it for, so the allocator only picks nodes that
still have them (the same rule, reimplemented: requests, not limits).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache
from typing import Any

from scheduler.model import MAX_AMOUNT

__all__ = ["QuantityError", "parse_bytes_mib", "parse_count", "parse_cpu_milli", "pod_requests"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(
    r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]{1,3})?$"
)


_CEILING = Fraction(2**63 - 1)
"""The largest value kept: the API server accepts quantities past int64 (``1e999``), which
kube-scheduler counts in int64 and no node holds; as exact integers they would reach
Apportion's messages and sums at thousands of digits."""


class QuantityError(ValueError):
    """A Kubernetes quantity Apportion cannot use, with the reason."""


def _value(text: str, what: str) -> Fraction:
    """The exact value of a quantity: suffixes (``Gi``, ``k``, ``m``) and exponents (``1e3``)."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise QuantityError(f"{text!r} is not {what}")
    suffix: str = match.group(2) or ""
    if suffix == "m":
        scale = Fraction(1, 1000)
    elif suffix[:1] in ("e", "E") and len(suffix) > 1 and suffix != "Ei":
        scale = Fraction(10) ** int(suffix[1:])
    else:
        scale = Fraction(_BINARY.get(suffix) or _DECIMAL.get(suffix) or 1)
    try:
        return min(Fraction(match.group(1)) * scale, _CEILING)
    except ValueError:  # more digits than Python converts (no API server sends them)
        raise QuantityError(f"{text!r} is not {what}") from None


def _scaled(text: str, unit: int, what: str) -> int:
    """``text`` × ``unit`` in the quantity's base unit, rounded up (exact integers)."""
    return math.ceil(_value(text, what) * unit)


PARSED_KEPT = 4096
"""Quantities parsed kept per unit: a cluster's pods ask a few dozen different ones (``1``,
``4Gi``, ``500m``), over and over: a list of 16,610 pods parsed 58,000 of them, 0.85 s
of exact fractions, nearly a third of reading the list."""


@lru_cache(maxsize=PARSED_KEPT)
def parse_count(text: str) -> int:
    """A device count (``1``, ``1k``, ``3Ki``, ``1e3``): Kubernetes allows only whole numbers
    of an extended resource, in any quantity form."""
    value = _value(text, "a whole number of devices")
    if value.denominator != 1:
        raise QuantityError(f"{text!r} is not a whole number of devices")
    if value >= _CEILING:  # kept at the ceiling: a count it would misreport
        raise QuantityError(f"{text!r} is more devices than Kubernetes counts (at most 2^63 - 1)")
    return value.numerator


@lru_cache(maxsize=PARSED_KEPT)
def parse_bytes_mib(text: str) -> int:
    """A byte quantity (``18Gi``, ``20G``, ``19327352832``) in MiB, rounded up."""
    if text.strip().endswith("m"):
        raise QuantityError(f"{text!r} is not a byte quantity like 18Gi or 20G")
    mib = -(-_scaled(text, 1, "a byte quantity like 18Gi or 20G") // 2**20)
    if mib <= 0:
        raise QuantityError(f"{text!r} is zero")
    return min(mib, MAX_AMOUNT)


@lru_cache(maxsize=PARSED_KEPT)
def parse_cpu_milli(text: str) -> int:
    """A CPU quantity (``2``, ``1.5``, ``500m``) in milli-CPU, rounded up."""
    return min(_scaled(text, 1000, "a CPU quantity like 2, 1.5 or 500m"), MAX_AMOUNT)


def _container_requests(container: Any) -> tuple[int, int]:
    """CPU milli and memory MiB one container requests (its limit when it gives only that,
    as the API server defaults it); what cannot be read counts as nothing."""
    resources = container.get("resources") if isinstance(container, dict) else None
    if not isinstance(resources, dict):
        return 0, 0
    requests = resources.get("requests")
    limits = resources.get("limits")
    requests = requests if isinstance(requests, dict) else {}
    limits = limits if isinstance(limits, dict) else {}
    found = []
    for name, parse in (("cpu", parse_cpu_milli), ("memory", parse_bytes_mib)):
        value = requests.get(name, limits.get(name))
        try:
            found.append(parse(str(value)) if value is not None else 0)
        except QuantityError:
            found.append(0)  # the API server validated it; only zero gets here
    return found[0], found[1]


def _listed(value: object) -> list[Any]:
    """A container list as sent, or nothing (a malformed pod counts as asking nothing)."""
    return value if isinstance(value, list) else []


def pod_requests(spec: dict[str, Any]) -> tuple[int, int]:
    """CPU milli and memory MiB the pod needs on its node, counted as kube-scheduler does:
    the app containers and sidecars (init containers with ``restartPolicy: Always``) run
    together; each other init container runs alone beside the sidecars started before it;
    the pod needs the larger, plus ``spec.overhead``."""
    cpu = mem = 0
    for container in _listed(spec.get("containers")):
        c, m = _container_requests(container)
        cpu, mem = cpu + c, mem + m
    side_cpu = side_mem = init_cpu = init_mem = 0
    for container in _listed(spec.get("initContainers")):
        c, m = _container_requests(container)
        if isinstance(container, dict) and container.get("restartPolicy") == "Always":
            side_cpu, side_mem = side_cpu + c, side_mem + m
        else:
            init_cpu, init_mem = max(init_cpu, side_cpu + c), max(init_mem, side_mem + m)
    cpu, mem = max(cpu + side_cpu, init_cpu), max(mem + side_mem, init_mem)
    overhead = spec.get("overhead")
    if isinstance(overhead, dict):
        c, m = _container_requests({"resources": {"requests": overhead}})
        cpu, mem = cpu + c, mem + m
    return cpu, mem
