"""scheduler.collector: the cyclic collector paused per decision, frozen per long run."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from scheduler import collector


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if not enabled:
        gc.disable()


def test_a_long_run_freezes_what_exists_and_hands_it_back() -> None:
    """...and passes over what it keeps less often while it lasts (the thresholds as they
    were afterwards, also after an error)."""
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    with collector.frozen_meanwhile():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD_IN_A_RUN, *thresholds[1:])
        with collector.frozen_meanwhile():  # nested: nothing more, nothing handed back
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD_IN_A_RUN
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds
    with pytest.raises(RuntimeError), collector.frozen_meanwhile():
        raise RuntimeError
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds


def test_what_the_process_froze_itself_stays_frozen() -> None:
    kept = [[index] for index in range(100)]
    gc.freeze()
    frozen = gc.get_freeze_count()
    with collector.frozen_meanwhile():
        with collector.paused():
            assert not gc.isenabled()
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
    assert len(kept) == 100


def test_decisions_in_a_frozen_run_never_count_the_frozen_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gc.get_freeze_count walks every frozen object: asked once per decision, it took 6 ms
    # of each 20 ms decision of the simulator's (c) replay, which keeps its jobs frozen.
    counted = []
    real = gc.get_freeze_count

    def counting() -> int:
        counted.append(1)
        return real()

    monkeypatch.setattr(gc, "get_freeze_count", counting)
    with collector.frozen_meanwhile():
        asked = len(counted)
        for _ in range(50):
            with collector.paused():
                assert not gc.isenabled()
            assert gc.isenabled()
        assert len(counted) == asked
    with collector.paused():  # outside a run: asked, and nothing frozen is left behind
        pass
    assert len(counted) == asked + 1 and real() == 0


def test_pauses_on_two_threads_keep_the_collector_off_until_both_end() -> None:
    """A replica decides on one thread while an informer reads a list on another: the
    first to end must not turn the collector back on under the other."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with collector.paused():
            first_in.set()
            second_in.wait()
        first_out.set()

    def second() -> None:
        first_in.wait()
        with collector.paused():
            second_in.set()
            first_out.wait()
            seen.append(gc.isenabled())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [False]
    assert gc.isenabled()
