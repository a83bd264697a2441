"""``apportion simulate`` in a subprocess: table, results.json, plots, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from terminal import sigint_as_in_a_terminal

ROOT = Path(__file__).resolve().parents[1]
OPENB = ROOT / "sim" / "traces" / "alibaba-gpu-v2023"


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "simulate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_replay_demo_writes_results_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = simulate(
        "demo",
        "--max-jobs",
        "60",
        "--policy",
        "apportion",
        "--compare",
        "fifo,kueue",
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split()[:2] == ["apportion", "0"]
    # Every column is explained under the table (done, wait, preempt, lostGPUh and wall s
    # were not): `make demo` prints it to people who have not read the README yet.
    header = done.stdout.splitlines()[1]
    legend = done.stdout.split(header, 1)[1]
    for column in set(header.split()) - {"policy", "seed", "p50", "p95", "p99", "s"}:
        assert f"{column} " in legend, column
    result = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in result["runs"]] == ["apportion", "fifo", "kueue"]
    assert result["runs"][0]["summary"]["jobs"] == 60
    for name in ("utilization", "jain", "share-deviation", "fragmentation", "waiting"):
        assert (out / f"replay-{name}.png").stat().st_size > 1000
    again = simulate(
        "demo",
        "--max-jobs",
        "60",
        "--policy",
        "apportion",
        "--compare",
        "fifo,kueue",
        "--json",
        "--quiet",
    )
    assert again.stdout == (out / "results.json").read_text()


def test_fill_on_the_openb_csvs(tmp_path: Path) -> None:
    done = simulate(
        str(OPENB / "openb_pod_list_default.csv"),
        "--cluster",
        str(OPENB / "openb_node_list_gpu_node.csv"),
        "--experiment",
        "fill",
        "--policy",
        "best-fit",
        "--compare",
        "apportion",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        "--plot-format",
        "svg",
    )
    assert done.returncode == 0, done.stderr
    assert "best-fit" in done.stdout and "lowest node index" in done.stdout
    # What a replay leaves out is said on the terminal, not only in results.json, and that
    # the fill places it.
    assert (
        "placing 1949 pod(s) a replay leaves out:\n      1088  cpu-only pod\n"
        "       861  never ran\n"
    ) in done.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert all(run["cpu_only_pods"] > 1000 for run in result["runs"])
    assert set(result["summary"]) == {"best-fit", "apportion"}
    assert (tmp_path / "fill-allocated.svg").exists()
    # The ± was an unlabelled population standard deviation ("std" in results.json).
    assert "± population standard deviation over the seeds" in done.stdout
    assert set(result["summary"]["apportion"]["unallocated_pct_at_100"]) == {"mean", "pstdev"}


def test_bad_input_exits_2_with_a_named_cell(tmp_path: Path) -> None:
    trace = tmp_path / "jobs.csv"
    trace.write_text("name,submit,runtime,gpus\na,0,1,1\nb,soon,1,1\n")
    done = simulate(str(trace), "--quiet")
    assert done.returncode == 2
    assert "jobs.csv line 3 column submit: 'soon'" in done.stderr
    assert "Traceback" not in done.stderr
    skipped = simulate(str(trace), "--skip-bad-rows", "--json", "--cluster", "uniform:1x4xT4")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["trace"]["bad_rows_skipped"] == {
        "column submit: is not a valid integer, unable to parse string as an integer": 1
    }
    assert "skipped 1 bad row(s)" in skipped.stderr
    no_queue = simulate(str(trace), "--skip-bad-rows")
    assert no_queue.returncode == 2
    # The user never wrote 'default': where it came from is said.
    assert no_queue.stderr.endswith(
        "the trace uses queue(s) the cluster does not define: default (the queue of jobs the "
        "trace names no queue for: an empty or missing queue column or key, every openb pod); "
        "the cluster has team-a, team-b, team-c, team-d, team-e, team-f\n"
    )
    unknown = simulate("demo", "--policy", "magic")
    assert unknown.returncode == 2 and "unknown replay policy 'magic'" in unknown.stderr
    fill_kueue = simulate("demo", "--experiment", "fill", "--policy", "kueue")
    assert fill_kueue.returncode == 2 and "unknown fill policy 'kueue'" in fill_kueue.stderr
    latin1 = tmp_path / "jobs-latin1.csv"
    latin1.write_bytes("name,submit,runtime,gpus\nétude,0,1,1\n".encode("latin-1"))
    for args in ([str(latin1)], ["demo", "--cluster", str(latin1)]):
        unreadable = simulate(*args, "--quiet")
        assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr
        assert "jobs-latin1.csv: not UTF-8 text (byte 0xe9 at offset 25)" in unreadable.stderr


def test_times_past_any_clock_are_bad_rows_and_the_largest_allowed_replay(
    tmp_path: Path,
) -> None:
    """A runtime of 1e308 passed the row's checks and overflowed the metrics' integrals
    mid-run (simulate and plan: an OverflowError traceback). The largest allowed, 10^12 s of
    work at the slowest rate, 10^-6, after a submit of 10^12, replays."""
    trace = tmp_path / "x.csv"
    trace.write_text("name,queue,submit,runtime,gpus\na,q,0,1e308,1\n")
    cluster = ("--cluster", "uniform:1x2xH100-80GB")
    for command in ("simulate", "plan"):
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", command, str(trace), *cluster, "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == (
            f"apportion {command}: {trace} line 2 column runtime: '1e308' is more than 10^12, "
            "the most a trace's times and work may be (31,700 years of seconds)\n"
        )
    trace.write_text(
        "name,queue,submit,runtime,gpus,throughput\n"
        "a,q,0,1e12,1,H100-80GB=1e-6\nb,q,1000000000000,1e12,1,\n"
    )
    done = simulate(str(trace), *cluster, "--policy", "fifo", "--compare", "apportion",
                    "--json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for run in json.loads(done.stdout)["runs"]:
        assert run["summary"]["jct_s"]["all"]["p99"] == 10**18, run["summary"]


def test_cpu_or_memory_past_int64_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A job's cpu_milli or a node's memory_mib of 20 digits and more passed and overflowed
    numpy's int64 arrays mid-run (simulate and plan: an OverflowError traceback)."""
    trace = tmp_path / "x.csv"
    trace.write_text(f"name,queue,submit,runtime,gpus,cpu_milli\na,q,0,10,1,{10**20}\n")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(f"sn,cpu_milli,memory_mib,gpu,model\nn1,64000,{'9' * 4300},2,T4\n")
    for command, files, said in (
        ("simulate", [str(trace), "--cluster", "uniform:1x2xT4"], f"{trace} line 2 column "
         f"cpu_milli: '{10**20}' is more than 10^12 milli-cores (a billion cores), the most CPU"),
        ("plan", [str(trace), "--cluster", "uniform:1x2xT4"], f"{trace} line 2 column "
         f"cpu_milli: '{10**20}' is more than 10^12 milli-cores (a billion cores), the most CPU"),
        ("simulate", ["demo", "--cluster", str(nodes)], f"{nodes} line 2 column memory_mib: "
         f"'{'9' * 56}... is more than 10^12 MiB (about an exabyte), the most memory"),
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", command, *files, "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == f"apportion {command}: {said} a node or pod may have\n"


def test_a_gpu_model_the_cluster_lacks_exits_2_naming_it(tmp_path: Path) -> None:
    """A model in ``models`` or ``throughput`` that the catalog does not know stops the run
    before it starts, naming the model and a job (it was a KeyError traceback mid-run)."""
    for column, value in (("models", "Z100"), ("throughput", "Z100=2")):
        trace = tmp_path / f"{column}.csv"
        trace.write_text(f"name,submit,runtime,gpus,{column}\na,0,10,1,\nb,5,10,1,{value}\n")
        for command in (
            ["simulate", str(trace), "--policy", "fifo"],
            ["simulate", str(trace), "--experiment", "fill", "--policy", "best-fit"],
            ["plan", str(trace), "--max-simulations", "1", "--slo", "p95_wait<=1h"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "scheduler", *command, "--cluster", "uniform:2x4xT4"],
                capture_output=True, text=True, cwd=ROOT, timeout=300,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr
            assert "GPU model(s) uniform:2x4xT4 does not know: 'Z100' (job b)" in done.stderr


def test_the_standalone_cluster_file_is_a_cluster(tmp_path: Path) -> None:
    """The cluster file the README has users write for ``serve --cluster`` (a snapshot with
    a ``namespaces`` map) was refused by simulate and plan: 'namespaces: unknown field'."""
    cluster = ROOT / "tests" / "fixtures" / "webhook" / "cluster.yaml"
    trace = tmp_path / "jobs.csv"
    trace.write_text("name,queue,submit,runtime,gpus\na,team-a,0,60,8\nb,team-b,5,60,4\n")
    for command in (
        ["simulate", str(trace), "--policy", "fifo", "--quiet"],
        ["plan", str(trace), "--max-simulations", "1", "--quota-simulations", "1", "--quiet"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", *command, "--cluster", str(cluster)],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, (command[0], done.stderr)


def test_jobs_the_cluster_can_never_run_are_named(tmp_path: Path) -> None:
    """A job no node can ever host (16 GPUs in a pod on 4-GPU nodes; a gang larger than the
    cluster) waited to the end, shown only in the wait count."""
    trace = tmp_path / "jobs.csv"
    trace.write_text("name,submit,runtime,gpus,pods\nok,0,10,1,1\nwide,5,10,16,1\nmany,6,10,4,3\n")
    done = simulate(str(trace), "--policy", "fifo", "--cluster", "uniform:2x4xT4", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (
        "2 job(s) can never run on this cluster, even empty, and stay waiting "
        "(e.g. wide: 1× {'gpus': 16}; many: 3× {'gpus': 4})"
    ) in done.stdout
    as_json = simulate(
        str(trace), "--policy", "fifo", "--cluster", "uniform:2x4xT4", "--quiet", "--json"
    )
    result = json.loads(as_json.stdout)
    assert result["never_fit"]["jobs"] == 2
    assert result["runs"][0]["summary"]["unfinished"]["waiting"] == 2


def test_the_tables_job_counts_add_up_and_goodput_is_beside_util(tmp_path: Path) -> None:
    """The table showed done and wait alone: a job still running at --horizon or arriving
    after it was in neither (1 + 1 of 4 jobs here). And util counted the 100 GPU-s of a's
    first run, which b's reclaim threw away (util 0.95: 190 of 200 GPU-s), with no figure
    for the work kept (90 GPU-s: 0.45)."""
    trace = tmp_path / "jobs.csv"
    trace.write_text(
        "name,queue,submit,runtime,gpus\n"
        "a,qa,0,1000,2\nb,qb,50,10,1\nc,qb,60,200,1\nd,qa,500,10,1\n"
    )
    done = simulate(
        str(trace), "--policy", "kueue", "--cluster", "uniform:1x2xH100-80GB", "--horizon",
        "100", "--workers", "1", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("policy"))
    row = lines[lines.index(header) + 1]

    def cell(column: str) -> str:  # right-aligned: a cell ends where its heading does
        return row[: header.index(f" {column} ") + len(column) + 1].split()[-1]

    counts = {c: cell(c) for c in ("done", "wait", "run", "later")}
    assert counts == {"done": "1", "wait": "1", "run": "1", "later": "1"}
    assert (cell("util"), cell("good")) == ("0.95", "0.45")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("jobs.csv", "name,submit,runtime,gpus\nj1,0,10,1\ncpu,5,10,0\n"),
        ("jobs.jsonl", '{"name": "j1", "submit": 0, "runtime": 10, "gpus": 1}\n'
         '{"name": "cpu", "submit": 5, "runtime": 10, "gpus": 0}\n'),
    ],
    ids=["csv", "jsonl"],
)  # fmt: skip
def test_a_cpu_only_job_of_our_format_is_left_out_and_counted(
    tmp_path: Path, name: str, text: str
) -> None:
    """A row with gpus 0 stopped the run as a bad row ('should be greater than 0'), while
    the README says CPU-only jobs are left out and counted, as every public trace's are."""
    trace = tmp_path / name
    trace.write_text(text)
    cluster = ("--cluster", "uniform:1x1xT4")
    done = simulate(str(trace), *cluster, "--policy", "fifo", "--workers", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert "left out 1 job(s) of the trace:\n         1  cpu-only job\n" in done.stderr
    result = json.loads(done.stdout)
    assert result["trace"]["jobs"] == 1 and result["trace"]["left_out"] == {"cpu-only job": 1}
    trace.write_text(text.splitlines(keepends=True)[-1] if name.endswith("l") else
                     "name,submit,runtime,gpus\ncpu,5,10,0\n")  # fmt: skip
    alone = simulate(str(trace), *cluster, "--policy", "fifo", "--quiet")
    assert alone.returncode == 2 and "cpu-only job" in alone.stderr, alone.stderr


def test_percentiles_over_no_finished_job_are_a_dash_not_0(tmp_path: Path) -> None:
    """With no job finished the table printed JCT and delay p50/p95/p99 as 0, read as "no
    waiting" (results.json says count 0): a dash, the columns kept aligned."""
    trace = tmp_path / "jobs.csv"
    trace.write_text("name,queue,submit,runtime,gpus,models\nj1,team-a,0,100,1,B200\n")
    done = simulate(str(trace), "--policy", "fifo", "--workers", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("policy"))
    row = lines[lines.index(header) + 1]
    assert row.split()[:11] == ["fifo", "0", "0", "1", "0", "0", "—", "—", "—", "—", "—"]
    assert len(row) == len(header)


@pytest.mark.parametrize("workers", ["1", "2"], ids=["inline", "worker-processes"])
@pytest.mark.parametrize(
    ("sent", "code", "how"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_ends_a_run_with_a_line_not_a_traceback(
    sent: signal.Signals, code: int, how: str, workers: str, tmp_path: Path
) -> None:
    # SIGTERM (a Job's deadline) killed the run without a word; now it stops as Ctrl-C does.
    # The apportion policy's run takes tens of seconds: the signal lands mid-run. (FIFO's
    # whole run took 0.3 s after its first progress line: under load the run could end
    # before the signal arrived, and the test saw exit 0.)
    # stderr to a file, as a shell redirects it: a pipe's reader saw the bar's first byte
    # only, and the stop's line glued to the bar ('… 0%apportion simulate: …') went unseen.
    log = tmp_path / "stderr"
    with log.open("w") as err:
        out = tmp_path / "out"  # in every worker's command line too (they are forks)
        run = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "simulate", "demo", "--policy", "apportion",
             "--compare", "kueue", "--workers", workers, "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, preexec_fn=sigint_as_in_a_terminal,
        )  # fmt: skip
        while "%" not in log.read_text():  # the progress bar: the run has started
            assert run.poll() is None
            time.sleep(0.05)
        run.send_signal(sent)
        run.wait(timeout=60)
    stderr = log.read_text()
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    # On a line of its own: it was printed after the progress bar, on the bar's line.
    assert stderr.splitlines()[-1] == f"apportion simulate: {how}"
    assert not (out / "results.json").exists()
    left = [p for p in Path("/proc").glob("[0-9]*") if str(out) in _cmdline(p)]
    assert left == [], "worker processes outlived the run"


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # ended meanwhile
        return ""


def test_nonsense_options_exit_2_before_the_run(tmp_path: Path) -> None:
    """Negative intervals, ticks, budgets, horizons and job counts were accepted and
    silently changed the run (--max-jobs -1 dropped the last job, --interval -3 skipped
    policy calls); an --out that is a file was a traceback after the whole run."""
    for option, value, message in (
        ("--max-jobs", "-1", "argument --max-jobs: '-1': must be 1 or more"),
        ("--interval", "-3", "argument --interval: '-3': must be 0 or more"),
        ("--tick", "-5", "argument --tick: '-5': must be 0 or more"),
        ("--checkpoint", "-10", "argument --checkpoint: '-10': must be 0 or more"),
        ("--horizon", "0", "argument --horizon: '0': must be 1 or more"),
        ("--budget-ms", "-1", "argument --budget-ms: '-1': must be a positive number"),
        ("--mtbf-hours", "nan", "argument --mtbf-hours: 'nan': must be 0 or a positive number"),
        # Sizes past any real use ran for ever (or forked a process per run).
        ("--budget-ms", "1e12",
         "argument --budget-ms: '1e12': at most 3,600,000 (an hour: the controller decides "
         "within seconds, and the benchmark proves its bounds within two minutes)"),
        ("--workers", "100000", "argument --workers: '100000': at most 256 (a process per core "
         "of the largest common servers; each holds a whole replay)"),
        ("--seeds", ",", "--seeds: ',' has an empty item"),
        ("--seeds", "0", "--seeds: '0' is a count of no seed (seed 0 alone: --seeds 1;"),
        ("--seeds", "9" * 30, f"--seeds: {int('9' * 30):,} seeds; at most 1,000 (a run each)"),
        ("--seeds", "2,0,2", "--seeds: 2 given more than once"),  # the same run twice
        ("--seeds", "1e3", "--seeds: '1e3' is not a list of integers or a count"),
    ):  # fmt: skip
        done = simulate("demo", "--max-jobs", "5", option, value, "--quiet")
        assert done.returncode == 2 and message in done.stderr, (option, done.stderr)
    taken = tmp_path / "results"
    taken.write_text("not a directory")
    # Was 'cannot create the directory: File exists' ('--out README.md'), and for a path
    # inside a file 'Not a directory', which did not say which part is the file.
    for out, problem in (
        (taken, "is a file, not a directory (--out names a directory, made if missing)"),
        (taken / "run-1", f"{taken} is a file, not a directory"),
    ):
        done = simulate("demo", "--max-jobs", "5", "--out", str(out), "--quiet")
        assert done.returncode == 2
        assert done.stderr == f"apportion simulate: --out {out}: {problem}\n"


def test_an_empty_out_is_refused_not_the_current_directory(tmp_path: Path) -> None:
    """--out '' was Path(''), which is '.': results.json and the plots (plan's report and
    journal) went into the current directory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command, flag in (("simulate", "--out"), ("plan", "--out"), ("plan", "--journal")):
        done = subprocess.run(
            [sys.executable, "-m", "scheduler", command, "demo", "--max-jobs", "5", flag, "",
             "--quiet"],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.endswith(
            f"error: argument {flag}: '' is an empty path; give a directory ('.' for the "
            "current one)\n"
        )
        assert list(tmp_path.iterdir()) == []


def test_seeds_are_a_count_or_a_list_of_seeds_and_ranges() -> None:
    """'--seeds 1' ran seed 1 but '--seeds 2' seeds 0 and 1; '1,,2' skipped the empty item
    without a word; '-1' ran, the same run as seed 1 (Python's random takes the absolute
    value), so '-1,1' averaged one run as two. A bare integer is now always a count, a
    list names seeds and inclusive ranges, and a seed is 0 or more."""
    from sim.commands import _seeds

    assert _seeds("1") == [0] and _seeds("3") == [0, 1, 2]
    assert _seeds("5,2") == [5, 2] and _seeds("7-7") == [7] and _seeds("0,10-12") == [0, 10, 11, 12]
    done = simulate("demo", "--max-jobs", "5", "--policy", "fifo", "--seeds", "1", "--json",
                    "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [run["seed"] for run in json.loads(done.stdout)["runs"]] == [0]
    # A list that starts with '-' is read as the value, not a flag, and refused as negative.
    for value, said in (
        ("-1,2", "-1 is negative; seeds are 0 or more (Python's random takes -1 and 1 as the "
         "same seed)"),
        ("2,-1", "-1 is negative"),
        ("1,,2", "'1,,2' has an empty item (a count N (seeds 0 to N-1), or seeds and ranges "
         "like '0,3' or '100-109')"),
        ("5-3", "5-3 is an empty range (from 5 to 3)"),
    ):  # fmt: skip
        done = simulate("demo", "--max-jobs", "5", "--seeds", value, "--quiet")
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.startswith(f"apportion simulate: --seeds: {said}"), done.stderr


def test_failures_past_any_study_are_refused_before_they_are_drawn() -> None:
    """A tiny --mtbf-hours drew billions of node failures one by one: it ran for ever."""
    done = simulate("demo", "--mtbf-hours", "0.00001", "--mttr", "1", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "(--mtbf-hours) makes about" in done.stderr
    assert "node failures over" in done.stderr and "at most 1,000,000" in done.stderr


def test_bad_inputs_leave_no_out_directory_behind(tmp_path: Path) -> None:
    """A mistyped trace left --out DIR behind, empty: it was made before the inputs were
    read. It is still made before the run, so an --out that cannot be one fails at once."""
    out = tmp_path / "results" / "run"
    for args in (
        ["no-such-trace.csv"],
        ["demo", "--cluster", "no-such-cluster.yaml"],
        ["demo", "--vc-quotas", "no-such-table.csv"],
    ):
        done = simulate(*args, "--max-jobs", "5", "--out", str(out), "--quiet")
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        assert not (tmp_path / "results").exists(), args


def test_options_for_another_input_are_refused_not_ignored() -> None:
    """--throughputs on a trace that is not Gavel's and --vc-date without --vc-quotas were
    ignored without a word (a --throughputs file that did not exist too): the run went on
    without the speeds or the day the user asked for."""
    for args, message in (
        (["--throughputs", "no-such-table.json"],
         "--throughputs: only a Gavel trace reads a throughput table; demo is a csv trace "
         "(give a throughput column in it instead)"),
        (["--vc-date", "2020-09-01"], "--vc-date: needs --vc-quotas (the day of its table)"),
    ):  # fmt: skip
        done = simulate("demo", "--max-jobs", "5", *args, "--quiet")
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr == f"apportion simulate: {message}\n"


def test_results_json_is_written_whole_or_the_failure_named(tmp_path: Path) -> None:
    """results.json was written in place after the whole run: a results.json that is a
    directory was an IsADirectoryError traceback, and a stop mid-write left half a file."""
    out = tmp_path / "out"
    (out / "results.json").mkdir(parents=True)
    done = simulate("demo", "--max-jobs", "5", "--policy", "fifo", "--out", str(out), "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--out {out}: cannot write {out / 'results.json'}: Is a directory" in done.stderr
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == ["results.json"]


def test_a_gavel_trace_replays_on_a_cluster_with_some_of_its_gpu_types(tmp_path: Path) -> None:
    """Gavel measures every job on K80, P100 and V100; on a V100 cluster the whole trace was
    refused ("names GPU model(s) ... does not know: 'K80'")."""
    table = tmp_path / "tput.json"
    table.write_text(
        json.dumps(
            {
                "v100": {"('ResNet-18 (batch size 16)', 1)": {"null": 10.0}},
                "k80": {
                    "('ResNet-18 (batch size 16)', 1)": {"null": 2.5},
                    "('LM (batch size 20)', 1)": {"null": 1.0},
                },
            }
        )
    )
    trace = tmp_path / "jobs.trace"
    trace.write_text(
        "ResNet-18 (batch size 16)\tpython t.py\t/w\t--steps\t1\t1000\t1\t1\t-1\t0\n"
        "LM (batch size 20)\tpython lm.py\t/w\t--steps\t1\t100\t1\t1\t-1\t5\n"
    )
    done = simulate(str(trace), "--throughputs", str(table), "--cluster", "uniform:1x4xV100",
                    "--policy", "fifo", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "GPU types of the throughput table not in the cluster, no job's choice here: K80\n" in (
        done.stderr
    )
    result = json.loads(done.stdout)
    left_out = {"measured on no GPU type of the cluster": 1, "zero steps": 0}
    assert result["trace"]["left_out"] == left_out
    (run,) = result["runs"]
    assert (run["summary"]["jobs"], run["summary"]["finished"]) == (1, 1)
    only_k80 = simulate(str(trace), "--throughputs", str(table), "--cluster", "uniform:1x4xA10G")
    assert only_k80.returncode == 2 and "Traceback" not in only_k80.stderr
    assert "no job to replay: the throughput table measured none on a GPU type of cluster " in (
        only_k80.stderr
    )


@pytest.mark.parametrize("experiment", ["replay", "fill"])
def test_the_result_does_not_depend_on_the_workers(experiment: str) -> None:
    """Runs (policy × seed) go to worker processes side by side; results.json is the same."""
    policies = ("apportion-greedy", "fifo,kueue") if experiment == "replay" else ("fgd", "best-fit")
    common = ["demo", "--max-jobs", "150", "--experiment", experiment, "--policy", policies[0]]
    common += ["--compare", policies[1], "--seeds", "2", "--json", "--quiet"]
    answers = [simulate(*common, "--workers", workers) for workers in ("1", "2")]
    assert [a.returncode for a in answers] == [0, 0], answers[1].stderr
    assert answers[0].stdout == answers[1].stdout
    runs = len(policies[1].split(",")) + 1
    assert len(json.loads(answers[0].stdout)["runs"]) == 2 * runs


def test_every_option_with_a_default_says_it_in_its_help() -> None:
    """plan --seed had no help at all, and simulate --help did not say --tick's 30 s or
    --budget-ms's 2000 ms (nor --mttr's, --seeds'...)."""
    import argparse

    from sim.commands import simulate_command
    from sim.plan.commands import plan_command

    sub = argparse.ArgumentParser().add_subparsers()
    simulate_command(sub)
    plan_command(sub)
    for name, parser in sub.choices.items():
        for action in parser._actions:
            unsaid = (None, False, "", [], argparse.SUPPRESS)  # no default, or no value
            if action.option_strings and action.default not in unsaid:
                assert action.help and "default" in action.help, (name, action.option_strings)


def test_a_worker_reports_a_run_the_main_process_reported_just_before() -> None:
    """A worker process inherits the main process's last report time per label: a run
    reported in the main process (one worker) less than 0.1 s before a worker process
    forked lost its first report there (plan's candidates are simulated again so)."""
    from sim import pool

    seen: list[tuple[str, float]] = []
    with pool.executor(1, lambda label, done: seen.append((label, done))) as inline:
        inline.submit(pool.report, "run", 0.5).result()
    with pool.executor(2, lambda label, done: seen.append((label, done))) as workers:
        workers.submit(pool.report, "run", 0.5).result()
    assert seen == [("run", 0.5), ("run", 0.5)]


def test_work_lost_to_node_failures_is_in_the_table(tmp_path: Path) -> None:
    """What node failures threw away was only in results.json (``lost_to_outages``): the
    table's lostGPUh is the policy's preemptions', so a run with --mtbf-hours looked as
    if it lost nothing."""
    trace = tmp_path / "jobs.csv"
    trace.write_text("name,queue,submit,runtime,gpus\n" + "".join(
        f"j{i},team-a,{i * 60},36000,8\n" for i in range(8)
    ))  # fmt: skip
    out = tmp_path / "out"
    done = simulate(
        str(trace), "--policy", "fifo", "--mtbf-hours", "20", "--mttr", "600",
        "--cluster", str(ROOT / "tests" / "fixtures" / "webhook" / "cluster.yaml"),
        "--quiet", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = json.loads((out / "results.json").read_text())["runs"][0]
    lost = run["summary"]["gpu_hours"]["lost_to_outages"]
    assert run["summary"]["outage_kills"] > 0 and lost > 0
    assert (
        f"outages fifo/0: {run['outages']} node failure(s) killed "
        f"{run['summary']['outage_kills']} job(s), {lost:.1f} GPU-hours of work lost"
    ) in done.stdout.splitlines()
