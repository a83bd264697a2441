"""Quotas, cohorts and fair share — the Kueue model platform teams already know.

Per queue and flavor: a nominal quota (guaranteed), a borrowing limit (how far above
nominal it may go) and a lending limit (how much of its unused nominal others may use).
A cohort's members draw on each other's lendable quota: a queue's usage beyond what it
keeps for itself (nominal − lending limit) comes out of the cohort's lendable pool.

Fair share (design.md §3.2): a queue's share is its dominant borrowed fraction — over
flavors, usage above nominal divided by the cohort's lendable quota of that flavor —
divided by its weight; capacity beyond nominal goes to the lowest share first.

Amounts are integers: milli-GPU for GPU-model flavors, instances for MIG flavors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import Queue
from scheduler.reasons import Reason

__all__ = ["QuotaBook", "QuotaCheck", "format_amount"]

UNLIMITED = 1 << 62


def format_amount(flavor: str, amount: int) -> str:
    """Human form of a quota amount: GPUs for model flavors, instances for MIG."""
    if flavor.startswith("mig-"):
        return str(amount)
    if amount % MILLI_PER_GPU == 0:
        return str(amount // MILLI_PER_GPU)
    return f"{amount / MILLI_PER_GPU:.2f}"


class QuotaCheck(NamedTuple):
    """A quota verdict. A refusal's message is formatted only when asked for: most refusals
    are tried and dropped (another option fits), and formatting was a tenth of a cycle.
    ``numbers`` are taken at check time, so the message describes that moment. A named
    tuple, not a frozen dataclass: as immutable, and built at half the cost (a cycle
    on benchmarks/ (c) is refused 38,000 times)."""

    ok: bool
    reason: Reason
    numbers: tuple[str, str, int, int, int, int, int, int, int] | None = None
    """(queue, flavor, amount, used, nominal, borrowing limit or cohort spare, standalone,
    its own unused quota in the cohort's spare, its unused quota kept from lending)."""
    cohort: str = ""

    @property
    def message(self) -> str:
        if self.numbers is None:
            return ""
        queue, flavor, amount, used, nominal, extra, standalone, own, kept = self.numbers
        fmt = format_amount
        if self.reason is Reason.NO_QUOTA:
            return f"queue {queue} has no quota for {flavor}"
        if self.reason is Reason.BORROWING_LIMIT:
            return (
                f"queue {queue} at {fmt(flavor, used)}/{fmt(flavor, nominal)} {flavor} "
                f"(borrowing limit {fmt(flavor, extra)}); needs {fmt(flavor, amount)}"
            )
        if standalone:
            return (
                f"queue {queue} at nominal {flavor} quota {fmt(flavor, used)}/"
                f"{fmt(flavor, nominal)}; needs {fmt(flavor, amount)}"
            )
        spare, after = extra, used + amount
        # The pool holds the queue's own unused lendable quota too: say how much, or
        # "lends 32 more" reads as 32 from the others when half of it is its own. What its
        # lending limit keeps out of the pool is its own besides.
        mine = f", {fmt(flavor, own)} of it {queue}'s own unused quota" if own else ""
        keeps = f" ({fmt(flavor, kept)} unused that it does not lend)" if kept else ""
        beyond = ""
        if used < nominal < after:
            beyond = f" ({fmt(flavor, after - nominal)} beyond its nominal quota)"
        return (
            f"queue {queue} at {fmt(flavor, used)}/{fmt(flavor, nominal)} {flavor}{keeps}; "
            f"cohort {self.cohort} lends {fmt(flavor, spare)} more{mine}; "
            f"needs {fmt(flavor, amount)}{beyond}"
        )


_OK = QuotaCheck(True, Reason.ADMITTED)


@dataclass(slots=True)
class _Account:
    name: str
    cohort: str | None
    weight: float
    nominal: dict[str, int]
    borrow_limit: dict[str, int]
    kept: dict[str, int]
    """Nominal quota the queue never lends (nominal − lending limit)."""
    lends: dict[str, int]
    """Its cohort's lendable quota per flavor (``QuotaBook.lendable``), shared by the members."""
    drawn: dict[str, int]
    """Its cohort's usage drawn from the lendable pool per flavor, shared by the members."""
    usage: dict[str, int] = field(default_factory=dict)


class QuotaBook:
    """Usage against quotas for every queue, with O(1) checks and updates."""

    def __init__(self, queues: tuple[Queue, ...], model_flavors: frozenset[str]) -> None:
        self.accounts: dict[str, _Account] = {}
        self.members: dict[str, list[str]] = {}
        # Per cohort, by flavor: what its members lend, and what is drawn from that (usage
        # beyond members' kept quota). Accounts hold their cohort's dicts: a check or a
        # charge, hundreds of thousands a cycle, then builds no (cohort, flavor) key.
        self._lends: dict[str, dict[str, int]] = {}
        lends = self._lends
        drawn: dict[str, dict[str, int]] = {}
        for queue in queues:
            nominal: dict[str, int] = {}
            borrow: dict[str, int] = {}
            kept: dict[str, int] = {}
            for flavor, quota in queue.quota.items():
                unit = MILLI_PER_GPU if flavor in model_flavors else 1
                nominal[flavor] = quota.nominal * unit
                borrow[flavor] = (
                    UNLIMITED if quota.borrowing_limit is None else quota.borrowing_limit * unit
                )
                lend = quota.nominal if quota.lending_limit is None else quota.lending_limit
                kept[flavor] = (quota.nominal - min(lend, quota.nominal)) * unit
            cohort = queue.cohort if queue.cohort is not None else f"\0{queue.name}"
            self.members.setdefault(cohort, []).append(queue.name)
            pool = lends.setdefault(cohort, {})
            self.accounts[queue.name] = _Account(
                queue.name, cohort, queue.weight, nominal, borrow, kept, pool,
                drawn.setdefault(cohort, {}),
            )  # fmt: skip
            for flavor, amount in nominal.items():
                pool[flavor] = pool.get(flavor, 0) + amount - kept[flavor]

    def lendable(self, cohort: str, flavor: str) -> int:
        """Quota of ``flavor`` the cohort's members lend in total."""
        return self._lends.get(cohort, {}).get(flavor, 0)

    def usage(self, queue: str, flavor: str) -> int:
        return self.accounts[queue].usage.get(flavor, 0)

    def nominal(self, queue: str, flavor: str) -> int:
        return self.accounts[queue].nominal.get(flavor, 0)

    def check(self, queue: str, flavor: str, amount: int) -> QuotaCheck:
        """May ``queue`` take ``amount`` more of ``flavor`` now?"""
        account = self.accounts[queue]
        assert account.cohort is not None
        used = account.usage.get(flavor, 0)
        nominal = account.nominal.get(flavor, 0)
        after = used + amount
        lendable = account.lends.get(flavor, 0)
        standalone = account.cohort.startswith("\0")
        if flavor not in account.nominal and (standalone or lendable == 0):
            return QuotaCheck(
                False, Reason.NO_QUOTA, numbers=(queue, flavor, amount, 0, 0, 0, 0, 0, 0)
            )
        limit = account.borrow_limit.get(flavor, UNLIMITED)
        if after > nominal + limit:
            return QuotaCheck(
                False,
                Reason.BORROWING_LIMIT,
                numbers=(queue, flavor, amount, used, nominal, limit, 0, 0, 0),
            )
        drawn = account.drawn.get(flavor, 0)
        kept = account.kept.get(flavor, 0)  # usage beyond what it keeps is drawn
        # max(0, …) spelled out: a check or a charge is made hundreds of thousands of times.
        was, will = used - kept, after - kept
        new_drawn = drawn - (was if was > 0 else 0) + (will if will > 0 else 0)
        if new_drawn > lendable:
            reason = Reason.COHORT_EXHAUSTED
            if standalone or after <= nominal:
                reason = Reason.QUOTA_EXHAUSTED
            spare = max(0, lendable - drawn)
            # Of what it lends (nominal - kept), the part it does not draw on itself.
            own = nominal - kept - (was if was > 0 else 0)
            own = min(spare, own) if own > 0 else 0
            return QuotaCheck(
                False,
                reason,
                numbers=(
                    queue, flavor, amount, used, nominal, spare, standalone, own,
                    kept - used if kept > used else 0,
                ),
                cohort=account.cohort,
            )  # fmt: skip
        return _OK

    def charge(self, queue: str, flavor: str, amount: int) -> None:
        """Add (or with a negative amount, remove) usage."""
        account = self.accounts[queue]
        assert account.cohort is not None
        used = account.usage.get(flavor, 0)
        after = used + amount
        kept = account.kept.get(flavor, 0)  # usage beyond what it keeps is drawn
        was, will = used - kept, after - kept
        drawn = account.drawn
        drawn[flavor] = drawn.get(flavor, 0) - (was if was > 0 else 0) + (will if will > 0 else 0)
        account.usage[flavor] = after

    def within_nominal(self, queue: str, flavor: str, amount: int) -> bool:
        account = self.accounts[queue]
        return account.usage.get(flavor, 0) + amount <= account.nominal.get(flavor, 0)

    def borrowing(self, queue: str, flavor: str) -> bool:
        account = self.accounts[queue]
        return account.usage.get(flavor, 0) > account.nominal.get(flavor, 0)

    def cohort(self, queue: str) -> str:
        """The cohort's name (a queue without one is its own, under a reserved name)."""
        cohort = self.accounts[queue].cohort
        assert cohort is not None
        return cohort

    def cohort_mates(self, queue: str) -> list[str]:
        """The other queues of ``queue``'s cohort."""
        cohort = self.accounts[queue].cohort
        assert cohort is not None
        return [q for q in self.members[cohort] if q != queue]

    def share(self, queue: str, extra_flavor: str | None = None, extra: int = 0) -> float:
        """Weighted dominant borrowed share, optionally as if ``extra`` more were admitted."""
        account = self.accounts[queue]
        usage, nominal, lends = account.usage, account.nominal, account.lends
        # Asked for every queue head the cycle takes: no set of flavors built per call, and
        # ``_borrowed_share`` spelled out in the loop (a call per flavor was a third of it).
        dominant = 0.0
        if extra_flavor is not None and extra_flavor not in usage:
            dominant = _borrowed_share(extra - nominal.get(extra_flavor, 0), lends, extra_flavor)
        for flavor, used in usage.items():
            if flavor == extra_flavor:
                used += extra
            borrowed = used - nominal.get(flavor, 0)
            if borrowed > 0:
                lendable = lends.get(flavor, 0)
                borrowed_share = borrowed / lendable if lendable else float(borrowed)
                if borrowed_share > dominant:
                    dominant = borrowed_share
        return dominant / account.weight


def _borrowed_share(borrowed: int, lends: dict[str, int], flavor: str) -> float:
    """What ``borrowed`` is of the cohort's lendable ``flavor`` (the amount itself when the
    cohort lends none); 0 when nothing is borrowed."""
    if borrowed <= 0:
        return 0.0
    lendable = lends.get(flavor, 0)
    return borrowed / lendable if lendable else float(borrowed)
