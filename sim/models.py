"""GPU models that public traces use and the built-in catalog lacks.

Older traces ran on P100, V100 and K80 GPUs, and Alibaba anonymised some parts (G1–G3,
MISC). They enter a Snapshot as ``CustomGpuModel`` entries. Only memory is given (from
the vendors' data sheets); throughput and price stay at the neutral defaults, since no
sourced figure exists in the facts sheet — a trace's own throughput table, where it has
one (Gavel), is what makes jobs faster or slower.
"""

from __future__ import annotations

from scheduler.model import CustomGpuModel
from sim.openb import OPENB_GPU_MODELS

__all__ = ["TRACE_GPU_MODELS", "trace_models_for"]

_GIB = 1024

TRACE_GPU_MODELS: tuple[CustomGpuModel, ...] = (
    *OPENB_GPU_MODELS,
    CustomGpuModel(name="V100", memory_mib=16 * _GIB),
    CustomGpuModel(name="K80", memory_mib=12 * _GIB),
    # PAI's MISC machines mix undisclosed older parts; memory unknown, 16 GiB placeholder.
    CustomGpuModel(name="MISC", memory_mib=16 * _GIB),
)

_BY_NAME = {m.name.lower(): m for m in TRACE_GPU_MODELS}


def trace_models_for(names: set[str]) -> tuple[CustomGpuModel, ...]:
    """The custom models among ``names`` (case-insensitive), in catalog order."""
    wanted = {n.lower() for n in names}
    return tuple(m for m in TRACE_GPU_MODELS if m.name.lower() in wanted)
