"""Kueue's quota model: nominal, borrowing and lending limits, cohorts, weighted shares."""

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model import Queue, Quota
from scheduler.quota import QuotaBook
from scheduler.reasons import Reason

MODELS = frozenset({"H100-80GB", "A100-80GB"})
G = 1000  # milli per GPU


def book(*queues: Queue) -> QuotaBook:
    return QuotaBook(tuple(queues), MODELS)


def test_standalone_queue_is_capped_at_nominal_with_numbers():
    b = book(Queue(name="a", quota={"H100-80GB": Quota(nominal=8)}))
    assert b.check("a", "H100-80GB", 8 * G).ok
    b.charge("a", "H100-80GB", 8 * G)
    check = b.check("a", "H100-80GB", 1 * G)
    assert not check.ok and check.reason is Reason.QUOTA_EXHAUSTED
    assert check.message == "queue a at nominal H100-80GB quota 8/8; needs 1"


def test_no_quota_for_flavor():
    b = book(Queue(name="a", quota={"H100-80GB": Quota(nominal=8)}))
    check = b.check("a", "A100-80GB", G)
    assert not check.ok and check.reason is Reason.NO_QUOTA


def test_borrowing_from_cohort_within_limits():
    b = book(
        Queue(name="a", cohort="c", quota={"H100-80GB": Quota(nominal=8, borrowing_limit=4)}),
        Queue(name="b", cohort="c", quota={"H100-80GB": Quota(nominal=8)}),
    )
    assert b.check("a", "H100-80GB", 12 * G).ok
    b.charge("a", "H100-80GB", 12 * G)
    assert b.borrowing("a", "H100-80GB")
    b.charge("a", "H100-80GB", -12 * G)
    assert not b.borrowing("a", "H100-80GB")
    over = b.check("a", "H100-80GB", 13 * G)
    assert over.reason is Reason.BORROWING_LIMIT and "borrowing limit 4" in over.message


def test_lending_limit_keeps_part_of_the_quota_home():
    b = book(
        Queue(name="a", cohort="c", quota={"H100-80GB": Quota(nominal=8)}),
        Queue(name="b", cohort="c", quota={"H100-80GB": Quota(nominal=8, lending_limit=2)}),
    )
    assert b.check("a", "H100-80GB", 10 * G).ok
    check = b.check("a", "H100-80GB", 11 * G)
    assert check.reason is Reason.COHORT_EXHAUSTED
    assert "cohort c lends 10 more, 8 of it a's own unused quota" in check.message
    # b keeps its 6 unlendable GPUs even while a borrows the 2 it lends.
    b.charge("a", "H100-80GB", 10 * G)
    assert b.check("b", "H100-80GB", 6 * G).ok
    assert not b.check("b", "H100-80GB", 7 * G).ok


def test_a_queue_with_a_lending_limit_is_told_what_it_keeps_and_what_it_lends():
    """Was "lends 10 more, 8 of it a's own": only 2 of its 8 are in the pool; the 6 it
    keeps are its own besides, so it can take 16, not 10."""
    b = book(
        Queue(name="a", cohort="c", quota={"H100-80GB": Quota(nominal=8, lending_limit=2)}),
        Queue(name="b", cohort="c", quota={"H100-80GB": Quota(nominal=8)}),
    )
    assert b.check("a", "H100-80GB", 16 * G).ok
    assert b.check("a", "H100-80GB", 17 * G).message == (
        "queue a at 0/8 H100-80GB (6 unused that it does not lend); cohort c lends 10 more, "
        "2 of it a's own unused quota; needs 17 (9 beyond its nominal quota)"
    )
    b.charge("a", "H100-80GB", 7 * G)  # the 6 it keeps, and 1 of the 2 it lends
    assert b.check("a", "H100-80GB", 10 * G).message == (
        "queue a at 7/8 H100-80GB; cohort c lends 9 more, 1 of it a's own unused quota; "
        "needs 10 (9 beyond its nominal quota)"
    )


def test_queue_under_nominal_is_blocked_when_its_quota_is_lent_out():
    b = book(
        Queue(name="a", cohort="c", quota={"H100-80GB": Quota(nominal=8)}),
        Queue(name="b", cohort="c", quota={"H100-80GB": Quota(nominal=8)}),
    )
    b.charge("b", "H100-80GB", 16 * G)
    check = b.check("a", "H100-80GB", G)
    assert not check.ok and check.reason is Reason.QUOTA_EXHAUSTED
    assert b.within_nominal("a", "H100-80GB", G) and b.borrowing("b", "H100-80GB")


def test_share_is_dominant_borrowed_fraction_over_weight():
    b = book(
        Queue(name="a", cohort="c", weight=2, quota={"H100-80GB": Quota(nominal=4)}),
        Queue(name="b", cohort="c", weight=1, quota={"H100-80GB": Quota(nominal=4)}),
        Queue(name="idle", cohort="c", quota={"H100-80GB": Quota(nominal=8)}),
    )
    b.charge("a", "H100-80GB", 8 * G)  # borrows 4 of 16 lendable
    b.charge("b", "H100-80GB", 8 * G)
    assert b.share("a") == (4 / 16) / 2
    assert b.share("b") == (4 / 16) / 1
    assert b.share("a", "H100-80GB", 4 * G) == (8 / 16) / 2
    b.charge("a", "H100-80GB", -8 * G)
    assert b.usage("a", "H100-80GB") == 0 and b.share("a") == 0.0


@settings(max_examples=200, deadline=None)
@given(
    nominal=st.lists(st.integers(min_value=0, max_value=8), min_size=4, max_size=4),
    usage=st.lists(st.integers(min_value=0, max_value=16), min_size=4, max_size=4),
    extra=st.integers(min_value=0, max_value=8),
    extra_on=st.sampled_from([None, "H100-80GB", "A100-80GB"]),
    weight=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_share_is_the_largest_borrowed_fraction_whatever_is_charged(
    nominal: list[int], usage: list[int], extra: int, extra_on: str | None, weight: float
) -> None:
    """``share`` against its definition written out: over every flavor a queue uses (and
    the one asked about), what it borrows ÷ what its cohort lends (the amount itself when
    the cohort lends none), the largest, over the queue's weight."""
    flavors = sorted(MODELS)
    b = book(
        Queue(name="a", cohort="c", weight=weight,
              quota={f: Quota(nominal=n) for f, n in zip(flavors, nominal[:2], strict=True)}),
        Queue(name="b", cohort="c",
              quota={f: Quota(nominal=n) for f, n in zip(flavors, nominal[2:], strict=True)}),
    )  # fmt: skip
    for flavor, used in zip(flavors, usage[:2], strict=True):
        if used:
            b.charge("a", flavor, used * G)
    expected = 0.0
    for flavor in flavors:
        used = b.usage("a", flavor) + (extra * G if flavor == extra_on else 0)
        if flavor not in b.accounts["a"].usage and flavor != extra_on:
            continue
        borrowed = used - b.nominal("a", flavor)
        if borrowed > 0:
            lendable = b.lendable("c", flavor)
            expected = max(expected, borrowed / lendable if lendable else float(borrowed))
    assert b.share("a", extra_on, extra * G if extra_on else 0) == expected / weight


def test_a_cohort_queue_has_no_quota_for_a_flavor_nobody_in_its_cohort_lends():
    """a lists only A100 and its cohort lends no H100: "no quota", not a cohort that lends
    0 more (the ``lendable == 0`` half of the NoQuotaForFlavor test)."""
    b = book(
        Queue(name="a", cohort="c", quota={"A100-80GB": Quota(nominal=8)}),
        Queue(name="b", cohort="c", quota={"A100-80GB": Quota(nominal=8)}),
    )
    check = b.check("a", "H100-80GB", G)
    assert (check.ok, check.reason, check.message) == (
        False,
        Reason.NO_QUOTA,
        "queue a has no quota for H100-80GB",
    )
