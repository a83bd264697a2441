"""Loader for Alibaba's PAI GPU trace 2020 (Weng et al., NSDI'22 "MLaaS in the Wild").

The tables have no header row; their columns are fixed (``*_COLUMNS``, from the trace's
``.header`` files). Machine spec → cluster; job, task and group-tag tables → jobs.

``pai_machine_spec.csv`` (machine, gpu_type, cap_cpu cores, cap_mem GB, cap_gpu): each
GPU machine becomes a ``Node`` named after the machine, with ``cap_gpu`` GPUs of its
model (P100, T4, V100, V100M32 or the undisclosed MISC; see ``sim.models``); every GPU is
shared, since PAI tasks ask for fractions of GPUs. CPU-only machines are skipped.

Mapping of a task (``pai_task_table`` row) to a ``Job``:

- one job per (job_name, task_name) with ``plan_gpu`` > 0; a gang of ``inst_num`` pods
  (written as a float, ``2.0``; a fraction or 0 is a bad row);
- per pod ``plan_gpu`` percent of a GPU: below 100 a share (``gpu_milli`` = 10 ×
  plan_gpu), a multiple of 100 that many whole GPUs, anything else (150) a bad row;
- queue = the job's ``user`` (``pai_job_table``); priority 0;
- arrival = the job's ``start_time`` in ``pai_job_table``, its submission (the trace's
  README: the gap to a task's ``start_time``, its launch, is the scheduling latency PAI
  gave it), relative to the earliest; work = the task's ``end_time − start_time`` seconds;
  a task launched before its job's submission is a bad row;
- a task launched but not ended (empty ``end_time``: still running when the trace was
  taken) is kept and runs until the latest time a GPU task of the table records, the
  trace's end, and counted (``still_running``), as openb's pods running at its end are;
- GPU model constraint = the instance's ``gpu_type_spec`` from ``pai_group_tag_table``
  when the user asked for one (empty = any model);
- ``plan_cpu`` (percent of a core) → ``cpu_milli`` = 10 × plan_cpu, ``plan_mem`` GB → MiB.
Tasks without GPUs, or that never ran (no ``start_time``), are skipped and counted.
"""

from __future__ import annotations

from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import CustomGpuModel, Demand, Gpu, Node, Workload
from sim.job import Job, from_origin
from sim.models import TRACE_GPU_MODELS
from sim.rows import BadRows, Row, RowError, csv_rows

__all__ = [
    "GROUP_TAG_COLUMNS",
    "JOB_COLUMNS",
    "MACHINE_COLUMNS",
    "TASK_COLUMNS",
    "load_pai_jobs",
    "load_pai_machines",
]

MACHINE_COLUMNS = ("machine", "gpu_type", "cap_cpu", "cap_mem", "cap_gpu")
JOB_COLUMNS = ("job_name", "inst_id", "user", "status", "start_time", "end_time")
TASK_COLUMNS = (
    "job_name",
    "task_name",
    "inst_num",
    "status",
    "start_time",
    "end_time",
    "plan_cpu",
    "plan_mem",
    "plan_gpu",
    "gpu_type",
)
GROUP_TAG_COLUMNS = ("inst_id", "user", "gpu_type_spec", "group", "workload")

_MODELS = {"P100": "P100", "T4": "T4", "V100": "V100", "V100M32": "V100M32", "MISC": "MISC"}


def _model(row: Row, column: str) -> str:
    raw = row.values[column].strip()
    name = _MODELS.get(raw)
    if name is None:
        raise row.error(column, f"is not a PAI GPU type ({', '.join(_MODELS)})")
    return name


def load_pai_machines(
    text: str, source: str
) -> tuple[tuple[CustomGpuModel, ...], tuple[Node, ...]]:
    """GPU machines as nodes (all GPUs shared), and the custom models they use."""
    nodes = []
    seen: dict[str, int] = {}
    used: set[str] = set()
    for row in csv_rows(text, source, MACHINE_COLUMNS, names=MACHINE_COLUMNS):
        name = row.text("machine")
        if name in seen:
            raise row.error("machine", f"repeats the machine on line {seen[name]}")
        seen[name] = row.line
        gpus = row.node_gpus("cap_gpu")
        cpu_milli = row.amount("cap_cpu", scale=1000, unit="cores")
        memory_mib = row.amount("cap_mem", memory=True, scale=1024, unit="GB")
        if row.values["gpu_type"].strip() == "CPU" or gpus == 0:
            continue
        model = _model(row, "gpu_type")
        used.add(model)
        nodes.append(
            Node(
                name=name,
                labels={"nvidia.com/gpu.product": model, "kubernetes.io/hostname": name},
                gpus=tuple(Gpu(index=i, model=model, shared=True) for i in range(gpus)),
                cpu_milli=cpu_milli,
                memory_mib=memory_mib,
            )
        )
    models = tuple(m for m in TRACE_GPU_MODELS if m.name in used)
    return models, tuple(nodes)


def load_pai_jobs(
    job_text: str,
    task_text: str,
    source: str,
    group_text: str = "",
    bad: BadRows | None = None,
) -> tuple[tuple[Job, ...], dict[str, int], int]:
    """Jobs from the task table joined with the job table (user, submission) and, if given,
    the group-tag table (GPU type asked for); counts of tasks skipped on purpose; and how
    many were still running at the trace's end (kept, cut there)."""
    bad = bad if bad is not None else BadRows()
    submitted: dict[str, tuple[str, str, float, int]] = {}
    """job_name → user, inst_id, submission time, line."""
    for row in csv_rows(job_text, f"{source}/pai_job_table.csv", JOB_COLUMNS, bad, JOB_COLUMNS):
        try:
            submitted[row.text("job_name")] = (
                row.text("user"),
                row.values["inst_id"].strip(),
                row.number("start_time", time=True),
                row.line,
            )
        except RowError as error:
            bad.record(error)
    specs: dict[str, str] = {}
    if group_text:
        for row in csv_rows(
            group_text,
            f"{source}/pai_group_tag_table.csv",
            GROUP_TAG_COLUMNS,
            bad,
            GROUP_TAG_COLUMNS,
        ):
            spec = row.values["gpu_type_spec"].strip()
            if spec:
                specs[row.values["inst_id"].strip()] = spec
    skipped = {"no GPU": 0, "never ran": 0, "zero duration": 0}
    parsed: list[tuple[float, Workload, float, float | None]] = []
    """Submission, workload, launch, end (None: still running)."""
    latest = 0.0
    seen: dict[str, int] = {}
    tasks = f"{source}/pai_task_table.csv"
    for row in csv_rows(task_text, tasks, TASK_COLUMNS, bad, TASK_COLUMNS):
        try:
            job_name = row.text("job_name")
            name = f"{job_name}/{row.text('task_name')}"
            if name in seen:
                raise row.error("task_name", f"repeats the task on line {seen[name]}")
            if not row.values["plan_gpu"].strip() or row.number("plan_gpu") == 0:
                skipped["no GPU"] += 1
                continue
            if not row.values["start_time"].strip():
                skipped["never ran"] += 1
                continue
            start = row.number("start_time", time=True)
            end = row.number("end_time", time=True) if row.values["end_time"].strip() else None
            if end is not None and end < start:
                raise row.error("end_time", f"is before start_time {start:g}")
            if end == start:
                skipped["zero duration"] += 1
                continue
            if job_name not in submitted:
                raise row.error("job_name", "is not in the job table")
            user, inst, submit, line = submitted[job_name]
            if start < submit:
                raise row.error(
                    "start_time",
                    f"is before its job's submission ({submit:g}, pai_job_table.csv line {line})",
                )
            demand = _demand(row, specs.get(inst, ""))
            pods = _instances(row)
            cpu_milli = _amount(row, "plan_cpu", 10, "% of a core")
            memory_mib = _amount(row, "plan_mem", 1024, "GB", memory=True)
        except RowError as error:
            bad.record(error)
            continue
        seen[name] = row.line
        workload = Workload(
            name=name,
            queue=user,
            created=0,
            pods=pods,
            demand=demand,
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
        )
        parsed.append((submit, workload, start, end))
        latest = max(latest, start if end is None else end)
    still_running = sum(end is None for *_, end in parsed)
    runs = [(t, w, (latest if end is None else end) - start) for t, w, start, end in parsed]
    return from_origin(runs), skipped, still_running


def _instances(row: Row) -> int:
    """``inst_num``, which the trace writes as a float (``1.0``); empty means one."""
    if not row.values["inst_num"].strip():
        return 1
    count = row.number("inst_num")
    if count < 0:
        raise row.error("inst_num", "is negative")
    if count == 0:  # not one instance: the task's GPUs are per instance
        raise row.error("inst_num", "is 0 for a task with GPUs")
    if not count.is_integer():
        raise row.error("inst_num", "is not a whole number of instances")
    return int(count)


def _amount(row: Row, column: str, scale: int, unit: str, memory: bool = False) -> int:
    """``plan_cpu`` (percent of a core) in milli-cores or ``plan_mem`` (GB) in MiB, at most
    ``MAX_AMOUNT``: ``scale`` per ``unit``; empty means none asked for."""
    if not row.values[column].strip():
        return 0
    value = row.number(column)
    if value < 0:
        raise row.error(column, "is negative")
    return int(row.at_most(column, value * scale, memory, unit))


def _demand(row: Row, spec: str) -> Demand:
    plan = row.number("plan_gpu")
    models: tuple[str, ...] = ()
    if spec:
        if spec not in _MODELS:
            raise RowError(
                f"{row.source} line {row.line}: group tag gpu_type_spec {spec!r} is not a PAI "
                f"GPU type ({', '.join(_MODELS)})",
                "gpu_type_spec: unknown GPU type",
            )
        models = (_MODELS[spec],)
    if plan < 0:
        raise row.error("plan_gpu", "is negative")
    if plan < 100:
        milli = max(1, round(plan * MILLI_PER_GPU / 100))
        return Demand(gpu_milli=min(milli, MILLI_PER_GPU - 1), models=models)
    if plan % 100 == 0:
        return Demand(gpus=row.pod_gpus("plan_gpu", int(plan // 100)), models=models)
    raise row.error("plan_gpu", "is more than one GPU but not whole GPUs")
