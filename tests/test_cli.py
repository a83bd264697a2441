"""The apportion command as users run it: a real subprocess, real files, exit codes."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from terminal import sigint_as_in_a_terminal

from scheduler.model import Decision

FIXTURES = Path(__file__).parent / "fixtures" / "snapshots"


def apportion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_prints_tables_with_reasons_and_the_answering_path():
    result = apportion("decide", "--default-cluster", "--workloads", "60")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "queue" in out and "team-a" in out and "admit" in out
    assert "answered by: " in out and "objective" in out
    assert "Traceback" not in out + result.stderr


def test_version_is_printed():
    from importlib.metadata import version

    result = apportion("--version")
    assert (result.returncode, result.stdout) == (0, f"apportion {version('apportion')}\n")


def test_commands_start_without_the_planners_plotting_and_lp_libraries():
    # Was: every command (--help, catalog, queue too) imported matplotlib and scipy for
    # `apportion plan`'s report and fluid bound, most of a second before anything ran.
    code = (
        "import sys; from scheduler.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('matplotlib', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


def test_ctrl_c_while_the_commands_load_is_a_line_not_a_traceback():
    """Loading the commands takes most of a second (numpy, PuLP, the kubernetes client);
    Ctrl-C then was a KeyboardInterrupt traceback, or, landing inside numpy's import, an
    AttributeError one (exit 1). The package itself imports none of it, so the handler is
    set before the load begins."""
    code = (
        "import os, signal, sys; import scheduler.cli as cli; "
        "assert 'numpy' not in sys.modules, 'import scheduler loads numpy'; "
        "cli.build_parser = lambda: os.kill(os.getpid(), signal.SIGINT) or signal.pause(); "
        "sys.exit(cli.main(['catalog']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=sigint_as_in_a_terminal,
    )
    assert (result.returncode, result.stderr) == (130, "apportion: interrupted\n")


def test_the_command_gets_ctrl_c_as_usual_once_loaded(capsys):
    """As a terminal starts it (a background run of the suite ignores SIGINT)."""
    from scheduler.cli import main

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["catalog"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert "H100" in capsys.readouterr().out


def test_a_full_disk_under_stdout_is_a_line_not_a_traceback():
    """``apportion catalog > FILE`` on a full disk was an OSError traceback (exit 1)."""
    with open("/dev/full", "w") as full:  # Linux's device whose every write fails: ENOSPC
        result = subprocess.run(
            [sys.executable, "-m", "scheduler", "catalog"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert (result.returncode, result.stderr) == (
        2,
        "apportion catalog: cannot write the output: No space left on device\n",
    )


def test_decide_json_is_a_decision():
    result = apportion("decide", "--default-cluster", "--workloads", "30", "--json", "--greedy")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["stats"]["path"] == "greedy"
    assert len(data["workloads"]) == 30
    # Was 0, 1 and 2 (the enum's order): the names the table and the shadow annotation use.
    outcomes = {w["outcome"] for w in data["workloads"]}
    assert "admit" in outcomes and outcomes <= {"admit", "preempt", "pending"}
    assert Decision.model_validate(data).model_dump(mode="json") == data
    table = apportion("decide", "--default-cluster", "--workloads", "30", "--greedy").stdout
    rows = table.split("\n\n")[1].splitlines()[2:]
    assert {row.split()[2] for row in rows} == outcomes


def test_every_valid_fixture_decides():
    # The standalone cluster file too (a snapshot with namespaces): it was 'namespaces:
    # unknown field'.
    valid = sorted(p for p in FIXTURES.glob("*.yaml") if p.name != "broken.yaml")
    valid.append(FIXTURES.parent / "webhook" / "cluster.yaml")
    assert valid, "no example snapshots found"
    for path in valid:
        result = apportion("decide", str(path))
        assert result.returncode == 0, (path, result.stderr)


def test_broken_fixture_lists_every_problem():
    result = apportion("decide", str(FIXTURES / "broken.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "workloads[4].placement[0].node: 'gpu-c' is not a node" in result.stderr


def test_an_empty_path_is_named_as_such():
    """``Path('')`` is '.': ``decide ''`` said "cannot read .: Is a directory", ``simulate
    --cluster ''`` "cannot read cluster : Is a directory", ``simulate ''`` looked for a PAI
    trace in the current directory, and ``crds --output-dir ''`` wrote there."""
    for args, message in (
        (["decide", ""], "apportion decide: error: argument snapshot: '' is an empty path; "
         "give a file"),
        (["crds", "--output-dir", " "], "apportion crds: error: argument --output-dir: ' ' is "
         "an empty path; give a directory ('.' for the current one)"),
        (["serve", "--queues", ""], "apportion serve: error: argument --queues: '' is an "
         "empty path; give a file"),
        (["simulate", ""], "apportion simulate: trace '' is an empty path; give a file or "
         "'demo'"),
        (["simulate", "demo", "--cluster", "", "--quiet"], "apportion simulate: cluster '' is "
         "an empty path; give a file, default or uniform:NODESxGPUSxMODEL"),
    ):  # fmt: skip
        result = apportion(*args)
        assert (result.returncode, result.stderr.splitlines()[-1]) == (2, message), args


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n- name: a\n  quota: {H100: {nominal: -1}}\n")
    result = apportion("decide", str(bad))
    assert result.returncode == 2
    assert "queues[0].quota.H100.nominal: -1 is negative" in result.stderr
    assert "Traceback" not in result.stderr

    missing = apportion("decide", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr

    both = apportion("decide", str(bad), "--default-cluster")
    assert both.returncode == 2 and "exactly one" in both.stderr

    # The demo's queue options on a snapshot file were ignored: the file's workloads ran.
    for option in ("--workloads", "--seed"):
        demo_only = apportion("decide", str(FIXTURES / "small-cluster.yaml"), option, "5")
        assert (demo_only.returncode, demo_only.stdout) == (2, ""), option
        assert demo_only.stderr == (
            f"apportion decide: {option} shapes the demo cluster's pending queue "
            "(--default-cluster); a SNAPSHOT file brings its own workloads\n"
        )

    for budget_ms in ("0", "-5", "nan", "inf"):
        # NaN and infinity were taken: 'of nan ms budget', and null in the JSON's stats.
        budget = apportion("decide", "--default-cluster", "--budget-ms", budget_ms)
        assert budget.returncode == 2 and budget.stdout == ""
        assert f"--budget-ms: {budget_ms} must be a finite number above 0" in budget.stderr

    binary = tmp_path / "snapshot.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n not text")
    unreadable = apportion("decide", str(binary))
    assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr
    assert "snapshot.png: not UTF-8 text (byte 0x89 at offset 0)" in unreadable.stderr

    cut = tmp_path / "snapshot.yaml.gz"
    cut.write_bytes(gzip.compress(bad.read_bytes())[:-12])
    cut_short = apportion("decide", str(cut))
    assert cut_short.returncode == 2 and "Traceback" not in cut_short.stderr
    assert "snapshot.yaml.gz: gzip file cut short" in cut_short.stderr


def test_sizes_past_any_real_use_are_refused_before_the_work():
    """--workloads 100000000 built a hundred million pending workloads and ran for ever, and
    a budget of weeks let the ILP run as long: the error names the limit and why."""
    for args, message in (
        (["--workloads", "100000000"],
         "--workloads: 100,000,000 pending workloads; at most 20,000 (the largest instance "
         "the decision benchmark times; on the demo's 496 GPUs that decides in seconds)"),
        (["--budget-ms", "1e12"],
         "--budget-ms: 1,000,000,000,000 ms; at most 3,600,000 (an hour: the controller decides "
         "within seconds, and the benchmark proves its bounds within two minutes)"),
        (["--budget-ms", "3600001"],  # it read 3.6e+06, as if within the limit
         "--budget-ms: 3,600,001 ms; at most 3,600,000 (an hour: the controller decides within "
         "seconds, and the benchmark proves its bounds within two minutes)"),
    ):  # fmt: skip
        done = apportion("decide", "--default-cluster", *args)
        assert (done.returncode, done.stdout) == (2, ""), args
        assert done.stderr == f"apportion decide: {message}\n"


def test_a_negative_seed_is_refused():
    """--seed -1 drew the pending queue --seed 1 draws (random.Random(-1) is Random(1)): two
    runs taken as different were the same."""
    done = apportion("decide", "--default-cluster", "--seed", "-1")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        "apportion decide: error: argument --seed: '-1' is negative; seeds are 0 or more "
        "(Python's random takes -1 and 1 as the same seed)"
    )


def test_the_budget_is_shown_as_given_however_small():
    """--budget-ms 0.001 said 'of 0 ms budget'. A budget under a millisecond is a real
    choice (greedy's answer, no time for the ILP or the improvement phase), so it is shown
    as given."""
    for budget_ms, shown in (("0.001", "0.001"), ("2.5", "2.5"), ("1000", "1000")):
        done = apportion("decide", "--default-cluster", "--workloads", "30", "--budget-ms",
                         budget_ms)  # fmt: skip
        assert done.returncode == 0, done.stderr
        footer = next(line for line in done.stdout.splitlines() if line.startswith("answered"))
        assert f" ms of {shown} ms budget; " in footer, budget_ms


def test_a_decision_with_nothing_pending_says_so(tmp_path):
    # Was 'answered by: greedy (greedy only)', as if --greedy had been given.
    empty = tmp_path / "empty.yaml"
    empty.write_text("nodes: [{name: n, gpus: [{index: 0, model: T4}]}]\n")
    done = apportion("decide", str(empty))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("answered by: greedy (nothing pending); ")
    # Not an empty workload table, which read like a rendering fault.
    assert "nothing pending: the snapshot has no workloads" in done.stdout.splitlines()
    assert "workload  queue  outcome" not in done.stdout
    running = tmp_path / "running.yaml"
    running.write_text(
        "nodes: [{name: n, gpus: [{index: 0, model: T4}]}]\n"
        "queues: [{name: q, quota: {T4: {nominal: 1}}}]\n"
        "workloads: [{name: w, queue: q, demand: {gpus: 1}, flavor: T4,"
        " placement: [{node: n, gpus: [0]}]}]\n"
    )
    done = apportion("decide", str(running))
    assert done.returncode == 0, done.stderr
    assert "nothing pending: all 1 workload(s) in the snapshot are running" in done.stdout


def test_a_decision_over_its_budget_says_so_and_by_how_much():
    """--workloads 20000 with a 1 s budget could take longer (a greedy cycle cannot stop
    early) and said only '1834.2 ms of 1000 ms budget'. Any decision outlasts 1 µs."""
    over = re.compile(
        r"over budget by [0-9,]+\.[0-9] ms: a greedy cycle, which every decision runs, "
        r"cannot be cut short"
    )
    args = ("decide", "--default-cluster", "--workloads", "30")
    table = apportion(*args, "--budget-ms", "0.001")
    assert table.returncode == 0, table.stderr
    assert over.fullmatch(table.stdout.splitlines()[-1]), table.stdout.splitlines()[-2:]
    as_json = apportion(*args, "--budget-ms", "0.001", "--json")
    stats = json.loads(as_json.stdout)["stats"]  # stdout stays JSON; the news is on stderr
    assert stats["wall_ms"] > stats["budget_ms"]
    assert over.fullmatch(as_json.stderr.removeprefix("apportion decide: ").rstrip("\n"))
    within = apportion(*args, "--budget-ms", "60000")
    assert "over budget" not in within.stdout + within.stderr


def test_a_gzipped_snapshot_is_read_through(tmp_path):
    plain = FIXTURES / "small-cluster.yaml"
    zipped = tmp_path / "small-cluster.yaml.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    answers = [apportion("decide", str(path), "--json") for path in (plain, zipped)]
    assert answers[1].returncode == 0, answers[1].stderr
    decisions = [json.loads(a.stdout) for a in answers]
    for d in decisions:
        d["stats"].pop("wall_ms")
    assert decisions[0] == decisions[1] and decisions[0]["workloads"]


def test_a_byte_order_mark_is_not_part_of_the_snapshot(tmp_path):
    # Editors on Windows save UTF-8 with a leading BOM; JSON parsers reject it.
    marked = tmp_path / "snapshot.json"
    marked.write_bytes(b"\xef\xbb\xbf" + (FIXTURES / "custom-models.json").read_bytes())
    result = apportion("decide", str(marked), "--greedy")
    assert result.returncode == 0, result.stderr


def test_output_is_utf8_whatever_the_terminal_encoding(tmp_path):
    # An ASCII or cp1252 stdout made printing 'admitted on 1× ...' a UnicodeEncodeError.
    snapshot = tmp_path / "s.yaml"
    # Node and queue names are Kubernetes names, ASCII; a workload's is not.
    snapshot.write_text(
        "nodes: [{name: knoten-a, gpus: [{index: 0, model: T4}]}]\n"
        "queues: [{name: equipe, quota: {T4: {nominal: 1}}}]\n"
        "workloads: [{name: 訓練, queue: equipe, demand: {gpus: 1}}]\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    for json_flag in ((), ("--json",)):
        result = subprocess.run(
            [sys.executable, "-m", "scheduler", "decide", str(snapshot), "--greedy", *json_flag],
            capture_output=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert result.returncode == 0, result.stderr.decode()
        out = result.stdout.decode("utf-8")
        assert "admitted on 1× 1 T4 GPU; queue equipe 1/1 T4" in (
            json.loads(out)["workloads"][0]["message"] if json_flag else out
        )
        assert "訓練" in out


def test_catalog_lists_models_and_mig_placements():
    result = apportion("catalog")
    assert result.returncode == 0
    assert "H100-80GB" in result.stdout and "{0,4}:4" in result.stdout
    data = json.loads(apportion("catalog", "--json").stdout)
    h100 = next(m for m in data if m["name"] == "H100-80GB")
    assert h100["products"][0] == "NVIDIA-H100-80GB-HBM3"
    assert any(
        p["name"] == "3g.40gb" and p["resource"] == "nvidia.com/mig-3g.40gb"
        for p in h100["mig_profiles"]
    )


def test_a_mistyped_flag_is_named_under_its_command_s_usage():
    # Was: argparse's top-level usage ('apportion [-h] COMMAND ...'), which lists commands,
    # not the flags of the one whose flag was mistyped.
    result = apportion("decide", "--default-cluster", "--jsn")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: apportion decide ")
    assert "--json" in result.stderr
    assert result.stderr.rstrip().endswith("apportion decide: error: unrecognized arguments: --jsn")
