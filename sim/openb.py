"""Loader for the Alibaba "openb" GPU trace (cluster-trace-gpu-v2023, the ATC'23 FGD paper).

The trace describes GPU nodes and pods that share GPUs by milli-GPU (see
``traces/alibaba-gpu-v2023/SOURCE.md`` for the columns). ``load_openb_nodes`` and
``load_openb_pods`` are pure functions over CSV text; the ``*_file`` wrappers only read a
file and pass its text on. A bad row raises ``ValueError`` naming the source, line number,
column and value, so a broken trace is fixed at the row, not debugged in the simulator.

Mapping to Apportion's domain:

- Each GPU node becomes a ``Node`` whose GPUs are all ``shared=True``: openb pods take
  fractions of a GPU (time-slicing), so every GPU must be able to host them. CPU-only nodes
  are skipped; Apportion schedules GPUs.
- ``T4`` is the catalog's T4. The other openb models are not in the built-in catalog and
  come back as ``CustomGpuModel`` entries (``OPENB_GPU_MODELS``) to add to the Snapshot.
- Each pod with GPUs becomes a one-pod ``Workload``; CPU-only pods are skipped. ``qos``
  becomes the priority (``QOS_PRIORITY``).
- As replayable jobs (``load_openb_jobs``), a pod never scheduled (deleted while
  ``Pending``) is left out and counted, as other formats leave out jobs that never ran; it
  and the CPU-only pods stay in what the fill experiment places (``fill_only``), which is
  the whole list.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import CustomGpuModel, Demand, Gpu, Node, Workload
from scheduler.textfile import read_text
from sim.job import DEFAULT_QUEUE, HostPod, Job
from sim.rows import BadRows, Row, RowError, csv_rows

__all__ = [
    "GPU_PRODUCT_LABEL",
    "HOSTNAME_LABEL",
    "NODE_COLUMNS",
    "OPENB_GPU_MODELS",
    "OPENB_TRACE_DIR",
    "POD_COLUMNS",
    "QOS_PRIORITY",
    "load_openb_jobs",
    "load_openb_nodes",
    "load_openb_nodes_file",
    "load_openb_pods",
    "load_openb_pods_file",
]

OPENB_TRACE_DIR = Path(__file__).parent / "traces" / "alibaba-gpu-v2023"
"""The bundled, unchanged copy of the trace's CSV files."""

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_LABEL = "kubernetes.io/hostname"

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)

_GIB = 1024

# Only memory is given: the facts sheet has no sourced throughput or price for these parts,
# so those stay at CustomGpuModel's neutral defaults. The paper's fill experiment places
# pods by milli-GPU and never reads speed, price or GPU memory.
OPENB_GPU_MODELS: tuple[CustomGpuModel, ...] = (
    CustomGpuModel(name="P100", memory_mib=16 * _GIB),
    CustomGpuModel(name="V100M16", memory_mib=16 * _GIB),
    CustomGpuModel(name="V100M32", memory_mib=32 * _GIB),
    # The data-centre A10, not the AWS-only A10G in the catalog (lower tensor throughput).
    CustomGpuModel(name="A10", memory_mib=24 * _GIB),
    # G1-G3 are undisclosed by Alibaba; their memory is unknown. 16 GiB is a placeholder,
    # not a fact: only memory-based demands would read it, and openb has none.
    CustomGpuModel(name="G1", memory_mib=16 * _GIB),
    CustomGpuModel(name="G2", memory_mib=16 * _GIB),
    CustomGpuModel(name="G3", memory_mib=16 * _GIB),
)

# openb model name → the name Apportion uses: a built-in catalog name or a model above.
_MODEL_NAMES: dict[str, str] = {"T4": "T4", **{m.name: m.name for m in OPENB_GPU_MODELS}}

QOS_PRIORITY: dict[str, int] = {"LS": 1000, "Guaranteed": 500, "Burstable": 100, "BE": 0}
"""Workload priority per openb QoS class: latency-sensitive first, best effort last."""


def _model(row: Row, column: str, raw: str) -> str:
    name = _MODEL_NAMES.get(raw.strip())
    if name is None:
        known = ", ".join(_MODEL_NAMES)
        raise row.error(column, f"names unknown GPU model {raw.strip()!r}; known: {known}")
    return name


def _unique_name(row: Row, column: str, seen: dict[str, int]) -> str:
    name = row.text(column)
    if name in seen:
        raise row.error(column, f"repeats the name on line {seen[name]}")
    seen[name] = row.line
    return name


def load_openb_nodes(text: str, source: str) -> tuple[tuple[CustomGpuModel, ...], tuple[Node, ...]]:
    """GPU nodes of an openb node list, and the GPU models the catalog lacks.

    The models are all of ``OPENB_GPU_MODELS``, also those no node has, so a pod whose
    ``gpu_spec`` names one still resolves. Rows with ``gpu`` = 0 (CPU-only) are checked
    and skipped.
    """
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for row in csv_rows(text, source, NODE_COLUMNS):
        gpus = row.node_gpus("gpu")
        cpu_milli = row.amount("cpu_milli")
        memory_mib = row.amount("memory_mib", memory=True)
        if gpus == 0:
            continue
        name = _unique_name(row, "sn", seen)
        raw_model = row.values["model"].strip()
        model = _model(row, "model", raw_model)
        nodes.append(
            Node(
                name=name,
                labels={GPU_PRODUCT_LABEL: raw_model, HOSTNAME_LABEL: name},
                gpus=tuple(Gpu(index=i, model=model, shared=True) for i in range(gpus)),
                cpu_milli=cpu_milli,
                memory_mib=memory_mib,
            )
        )
    return OPENB_GPU_MODELS, tuple(nodes)


def _demand(row: Row) -> Demand | None:
    """The pod's GPU demand; None for a CPU-only pod."""
    num_gpu = row.count("num_gpu")
    milli = row.count("gpu_milli")
    models = _models(row)
    if num_gpu == 0:
        return None
    if not 1 <= milli <= MILLI_PER_GPU:
        raise row.error("gpu_milli", f"must be 1..{MILLI_PER_GPU} for a pod with GPUs")
    if milli == MILLI_PER_GPU:
        return Demand(gpus=row.pod_gpus("num_gpu", num_gpu), models=models)
    if num_gpu == 1:
        return Demand(gpu_milli=milli, models=models)
    # A share of several GPUs has no Demand form; rounding it up would invent demand.
    raise row.error(
        "gpu_milli",
        f"is a share of a GPU, but num_gpu is {num_gpu}; only single-GPU pods share GPUs",
    )


def _models(row: Row) -> tuple[str, ...]:
    spec = row.values["gpu_spec"].strip()
    if not spec:
        return ()
    models: list[str] = []
    for part in spec.split("|"):
        model = _model(row, "gpu_spec", part)
        if model not in models:
            models.append(model)
    return tuple(models)


def _pod(row: Row, queue: str, seen: dict[str, int]) -> Workload | None:
    name = _unique_name(row, "name", seen)
    cpu_milli = row.amount("cpu_milli")
    memory_mib = row.amount("memory_mib", memory=True)
    created = row.count("creation_time", time=True)
    qos = row.values["qos"].strip()
    if qos not in QOS_PRIORITY:
        raise row.error("qos", f"is not a known QoS class ({', '.join(QOS_PRIORITY)})")
    demand = _demand(row)
    if demand is None:
        return None
    return Workload(
        name=name,
        queue=queue,
        priority=QOS_PRIORITY[qos],
        created=created,
        pods=1,
        demand=demand,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )


def load_openb_pods(text: str, source: str, queue: str = DEFAULT_QUEUE) -> tuple[Workload, ...]:
    """One single-pod Workload in ``queue`` per pod with GPUs; CPU-only pods are skipped.

    ``pod_phase``, ``deletion_time`` and ``scheduled_time`` record what happened in
    Alibaba's cluster, not what was asked for, so they are not read.
    """
    workloads: list[Workload] = []
    seen: dict[str, int] = {}
    for row in csv_rows(text, source, POD_COLUMNS):
        workload = _pod(row, queue, seen)
        if workload is not None:
            workloads.append(workload)
    return tuple(workloads)


def load_openb_jobs(
    text: str,
    source: str,
    bad: BadRows | None = None,
    queue: str = DEFAULT_QUEUE,
    fill_only: list[Job | HostPod] | None = None,
) -> tuple[tuple[Job, ...], dict[str, int]]:
    """The pods as replayable jobs: arrival at ``creation_time``, runtime from
    ``scheduled_time`` to ``deletion_time``, at least one second; and the counts of pods
    left out on purpose (CPU-only; never scheduled, which has no runtime). Those are
    appended to ``fill_only`` in file order (the fill places them). Bad rows go to
    ``bad``."""
    bad = bad if bad is not None else BadRows()
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    skipped = {"cpu-only pod": 0, "never ran": 0}
    extra: list[Job | HostPod] = [] if fill_only is None else fill_only
    for row in csv_rows(text, source, POD_COLUMNS, bad):
        try:
            workload = _pod(row, queue, seen)
            if workload is None:
                skipped["cpu-only pod"] += 1
                created = row.count("creation_time", time=True)
                cpu_milli = row.amount("cpu_milli")
                memory_mib = row.amount("memory_mib", memory=True)
                extra.append(HostPod(row.text("name"), created, cpu_milli, memory_mib))
                continue
            # Deleted while Pending: demand the cluster saw, with no runtime to replay.
            if not row.values["scheduled_time"].strip():
                skipped["never ran"] += 1
                extra.append(Job(workload, 1.0))
                continue
            began = row.count("scheduled_time", time=True)
            ended = row.count("deletion_time", time=True)
            if ended < began:
                raise row.error("deletion_time", f"is before the pod started ({began})")
        except RowError as error:
            bad.record(error)
            continue
        jobs.append(Job(workload, float(max(1, ended - began))))
    return tuple(jobs), skipped


def load_openb_nodes_file(
    path: str | Path,
) -> tuple[tuple[CustomGpuModel, ...], tuple[Node, ...]]:
    """``load_openb_nodes`` on a file; errors name the path as given."""
    return load_openb_nodes(read_text(Path(path)), str(path))


def load_openb_pods_file(path: str | Path, queue: str = DEFAULT_QUEUE) -> tuple[Workload, ...]:
    """``load_openb_pods`` on a file; errors name the path as given."""
    return load_openb_pods(read_text(Path(path)), str(path), queue)
