"""``scheduler/compiled.py``: the quota book and the pending workloads' options read
without compiling the cluster state (``quota_book``, ``pending_options``, what the
metrics and Queue statuses report) are exactly ``compile_snapshot``'s."""

from __future__ import annotations

import gzip
from pathlib import Path

from hypothesis import event, given
from hypothesis import strategies as st
from test_allocator_properties import CATALOG, SETTINGS, snapshots

from scheduler.catalog import Catalog
from scheduler.compiled import compile_snapshot, pending_options, quota_book
from scheduler.model import Snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "snapshots"

OTHER_NAMES = {m.name: (*m.aliases, *m.products) for m in CATALOG.models}
"""A model's names besides its catalog name: what GFD labels and queue files may use."""

ONE_PRICE = CATALOG.with_prices({m.name: 1.0 for m in CATALOG.models})
"""Every model at one price: a workload asking any model is offered them in the order the
cluster's GPUs name them first."""


def _assert_same(snap: Snapshot, catalog: Catalog = CATALOG) -> None:
    compiled = compile_snapshot(snap, catalog)
    assert quota_book(snap, catalog).accounts == compiled.book.accounts
    entries = [(e.workload, e.options) for e in compiled.pending]
    assert pending_options(snap, catalog) == entries


@st.composite
def as_named_live(draw: st.DrawFn) -> Snapshot:
    """``snapshots()`` with the names a live cluster may use: GPUs by a GFD product,
    quotas by an alias, running workloads' flavors by another of their names or none at
    all (then read from the GPU their first pod names, a MIG profile from its layout)."""
    snap = draw(snapshots())

    def renamed(name: str) -> str:
        others = OTHER_NAMES.get(name, ())
        return draw(st.sampled_from((name, *others))) if others else name

    nodes = tuple(
        n.model_copy(
            update={"gpus": tuple(g.model_copy(update={"model": renamed(g.model)}) for g in n.gpus)}
        )
        for n in snap.nodes
    )
    queues = tuple(
        q.model_copy(update={"quota": {renamed(k): v for k, v in q.quota.items()}})
        for q in snap.queues
    )
    workloads = tuple(
        w.model_copy(update={"flavor": draw(st.sampled_from((None, renamed(w.flavor))))})
        if w.running and w.flavor
        else w
        for w in snap.workloads
    )
    return snap.model_copy(update={"nodes": nodes, "queues": queues, "workloads": workloads})


@SETTINGS
@given(as_named_live(), st.sampled_from((CATALOG, ONE_PRICE)))
def test_quota_book_and_pending_options_are_the_compiled_ones(
    snap: Snapshot, catalog: Catalog
) -> None:
    for w in snap.workloads:
        if w.placement is not None:
            kind = "MIG" if w.placement[0].mig_start is not None else "whole"
            kind = "fraction" if w.placement[0].milli is not None else kind
            event(f"runs {kind}, {'no flavor' if w.flavor is None else 'flavor'}")
    _assert_same(snap, catalog)


def test_quota_book_and_pending_options_on_a_large_cluster() -> None:
    """400 nodes, 528 running workloads of every kind (whole, fractions, MIG)."""
    path = FIXTURES / "regression-offers-until-settled.json.gz"
    _assert_same(Snapshot.model_validate_json(gzip.decompress(path.read_bytes())))
