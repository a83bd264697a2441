"""``apportion plan``'s journal: every simulation kept as it completes, a stopped run
resumed to the same answer, Ctrl-C's line and exit code, another run's journal not reused."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from terminal import sigint_as_in_a_terminal
from test_plan import ROOT, _plan_json, _write_inputs, cluster

from scheduler.cli import CommandError, main
from sim.plan.evaluate import EvalTask, evaluate
from sim.plan.journal import Journal, code_version, journal_name
from sim.plan.slo import parse_slo


def _task(label: str = "2-2") -> EvalTask:
    return EvalTask(label, cluster(), (), (parse_slo("p95_wait<=1h"),))


def test_kept_evaluations_come_back_for_the_same_inputs_only(tmp_path: Path) -> None:
    path = tmp_path / journal_name((0, 1))
    first = Journal(path, "f1")
    first.keep(_task(), {"slo_met": [True]}, 1.5)
    first.close()
    again = Journal(path, "f1")
    assert (again.resumed, again.note) == (1, None)
    assert again.kept(_task()) == ({"slo_met": [True]}, 1.5)
    assert again.kept(_task("today")) is None  # same cluster, another task
    again.close()
    other = Journal(path, "f2")
    assert other.note is not None and other.note.startswith(
        f"{path} holds another run's simulations (inputs fingerprint f1, "
    )
    assert "this run: f2, " in other.note and other.note.endswith("): starting it afresh")
    assert (other.resumed, len(other), len(path.read_text().splitlines())) == (0, 0, 1)
    other.close()


def test_a_journal_of_other_code_is_not_reused(tmp_path: Path) -> None:
    """A checkout edited since it was installed keeps its version number; what it simulates
    may differ, so the journal names a digest of the code too."""
    path = tmp_path / "j.jsonl"
    Journal(path, "f").close()
    header = json.loads(path.read_text())
    assert re.fullmatch(r"\S+ \(code [0-9a-f]{12}\)", header["apportion"])
    assert header["apportion"] == code_version()
    version = header["apportion"].split(" ")[0]
    header["apportion"] = f"{version} (code 000000000000)"
    path.write_text(json.dumps(header, sort_keys=True) + "\n" + '{"task":"a"}\n')
    again = Journal(path, "f")
    assert again.note is not None and f"Apportion {version} (code 000000000000)" in again.note
    assert again.resumed == 0
    again.close()


def test_a_line_cut_short_by_a_crash_is_simulated_again(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "f")
    journal.keep(_task("a"), {"n": 1}, 1.0)
    journal.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"task":"b","cluster":"12')  # killed mid-write
    resumed = Journal(path, "f")
    assert resumed.resumed == 1 and resumed.kept(_task("b")) is None
    resumed.keep(_task("b"), {"n": 2}, 1.0)  # appended after the good lines, not the cut
    resumed.close()
    assert [json.loads(line).get("task") for line in path.read_text().splitlines()] == [
        None, "a", "b",
    ]  # fmt: skip
    # A bad line that is not the last one is not a crash's: the run stops and says where.
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(CommandError, match=f"{path} line 2: not a journal entry"):
        Journal(path, "f")


def test_blank_lines_in_a_journal_are_skipped(tmp_path: Path) -> None:
    """A blank line before the header made the journal "not a plan journal: starting it
    afresh", and every simulation kept in it was thrown away."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "f")
    journal.keep(_task("a"), {"n": 1}, 1.0)
    journal.close()
    header, entry = path.read_text().splitlines()
    path.write_text(f"\n{header}\n\n  \n{entry}\n\n")
    again = Journal(path, "f")
    assert (again.note, again.resumed, again.kept(_task("a"))) == (None, 1, ({"n": 1}, 1.0))
    again.keep(_task("b"), {"n": 2}, 1.0)
    again.close()
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert [json.loads(line).get("task") for line in lines] == [
        None, "a", "b",
    ]  # fmt: skip


def test_a_journal_that_cannot_be_read_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan-journal.jsonl a directory (or a file we may not read) was an IsADirectoryError
    (PermissionError) traceback."""
    trace, cluster_file = _write_inputs(tmp_path)
    where = tmp_path / "j"
    (where / "plan-journal.jsonl").mkdir(parents=True)
    args = ["plan", str(trace), "--cluster", str(cluster_file), "--max-simulations", "1",
            "--workers", "1", "--no-shapes", "--quiet", "--journal", str(where)]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"apportion plan: cannot read {where / 'plan-journal.jsonl'}: Is a directory\n"
    )
    if os.geteuid() == 0:
        return  # root reads a file of mode 000
    (where / "plan-journal.jsonl").rmdir()
    (where / "plan-journal.jsonl").write_text("{}\n")
    (where / "plan-journal.jsonl").chmod(0)
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"apportion plan: cannot read {where / 'plan-journal.jsonl'}: Permission denied\n"
    )


def test_shards_keep_their_own_journals() -> None:
    assert journal_name((0, 1)) == "plan-journal.jsonl"
    assert journal_name((3, 8)) == "plan-journal.shard-3-of-8.jsonl"


def _args(tmp_path: Path, out: str, *more: str) -> list[str]:
    trace, cluster_file = _write_inputs(tmp_path)
    return ["plan", str(trace), "--cluster", str(cluster_file), "--slo", "p95_wait<=1100",
            "--levels", "0.5,1,1.5,2", "--workers", "1", "--max-simulations", "20",
            "--out", str(tmp_path / out), *more]  # fmt: skip


# The sweep simulates 12 candidates, then 4 quota splits: stop in either.
@pytest.mark.parametrize("stop_at", [5, 14])
def test_a_stopped_run_resumes_to_the_uninterrupted_answer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stop_at: int,
) -> None:
    assert main(_args(tmp_path, "whole", "--quiet")) == 0
    calls = []

    def stopping(task: EvalTask) -> dict[str, Any]:
        calls.append(task.label)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return evaluate(task)

    monkeypatch.setattr("sim.plan.search.evaluate", stopping)
    capsys.readouterr()
    assert main(_args(tmp_path, "out")) == 130
    journal = tmp_path / "out" / "plan-journal.jsonl"
    kept = stop_at - 1
    err = capsys.readouterr().err
    assert err.endswith(
        f"\napportion plan: interrupted; {kept} simulation(s) kept in {journal}; "
        "run the same command again to resume\n"
    )
    assert not (tmp_path / "out" / "plan.json").exists()
    monkeypatch.setattr("sim.plan.search.evaluate", evaluate)
    calls.clear()
    assert main(_args(tmp_path, "out")) == 0
    err = capsys.readouterr().err
    assert f"apportion plan: resuming from {journal} ({kept} simulation(s) kept)" in err
    assert "simulated 4/4 quota splits" in err  # the splits show progress as the sweep does
    assert _plan_json(tmp_path / "out") == _plan_json(tmp_path / "whole")
    # All kept now: a third run simulates nothing and writes the same plan.
    monkeypatch.setattr("sim.plan.search.evaluate", stopping)
    assert main(_args(tmp_path, "out", "--quiet")) == 0 and calls == []
    assert _plan_json(tmp_path / "out") == _plan_json(tmp_path / "whole")


def test_another_runs_journal_is_started_afresh_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(tmp_path, "out", "--quiet")) == 0
    capsys.readouterr()
    other = _args(tmp_path, "out", "--quiet")
    other[other.index("p95_wait<=1100")] = "p95_wait<=2000"
    assert main(other) == 0
    lines = capsys.readouterr().err.splitlines()
    journal = tmp_path / "out" / "plan-journal.jsonl"
    assert [x for x in lines if "journal" in x] == [
        next(x for x in lines if x.startswith(f"apportion plan: {journal} holds another run's"))
    ]
    assert lines[0].endswith("): starting it afresh")


@pytest.mark.parametrize(
    ("stop", "code", "how"),
    [
        # A terminal's Ctrl-C: SIGINT to the process group, workers and all.
        (lambda pid: os.killpg(pid, signal.SIGINT), 130, "interrupted"),
        # A Job's deadline or its pod deleted: SIGTERM to the main process. It was killed
        # without a word, its workers left to finish their simulations.
        (lambda pid: os.kill(pid, signal.SIGTERM), 143, "terminated"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_ends_the_process_pool_and_keeps_what_it_finished(
    tmp_path: Path, stop: Callable[[int], None], code: int, how: str
) -> None:
    out = tmp_path / "out"
    journal = out / "plan-journal.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "plan", "demo", "--max-jobs", "200",
         "--max-simulations", "12", "--workers", "2", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=sigint_as_in_a_terminal,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    stop(run.pid)
    _, err = run.communicate(timeout=60)
    assert run.returncode == code, err
    kept = len(journal.read_text().splitlines()) - 1
    assert kept >= 2
    assert err.endswith(
        f"\napportion plan: {how}; {kept} simulation(s) kept in {journal}; "
        "run the same command again to resume\n"
    )
    assert "Traceback" not in err
    assert all(json.loads(line) for line in journal.read_text().splitlines())


def test_a_report_file_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan.json was written in place: a crash while writing it left half a file where
    the previous plan had been. A full disk was then a traceback (exit 1) naming no file."""
    args = _args(tmp_path, "out", "--quiet")
    assert main(args) == 0
    plan = tmp_path / "out" / "plan.json"
    before = plan.read_bytes()
    real_bytes, real_text = Path.write_bytes, Path.write_text

    def full(path: Path, data: bytes) -> int:  # the disk fills half-way through plan.json
        if not path.name.startswith("plan.json"):
            return real_bytes(path, data)
        real_bytes(path, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def full_text(path: Path, text: str, **kwargs: Any) -> int:
        if not path.name.startswith("plan.json"):
            return real_text(path, text, **kwargs)
        return full(path, text.encode())

    monkeypatch.setattr(Path, "write_bytes", full)
    monkeypatch.setattr(Path, "write_text", full_text)
    capsys.readouterr()
    assert main(args) == 2  # every simulation from the journal: straight to the report
    assert capsys.readouterr().err == (
        f"apportion plan: --out {tmp_path / 'out'}: cannot write {plan}: No space left on device\n"
    )
    assert plan.read_bytes() == before
    assert not plan.with_name("plan.json.tmp").exists()


def test_a_journal_the_disk_cannot_hold_stops_the_run_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal line that could not be written (a full disk) was a traceback from the
    pool's callback thread, swallowed: the run went on without keeping anything, with
    half a line left in the journal, until the report failed too."""
    journal = tmp_path / "out" / "plan-journal.jsonl"
    real_fsync = os.fsync
    lines = []

    def filling(fd: int) -> None:  # the third simulation's line does not fit
        lines.append(fd)
        if len(lines) == 3:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("sim.plan.journal.os.fsync", filling)
    assert main(_args(tmp_path, "out", "--quiet")) == 2
    assert capsys.readouterr().err == (
        f"apportion plan: cannot write {journal}: No space left on device; 2 simulation(s) "
        "kept in it; make room and run the same command again to resume\n"
    )
    assert not (tmp_path / "out" / "plan.json").exists()
    kept = journal.read_text().splitlines()
    assert len(kept) == 3 and all(json.loads(line) for line in kept)
    monkeypatch.setattr("sim.plan.journal.os.fsync", real_fsync)
    assert main(_args(tmp_path, "out")) == 0
    assert f"resuming from {journal} (2 simulation(s) kept)" in capsys.readouterr().err
