"""One objective for both paths, so "the ILP beat greedy" is a fair comparison.

design.md §3 orders the goals: guarantees, then weighted fair share of borrowed capacity,
priority within a queue, work conservation, then least fragmentation and fewest moves. We
weigh them so each tier dominates the next in practice:

- every admitted GPU-equivalent within its queue's remaining nominal quota earns
  ``GUARANTEE`` (4);
- borrowed GPU-equivalents earn a concave, weight-scaled utility: the j-th segment of
  width ``weight × σ`` earns 1/(1+j), so the next borrowed GPU goes where borrowed ÷ weight
  is smallest — weighted max-min fairness, linear enough for an ILP;
- within a queue, a higher priority adds up to ``PRIORITY`` (0.25) per GPU-equivalent;
- evicting a running workload costs ``MOVE`` (1) per GPU-equivalent;
- each free GPU left on an entirely free node earns ``KEEP_WHOLE`` (0.001).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "GUARANTEE",
    "KEEP_WHOLE",
    "MOVE",
    "PRIORITY",
    "SEGMENTS",
    "Admitted",
    "account_value",
    "borrow_slope",
    "evaluate",
    "segment_width",
]

GUARANTEE = 4.0
PRIORITY = 0.25
MOVE = 1.0
KEEP_WHOLE = 0.001
SEGMENTS = 8
"""Concave pieces of the borrowing utility; the last one is unbounded."""


def borrow_slope(segment: int) -> float:
    return 1.0 / (1.0 + segment)


def segment_width(weight: float, lendable_gpu_eq: float) -> float:
    """Width of one borrowing segment in GPU-equivalents: weight × σ, σ = lendable / 8."""
    return weight * max(1.0, lendable_gpu_eq / SEGMENTS)


class Admitted(NamedTuple):
    """A named tuple, not a frozen dataclass: as immutable, built at half the cost (a cycle
    scores each of its admissions, 15,000 on benchmarks/ (c))."""

    queue: str
    flavor: str
    gpu_eq: float
    tier: float
    """Priority rank within the queue, 0 (lowest) … 1 (highest)."""


def _concave(amount: float, width: float) -> float:
    value = 0.0
    for j in range(SEGMENTS):
        take = amount if j == SEGMENTS - 1 else min(amount, width)
        value += take * borrow_slope(j)
        amount -= take
        if amount <= 0:
            break
    return value


def account_value(amount: float, headroom: float, width: float) -> float:
    """What ``amount`` GPU-eq admitted on one (queue, flavor) earns: the guarantee on the
    part within ``headroom``, the concave borrowing utility on the rest."""
    guaranteed = min(amount, headroom)
    return GUARANTEE * guaranteed + _concave(amount - guaranteed, width)


def evaluate(
    admitted: Iterable[Admitted],
    headroom: dict[tuple[str, str], float],
    widths: dict[tuple[str, str], float],
    evicted_gpu_eq: float,
    entirely_free_gpus: int,
) -> float:
    """Objective of a decision.

    ``headroom[(queue, flavor)]`` is nominal minus running usage (GPU-eq, ≥ 0) before the
    decision; ``widths`` the borrowing segment width per (queue, flavor).
    """
    per_account: dict[tuple[str, str], float] = {}
    value = 0.0
    for item in admitted:
        key = (item.queue, item.flavor)
        per_account[key] = per_account.get(key, 0.0) + item.gpu_eq
        value += PRIORITY * item.tier * item.gpu_eq
    for key, amount in sorted(per_account.items()):
        value += account_value(amount, headroom.get(key, 0.0), widths.get(key, 1.0))
    return value - MOVE * evicted_gpu_eq + KEEP_WHOLE * entirely_free_gpus
