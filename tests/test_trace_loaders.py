"""Trace loaders on the real fixture files and on rows written from the documented schemas:
the mapping of each field, bad rows named by file/line/column, and skipped-row counts."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from scheduler.model import Demand, Quota
from sim.cluster import ClusterError, load_cluster
from sim.gavel import load_gavel_jobs, load_throughputs
from sim.helios import helios_queues, load_helios_jobs
from sim.jobfile import job_csv, load_job_csv, load_job_jsonl
from sim.openb import OPENB_TRACE_DIR, load_openb_jobs, load_openb_nodes
from sim.pai import (
    GROUP_TAG_COLUMNS,
    JOB_COLUMNS,
    MACHINE_COLUMNS,
    TASK_COLUMNS,
    load_pai_jobs,
    load_pai_machines,
)
from sim.philly import load_philly_jobs
from sim.rows import BadRows, RowError
from sim.trace import TraceError, detect_format, load_trace

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def header(name: str) -> tuple[str, ...]:
    return tuple((FIXTURES / f"{name}.header").read_text().strip().split(","))


# --- the documented schemas are the ones the loaders read -------------------------------


def test_pai_columns_match_the_trace_headers() -> None:
    assert header("pai_machine_spec") == MACHINE_COLUMNS
    assert header("pai_job_table") == JOB_COLUMNS
    assert header("pai_task_table") == TASK_COLUMNS
    assert header("pai_group_tag_table") == GROUP_TAG_COLUMNS


# --- real files ---------------------------------------------------------------------------


def test_pai_machine_spec_real_file() -> None:
    path = FIXTURES / "pai_machine_spec.csv"
    models, nodes = load_pai_machines(path.read_text(), str(path))
    # 1,897 machines, 83 CPU-only; 6,742 GPUs.
    assert len(nodes) == 1897 - 83
    assert sum(len(n.gpus) for n in nodes) == 6742
    assert {m.name for m in models} == {"P100", "V100", "V100M32", "MISC"}
    assert all(g.shared for n in nodes for g in n.gpus)
    cluster = load_cluster(str(path))
    assert cluster.capacity() == {
        "MISC": 2240,
        "P100": 1596,
        "T4": 994,
        "V100": 832,
        "V100M32": 1080,
    }


def test_helios_vc_table_real_file() -> None:
    path = FIXTURES / "cluster_gpu_number.csv"
    text = path.read_text()
    first = helios_queues(text, str(path), "V100")
    assert len(first) == 25
    assert sum(q.quota["V100"].nominal for q in first) == 968  # the 'total' of 2020-04-01
    assert {q.cohort for q in first} == {"helios"}
    assert first[0].name == "vcEwI" and first[0].quota == {"V100": Quota(nominal=72)}
    last = helios_queues(text, str(path), "V100", "2020-09-28")
    assert sum(q.quota["V100"].nominal for q in last) > 968
    with pytest.raises(ValueError, match="no row for date '2021-01-01'"):
        helios_queues(text, str(path), "V100", "2021-01-01")


def test_openb_jobs_real_file() -> None:
    path = OPENB_TRACE_DIR / "openb_pod_list_default.csv"
    jobs, skipped = load_openb_jobs(path.read_text(), str(path))
    assert len(jobs) == 6203
    # 8,152 rows: the CPU-only pods were left out without a count (left_out was {}); the
    # 861 GPU pods never scheduled were replayed as running for as long as they waited.
    assert skipped == {"cpu-only pod": 1088, "never ran": 861}
    trace = load_trace(path)
    assert trace.skipped == skipped and len(trace.fill_only) == 1088 + 861
    first = jobs[0]
    # openb-pod-0000: created 0, scheduled 0, deleted 12537496.
    assert (first.name, first.submit, first.work) == ("openb-pod-0000", 0, 12537496.0)


# --- rows written from the schemas ----------------------------------------------------------


def test_pai_jobs_from_schema_rows() -> None:
    jobs_table = "j1,i1,alice,Terminated,100,900\nj2,i2,bob,Failed,50,70\n"
    tasks = (
        "j1,worker,2,Terminated,100,700,600,29.3,50,V100\n"
        "j1,ps,1,Terminated,100,700,400,10,,\n"  # no GPU: left out
        "j2,tensorflow,1,Failed,50,70,100,4,200,T4\n"
        "j2,evaluator,1,Failed,60,60,100,4,100,T4\n"  # zero duration: left out
    )
    groups = "i1,alice,V100,g1,ctr\ni2,bob,,g2,bert\n"
    jobs, skipped, _ = load_pai_jobs(jobs_table, tasks, "pai", groups)
    assert skipped == {"no GPU": 1, "never ran": 0, "zero duration": 1}
    by_name = {j.name: j for j in jobs}
    worker = by_name["j1/worker"]
    assert worker.workload.queue == "alice"
    assert worker.workload.pods == 2
    assert worker.workload.demand == Demand(gpu_milli=500, models=("V100",))
    assert (worker.submit, worker.work) == (50, 600.0)  # 100 − the earliest start 50
    assert worker.workload.cpu_milli == 6000 and worker.workload.memory_mib == int(29.3 * 1024)
    tf = by_name["j2/tensorflow"]
    assert tf.workload.demand == Demand(gpus=2)  # 200% of a GPU, no spec: any model
    assert (tf.submit, tf.work) == (0, 20.0)


def test_pai_arrival_is_the_jobs_submission_and_a_running_task_runs_to_the_end() -> None:
    """pai_job_table.start_time is the job's submission (the trace's README; the task's
    start_time is its launch): the arrival was the launch, which erased PAI's own wait and
    put job A, submitted first, after job B. A task launched but not ended was still
    running when the trace was taken: it was counted as never ran."""
    jobs_table = (
        "jobA,iA,u1,Terminated,1000.0,1600.0\n"
        "jobB,iB,u1,Terminated,1100.0,1200.0\n"
        "jobC,iC,u1,Running,1150.0,\n"
    )
    tasks = (
        "jobA,worker,1.0,Terminated,1500.0,1600.0,600.0,29.0,100.0,V100\n"
        "jobB,worker,1.0,Terminated,1100.0,1200.0,600.0,29.0,100.0,V100\n"
        "jobC,worker,1.0,Running,1150.0,,600.0,29.0,100.0,V100\n"
    )
    jobs, skipped, still_running = load_pai_jobs(jobs_table, tasks, "pai")
    assert [(j.name, j.submit, j.work) for j in jobs] == [
        ("jobA/worker", 0, 100.0),
        ("jobB/worker", 100, 100.0),
        ("jobC/worker", 150, 450.0),  # until 1600, the latest time a task records
    ]
    assert skipped == {"no GPU": 0, "never ran": 0, "zero duration": 0}
    assert still_running == 1


def test_pai_a_task_launched_before_its_job_was_submitted_is_named() -> None:
    tasks = "j1,w,1,Terminated,90,700,600,29,50,V100\n"
    with pytest.raises(RowError) as caught:
        load_pai_jobs("j1,i1,alice,Terminated,100,900\n", tasks, "pai")
    assert str(caught.value) == (
        "pai/pai_task_table.csv line 1 column start_time: '90' is before its job's "
        "submission (100, pai_job_table.csv line 1)"
    )
    with pytest.raises(RowError, match=r"^pai/pai_job_table.csv line 1 column start_time: ''"):
        load_pai_jobs("j1,i1,alice,Terminated,,900\n", tasks, "pai")


def test_pai_task_rows_as_the_trace_writes_them() -> None:
    """The published task table writes every number as a float, inst_num too (the
    trace README's example row: ``4f05…,tensorflow,1.0,Terminated,1739162.0,…``)."""
    jobs_table = "4f05,i1,alice,Terminated,1739100.0,1739300.0\n"
    tasks = (
        "4f05,tensorflow,1.0,Terminated,1739162.0,1739200.0,600.0,29.296875,50.0,MISC\n"
        "4f05,worker,2.0,Terminated,1739162.0,1739262.0,600.0,29.296875,100.0,MISC\n"
    )
    jobs, _, _ = load_pai_jobs(jobs_table, tasks, "pai")
    by_name = {j.name: j for j in jobs}
    assert by_name["4f05/tensorflow"].workload.pods == 1
    assert by_name["4f05/worker"].workload.pods == 2
    assert by_name["4f05/worker"].work == 100.0
    half = "4f05,w,1.5,Terminated,1739162.0,1739200.0,600.0,29.3,50.0,MISC\n"
    with pytest.raises(RowError, match=r"line 1 column inst_num: '1.5' is not a whole number"):
        load_pai_jobs(jobs_table, half, "pai")


def test_pai_bad_rows_are_named_or_counted() -> None:
    jobs_table = "j1,i1,alice,Terminated,100,900\n"
    tasks = "j1,w,1,Terminated,100,700,600,29,150,V100\nj1,v,1,Terminated,x,700,600,29,50,V100\n"
    with pytest.raises(RowError, match=r"pai/pai_task_table.csv line 1 column plan_gpu: '150'"):
        load_pai_jobs(jobs_table, tasks, "pai")
    bad = BadRows(skip=True)
    jobs, _, _ = load_pai_jobs(jobs_table, tasks, "pai", bad=bad)
    assert jobs == ()
    assert bad.counts == {
        "column plan_gpu: is more than one GPU but not whole GPUs": 1,
        "column start_time: is not a number": 1,
    }


def test_pai_negative_resources_and_no_instances_are_named() -> None:
    """A negative plan_cpu escaped as pydantic's 'validation error for Workload' with no
    file or line; inst_num 0 silently became one instance."""
    jobs_table = "j1,i1,alice,Terminated,100,900\n"
    for cells, message in (
        ("1,Terminated,100,700,-600,29,50", "column plan_cpu: '-600' is negative"),
        ("1,Terminated,100,700,600,-29,50", "column plan_mem: '-29' is negative"),
        ("0.0,Terminated,100,700,600,29,100", "column inst_num: '0.0' is 0 for a task with GPUs"),
    ):
        with pytest.raises(RowError, match=f"pai/pai_task_table.csv line 1 {message}"):
            load_pai_jobs(jobs_table, f"j1,w,{cells},V100\n", "pai")


HELIOS_HEADER = (
    "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n"
)


def test_helios_jobs_from_schema_rows() -> None:
    rows = (
        "1,u1,vcA,16,64,2,COMPLETED,2020-04-01 00:10:00,2020-04-01 00:11:00,"
        "2020-04-01 01:11:00,3600,60\n"
        "2,u2,vcB,0,8,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:00,"
        "2020-04-01 00:01:00,60,0\n"
        "3,u2,vcB,1,4,1,CANCELLED,2020-04-01 00:05:00,,,0,0\n"
        "4,u3,vcB,1,4,1,COMPLETED,2020-04-01 00:05:00,2020-04-01 00:05:00,"
        "2020-04-01 00:06:40,100,0\n"
    )
    jobs, skipped = load_helios_jobs(HELIOS_HEADER + rows, "cluster_log.csv")
    assert skipped == {"cpu-only job": 1, "zero duration": 1}
    gang, single = sorted(jobs, key=lambda j: j.name)
    assert gang.workload.queue == "vcA" and gang.workload.pods == 2
    assert gang.workload.demand == Demand(gpus=8) and gang.workload.cpu_milli == 32000
    assert (gang.submit, gang.work) == (300, 3600.0)  # the earliest GPU job came at 00:05
    assert (single.submit, single.work) == (0, 100.0)


def test_helios_bad_row_names_line_and_column() -> None:
    row = "9,u,vcA,3,4,2,COMPLETED,2020-04-01 00:00:00,,,10,0\n"
    with pytest.raises(RowError, match=r"log.csv line 2 column gpu_num: '3' does not divide"):
        load_helios_jobs(HELIOS_HEADER + row, "log.csv")
    late = "9,u,vcA,1,4,1,COMPLETED,April 1st,,,10,0\n"
    with pytest.raises(RowError, match=r"line 2 column submit_time: 'April 1st' is not a time"):
        load_helios_jobs(HELIOS_HEADER + late, "log.csv")


PHILLY = [
    {
        "jobid": "application_1",
        "vc": "vc1",
        "user": "u1",
        "status": "Pass",
        "submitted_time": "2017-10-03 10:00:00",
        "attempts": [
            {
                "start_time": "2017-10-03 10:01:00",
                "end_time": "2017-10-03 10:02:00",
                "detail": [{"ip": "m1", "gpus": ["gpu0"]}],
            },
            {
                "start_time": "2017-10-03 10:05:00",
                "end_time": "2017-10-03 11:05:00",
                "detail": [
                    {"ip": "m1", "gpus": ["gpu0", "gpu1"]},
                    {"ip": "m2", "gpus": ["gpu0", "gpu1"]},
                ],
            },
        ],
    },
    {
        "jobid": "application_2",
        "vc": "vc2",
        "user": "u2",
        "status": "Killed",
        "submitted_time": "2017-10-03 09:00:00",
        "attempts": [],
    },
    {
        "jobid": "application_3",
        "vc": "vc2",
        "user": "u2",
        "status": "Pass",
        "submitted_time": "2017-10-03 09:30:00",
        "attempts": [
            {
                "start_time": "2017-10-03 09:30:00",
                "end_time": "2017-10-03 09:31:40",
                "detail": [{"ip": "m3", "gpus": ["gpu3"]}],
            }
        ],
    },
]


def test_philly_jobs_from_schema_rows() -> None:
    instant = {
        "jobid": "application_4",
        "vc": "vc2",
        "user": "u2",
        "status": "Failed",
        "submitted_time": "2017-10-03 09:40:00",
        "attempts": [
            {
                "start_time": "2017-10-03 09:40:00",
                "end_time": "2017-10-03 09:40:00",
                "detail": [{"ip": "m3", "gpus": ["gpu3"]}],
            }
        ],
    }
    log = json.dumps([*PHILLY, instant], indent=1)
    jobs, skipped, _ = load_philly_jobs(log, "cluster_job_log")
    assert skipped == {"never ran": 1, "last attempt's start not recorded": 0, "zero duration": 1}
    one, three = sorted(jobs, key=lambda j: j.name)
    # The last attempt counts: 2 servers × 2 GPUs for an hour; submitted 30 min after job 3.
    assert one.workload.queue == "vc1" and one.workload.pods == 2
    assert one.workload.demand == Demand(gpus=2)
    assert (one.submit, one.work) == (1800, 3600.0)
    assert (three.submit, three.work, three.workload.demand) == (0, 100.0, Demand(gpus=1))


def philly_job(jobid: str, submitted: str, start: str, end: str | None) -> dict[str, object]:
    attempt = {"start_time": start, "end_time": end, "detail": [{"ip": "m1", "gpus": ["g0"]}]}
    return {"jobid": jobid, "vc": "v", "submitted_time": submitted, "attempts": [attempt]}


def test_philly_a_job_still_running_is_kept_until_the_logs_latest_time(tmp_path: Path) -> None:
    """Its last attempt's end_time None: still running when the trace was taken (the
    trace's README). It was counted as never ran."""
    log = json.dumps(
        [
            philly_job("a", "2017-10-07 01:11:39", "2017-10-07 01:12:09", None),
            philly_job("b", "2017-10-07 02:00:00", "2017-10-07 02:00:00", "2017-10-07 03:00:00"),
        ]
    )
    jobs, skipped, still_running = load_philly_jobs(log, "log")
    assert [(j.name, j.submit, j.work) for j in jobs] == [("a", 0, 6471.0), ("b", 2901, 3600.0)]
    assert (skipped["never ran"], still_running) == (0, 1)
    (tmp_path / "cluster_job_log").write_text(log)
    assert load_trace(tmp_path / "cluster_job_log").still_running == 1


def test_philly_times_are_pacific_time_over_the_change_from_pdt_to_pst() -> None:
    """The trace's other tables are stamped PDT/PST. On 2017-11-05 the clocks went back at
    02:00: from 00:30 to 03:00 is 3.5 hours (it read 2.5), and an end at 01:10 after a start
    at 01:40 is the second 01:10, 30 minutes later (it stopped the run: end before start)."""
    log = json.dumps(
        [
            philly_job("over", "2017-11-05 00:30:00", "2017-11-05 00:30:00", "2017-11-05 03:00:00"),
            philly_job("back", "2017-11-05 01:30:00", "2017-11-05 01:40:00", "2017-11-05 01:10:00"),
            philly_job("pst", "2017-11-05 02:30:00", "2017-11-05 02:30:00", "2017-11-05 02:40:00"),
        ]
    )
    jobs, _, _ = load_philly_jobs(log, "log")
    assert [(j.name, j.submit, j.work) for j in jobs] == [
        ("over", 0, 12600.0),
        ("back", 3600, 1800.0),
        ("pst", 10800, 600.0),  # 02:30 PST is three hours after 00:30 PDT
    ]
    # An end before its start on any reading is a bad row at its line, never a traceback.
    bad = json.dumps(
        [philly_job("x", "2017-11-05 04:00:00", "2017-11-05 04:00:00", "2017-11-05 03:00:00")],
        indent=1,
    )
    with pytest.raises(RowError, match=r"^log line 2 column 2 \(jobid x\) field attempts\[0\]"):
        load_philly_jobs(bad, "log")
    skip = BadRows(skip=True)
    assert load_philly_jobs(bad, "log", skip)[0] == ()
    assert skip.counts == {"attempts[0].end_time: is before start": 1}


def test_philly_bad_job_names_line_column_and_field() -> None:
    broken = json.loads(json.dumps(PHILLY))
    broken[2]["attempts"][0]["start_time"] = "yesterday"
    text = json.dumps(broken, indent=1)
    line = text[: text.index('"jobid": "application_3"')].count("\n")  # the object's '{'
    with pytest.raises(RowError) as caught:
        load_philly_jobs(text, "log")
    assert (
        f"log line {line} column 2 (jobid application_3) field attempts[0].start_time: "
        "'yesterday' is not a time" in str(caught.value)
    )
    bad = BadRows(skip=True)
    jobs, _, _ = load_philly_jobs(text, "log", bad)
    assert len(jobs) == 1 and bad.total == 1
    # Text after the list was ignored without a word: two logs concatenated replayed one.
    twice = json.dumps(PHILLY) + "\n" + json.dumps(PHILLY) + "\n"
    with pytest.raises(ValueError, match=r"^log line 2 column 1: text after the list$"):
        load_philly_jobs(twice, "log")
    assert len(load_philly_jobs(json.dumps(PHILLY) + "\n\n", "log")[0]) == 2


THROUGHPUTS = {
    "v100": {
        "('ResNet-18 (batch size 16)', 1)": {"null": 10.0},
        "('LM (batch size 20)', 2)": {"null": 4.0},
    },
    "k80": {"('ResNet-18 (batch size 16)', 1)": {"null": 2.5}},
}


def test_gavel_both_forms_with_throughputs() -> None:
    table = load_throughputs(json.dumps(THROUGHPUTS), "tput.json")
    assert table["K80"][("ResNet-18 (batch size 16)", 1)] == 2.5
    ten = (
        "ResNet-18 (batch size 16)\tpython train.py\t/work\t--steps\t1\t1000\t1\t1\t-1\t12.5\n"
        "LM (batch size 20)\tpython lm.py\t/work\t--steps\t1\t800\t2\t1\t-1\t30\n"
    )
    seven = "ResNet-18 (batch size 16)\tpython train.py\t--steps\t1\t1000\t12.5\t1\n"
    for text in (ten, seven):
        jobs, _ = load_gavel_jobs(text, "t.trace", table)
        resnet = jobs[0]
        assert resnet.submit == 12 and resnet.work == 1000.0
        assert resnet.workload.demand == Demand(gpus=1, models=("V100", "K80"))
        assert resnet.rate_on(("K80",)) == 2.5 and resnet.rate_on(("V100",)) == 10.0
        assert resnet.seconds_for(1000.0, 2.5) == 400
    lm = load_gavel_jobs(ten, "t.trace", table)[0][1]
    # No steps: nothing to run, left out and counted as other formats' zero durations.
    idle = ten.replace("\t800\t2\t", "\t0\t2\t")
    jobs, skipped = load_gavel_jobs(idle, "t.trace", table)
    assert len(jobs) == 1 and skipped == {"zero steps": 1}
    assert lm.workload.demand == Demand(gpus=2, models=("V100",))


def test_gavel_bad_rows() -> None:
    table = load_throughputs(json.dumps(THROUGHPUTS), "tput.json")
    unknown = "Transformer\tpython t.py\t/w\t--steps\t1\t10\t1\t1\t-1\t0\n"
    with pytest.raises(RowError, match=r"t.trace line 1 column job_type: 'Transformer' with "):
        load_gavel_jobs(unknown, "t.trace", table)
    with pytest.raises(ValueError, match=r"t.trace line 1: 3 tab-separated fields"):
        load_gavel_jobs("a\tb\tc\n", "t.trace", table)
    with pytest.raises(ValueError, match=r"GPU type 'tpu' is not one of"):
        load_throughputs('{"tpu": {}}', "tput.json")


def test_own_csv_round_trips_and_names_bad_cells() -> None:
    text = (
        "name,queue,submit,runtime,gpus,gpu_milli,models,throughput,priority\n"
        "a,team,0,10,2,,H100-80GB|A100-80GB,H100-80GB=2;A100-80GB=1,5\n"
        "b,team,3,20,,250,,,0\n"
    )
    a, b = load_job_csv(text, "jobs.csv")
    assert a.workload.demand == Demand(gpus=2, models=("H100-80GB", "A100-80GB"))
    assert a.rates == (("A100-80GB", 1.0), ("H100-80GB", 2.0)) and a.workload.priority == 5
    assert b.workload.demand == Demand(gpu_milli=250)
    again = load_job_csv(job_csv((a, b)), "again.csv")
    assert [(j.workload, j.work, j.rates) for j in again] == [
        (j.workload, j.work, j.rates) for j in (a, b)
    ]
    broken = text + "c,team,x,20,1,,,,0\n"
    with pytest.raises(RowError, match=r"jobs.csv line 4 column submit: 'x' is not a valid int"):
        load_job_csv(broken, "jobs.csv")
    both = text + "d,team,1,20,1,500,,,0\n"
    with pytest.raises(RowError, match=r"jobs.csv line 4: .*give exactly one of gpus"):
        load_job_csv(both, "jobs.csv")


CSV_HEADER = "name,queue,submit,runtime,gpus,gpu_milli,throughput\n"
JOB_FIELDS = (
    "job fields: name, queue, submit, runtime, gpus, gpu_milli, mig_profile, gpu_memory_mib, "
    "pods, priority, models, cpu_milli, memory_mib, throughput, gpu_util"
)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("a,q,-5,10,1,,", "jobs.csv line 2 column submit: '-5' is negative"),
        ("a,q,0,10,-1,,", "jobs.csv line 2 column gpus: '-1' must be at least 1"),
        ("a,q,0,10,,1500,",
         "jobs.csv line 2 column gpu_milli: '1500' is not less than or equal to 999"),
        # The value was the whole column ({'H100': '-1'}), not the rate that is wrong.
        ("a,q,0,10,1,,H100=-1",
         "jobs.csv line 2 column throughput.H100: '-1' is not greater than 0"),
        # Every problem of the row, as a snapshot's.
        ("a,q,-5,abc,-1,,",
         "jobs.csv line 2 column submit: '-5' is negative; column runtime: 'abc' is not a valid "
         "number, unable to parse string as a number; column gpus: '-1' must be at least 1"),
        # A CPU-only row (gpus 0) is left out, but not unchecked.
        ("a,q,-5,10,0,,", "jobs.csv line 2 column submit: '-5' is negative"),
        ("a,q,0,10,2000,,",
         "jobs.csv line 2 column gpus: '2000' is more GPUs in one pod than a node can have (1024)"),
        # Python reads '1_000' as 1000; no CSV writer writes it.
        ("a,q,0,1_000,1,,",
         "jobs.csv line 2 column runtime: '1_000' is not a number (a trace writes numbers "
         "without '_')"),
        ("a,q,0,10,1,,T4=1_0",
         "jobs.csv line 2 column throughput.T4: '1_0' is not a number (a trace writes numbers "
         "without '_')"),
    ],
)  # fmt: skip
def test_own_csv_names_each_bad_cell_as_snapshots_do(row: str, expected: str) -> None:
    """Was pydantic's own words ('Input should be greater than or equal to 0')."""
    with pytest.raises(RowError) as caught:
        load_job_csv(CSV_HEADER + row + "\n", "jobs.csv")
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"name": "a", "submit": 0, "runtime": 10, "gpu": 1}',
         f"jobs.jsonl line 1 field gpu: unknown field; did you mean 'gpus'? ({JOB_FIELDS})"),
        # Said '(quote it in YAML)' of a JSON Lines file.
        ('{"name": 5, "submit": 0, "runtime": 10, "gpus": 1}',
         "jobs.jsonl line 1 field name: 5 is not a valid string (put it in quotes)"),
        ('{"name": "a", "submit": 0, "runtime": 10, "gpus": 1, "models": "H100"}',
         "jobs.jsonl line 1 field models: 'H100' is not a list"),
        # true was taken as 1 GPU.
        ('{"name": "a", "submit": 0, "runtime": 10, "gpus": true}',
         "jobs.jsonl line 1 field gpus: true is a boolean, not a number"),
        # "2" was 2 GPUs, 2.0 too, and "1_000" a thousand seconds: a JSON number is one as
        # written (a CSV cell is always text).
        ('{"name": "a", "submit": 0, "runtime": 10, "gpus": "2"}',
         "jobs.jsonl line 1 field gpus: '2' is text, not a number (write it without quotes)"),
        ('{"name": "a", "submit": 0, "runtime": 10, "gpus": 2.0}',
         "jobs.jsonl line 1 field gpus: 2.0 is not an integer (write 2)"),
        ('{"name": "a", "submit": 0, "runtime": "1_000", "gpus": 1}',
         "jobs.jsonl line 1 field runtime: '1_000' is text, not a number"),
        ('{"name": "a", "submit": 0, "runtime": 10, "gpus": 1, "gpu_milli": 5}',
         "jobs.jsonl line 1: give exactly one of gpus, mig_profile, gpu_memory_mib, gpu_milli "
         "(given: gpus, gpu_milli)"),
    ],
)  # fmt: skip
def test_own_jsonl_names_each_bad_field_as_snapshots_do(line: str, expected: str) -> None:
    with pytest.raises(RowError) as caught:
        load_job_jsonl(line + "\n", "jobs.jsonl")
    assert str(caught.value) == expected


def test_a_field_past_the_csv_modules_limit_is_named_at_its_column() -> None:
    """Was 'line 2: field larger than field limit (131072)': which field, and whose limit?"""
    limit = "more than 131,072 characters, the most Python's csv module reads in one field"
    head = "name,queue,submit,runtime,gpus\na,q,0,10,1\n"
    for rows, where in (
        (f"{'x' * 200_000},q,0,10,1\n", "line 3 column name"),
        ('b,"q,0,10,1\n' + "c,q,0,10,1\n" * 30_000, "line 3 column queue"),  # never closed
    ):
        with pytest.raises(ValueError) as caught:
            load_job_csv(head + rows, "jobs.csv")
        assert str(caught.value) == f"jobs.csv {where}: {limit} (a quote left open runs on to it)"


def test_an_unknown_mig_profile_is_named_at_its_cell_as_in_a_snapshot() -> None:
    """'9g.99gb' became a job the cluster "can never run", replayed to the end (exit 0),
    while the same typo in a snapshot is refused with the profile meant."""
    said = "'9g.99gb' is not a MIG profile of any known GPU model; did you mean '7g.94gb'?"
    text = "name,queue,submit,runtime,mig_profile\na,q,0,10,1g.10gb\nb,q,0,10,9g.99gb\n"
    with pytest.raises(RowError) as caught:
        load_job_csv(text, "jobs.csv")
    assert str(caught.value) == f"jobs.csv line 3 column mig_profile: {said}"
    bad = BadRows(skip=True)
    assert [j.name for j in load_job_csv(text, "jobs.csv", bad)] == ["a"]
    line = '{"name": "b", "submit": 0, "runtime": 10, "mig_profile": "9g.99gb"}\n'
    with pytest.raises(RowError) as caught:
        load_job_jsonl(line, "jobs.jsonl")
    assert str(caught.value) == f"jobs.jsonl line 1 field mig_profile: {said}"


def test_own_csv_names_an_unknown_column_once_from_its_header() -> None:
    """An unknown column was every row's error ('line 2 column bogus: unknown field'), so
    ``--skip-bad-rows`` skipped every row and said 'no job to replay'."""
    text = "name,submit,runtime,gpus,gpuz\na,0,10,1,x\nb,0,10,1,y\n"
    for bad in (None, BadRows(skip=True)):
        with pytest.raises(ValueError) as caught:
            load_job_csv(text, "jobs.csv", bad)
        assert str(caught.value) == (
            "jobs.csv line 1 column gpuz: unknown column; did you mean 'gpus'? "
            f"(columns{JOB_FIELDS.removeprefix('job fields')})"
        )


def test_own_format_rejects_infinite_and_nan_numbers() -> None:
    """``inf`` passes 'greater than 0' but is no runtime: it was read, then overflowed the
    engine's completion time (a traceback) instead of naming the cell."""
    header = "name,submit,runtime,gpus,throughput\n"
    with pytest.raises(RowError, match=r"jobs.csv line 2 column runtime: 'inf' is not a finite"):
        load_job_csv(header + "a,0,inf,1,\n", "jobs.csv")
    with pytest.raises(RowError, match=r"jobs.csv line 2 column throughput.T4: 'inf' is not a fin"):
        load_job_csv(header + "a,0,10,1,T4=inf\n", "jobs.csv")
    with pytest.raises(RowError, match=r"jobs.jsonl line 1 field runtime: inf is not a finite"):
        load_job_jsonl('{"name": "a", "submit": 0, "runtime": Infinity, "gpus": 1}\n', "jobs.jsonl")
    jobs_table = "j1,i1,alice,Terminated,100,900\n"
    tasks = "j1,w,1,Terminated,100,1e400,600,29,50,V100\n"
    with pytest.raises(RowError, match=r"line 1 column end_time: '1e400' is too large"):
        load_pai_jobs(jobs_table, tasks, "pai")


def test_own_jsonl_and_skip_counts() -> None:
    text = (
        '{"name": "a", "queue": "q", "submit": 0, "runtime": 5, "mig_profile": "1g.10gb"}\n'
        "\n"
        '{"name": "b", "submit": 1, "runtime": -1, "gpus": 1}\n'
        '{"name": "a", "submit": 2, "runtime": 1, "gpus": 1}\n'
        "{oops\n"
    )
    bad = BadRows(skip=True)
    (a,) = load_job_jsonl(text, "jobs.jsonl", bad)
    assert a.workload.demand == Demand(mig_profile="1g.10gb")
    assert bad.counts == {
        "field runtime: is not greater than 0": 1,
        "field name: repeated": 1,
        "not JSON": 1,
    }
    with pytest.raises(RowError, match=r"jobs.jsonl line 5 column 2: Expecting property name"):
        load_job_jsonl(
            text.replace('"runtime": -1', '"runtime": 1').replace(
                '"name": "a", "submit": 2', '"name": "c", "submit": 2'
            ),
            "jobs.jsonl",
        )


def test_a_json_line_cut_short_is_named_in_a_whole_sentence() -> None:
    """json's 'Unterminated string starting at' lost the ': line 1 column 14 (char 13)'
    that ends it, and read cut off."""
    ok = '{"name": "a", "submit": 0, "runtime": 10, "gpus": 1}\n'
    for cut, problem in (
        ('{"name":"b","que', "column 13: Unterminated string starting here"),
        ('{"name":"b","que\n', "column 17: Invalid control character here"),
    ):
        with pytest.raises(RowError) as caught:
            load_job_jsonl(ok + cut, "jobs.jsonl")
        assert str(caught.value) == f"jobs.jsonl line 2 {problem}"


def test_load_trace_detects_formats(tmp_path: Path) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("name,submit,runtime,gpus\na,0,1,1\n")
    assert load_trace(csv).format == "csv"
    helios = tmp_path / "cluster_log.csv"
    helios.write_text(HELIOS_HEADER)
    assert detect_format(helios) == "helios"  # a header alone: nothing to replay
    assert load_trace(OPENB_TRACE_DIR / "openb_pod_list_default.csv").format == "openb"
    philly = tmp_path / "cluster_job_log"
    philly.write_text(json.dumps(PHILLY))
    assert len(load_trace(philly).jobs) == 2
    gavel = tmp_path / "t.trace"
    gavel.write_text("ResNet-18 (batch size 16)\tpython\t--steps\t1\t10\t0\t1\n")
    with pytest.raises(TraceError, match="needs its throughput table"):
        load_trace(gavel)
    tput = tmp_path / "tput.json"
    tput.write_text(json.dumps(THROUGHPUTS))
    assert len(load_trace(gavel, throughputs=tput).jobs) == 1
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="cannot tell the trace format"):
        load_trace(odd)
    # An empty file was "line 1: cannot tell the trace format from the header".
    for text in ("", "\n\n"):
        empty = tmp_path / "empty.csv"
        empty.write_text(text)
        with pytest.raises(TraceError, match=r"^.*empty\.csv: empty: no header row, no job$"):
            load_trace(empty)
    # Our CSV without one of its required columns was "cannot tell the trace format; give
    # --format": the column a user forgot was named only once they guessed --format csv.
    for header, missing in (
        ("name,queue,submit,gpus", "runtime"),
        ("queue,submit,runtime,gpus", "name"),
    ):
        short = tmp_path / "short.csv"
        short.write_text(f"{header}\na,b,1,1\n")
        with pytest.raises(
            TraceError, match=rf"short\.csv line 1: missing column\(s\) {missing}; "
        ):
            load_trace(short)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,submit,runtime,gpus\na,0,1,1\nb,0,1,1,9\n")
    with pytest.raises(TraceError, match=r"bad\.csv line 3: 5 fields, the header has 4"):
        load_trace(bad)
    assert load_trace(bad, skip_bad_rows=True).bad_rows == {"wrong number of fields": 1}


def test_arrivals_count_from_the_earliest_in_every_format(tmp_path: Path) -> None:
    """An export of one's own cluster has Unix submit times: they were replayed from 0, so
    every integral and sampled curve covered 54 years of an empty cluster before the first
    job (utilization 0.000003 for jobs that kept the cluster busy)."""
    csv = tmp_path / "jobs.csv"
    csv.write_text("name,submit,runtime,gpus\nb,1700000100,10,1\na,1700000000,10,1\n")
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text('{"name": "a", "submit": 1700000000, "runtime": 10, "gpus": 1}\n')
    assert [(j.name, j.submit) for j in load_trace(csv).jobs] == [("a", 0), ("b", 100)]
    assert [j.submit for j in load_trace(jsonl).jobs] == [0]


def test_a_uniform_clusters_name_says_whether_its_gpus_are_shared() -> None:
    # Was "uniform:2x4xT4" for both: the report and results.json did not say which ran.
    assert load_cluster("uniform:2x4xT4:shared").source == "uniform:2x4xT4:shared"
    assert load_cluster("uniform:2x4xT4").source == "uniform:2x4xT4"


def test_bad_cluster_files_and_specs_are_cluster_errors(tmp_path: Path) -> None:
    """A bad row in a cluster CSV or an unknown model in a uniform spec is a ClusterError
    (the commands print it and exit 2), not a RowError or KeyError escaping as a traceback."""
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1000,x,T4\n")
    machines = tmp_path / "machines.csv"
    machines.write_text("m1,T4,96,512,eight\n")
    with pytest.raises(ClusterError, match=r"nodes.csv line 2 column gpu: 'x' is not an integer"):
        load_cluster(str(nodes))
    with pytest.raises(ClusterError, match=r"machines.csv line 1 column cap_gpu: 'eight'"):
        load_cluster(str(machines))
    with pytest.raises(ClusterError, match=r"uniform:2x4xZ100: unknown GPU model 'Z100'"):
        load_cluster("uniform:2x4xZ100")
    # A spec with a part missing was read as a file name ('No such file or directory').
    with pytest.raises(ClusterError, match=r"uniform:2x4: not uniform:NODESxGPUSxMODEL"):
        load_cluster("uniform:2x4")
    # A typo'd node count built every node before the run (100 million: minutes, GBs).
    with pytest.raises(ClusterError, match=r"99999999 nodes; at most 100,000"):
        load_cluster("uniform:99999999x8xT4")
    with pytest.raises(ClusterError, match=r"5000 GPUs per node; no node has more than 1024"):
        load_cluster("uniform:2x5000xT4")
    # Nodes without GPUs were an IndexError in the middle of the run.
    cpu_only = tmp_path / "cpu-only.csv"
    cpu_only.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1000,0,\n")
    for spec in ("uniform:2x0xT4", str(cpu_only)):
        with pytest.raises(ClusterError, match=r"the cluster has no GPU \(\d node\(s\)\)"):
            load_cluster(spec)


def test_a_gzipped_trace_is_read_through_and_a_cut_one_named(tmp_path: Path) -> None:
    """Published traces come compressed; a user need not unpack one to replay it."""
    from sim.commands import DEMO_TRACE

    zipped = tmp_path / "demo-jobs.csv.gz"
    data = gzip.compress(DEMO_TRACE.read_bytes())
    zipped.write_bytes(data)
    plain, read = load_trace(DEMO_TRACE), load_trace(zipped)
    assert (read.format, read.jobs) == ("csv", plain.jobs) and len(read.jobs) == 600
    zipped.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"demo-jobs\.csv\.gz: gzip file cut short$"):
        load_trace(zipped)


def test_more_gpus_in_a_pod_than_any_node_has_is_a_bad_row(tmp_path: Path) -> None:
    """It was an OverflowError deep in the fragmentation measure (int32) mid-run."""
    trace = tmp_path / "jobs.csv"
    trace.write_text(
        "name,queue,submit,runtime,gpus,pods,priority,models\n"
        "typo,q,0,100,9999999999,1,0,\nok,q,5,100,8,1,0,\n"
    )
    with pytest.raises(TraceError) as caught:
        load_trace(trace)
    # Was 'jobs.csv: job typo: …', found after loading: no line, no column.
    assert str(caught.value) == (
        f"{trace} line 2 column gpus: '9999999999' is more GPUs in one pod than a node can have "
        "(1024)"
    )
    kept = load_trace(trace, skip_bad_rows=True)
    assert [j.name for j in kept.jobs] == ["ok"]
    assert kept.bad_rows == {"more GPUs in one pod than a node can have (1024)": 1}
    # Every format says where; a count over several pods says how many in one.
    helios = "1,u,vcA,4096,4,2,COMPLETED,2020-04-01 00:00:00,,,10,0\n"
    with pytest.raises(RowError) as caught:
        load_helios_jobs(HELIOS_HEADER + helios, "log.csv")
    assert str(caught.value) == (
        "log.csv line 2 column gpu_num: '4096' is 2048 GPUs in one pod, more than a node can "
        "have (1024)"
    )
    openb = "p,1000,1024,2000,1000,,LS,Running,0,10,0\n"
    header = (OPENB_TRACE_DIR / "openb_pod_list_default.csv").read_text().split("\n", 1)[0]
    with pytest.raises(RowError, match=r"^p.csv line 2 column num_gpu: '2000' is more GPUs in"):
        load_openb_jobs(header + "\n" + openb, "p.csv")


def test_a_trace_with_no_job_to_replay_says_so(tmp_path: Path) -> None:
    """A header alone (or every row left out) replayed nothing and printed a table of zeros."""
    header = tmp_path / "jobs.csv"
    header.write_text("name,queue,submit,runtime,gpus,pods,priority,models\n")
    with pytest.raises(TraceError, match=r"jobs\.csv: no job to replay$"):
        load_trace(header)
    cpu_only = tmp_path / "cluster_log.csv"
    cpu_only.write_text(
        "job_id,user,vc,jobname,gpu_num,cpu_num,node_num,state,submit_time,start_time,"
        "end_time,duration,queue\n"
        "j1,u,vc1,x,0,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:10,"
        "2020-04-01 00:01:10,60,0\n"
    )
    with pytest.raises(TraceError, match=r"no job to replay \(left out: 1 cpu-only job\)$"):
        load_trace(cpu_only)


DEEP = "[" * 100_000 + "]" * 100_000
"""Nesting past Python's recursion limit: json raised RecursionError (a traceback)."""
LONG = "1" * 5001
"""An integer int() refuses to read ('Exceeds the limit (4300 digits)'), naming no cell."""


def test_json_too_deep_or_with_too_long_an_integer_is_named_where_it_is() -> None:
    ok = '{"name": "a", "submit": 0, "runtime": 10, "gpus": 1}\n'
    for value, problem, reason in (
        (DEEP, "arrays and objects nested more than 100 deep", "nested too deep"),
        (LONG, "an integer of 5,001 digits (at most 4,300)", "integer too long"),
    ):
        line = f'{{"name": "b", "submit": 0, "runtime": 10, "gpus": 1, "x": {value}}}\n'
        column = line.index(value) + 1 + (99 if value is DEEP else 0)  # depth 101: its 100th [
        with pytest.raises(RowError) as caught:
            load_job_jsonl(ok + line, "jobs.jsonl")
        assert str(caught.value) == f"jobs.jsonl line 2 column {column}: {problem}"
        bad = BadRows(skip=True)
        assert [j.name for j in load_job_jsonl(ok + line, "jobs.jsonl", bad)] == ["a"]
        assert bad.counts == {reason: 1}
        # Philly's log and Gavel's throughput table: the file's error, at its line.
        log = json.dumps(PHILLY, indent=1).replace('"vc1"', value, 1)
        line_no = log[: log.index(value)].count("\n") + 1
        with pytest.raises(
            ValueError, match=rf"^log line {line_no} column \d+: {re.escape(problem)}$"
        ):
            load_philly_jobs(log, "log")
        table = json.dumps(THROUGHPUTS, indent=1).replace("10.0", value)
        line_no = table[: table.index(value)].count("\n") + 1
        with pytest.raises(
            ValueError, match=rf"^tput.json line {line_no} column \d+: {re.escape(problem)}$"
        ):
            load_throughputs(table, "tput.json")


def test_a_count_too_long_to_read_is_a_bad_row() -> None:
    """int() refused it with no file, line or column, and --skip-bad-rows did not skip it."""
    header = (OPENB_TRACE_DIR / "openb_pod_list_default.csv").read_text().split("\n", 1)[0]
    pods = f"p0,1000,1024,1,1000,,LS,Running,{LONG},10,0\np1,1000,1024,1,1000,,LS,Running,0,10,0\n"
    with pytest.raises(RowError) as caught:
        load_openb_jobs(header + "\n" + pods, "p.csv")
    assert str(caught.value) == f"p.csv line 2 column creation_time: '{LONG[:56]}... is too large"
    bad = BadRows(skip=True)
    jobs, _ = load_openb_jobs(header + "\n" + pods, "p.csv", bad)
    assert [j.name for j in jobs] == ["p1"]
    assert bad.counts == {"column creation_time: is too large": 1}
    nodes = f"sn,cpu_milli,memory_mib,gpu,model\nn0,{LONG},1024,2,T4\n"
    with pytest.raises(ValueError, match=r"^n.csv line 2 column cpu_milli: '1111.* is too large$"):
        load_openb_nodes(nodes, "n.csv")


def test_times_and_work_past_ten_to_the_twelve_are_bad_rows() -> None:
    """Such rows passed and overflowed the replay (metrics' integrals, the sampling step,
    runtime ÷ a tiny rate = inf) or printed 300-digit waits: in every format they are bad
    rows, named at their cell. 10^12 itself (31,700 years) is still a time."""
    too_long = (
        "is more than 10^12, the most a trace's times and work may be (31,700 years of seconds)"
    )
    header = "name,queue,submit,runtime,gpus,throughput\n"
    for row, cell, value in (
        ("a,q,0,1e308,1,", "runtime", "'1e308'"),
        (f"a,q,{'9' * 401},100,1,", "submit", f"'{'9' * 56}..."),
        ("a,q,1000000000001,100,1,", "submit", "'1000000000001'"),
    ):
        with pytest.raises(RowError) as caught:
            load_job_csv(header + row + "\n", "jobs.csv")
        assert str(caught.value) == f"jobs.csv line 2 column {cell}: {value} {too_long}"
    bad = BadRows(skip=True)
    jobs = load_job_csv(header + "a,q,0,1e308,1,\nb,q,1000000000000,1e12,1,\n", "jobs.csv", bad)
    assert [(j.name, j.submit, j.work) for j in jobs] == [("b", 10**12, 1e12)]
    assert bad.counts == {f"column runtime: {too_long}": 1}
    with pytest.raises(RowError) as caught:
        load_job_jsonl('{"name": "a", "submit": 0, "runtime": 1e308, "gpus": 1}\n', "j.jsonl")
    assert str(caught.value) == f"j.jsonl line 1 field runtime: 1e+308 {too_long}"
    # A rate so small that runtime ÷ rate is infinite (1e306 ÷ 1e-5) or past any clock.
    with pytest.raises(RowError) as caught:
        load_job_csv(header + "a,q,0,100,1,H100-80GB=1e-7\n", "jobs.csv")
    assert str(caught.value) == (
        "jobs.csv line 2 column throughput.H100-80GB: '1e-7' is below 1e-06, the slowest rate "
        "a job may have"
    )
    # The other formats' times and work.
    openb_header = (OPENB_TRACE_DIR / "openb_pod_list_default.csv").read_text().split("\n")[0]
    with pytest.raises(RowError, match=r"^p.csv line 2 column deletion_time: '1000000000000000"):
        load_openb_jobs(openb_header + f"\np,1000,1024,1,1000,,LS,Running,0,{10**15},0\n", "p.csv")
    helios = f"1,u,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,,,{10**13},0\n"
    with pytest.raises(RowError, match=r"^log.csv line 2 column duration: .* is more than 10\^12"):
        load_helios_jobs(HELIOS_HEADER + helios, "log.csv")
    tasks = "j1,w,1,Terminated,100,1e300,600,29,50,V100\n"
    with pytest.raises(RowError, match=r"line 1 column end_time: '1e300' is more than 10\^12"):
        load_pai_jobs("j1,i1,alice,Terminated,100,900\n", tasks, "pai")
    table = load_throughputs(json.dumps(THROUGHPUTS), "tput.json")
    gavel = f"ResNet-18 (batch size 16)\tpython\t--steps\t1\t{10**13}\t0\t1\n"
    with pytest.raises(RowError, match=r"^t.trace line 1 column total_steps: .* more than 10\^12"):
        load_gavel_jobs(gavel, "t.trace", table)


def test_cpu_and_memory_past_ten_to_the_twelve_are_bad_rows(tmp_path: Path) -> None:
    """A pod's or node's CPU or memory of 20 to 4,300 digits passed the rows' checks and
    overflowed numpy's int64 arrays mid-run (an OverflowError traceback): in every format
    it is a bad row named at its cell, and in a snapshot at its node. 10^12 itself (a
    billion cores, about an exabyte) is still an amount."""
    cpu = "is more than 10^12 milli-cores (a billion cores), the most CPU a node or pod may have"
    memory = "is more than 10^12 MiB (about an exabyte), the most memory a node or pod may have"
    big, huge = "1" + "0" * 20, "9" * 4300
    shown = f"'{huge[:56]}..."
    header = "name,queue,submit,runtime,gpus,cpu_milli,memory_mib\n"
    for row, cell, value, problem in (
        (f"a,q,0,10,1,{big},", "cpu_milli", f"'{big}'", cpu),
        (f"a,q,0,10,1,,{huge}", "memory_mib", shown, memory),
        ("a,q,0,10,1,1000000000001,", "cpu_milli", "'1000000000001'", cpu),
    ):
        with pytest.raises(RowError) as caught:
            load_job_csv(header + row + "\n", "jobs.csv")
        assert str(caught.value) == f"jobs.csv line 2 column {cell}: {value} {problem}"
    bad = BadRows(skip=True)
    jobs = load_job_csv(header + f"a,q,0,10,1,{big},\nb,q,0,10,1,{10**12},{10**12}\n", "j", bad)
    assert [(j.name, j.workload.cpu_milli, j.workload.memory_mib) for j in jobs] == [
        ("b", 10**12, 10**12)
    ]
    assert bad.counts == {f"column cpu_milli: {cpu}": 1}
    with pytest.raises(RowError) as caught:
        load_job_jsonl(
            f'{{"name": "a", "submit": 0, "runtime": 10, "gpus": 1, "memory_mib": {huge}}}\n',
            "j.jsonl",
        )
    assert str(caught.value) == f"j.jsonl line 1 field memory_mib: {huge[:57]}... {memory}"
    # openb's pods and nodes.
    pods = (OPENB_TRACE_DIR / "openb_pod_list_default.csv").read_text().split("\n")[0] + "\n"
    for cells, cell, value, problem in (
        (f"{big},1024", "cpu_milli", f"'{big}'", cpu),
        (f"1000,{huge}", "memory_mib", shown, memory),
    ):
        with pytest.raises(RowError) as caught:
            load_openb_jobs(pods + f"p,{cells},1,500,,LS,Running,0,10,0\n", "p.csv")
        assert str(caught.value) == f"p.csv line 2 column {cell}: {value} {problem}"
    for cells, cell, problem in (
        (f"{big},1024", "cpu_milli", cpu),
        (f"1,{big}", "memory_mib", memory),
    ):
        with pytest.raises(ValueError) as caught:
            load_openb_nodes(f"sn,cpu_milli,memory_mib,gpu,model\nn0,{cells},2,T4\n", "n.csv")
        assert str(caught.value) == f"n.csv line 2 column {cell}: '{big}' {problem}"
    # Helios' cores, PAI's cores, percent of a core and GB: named as written, in their unit.
    helios = f"1,u,vcA,1,{big},1,COMPLETED,2020-04-01 00:00:00,,,10,0\n"
    with pytest.raises(RowError) as caught:
        load_helios_jobs(HELIOS_HEADER + helios, "log.csv")
    assert str(caught.value) == f"log.csv line 2 column cpu_num: '{big}' cores {cpu}"
    jobs_table = "j1,i1,alice,Terminated,100,900\n"
    for cells, cell, value, problem in (
        ("1e308,29", "plan_cpu", "'1e308' % of a core", cpu),  # x 10 milli: infinite
        ("100000000001,29", "plan_cpu", "'100000000001' % of a core", cpu),
        (f"600,{big}", "plan_mem", f"'{big}' GB", memory),
    ):
        with pytest.raises(RowError) as caught:
            load_pai_jobs(jobs_table, f"j1,w,1,Terminated,100,700,{cells},50,V100\n", "pai")
        assert str(caught.value) == (
            f"pai/pai_task_table.csv line 1 column {cell}: {value} {problem}"
        )
    for cells, cell, unit, problem in (
        (f"{big},512", "cap_cpu", "cores", cpu),
        (f"96,{big}", "cap_mem", "GB", memory),
    ):
        with pytest.raises(ValueError) as caught:
            load_pai_machines(f"m1,T4,{cells},2\n", "m.csv")
        assert str(caught.value) == f"m.csv line 1 column {cell}: '{big}' {unit} {problem}"
    # A snapshot as the cluster: its nodes and its pools' nodes.
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(
        f"nodes:\n- name: n1\n  cpu_milli: 4000\n  cpu_held_milli: {big}\n"
        "  gpus: [{index: 0, model: T4}]\n"
        "node_pools:\n- {name: o, count: 2, gpus_per_node: 1, gpu_model: T4}\n"
        "- {name: p, count: 7, gpus_per_node: 1, gpu_model: T4, "
        f"memory_mib: {big}}}\n"
    )
    with pytest.raises(ClusterError) as caught:
        load_cluster(str(snapshot))
    assert str(caught.value).split("\n") == [
        f"{snapshot} is not a valid cluster snapshot:",
        f"nodes[0].cpu_held_milli: {big} {cpu}",
        f"node_pools[1].memory_mib: {big} {memory}",  # once, not for each of its 7 nodes
    ]
    snapshot.write_text(
        f"nodes:\n- {{name: n1, cpu_milli: {10**12}, memory_mib: {10**12}, gpus: [{{index: 0, "
        "model: T4}]}\n"
    )
    assert load_cluster(str(snapshot)).snapshot.nodes[0].cpu_milli == 10**12


def test_a_throughput_table_that_is_not_json_says_so() -> None:
    """An empty table was 'line 1 column 1: Expecting value', which did not say the file is
    not JSON at all."""
    for text, said in (
        ("", "tput.json: empty, not JSON; expected Gavel's throughput table, a JSON object "
         "keyed by GPU type"),
        ("\n", "tput.json: empty, not JSON; expected Gavel's throughput table, a JSON object "
         "keyed by GPU type"),
        ('{"v100": {', "tput.json line 1 column 11: not JSON (Expecting property name "
         "enclosed in double quotes)"),
        ("v100: 1\n", "tput.json line 1 column 1: not JSON (Expecting value)"),
    ):  # fmt: skip
        with pytest.raises(ValueError) as caught:
            load_throughputs(text, "tput.json")
        assert str(caught.value) == said


def test_a_gavel_rate_is_finite_and_not_below_the_slowest() -> None:
    """NaN passed 'rate <= 0' and failed mid-run with 'cannot convert float NaN to integer';
    1e-320 made a job's time infinite (an OverflowError in the engine)."""
    where = "tput.json: v100[\"('ResNet-18 (batch size 16)', 1)\"].null"
    for rate, problem in (
        ("NaN", "nan is not a finite positive rate"),
        ("Infinity", "inf is not a finite positive rate"),
        ("0", "0 is not a finite positive rate"),
        ("1" + "0" * 400, f"{'1' + '0' * 56}... is not a finite positive rate"),
        ("1e-320", "1e-320 is below 1e-06, the slowest rate a job may have"),
    ):
        table = json.dumps(THROUGHPUTS).replace("10.0", rate)
        with pytest.raises(ValueError) as caught:
            load_throughputs(table, "tput.json")
        assert str(caught.value) == f"{where}: {problem}"
    table = json.dumps(THROUGHPUTS).replace("10.0", "true")
    with pytest.raises(ValueError, match=r'expected a "\(job type, scale\)" key and a positive'):
        load_throughputs(table, "tput.json")
    assert load_throughputs(json.dumps(THROUGHPUTS).replace("10.0", "1e-6"), "t")["V100"] == {
        ("ResNet-18 (batch size 16)", 1): 1e-6,
        ("LM (batch size 20)", 2): 4.0,
    }


def test_a_node_list_node_has_at_most_as_many_gpus_as_any_node(tmp_path: Path) -> None:
    """uniform:2x1025xT4 was refused, but an openb node list's 'gpu' or a PAI machine's
    'cap_gpu' of 100,000,000 built that many GPUs, until memory ran out."""
    nodes = tmp_path / "nodes.csv"
    machines = tmp_path / "machines.csv"
    for gpus in (1025, 100_000_000):
        nodes.write_text(f"sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1000,{gpus},T4\n")
        machines.write_text(f"m1,T4,96,512,2\nm2,T4,96,512,{gpus}\n")
        for path, where in ((nodes, "line 2 column gpu"), (machines, "line 2 column cap_gpu")):
            with pytest.raises(ClusterError) as caught:
                load_cluster(str(path))
            assert str(caught.value) == (
                f"{path} {where}: '{gpus}' is more GPUs than a node can have (1024)"
            )
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1000,1024,T4\n")
    assert load_cluster(str(nodes)).gpu_count == 1024


def test_a_column_or_key_given_twice_is_refused_where_it_repeats() -> None:
    """The last of two 'gpus' columns or keys was taken without a word; snapshots refuse a
    duplicate key."""
    with pytest.raises(ValueError) as caught:
        load_job_csv("name,queue,submit,runtime,gpus,gpus\na,q,0,100,1,2\n", "jobs.csv")
    assert (
        str(caught.value)
        == "jobs.csv line 1 column gpus: named twice in the header (fields 5 and 6)"
    )
    header = (OPENB_TRACE_DIR / "openb_pod_list_default.csv").read_text().split("\n")[0]
    with pytest.raises(ValueError, match=r"^p.csv line 1 column qos: named twice in the header"):
        load_openb_jobs(header + ",qos\np,1000,1024,1,1000,,LS,Running,0,10,0,BE\n", "p.csv")
    ok = '{"name": "a", "submit": 0, "runtime": 100, "gpus": 1}\n'
    twice = '{"name": "b", "submit": 0, "runtime": 100, "gpus": 1, "gpus": 2}\n'
    with pytest.raises(RowError) as caught:
        load_job_jsonl(ok + twice, "jobs.jsonl")
    assert (
        str(caught.value)
        == f"jobs.jsonl line 2 column {twice.rindex('gpus')}: duplicate key 'gpus'"
    )
    bad = BadRows(skip=True)
    assert [j.name for j in load_job_jsonl(ok + twice, "jobs.jsonl", bad)] == ["a"]
    assert bad.counts == {"duplicate key": 1}
    # Every JSON file the simulator reads: an object nested anywhere, the key escaped.
    log = json.dumps(PHILLY, indent=1).replace('"vc": "vc1"', '"vc": "vc1", "v\\u0063": "x"', 1)
    with pytest.raises(ValueError, match=r"^log line \d+ column \d+: duplicate key 'vc'$"):
        load_philly_jobs(log, "log")
    table = json.dumps(THROUGHPUTS).replace('{"null": 10.0}', '{"null": 10.0, "null": 1.0}')
    with pytest.raises(ValueError, match=r"^tput.json line 1 column \d+: duplicate key 'null'$"):
        load_throughputs(table, "tput.json")
