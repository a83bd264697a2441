"""Machine reasons for every outcome; the human message with numbers travels beside them.

Outcomes are an ordered enum (pending < preempt < admit), so "the better option" is a
comparison, as in Kueue.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["QUOTA_REASONS", "Outcome", "Reason"]


class Outcome(IntEnum):
    PENDING = 0
    PREEMPT = 1
    """Admitted once the listed victims are evicted."""
    ADMIT = 2

    @property
    def label(self) -> str:
        """What people and JSON read (``pending``, ``preempt``, ``admit``): the decision's
        table, its JSON and the shadow annotation say the same word; the order is for code."""
        return self.name.lower()


class Reason(StrEnum):
    # admitted
    ADMITTED = "Admitted"
    ADMITTED_BORROWING = "AdmittedBorrowing"
    ADMITTED_BY_RECLAIM = "AdmittedByReclaim"
    ADMITTED_BY_PRIORITY = "AdmittedByPriorityPreemption"
    # pending: quota
    QUOTA_EXHAUSTED = "QuotaExhausted"
    BORROWING_LIMIT = "BorrowingLimit"
    COHORT_EXHAUSTED = "CohortExhausted"
    NO_QUOTA = "NoQuotaForFlavor"
    # pending: capacity and placement
    NO_CAPACITY = "InsufficientCapacity"
    NO_MATCHING_NODES = "NoMatchingNodes"
    NEVER_FITS = "NeverFits"
    # pending: policy
    NOT_SELECTED = "NotSelectedByOptimizer"
    # evicted
    PREEMPTED_RECLAIM = "PreemptedToReclaimQuota"
    PREEMPTED_PRIORITY = "PreemptedByHigherPriority"
    # bad input that reached the core (the loader normally rejects it first)
    INVALID = "Invalid"


QUOTA_REASONS = frozenset(
    {Reason.QUOTA_EXHAUSTED, Reason.BORROWING_LIMIT, Reason.COHORT_EXHAUSTED, Reason.NO_QUOTA}
)
"""Waiting on quota, not on capacity or placement."""
