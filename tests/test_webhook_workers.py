"""`webhook/workers.py` on its own: tasks as the controller gives them, with events the test
sets to decide what runs when."""

from __future__ import annotations

import threading
import time

import pytest

from webhook.leader import NotLeading
from webhook.workers import Workers


def test_at_most_size_tasks_run_at_once_and_each_returns_once_all_have_ended() -> None:
    running, peak, done = 0, 0, []
    lock = threading.Lock()

    def task(i: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
            done.append(i)

    with Workers(3, threading.Event(), leading=lambda: True) as workers:
        workers.each((f"task {i}", lambda i=i: task(i)) for i in range(12))
        assert sorted(done) == list(range(12))
    assert 1 < peak <= 3


def test_a_task_that_may_no_longer_lead_stops_the_rest_once_those_running_end() -> None:
    go, ran = threading.Event(), []
    outcome: list[BaseException | None] = []

    def under_way() -> None:
        go.wait(5)
        ran.append("under way")

    def lease_lost() -> None:
        raise NotLeading

    tasks = [("under way", under_way), ("lease lost", lease_lost)]
    tasks += [(f"later {i}", lambda i=i: ran.append(f"later {i}")) for i in range(5)]

    def cycle() -> None:
        with Workers(2, threading.Event(), leading=lambda: True) as workers:
            try:
                workers.each(tasks)
            except NotLeading as error:
                outcome.append(error)
            else:
                outcome.append(None)

    thread = threading.Thread(target=cycle)
    thread.start()
    time.sleep(0.2)
    assert outcome == []  # the task under way has not ended
    go.set()
    thread.join(5)
    assert ran == ["under way"]
    assert len(outcome) == 1 and isinstance(outcome[0], NotLeading)


def test_any_other_error_ends_its_own_task_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    ran = []

    def broken() -> None:
        raise RuntimeError("a bug")

    with Workers(2, threading.Event(), leading=lambda: True) as workers:
        workers.each([("first", lambda: ran.append(1)), ("broken", broken)] + [
            (f"task {i}", lambda i=i: ran.append(i)) for i in range(2, 6)
        ])  # fmt: skip
    assert sorted(ran) == [1, 2, 3, 4, 5]
    (logged,) = caplog.records
    assert logged.getMessage() == "broken failed; retrying on the next change or tick"
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "a bug"


def test_a_stopping_controller_starts_nothing_more() -> None:
    stop, ran = threading.Event(), []
    stop.set()
    with Workers(2, stop, leading=lambda: True) as workers:
        workers.each((f"task {i}", lambda i=i: ran.append(i)) for i in range(4))
        workers.later("an event", lambda: ran.append("event"))
    assert ran == []


def test_a_call_left_for_later_follows_its_task_and_ends_with_the_cycle() -> None:
    ran: list[str] = []
    with Workers(1, threading.Event(), leading=lambda: True) as workers:

        def admit() -> None:
            ran.append("admit a")
            workers.later("the event on a", lambda: ran.append("event on a"))

        workers.each([("admitting a", admit), ("admitting b", lambda: ran.append("admit b"))])
        workers.later("broken", lambda: 1 / 0)  # logged, and the cycle ends all the same
    # Queued once admit a is answered: behind admit b unless a ran before b was given.
    assert sorted(ran) == ["admit a", "admit b", "event on a"]
    assert ran.index("event on a") > ran.index("admit a")


def test_calls_left_for_later_once_the_lease_is_lost_are_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    with Workers(1, threading.Event(), leading=lambda: "admit a" not in ran) as workers:

        def admit() -> None:
            ran.append("admit a")  # the Lease runs out as its call is answered
            workers.later("the event on a", lambda: ran.append("event on a"))
            workers.later("another event on a", lambda: ran.append("another event on a"))

        workers.each([("admitting a", admit)])
    assert ran == ["admit a"]
    assert workers.dropped == 2
    (logged,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert logged.getMessage() == (
        "2 Event(s) dropped, queued before this replica lost the Lease: only the leader "
        "writes to the cluster"
    )


def test_once_a_task_finds_the_lease_lost_nothing_left_for_later_is_made() -> None:
    ran: list[str] = []
    with Workers(1, threading.Event(), leading=lambda: True) as workers:

        def lease_lost() -> None:
            workers.later("an event", lambda: ran.append("event"))
            raise NotLeading

        with pytest.raises(NotLeading):
            workers.each([("lease lost", lease_lost)])
    assert (ran, workers.dropped) == ([], 1)
